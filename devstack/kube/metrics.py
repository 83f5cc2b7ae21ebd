"""Resource metrics for the local control plane (``KubeCluster(metrics=True)``): metrics-server
reading kwok's simulated kubelets, so that the metrics API (``kubectl top``) answers and the
HorizontalPodAutoscaler scales. Wired as kwokctl's binary runtime wires it:

- kwok plays each Node's kubelet ``/metrics/resource`` at ``/metrics/nodes/<node>/metrics/resource``
  on its HTTPS server, whose port the Nodes report as their kubelet's (``--node-port``), from its
  Metric ``metrics-resource``. Each pod's usage comes from the ClusterResourceUsage
  ``usage-from-annotation``: the pod's ``kwok.x-k8s.io/usage-cpu`` and ``-memory`` annotations
  (1m and 1Mi without them). For the pods it runs, devstack.kube.pods writes those from what the
  container really uses; a test may write them by hand. Both objects are kwok's own files.
- each Node carries metrics-server's ``metrics.k8s.io/resource-metrics-path`` annotation, naming
  that path, so metrics-server asks kwok for the right node;
- metrics-server runs on this host with its upstream RBAC, as its ServiceAccount (a TokenRequest
  token), serving a certificate that names its Service; the Service is an ExternalName of
  ``localhost`` (the API server's aggregator dials ExternalName services directly) and the
  APIService gives metrics-server's port and the cluster CA. The API server proxies to it with
  the front-proxy client certificate, which metrics-server checks against the requestheader CA.

Not faithful: the Service has no pods behind it (nothing in a cluster reaches metrics-server, only
the API server does); usage is what the annotations say, sampled by whoever writes them.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import yaml

from devstack.kube.api import KubeApi, condition

USAGE_CPU = "kwok.x-k8s.io/usage-cpu"  # read by kwok's usage-from-annotation
USAGE_MEMORY = "kwok.x-k8s.io/usage-memory"
RESOURCE_METRICS_PATH = "metrics.k8s.io/resource-metrics-path"  # metrics-server's per-Node path
KWOK_CRDS = ("metrics", "clusterresourceusages")  # kwok.d/metrics/<name>-crd.yaml
KWOK_OBJECTS = {"metrics-resource.yaml": "metrics", "usage-from-annotation.yaml": "clusterresourceusages"}
APISERVICE = "v1beta1.metrics.k8s.io"
RESOLUTION = "10s"  # metrics-server's shortest --metric-resolution (its default is 60s, kwokctl's 15s)


def node_annotations(node: str) -> dict[str, str]:
    """What a Node needs for metrics-server to scrape kwok's simulated kubelet for it."""
    return {RESOURCE_METRICS_PATH: f"/metrics/nodes/{node}/metrics/resource"}


def kwok_flags(pki: Path, port: int) -> list[str]:
    """kwok's HTTPS server (the simulated kubelets' port) and the CRDs its resource metrics need."""
    return [
        f"--server-address=127.0.0.1:{port}",
        f"--node-port={port}",
        f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}",
        "--enable-crds=Stage,Metric,ClusterResourceUsage",
    ]


def metrics_server_argv(bin_dir: Path, pki: Path, kubeconfig: Path, port: int) -> list[str]:
    """metrics-server as this host runs it: the cluster CA checks kwok's certificate (no --kubelet-insecure-tls)."""
    return [
        str(bin_dir / "metrics-server"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki / 'metrics-server.crt'}",
        f"--tls-private-key-file={pki / 'metrics-server.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--metric-resolution={RESOLUTION}",
        "--kubelet-request-timeout=5s",  # under 9/10 of the resolution, as metrics-server requires
    ]


def metrics_server_objects(ms_d: Path, port: int, ca: bytes) -> list[dict[str, Any]]:
    """metrics-server's RBAC, Service and APIService from its module, the Service an ExternalName of
    localhost and the APIService at ``port``, verified with the cluster CA ``ca`` (PEM)."""
    objects: list[dict[str, Any]] = []
    for file in ("rbac.yaml", "service.yaml", "apiservice.yaml"):
        objects += [doc for doc in yaml.safe_load_all((ms_d / file).read_text()) if doc]
    for obj in objects:
        if obj["kind"] == "Service":
            obj["spec"] = {"type": "ExternalName", "externalName": "localhost"}
        elif obj["kind"] == "APIService":
            spec = obj["spec"]
            spec.pop("insecureSkipTLSVerify", None)
            spec["service"]["port"] = port
            spec["caBundle"] = base64.b64encode(ca).decode()
    return objects


_PATHS = {
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Service": "/api/v1/namespaces/{ns}/services",
    "APIService": "/apis/apiregistration.k8s.io/v1/apiservices",
}


def install_metrics_server(api: KubeApi, ms_d: Path, port: int) -> None:
    """Create metrics-server's API objects (metrics_server_objects); those there already stay."""
    for obj in metrics_server_objects(ms_d, port, (api.pki / "ca.crt").read_bytes()):
        namespace = obj["metadata"].get("namespace", "")
        api.create(_PATHS[obj["kind"]].format(ns=namespace), obj, exist_ok=True)


def available(api: KubeApi) -> bool:
    """The API server reaches metrics-server: its APIService is Available."""
    return condition(api.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}"), "Available")


def cpu_millicores(quantity: str) -> float:
    """A CPU quantity as the metrics API writes it (``250m``, ``1``, ``12345n``, ``3u``) in millicores."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([numk]?)", quantity)
    if not match:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    scale = {"n": 1e-6, "u": 1e-3, "m": 1.0, "": 1e3, "k": 1e6}[match.group(2)]
    return float(match.group(1)) * scale
