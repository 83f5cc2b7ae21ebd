"""KubernetesRolloutOperator's canary on the real control plane, with pods that run (devstack.kube.pods): the
serving image with a real model in each pod, a client spreading requests over the Service's endpoints as
kube-proxy would, and the verdict on the canary pods' own metrics read through the API server's pod proxy.
The operator runs as the release's ServiceAccount (the package's RBAC, pods/proxy included)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bank_ml import artifacts, data, release
from bank_pipeline.errors import RolloutFailedError
from bank_pipeline.operators.kubernetes_rollout import KubernetesRolloutOperator
from bank_pipeline.utils import oci, oci_image, oci_layer
from devstack import Devstack, kube
from devstack.containers import lambda_image, podman
from devstack.kube.pods import PodRunner
from devstack.kube.service_client import service_client
from tests.support.deferral import run_deferring
from tests.support.flaky_model import flaky_image
from tests.support.paths import BANK_CSV
from tests.support.release_ns import CONN_ID, ReleaseNamespace, manifests, wait_for
from tests.support.serving_requests import RECORD

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPOSITORY = "kube-canary"


@pytest.fixture(scope="module")
def images(ds: Devstack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The serving image with a small real model ("v1"), the same plus one more file ("v2": another image,
    a good one), and the same with a model.py failing one prediction in five ("flaky"); by digest."""
    candidate = release.train_candidate(data.features_from_csv(BANK_CSV))
    directory = tmp_path_factory.mktemp("model")
    artifacts.write_model_files(directory, candidate.onnx_bytes, candidate.threshold)
    v1 = lambda_image.model_image(lambda_image.serving_image(), directory, ds.registry_url, repo=REPOSITORY, tag="v1")
    v2 = oci_image.append_layer(oci.RegistryClient(f"http://{ds.registry_url}"), REPOSITORY, "v1",
                                oci_layer.layer({"var/task/RELEASE": b"v2\n"}), "v2")  # fmt: skip
    refs = {"v1": v1, "v2": f"{ds.registry_url}/{REPOSITORY}@{v2.digest}",
            "flaky": flaky_image(ds.registry_url, REPOSITORY, "v1")}  # fmt: skip
    yield refs
    for ref in refs.values():
        podman.podman("rmi", "--ignore", ref)


@pytest.fixture
def pods(kube_cluster: kube.KubeCluster, release: ReleaseNamespace) -> Iterator[PodRunner]:
    with PodRunner(kube_cluster.request, release.name, "app.kubernetes.io/name=bank-model") as runner:
        yield runner
    assert runner.errors == [] and podman.containers(runner.group) == []


def deploy(image: str, **kwargs: Any) -> dict[str, Any]:
    options = {"manifests": manifests(), "kubernetes_conn_id": CONN_ID, "deferrable": False, "poll_interval": 0.5,
               "timeout": 120, "image_platform": "linux/amd64", "canary_thresholds": {"max_error_rate": 0.05}}  # fmt: skip
    return KubernetesRolloutOperator(task_id="rollout", image=image, **{**options, **kwargs}).execute(context={})


def serving(runner: PodRunner, release: ReleaseNamespace, count: int) -> None:
    """Wait until ``count`` pods of the namespace run their server and answer /readyz (through the pod proxy)."""

    def ready() -> bool:
        running = runner.running()
        return len(running) == count and all(
            release.cluster.request("GET", f"/api/v1/namespaces/{release.name}/pods/{name}:8080/proxy/readyz")[0] == 200
            for name in running
        )

    wait_for(f"{count} pods serving", ready, timeout=120)


