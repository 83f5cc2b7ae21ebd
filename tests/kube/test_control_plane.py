"""The local control plane (devstack.kube): a real kube-apiserver, controller manager,
scheduler and etcd built from Go modules, with kwok's fake Nodes, runs a Deployment.

Skipped when the binaries are not built (``devstack/kube/build.sh``; the test never
builds them). Slow: each cluster start takes seconds to tens of seconds on 2 cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack import kube, procs

MISSING = kube.missing_binaries()
pytestmark = [
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"kube binaries not built in {kube.default_bin_dir()} (missing {', '.join(MISSING)}): "
        "run devstack/kube/build.sh",
    ),
    pytest.mark.timeout(300),
]

BAD_IMAGE = "registry.invalid/bank-model:does-not-exist"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def deployment(name: str, image: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]},
            },
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kube.KubeCluster]:
    with kube.KubeCluster(tmp_path_factory.mktemp("kube"), nodes=2) as kc:
        yield kc


@pytest.fixture(scope="module")
def k8s(cluster: kube.KubeCluster) -> Any:
    """The kubernetes Python client, configured only by the cluster's kubeconfig file."""
    from kubernetes import client, config

    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


def test_version_is_the_built_release(cluster: kube.KubeCluster, k8s: Any) -> None:
    from kubernetes import client

    info = client.VersionApi(k8s).get_code()
    assert info.git_version == kube.kube_version() == cluster.version["gitVersion"]
    assert (info.major, info.minor) == ("1", kube.kube_version().split(".")[1])


def test_nodes_are_kwok_nodes_and_ready(k8s: Any) -> None:
    from kubernetes import client

    nodes = client.CoreV1Api(k8s).list_node().items
    assert sorted(n.metadata.name for n in nodes) == ["kwok-node-0", "kwok-node-1"]
    for node in nodes:
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True"
        assert node.metadata.annotations[kube.NODE_ANNOTATION] == "fake"


def test_deployment_becomes_available(k8s: Any) -> None:
    """The deployment controller makes a ReplicaSet and pods, the scheduler binds them to
    kwok's nodes, kwok marks them Running and Ready: the Deployment is Available."""
    from kubernetes import client

    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    apps.create_namespaced_deployment("default", deployment("web", "registry.invalid/bank-model:1"))

    def available() -> Any:
        dep = apps.read_namespaced_deployment("web", "default")
        conditions = {c.type: c.status for c in dep.status.conditions or []}
        return dep if dep.status.ready_replicas == 2 and conditions.get("Available") == "True" else None

    dep = wait_for("Deployment web Available with 2 ready replicas", available)
    assert dep.status.updated_replicas == 2 and dep.status.observed_generation == dep.metadata.generation
    pods = core.list_namespaced_pod("default", label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Running"
        assert pod.spec.node_name in ("kwok-node-0", "kwok-node-1")
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        assert pod.status.pod_ip  # kwok hands out IPs from its CIDR


def test_a_stage_added_later_keeps_pods_in_image_pull_backoff(cluster: kube.KubeCluster, k8s: Any) -> None:
    from kubernetes import client

    cluster.add_stage(kube.image_pull_backoff_stage(BAD_IMAGE))
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    apps.create_namespaced_deployment("default", deployment("broken", BAD_IMAGE, replicas=1))

    def backoff() -> Any:
        pods = core.list_namespaced_pod("default", label_selector="app=broken").items
        waiting = [
            s.state.waiting.reason
            for p in pods
            for s in p.status.container_statuses or []
            if s.state and s.state.waiting
        ]
        return pods if waiting == ["ImagePullBackOff"] else None

    (pod,) = wait_for("the pod of Deployment broken in ImagePullBackOff", backoff)
    assert pod.status.phase == "Pending" and pod.spec.node_name
    dep = apps.read_namespaced_deployment("broken", "default")
    assert not dep.status.ready_replicas
    # Still in backoff a moment later: the default pod-ready stage did not take over.
    time.sleep(2)
    (pod,) = core.list_namespaced_pod("default", label_selector="app=broken").items
    assert pod.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"


def test_stop_leaves_no_process_port_or_directory() -> None:
    """A cluster in a temporary state directory: after stop() no process of any of its
    sessions is alive, no port of it accepts connections and the directory is gone."""
    kc = kube.KubeCluster(nodes=1)
    state_dir = kc.state_dir
    try:
        kc.start()
        pids = kc.pids()
        ports = dict(kc.ports)
        assert set(pids) == set(kube.BINARIES)
        assert all(kube.port_open(p) for p in ports.values())
    finally:
        kc.stop()
    for name, pid in pids.items():
        assert not procs.alive(pid), f"{name} (pid {pid}) survived stop()"
        assert procs.session_pids(pid) == [], f"processes of {name}'s session survived stop()"
    for name, port in ports.items():
        assert not kube.port_open(port), f"port {port} ({name}) still open after stop()"
    assert not state_dir.exists()
