"""devstack.kube.metrics without a cluster: how metrics-server's own objects are pointed at the process on
this host, the flags that join kwok and metrics-server, and CPU quantities as the metrics API writes them."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from devstack.kube import components, metrics

pytestmark = pytest.mark.unit

# The shapes of metrics-server's manifests/base files (v0.8.0), trimmed to what the rewrite touches.
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec:
  ports: [{name: https, port: 443, protocol: TCP, targetPort: https}]
  selector: {k8s-app: metrics-server}
"""
APISERVICE = """\
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  service: {name: metrics-server, namespace: kube-system}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
"""
RBAC = """\
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: metrics-server, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:metrics-server}
rules: [{apiGroups: [""], resources: [nodes/metrics], verbs: [get]}]
"""


def test_the_service_becomes_an_external_name_and_the_apiservice_is_verified_at_the_port(tmp_path: Path) -> None:
    for name, text in {"rbac.yaml": RBAC, "service.yaml": SERVICE, "apiservice.yaml": APISERVICE}.items():
        (tmp_path / name).write_text(text)
    objects = metrics.metrics_server_objects(tmp_path, 41234, b"-----BEGIN CERTIFICATE-----\n")
    assert [o["kind"] for o in objects] == ["ServiceAccount", "ClusterRole", "Service", "APIService"]
    service, apiservice = objects[2], objects[3]
    assert service["spec"] == {"type": "ExternalName", "externalName": "localhost"}  # no ports, no selector
    assert apiservice["spec"]["service"] == {"name": "metrics-server", "namespace": "kube-system", "port": 41234}
    assert "insecureSkipTLSVerify" not in apiservice["spec"]
    assert base64.b64decode(apiservice["spec"]["caBundle"]) == b"-----BEGIN CERTIFICATE-----\n"


def test_kwok_serves_the_simulated_kubelets_where_the_nodes_say_and_metrics_server_asks_there(tmp_path: Path) -> None:
    plain = components.kwok_argv(tmp_path, tmp_path / "pki", "10.244.7.0/24")
    assert "--enable-crds=Stage" in plain and not any(a.startswith("--server-address") for a in plain)
    argv = components.kwok_argv(tmp_path, tmp_path / "pki", "10.244.7.0/24", metrics_port=41000)
    assert "--enable-crds=Stage,Metric,ClusterResourceUsage" in argv and "--enable-crds=Stage" not in argv
    assert {"--server-address=127.0.0.1:41000", "--node-port=41000"} <= set(argv)
    node = components.kwok_node("kwok-node-3")
    assert (
        node["metadata"]["annotations"][metrics.RESOURCE_METRICS_PATH] == "/metrics/nodes/kwok-node-3/metrics/resource"
    )
    server = metrics.metrics_server_argv(tmp_path, tmp_path / "pki", tmp_path / "ms.kubeconfig", 42000)
    assert "--kubelet-use-node-status-port" in server and "--kubelet-insecure-tls" not in server
    assert f"--kubelet-certificate-authority={tmp_path / 'pki' / 'ca.crt'}" in server


@pytest.mark.parametrize(
    ("quantity", "millicores"),
    [("250m", 250.0), ("1", 1000.0), ("2.5", 2500.0), ("12345678n", 12.345678), ("3u", 0.003), ("0", 0.0)],
)
def test_cpu_quantities_in_millicores(quantity: str, millicores: float) -> None:
    assert metrics.cpu_millicores(quantity) == pytest.approx(millicores)


@pytest.mark.parametrize("quantity", ["", "m", "1Gi", "-5m", "1e3", "250 m"])
def test_a_cpu_quantity_the_metrics_api_never_writes_is_refused(quantity: str) -> None:
    with pytest.raises(ValueError, match="not a CPU quantity"):
        metrics.cpu_millicores(quantity)
