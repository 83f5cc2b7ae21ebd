"""The local control plane (devstack.kube): a real kube-apiserver, controller manager,
scheduler and etcd built from Go modules, with kwok's fake Nodes, runs a Deployment.

The session's cluster (``kube_cluster``, tests/conftest.py) for what a cluster does; clusters
of their own for starting and stopping. The binaries come from ``make kube``; without them the
tests fail saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from devstack import kube, procs
from devstack.kube import metrics
from tests.support.release_ns import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BAD_IMAGE = "registry.invalid/bank-model:does-not-exist"


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


NS = "devstack-kube-tests"  # this module's namespace in the session's cluster


@pytest.fixture(scope="module")
def cluster(kube_cluster: kube.KubeCluster) -> kube.KubeCluster:
    kube_cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return kube_cluster


@pytest.fixture(scope="module")
def k8s(cluster: kube.KubeCluster) -> Any:
    """The kubernetes Python client, configured only by the cluster's kubeconfig file."""
    from kubernetes import config

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


def test_deployment_becomes_available(cluster: kube.KubeCluster, k8s: Any) -> None:
    """The deployment controller makes a ReplicaSet and pods, the scheduler binds them to
    kwok's nodes, kwok marks them Running and Ready: the Deployment is Available."""
    from kubernetes import client

    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    apps.create_namespaced_deployment(NS, deployment("web", "registry.invalid/bank-model:1"))

    def available() -> Any:
        dep = apps.read_namespaced_deployment("web", NS)
        conditions = {c.type: c.status for c in dep.status.conditions or []}
        return dep if dep.status.ready_replicas == 2 and conditions.get("Available") == "True" else None

    dep = wait_for("Deployment web Available with 2 ready replicas", available)
    assert dep.status.updated_replicas == 2 and dep.status.observed_generation == dep.metadata.generation
    pods = core.list_namespaced_pod(NS, label_selector="app=web").items
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
    apps.create_namespaced_deployment(NS, deployment("broken", BAD_IMAGE, replicas=1))

    def backoff() -> Any:
        pods = core.list_namespaced_pod(NS, label_selector="app=broken").items
        waiting = [
            s.state.waiting.reason
            for p in pods
            for s in p.status.container_statuses or []
            if s.state and s.state.waiting
        ]
        return pods if waiting == ["ImagePullBackOff"] else None

    (pod,) = wait_for("the pod of Deployment broken in ImagePullBackOff", backoff)
    assert pod.status.phase == "Pending" and pod.spec.node_name
    dep = apps.read_namespaced_deployment("broken", NS)
    assert not dep.status.ready_replicas
    # And it stays there: kwok's default pod-ready stage (weight 0) never takes over.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        (pod,) = core.list_namespaced_pod(NS, label_selector="app=broken").items
        assert pod.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
        assert pod.status.phase == "Pending"


def test_stop_leaves_no_process_port_or_directory() -> None:
    """A cluster in a temporary state directory: after stop() no process of any of its
    sessions is alive, no port of it accepts connections and the directory is gone."""
    kc = kube.KubeCluster(nodes=1, metrics=True)
    state_dir = kc.state_dir
    assert not state_dir.exists()  # made by start(), not by the constructor
    try:
        kc.start()
        assert state_dir.is_dir()
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


