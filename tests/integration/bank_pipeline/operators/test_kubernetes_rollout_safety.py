"""KubernetesRolloutOperator's refusals, against the real control plane (devstack.kube).

- A connection that names no cluster is "not configured": skipped or refused, never the
  Kubernetes client's fall-back to ``~/.kube/config`` (here: a kubeconfig of this very cluster).
- An image of another architecture than the Deployment's ``kubernetes.io/arch`` node selector
  is refused before any change, naming both.

Skipped when the control plane's binaries are not built (``devstack/kube/build.sh``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from bank_pipeline import resources
from bank_pipeline.errors import BadInputError
from bank_pipeline.operators.kubernetes_rollout import KubernetesRolloutOperator
from bank_pipeline.utils.rollout import load_manifests
from devstack import kube

MISSING = kube.missing_binaries()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(MISSING), reason=f"kube binaries not built (missing {', '.join(MISSING)}): devstack/kube/build.sh"
    ),
    pytest.mark.timeout(300),
]

REPO = "registry.example/bank-model"
V1, V2 = (f"{REPO}@sha256:{c * 64}" for c in "12")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kube.KubeCluster]:
    # TODO(issue 14): the session's kube_cluster fixture, once tests/conftest.py has it.
    with kube.KubeCluster(tmp_path_factory.mktemp("kube")) as running:
        yield running


@pytest.fixture
def namespace(cluster: kube.KubeCluster) -> str:
    name = f"release-{uuid.uuid4().hex[:8]}"
    cluster.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def connect(monkeypatch: pytest.MonkeyPatch, conn_id: str, extra: dict[str, Any]) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "kubernetes", "extra": extra}))


def rollout(image: str, conn_id: str = "kube_release", **kwargs: Any) -> Any:
    options = {"kubernetes_conn_id": conn_id, "deferrable": False, "poll_interval": 0.5, "timeout": 120,
               "image_platform": "linux/amd64"}  # fmt: skip
    return KubernetesRolloutOperator(task_id="rollout", image=image, **{**options, **kwargs}).execute(context={})


def objects(cluster: kube.KubeCluster, namespace: str) -> dict[str, list[str]]:
    """Names of what the operator creates, in ``namespace``."""
    paths = {
        "Deployment": f"/apis/apps/v1/namespaces/{namespace}/deployments",
        "Service": f"/api/v1/namespaces/{namespace}/services",
        "PodDisruptionBudget": f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
    }
    return {kind: [o["metadata"]["name"] for o in cluster.get(path)["items"]] for kind, path in paths.items()}


def test_a_connection_without_a_cluster_is_not_configured_and_never_falls_back(
    cluster: kube.KubeCluster, namespace: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What the Kubernetes client would load instead: ~/.kube/config, here naming this cluster.
    from kubernetes.config import kube_config

    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(cluster.kubeconfig.read_text())
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", "~/.kube/config")  # read once, at import
    connect(monkeypatch, "kube_empty", {"namespace": namespace})

    with pytest.raises(AirflowSkipException, match=(
        r"Kubernetes connection 'kube_empty' holds no cluster configuration \(none of in_cluster, kube_config_path, "
        r"kube_config in its extra\), and the worker's ~/.kube/config is never used instead: the rollout is skipped"
    )):  # fmt: skip
        rollout(V1, "kube_empty", skip_without_connection=True, namespace=namespace)
    with pytest.raises(BadInputError, match=r"'kube_empty' holds no cluster configuration .*: nothing rolled out"):
        rollout(V1, "kube_empty", namespace=namespace)
    assert objects(cluster, namespace) == {"Deployment": [], "Service": [], "PodDisruptionBudget": []}


def test_an_image_of_another_architecture_is_refused_before_any_change(
    cluster: kube.KubeCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, "kube_release", {"kube_config_path": str(cluster.kubeconfig), "namespace": namespace})
    # Nothing there yet: the manifest's node selector (amd64) decides, and nothing is created.
    with pytest.raises(BadInputError, match=(
        rf"refused before any change: image {V1} is built for linux/arm64 but Deployment {namespace}/bank-model runs "
        r"its pods on kubernetes.io/arch=amd64 nodes: build the image with `docker buildx build --platform linux/amd64"
    )):  # fmt: skip
        rollout(V1, image_platform="linux/arm64")
    assert objects(cluster, namespace) == {"Deployment": [], "Service": [], "PodDisruptionBudget": []}

    first = rollout(V1)  # amd64, on the kwok Nodes (kubernetes.io/arch=amd64)
    assert first["image"] == V1
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/bank-model"
    before = cluster.get(path)
    assert before["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    with pytest.raises(BadInputError, match=r"is built for linux/arm64 but Deployment .* kubernetes.io/arch=amd64"):
        rollout(V2, image_platform="linux/arm64")
    after = cluster.get(path)
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == V1
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_a_deployment_without_an_architecture_selector_is_refused(
    cluster: kube.KubeCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(monkeypatch, "kube_release", {"kube_config_path": str(cluster.kubeconfig), "namespace": namespace})
    manifests = load_manifests(resources.kubernetes_manifests())
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    del deployment["spec"]["template"]["spec"]["nodeSelector"]
    with pytest.raises(BadInputError, match=(
        rf"Deployment {namespace}/bank-model has no nodeSelector kubernetes.io/arch, so its pods may land on nodes of "
        rf"any architecture; image {V1} is linux/amd64: add `kubernetes.io/arch: amd64`"
    )):  # fmt: skip
        rollout(V1, manifests=manifests)
    assert objects(cluster, namespace)["Deployment"] == []