def test_a_canary_failing_one_request_in_five_is_aborted_naming_the_metric(
    release: ReleaseNamespace, pods: PodRunner, images: dict[str, str]
) -> None:
    deploy(images["v1"])
    serving(pods, release, 2)
    with service_client(release.cluster, release.name, RECORD) as calls:
        with pytest.raises(RolloutFailedError) as aborted:
            deploy(images["flaky"], release_strategy="canary", canary_percent=50, bake_seconds=60)
        aborted_at = time.time()
        wait_for("a few seconds of calls after the abort", lambda: calls and calls[-1][0] > aborted_at + 4)
    message = str(aborted.value)
    assert message.startswith(f"canary of {images['flaky']} on Deployment {release.name}/bank-model aborted at 50% "
                              "of the pods (2 beside 2): Errors ")  # fmt: skip
    assert "above the 5.0% allowed; canary Deployment bank-model-canary deleted" in message
    assert release.get("Deployment", "bank-model-canary") is None and release.image() == images["v1"]
    assert any(status == 500 for t, _, status, _ in calls if t < aborted_at)  # the canary did serve, and fail
    # Once the Service's endpoints have caught up (kube-proxy lags the same way), only the stable pods answer.
    after = [(ip, status) for t, ip, status, _ in calls if t > aborted_at + 2]
    assert after and all(status == 200 for _, status in after), after


def test_a_good_canary_is_promoted_with_its_step_recorded(
    release: ReleaseNamespace, pods: PodRunner, images: dict[str, str]
) -> None:
    deploy(images["v1"])
    serving(pods, release, 2)
    with service_client(release.cluster, release.name, RECORD) as calls:
        result = deploy(images["v2"], release_strategy="canary", canary_percent=50, bake_seconds=4)
    [step] = result["traffic"]
    assert (step["share"], step["pods"], step["stable_pods"], step["status"]) == (0.5, 2, 2, "passed")
    assert step["metrics"]["invocations"] > 0 and step["metrics"]["errors"] == 0 and step["metrics"]["p99_ms"] > 0
    assert step["ended_at"] - step["started_at"] >= 4
    assert release.get("Deployment", "bank-model-canary") is None and release.image() == images["v2"]
    assert result["previous_image"] == images["v1"] and calls


def test_a_linear_release_bakes_each_step_in_the_triggerer_then_is_promoted(
    release: ReleaseNamespace, pods: PodRunner, images: dict[str, str]
) -> None:
    """Deferrable: each step is a KubernetesCanaryTrigger (rebuilt from what it serialized, as the triggerer does),
    the task resumed with its event; 34 % more of the pods each step: 1 canary pod beside 2, then 4 beside 2."""
    deploy(images["v1"])
    serving(pods, release, 2)
    options = {"manifests": manifests(), "kubernetes_conn_id": CONN_ID, "deferrable": True, "poll_interval": 0.5,
               "timeout": 120, "image_platform": "linux/amd64", "release_strategy": "linear", "canary_percent": 34,
               "bake_seconds": 3}  # fmt: skip
    operator = KubernetesRolloutOperator(task_id="rollout", image=images["v2"], **options)
    with service_client(release.cluster, release.name, RECORD) as calls:
        result, triggers = run_deferring(operator, {})
    assert [type(t).__name__ for t in triggers] == ["KubernetesCanaryTrigger"] * 2 + ["KubernetesRolloutTrigger"]
    steps = [(step["share"], step["pods"], step["stable_pods"], step["status"]) for step in result["traffic"]]
    assert steps == [(0.3333, 1, 2, "passed"), (0.6667, 4, 2, "passed")]
    assert all(step["metrics"]["invocations"] > 0 and step["metrics"]["errors"] == 0 for step in result["traffic"])
    assert release.get("Deployment", "bank-model-canary") is None and release.image() == images["v2"]
    assert calls and {status for *_, status, _ in calls} == {200}


def test_a_first_release_has_nothing_to_canary_against(release: ReleaseNamespace, images: dict[str, str]) -> None:
    result = deploy(images["v1"], release_strategy="canary", canary_percent=50, bake_seconds=4)
    assert "traffic" not in result and release.get("Deployment", "bank-model-canary") is None