def test_cli_up_status_down(tmp_path: Path) -> None:
    """``up`` leaves the cluster running after the CLI exits and says where it listens;
    ``down`` (another process) stops every component it recorded."""
    state_dir = tmp_path / "kube"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devstack.kube", *args, "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=kube.REPO_ROOT,
        )

    up = cli("up", "--nodes", "1")
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((state_dir / "cluster.json").read_text())
        assert f"listening on {state['server']}" in up.stdout
        assert f"KUBECONFIG={state_dir / 'kubeconfig'}" in up.stdout
        assert f"Deployments (read-only view): {state['view_url']}/" in up.stdout
        status = cli("status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("running") == len(kube.BINARIES) + 1  # and the view
        check_the_view(kube.KubeCluster.attach(state_dir))
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    for name, info in state["processes"].items():
        assert not procs.alive(info["pid"]), f"{name} survived down"
    assert not any(kube.port_open(p) for p in state["ports"].values())
    assert cli("status").returncode == 1


def get(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def check_the_view(cluster: kube.KubeCluster) -> None:
    """The read-only view of a cluster: a page per Deployment, its JSON, 404 and 405 where due."""
    cluster.create(
        "/apis/apps/v1/namespaces/default/deployments", deployment("web", "registry.invalid/web:1", replicas=1)
    )
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    wait_for("Deployment web ready", lambda: (cluster.get(path).get("status") or {}).get("readyReplicas") == 1)
    code, index = get(cluster.view_url + "/")
    assert code == 200 and "href='/deployments/default/web'" in index and "registry.invalid/web:1" in index
    code, page = get(cluster.view_url + "/deployments/default/web")
    assert code == 200 and "<h1>Deployment default/web</h1>" in page
    assert "kwok-node-0" in page and "MinimumReplicasAvailable" in page  # its pod and its conditions
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 3,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]},
    }  # fmt: skip
    cluster.create("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers", hpa)
    code, page = get(cluster.view_url + "/deployments/default/web")
    assert code == 200 and "<h2>Autoscaling</h2>" in page and "<td>web</td><td>1-3</td>" in page and "cpu 60 %" in page
    code, raw = get(cluster.view_url + "/deployments/default/web?format=json")
    assert code == 200 and json.loads(raw)["metadata"]["uid"] == cluster.get(path)["metadata"]["uid"]
    code, page = get(cluster.view_url + "/deployments/default/nothing-here")
    assert code == 404 and "There is no Deployment default/nothing-here (yet)." in page
    assert get(cluster.view_url + "/deployments/default/web", method="DELETE")[0] == 405
    assert get(cluster.view_url + "/deployments/default/web", method="POST")[0] == 405
    assert cluster.get(path)["metadata"].get("deletionTimestamp") is None
    assert get(cluster.view_url + "/deployments/Bad_Name/x")[0] == 404


def test_attach_needs_a_running_cluster(tmp_path: Path) -> None:
    with pytest.raises(kube.KubeError, match=f"no running cluster recorded in {tmp_path}"):
        kube.KubeCluster.attach(tmp_path)


def test_a_component_that_dies_fails_start_at_once_with_its_log(tmp_path: Path) -> None:
    """etcd cannot use a data directory that is a file: start() reports that etcd exited,
    with the end of its log, well before the start timeout, and nothing keeps running."""
    (tmp_path / "etcd").write_text("not a directory")
    kc = kube.KubeCluster(tmp_path, nodes=1)
    t0 = time.monotonic()
    with pytest.raises(kube.KubeError, match=r"etcd exited with \d+ while waiting for etcd /health") as err:
        kc.start()
    assert time.monotonic() - t0 < 30
    assert "etcd" in str(err.value).split("\n", 1)[1]  # the log tail follows
    assert kc.pids() == {}
    assert kube.read_state(tmp_path) is None


