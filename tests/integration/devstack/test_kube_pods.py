"""devstack's running pods: the model server's Deployment on the local control plane, each pod's container
run by podman on the pod's IP, reached through the API server's pod proxy, stopped gracefully when deleted."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bank_ml import artifacts, data, release
from bank_pipeline.resources import kubernetes_manifests
from devstack import Devstack, kube
from devstack.containers import lambda_image, podman
from devstack.kube.pods import PodRunner
from devstack.kube.service_client import service_client
from tests.support.paths import BANK_CSV
from tests.support.serving_requests import RECORD

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NS = "devstack-kube-pods"
SELECTOR = "app.kubernetes.io/name=bank-model"


@pytest.fixture(scope="module")
def model_image(ds: Devstack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The serving image with a small real model, in devstack's registry by digest."""
    candidate = release.train_candidate(data.features_from_csv(BANK_CSV))
    directory = tmp_path_factory.mktemp("model")
    artifacts.write_model_files(directory, candidate.onnx_bytes, candidate.threshold)
    directory.chmod(0o755)
    ref = lambda_image.model_image(lambda_image.serving_image(), directory, ds.registry_url, repo="kube-pods")
    yield ref
    podman.podman("rmi", "--ignore", ref)


@pytest.fixture(scope="module")
def cluster(kube_cluster: kube.KubeCluster) -> kube.KubeCluster:
    kube_cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return kube_cluster


@pytest.fixture(autouse=True)
def _no_deployments_left(cluster: kube.KubeCluster) -> Iterator[None]:
    """Each test starts with no Deployment in the namespace, whatever the one before did."""
    yield
    cluster.request("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments")


def deployment(image: str, replicas: int) -> dict[str, Any]:
    (manifest,) = [copy.deepcopy(m) for m in kubernetes_manifests() if m["kind"] == "Deployment"]
    manifest["spec"]["replicas"] = replicas
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = image
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10  # preStop 5 s + a drain
    return manifest


def until(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout} s: {check}")


def answer_if_200(response: tuple[int, Any]) -> Any:
    status, body = response
    return body if status == 200 else None


def lo_addresses() -> set[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True)
    return {line.split()[3].split("/")[0] for line in out.stdout.splitlines()}


def test_each_pod_runs_its_server_on_its_ip_and_stops_gracefully_when_deleted(
    cluster: kube.KubeCluster, model_image: str
) -> None:
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    with PodRunner(cluster.request, NS, SELECTOR) as runner:
        assert cluster.request("POST", path, deployment(model_image, 2))[0] == 201
        pods = until(lambda: len(runner.running()) == 2 and runner.running(), timeout=120)
        # Ready once the server's /readyz says so (the runner's probe), and then the Deployment is available.
        until(lambda: (cluster.get(f"{path}/bank-model").get("status") or {}).get("availableReplicas") == 2)
        assert len({p.ip for p in pods.values()}) == 2 and {p.ip for p in pods.values()} <= lo_addresses()
        for name in pods:
            # The API server's pod proxy reaches each pod's own server: its metrics port and its service port.
            proxy = f"/api/v1/namespaces/{NS}/pods/{name}"
            ready = until(lambda p=proxy: answer_if_200(cluster.request("GET", f"{p}:8080/proxy/readyz")))
            assert ready["status"] == "ready"
            status, answer = cluster.request("POST", f"{proxy}:8080/proxy/predict", json.dumps(RECORD))
            assert status == 200 and answer["model_version"] == ready["model_version"]
            status, metrics = cluster.request("GET", f"{proxy}:9090/proxy/metrics")
            assert status == 200 and 'bank_serving_requests_total{route="/predict",status="200"} 1.0' in metrics

        # Scaled down: the pod deleted gets SIGTERM, drains, exits 0; its IP leaves lo.
        scale = {"spec": {"replicas": 1}}
        status, _ = cluster.request("PATCH", f"{path}/bank-model", json.dumps(scale),
                                    content_type="application/merge-patch+json")  # fmt: skip
        assert status == 200
        until(lambda: len(runner.pods) == 1)  # the deleted pod's container has stopped and is removed
        (gone,) = set(pods) - set(runner.running())
        assert pods[gone].exit_code == 0 and pods[gone].ip not in lo_addresses()
    assert runner.errors == []
    assert podman.containers(runner.group) == [] and not {p.ip for p in pods.values()} & lo_addresses()