def test_a_token_kubeconfig_has_exactly_its_service_accounts_rights(cluster: kube.KubeCluster) -> None:
    """release_identity: the package's RBAC applied, and a kubeconfig that authenticates as its ServiceAccount."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    namespace = "devstack-kube-identity"
    kubeconfig = cluster.release_identity(namespace, seconds=600)
    api = config.new_client_from_config_dict(kubeconfig)
    review = client.AuthenticationV1Api(api).create_self_subject_review({"apiVersion": "authentication.k8s.io/v1",
                                                                          "kind": "SelfSubjectReview"})  # fmt: skip
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:{kube.RELEASE_IDENTITY}"
    assert kubeconfig["contexts"][0]["context"]["namespace"] == namespace
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).list_namespaced_secret(namespace)
    assert refused.value.status == 403
    assert cluster.release_identity(namespace)["clusters"] == kubeconfig["clusters"]  # applying again is fine
    connection = json.loads(kube.airflow_connection(kubeconfig, namespace))
    assert connection == {"conn_type": "kubernetes", "extra": {"kube_config": kubeconfig, "namespace": namespace}}


def test_apply_and_identity_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    kc = kube.KubeCluster(tmp_path)  # not started: the refusals come first
    with pytest.raises(kube.KubeError, match=r"apply: kind 'Secret' of 'creds' is not one of Namespace, "):
        kc.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}}, "ns")
    with pytest.raises(kube.KubeError, match=r"apply: Role reader needs a namespace"):
        kc.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"}})
    with pytest.raises(kube.KubeError, match=rf"no RBAC manifests in {tmp_path}"):
        kube.release_rbac(tmp_path)


def test_an_identity_needs_exactly_one_service_account(cluster: kube.KubeCluster) -> None:
    without = [m for m in kube.release_rbac() if m["kind"] != "ServiceAccount"]
    with pytest.raises(kube.KubeError, match=r"exactly one ServiceAccount, found \[\]"):
        cluster.release_identity("devstack-kube-no-identity", without)


@pytest.mark.parametrize(
    "command",
    [["devstack.harness.demo"], ["devstack.harness.stack", "up", "--devstack-port", "0"]],
    ids=["demo", "stack"],
)
def test_demo_and_stack_say_make_kube_before_starting_anything(tmp_path: Path, command: list[str]) -> None:
    """Without the binaries, `make demo` and `make up` stop at once (not after a minute of other work)."""
    extra = ["--state-dir", str(tmp_path / "stack")] if command[0] == "devstack.harness.stack" else []
    env = {**os.environ, "BANK_KUBE_BIN_DIR": str(tmp_path / "no-binaries")}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", *command, *extra], cwd=kube.REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "the local Kubernetes is not built (missing etcd, kube-apiserver," in run.stderr
    assert "run `make kube`" in run.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "stack" / "devstack").exists()


def test_the_hpa_scales_on_the_simulated_cpu_that_metrics_server_reads_from_kwok(cluster: kube.KubeCluster) -> None:
    """metrics-server scrapes kwok's simulated kubelets; a pod's usage is its kwok.x-k8s.io/usage-cpu
    annotation. Raised above the HPA's target, the Deployment scales up to the HPA's maximum; lowered, it
    scales back down (no stabilization window in this HPA's behaviour), each step a SuccessfulRescale event."""
    app = deployment("busy", "registry.invalid/busy:1", replicas=1)
    template = app["spec"]["template"]
    template["metadata"]["annotations"] = {metrics.USAGE_CPU: "20m"}
    template["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    cluster.create(f"/apis/apps/v1/namespaces/{NS}/deployments", app)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "busy"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
        },
    }  # fmt: skip
    hpas = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
    cluster.create(hpas, hpa)
    pods = f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dbusy"

    def usage() -> dict[str, float]:
        """CPU by pod as the metrics API has it; {} before metrics-server has two scrapes of the pod."""
        status, found = cluster.request(
            "GET", f"/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods?labelSelector=app%3Dbusy"
        )
        assert status in (200, 404), found
        items = found.get("items", []) if status == 200 else []
        return {m["metadata"]["name"]: metrics.cpu_millicores(m["containers"][0]["usage"]["cpu"]) for m in items}

    def annotate(cpu: str) -> None:
        for pod in cluster.get(pods)["items"]:
            patch = json.dumps({"metadata": {"annotations": {metrics.USAGE_CPU: cpu}}})
            path = f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}"
            assert cluster.request("PATCH", path, patch, content_type="application/merge-patch+json")[0] == 200

    def replicas() -> int:
        return int(cluster.get(f"/apis/apps/v1/namespaces/{NS}/deployments/busy")["spec"]["replicas"])

    try:
        # The metrics API has the pod at what its annotation says (the rate of kwok's cumulative counter).
        wait_for("the pod's CPU in the metrics API", lambda: [round(v) for v in usage().values()] == [20], 90)
        annotate("200m")  # 200 % of the request: desired = ceil(1 * 200 / 50) = 4, capped at 3
        wait_for("scaled up to the HPA's maximum", lambda: replicas() == 3, 120)
        status = cluster.get(f"{hpas}/busy")["status"]
        assert status["desiredReplicas"] == 3
        annotate("20m")  # the new pods have 20m from their template already
        wait_for("scaled back down to 1", lambda: replicas() == 1, 180)
        events = cluster.get(f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name%3Dbusy")["items"]
        rescales = [e["message"] for e in events if e.get("reason") == "SuccessfulRescale"]
        assert any(m.startswith("New size: 3; reason: cpu resource utilization") for m in rescales), rescales
        assert any(m.startswith("New size: 1; reason: All metrics below target") for m in rescales), rescales
    finally:
        cluster.request("DELETE", f"{hpas}/busy")
        cluster.request("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/busy")