def test_a_pod_whose_server_never_gets_ready_is_never_ready(cluster: kube.KubeCluster, model_image: str) -> None:
    """Readiness is the probe's, not kwok's: a server that cannot load its model leaves its pod Running, not
    Ready, so the Deployment never has an available replica (and a Service would send it nothing)."""
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    broken = deployment(model_image, 1)
    broken["metadata"]["name"] = "bank-model-broken"
    broken["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "BANK_MODEL_DIR", "value": "/nowhere"})
    broken["spec"]["template"]["spec"]["containers"][0]["env"] = [
        e for e in broken["spec"]["template"]["spec"]["containers"][0]["env"] if e["value"] != "/opt/ml/model"
    ]
    with PodRunner(cluster.request, NS, SELECTOR) as runner:
        assert cluster.request("POST", path, broken)[0] == 201
        (pod,) = until(
            lambda: [p for p in runner.pods.values() if p.name.startswith("bank-model-broken-")], timeout=120
        )
        # The server exits 1 at once (no model); give the probe some passes to be sure nothing turns it Ready.
        until(lambda: not pod.container.running(), timeout=30)
        time.sleep(2)  # several probe passes (POLL_SECONDS each): none may have found it ready
        status = cluster.get(f"/api/v1/namespaces/{NS}/pods/{pod.name}")["status"]
        ready = {c["type"]: c["status"] for c in status["conditions"]}
        assert status["phase"] == "Running" and ready["Ready"] == "False" and ready["ContainersReady"] == "False"
        assert not (cluster.get(f"{path}/bank-model-broken").get("status") or {}).get("availableReplicas")
    assert podman.containers(runner.group) == []


def test_the_hpa_scales_the_model_server_up_under_load_and_down_after_within_its_behaviour(
    cluster: kube.KubeCluster, model_image: str
) -> None:
    """Requests make the containers use CPU; the runner reports it as the pods' usage, metrics-server reads it
    from kwok, and the manifest's HPA (its 70 % of the 250m request; at most 4 pods here, and a scale-down
    window and policy of 20 s and one pod per 15 s instead of 300 s and one per 60 s, to fit a test) scales
    the Deployment up under load and back down one pod at a time after, losing no request on the way."""
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    hpas = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
    (hpa,) = [copy.deepcopy(m) for m in kubernetes_manifests() if m["kind"] == "HorizontalPodAutoscaler"]
    (service,) = [copy.deepcopy(m) for m in kubernetes_manifests() if m["kind"] == "Service"]
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    hpa["spec"]["maxReplicas"] = 4
    hpa["spec"]["behavior"]["scaleDown"] = {"stabilizationWindowSeconds": 20,
                                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}  # fmt: skip
    cluster.create(f"/api/v1/namespaces/{NS}/services", service, exist_ok=True)
    timeline: list[tuple[float, int]] = []  # (time, the Deployment's replicas) whenever they change

    def replicas() -> int:
        count = int(cluster.get(f"{path}/bank-model")["spec"]["replicas"])
        if not timeline or timeline[-1][1] != count:
            timeline.append((time.monotonic(), count))
        return count

    batch = {"records": [RECORD] * 200}  # scoring is the CPU work: about 0.06 ms a record
    try:
        with PodRunner(cluster.request, NS, SELECTOR, report_usage=True) as runner:
            assert cluster.request("POST", path, deployment(model_image, 2))[0] == 201
            cluster.create(hpas, hpa)
            until(lambda: (cluster.get(f"{path}/bank-model").get("status") or {}).get("availableReplicas") == 2, 120)
            with service_client(cluster, NS, RECORD, rate=5) as light:  # answers throughout, also while pods go
                with service_client(cluster, NS, batch), service_client(cluster, NS, batch):
                    until(lambda: replicas() > 2, timeout=180)
                    until(lambda: len(runner.running()) == replicas(), timeout=120)
                loaded = time.monotonic()  # the load stops
                until(lambda: replicas() == 2, timeout=240)
        assert runner.errors == []
    finally:
        cluster.request("DELETE", f"{hpas}/bank-model")
        cluster.request("DELETE", f"/api/v1/namespaces/{NS}/services/bank-model")
    print("replicas by seconds from the load's end:", [(round(t - loaded, 1), count) for t, count in timeline])
    peak = max(count for _, count in timeline)
    assert 2 < peak <= 4, timeline
    steps = [(t, before - count) for (_, before), (t, count) in itertools.pairwise(timeline)]
    downs = [t for t, fewer in steps if fewer > 0]
    assert downs and all(fewer == 1 for _, fewer in steps if fewer > 0), timeline  # one pod at a time
    assert downs[0] > loaded and all(b - a >= 15 - 1 for a, b in itertools.pairwise(downs)), timeline  # 1 s: polling
    assert light and {call[2] for call in light} == {200}, [call for call in light if call[2] != 200][:5]
    assert podman.containers(runner.group) == []
