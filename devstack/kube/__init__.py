"""A real local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok and (``metrics=True``) metrics-server, all built from Go modules by
``devstack/kube/build.sh``.

kwok (``sigs.k8s.io/kwok``) plays the kubelets: it keeps the fake Nodes this package
creates Ready (with node leases) and moves pods scheduled onto them through the stages
of their lifecycle (Pending -> Running + Ready, completion, deletion). Stages are
``Stage`` objects in the API (kwok runs with ``--enable-crds=Stage``): the default ones
that kwokctl also uses are created at start from the files the build copied next to the
binaries, and a test can add its own at any time with ``KubeCluster.add_stage`` (a
``weight`` above 0 beats the default stages, whose weight is 0).

Everything listens on 127.0.0.1 only, on free ports picked at start. Every process
runs in its own session and process group; ``stop()`` SIGTERMs each group, SIGKILLs
what is left after a grace period and leaves no process behind. The state directory
holds the PKI (a CA, serving and client certificates, the service-account key pair,
made once), etcd's data (kept across restarts unless ``reset=True``), one log per
process, ``kubeconfig`` (admin, certificates embedded) and ``cluster.json``.

    with KubeCluster(Path("build/kube")) as kc:
        kc.kubeconfig, kc.server, kc.version["gitVersion"]

CLI: ``python -m devstack.kube up|down|status [--state-dir DIR]``.

Faithful: the real API server (validation, RBAC, admission, watch, server-side apply),
the real deployment/replicaset/garbage-collector/... controllers and scheduler.
Not faithful: no kubelet, container runtime, network or DNS: pods run nothing (unless
``pods.PodRunner`` runs them) and their status is what kwok's stages write; their resource
usage is what their annotations say (``metrics``). No cloud controller, no CSI, no kube-proxy.

The rooms: ``cluster`` (KubeCluster: the processes), ``components`` (how each is run),
``api`` (requests as admin, apply, tokens, Stages, the release's RBAC), ``pki``,
``state`` (cluster.json), ``binaries`` (where build.sh puts them), ``metrics``
(metrics-server and kwok's resource usage), ``view`` (the read-only Deployment page),
``pods`` and ``service_client`` (pods that serve, and a client of their Service),
``__main__`` (the CLI).
"""

from __future__ import annotations

from devstack.kube.api import (
    FIELD_MANAGER,
    RELEASE_IDENTITY,
    RELEASE_RBAC_DIR,
    KubeApi,
    KubeError,
    airflow_connection,
    image_pull_backoff_stage,
    release_rbac,
)
from devstack.kube.binaries import BINARIES, KUBE_SRC, default_bin_dir, kube_version, missing_binaries
from devstack.kube.cluster import (
    DEFAULT_STATE_DIR,
    REPO_ROOT,
    START_TIMEOUT,
    KubeCluster,
    port_open,
    start_in_background,
)
from devstack.kube.components import NODE_ANNOTATION, POD_CIDR, SERVICE_CIDR
from devstack.kube.state import STATE_FILE, read_state, running, stop_recorded

__all__ = [
    "BINARIES",
    "DEFAULT_STATE_DIR",
    "FIELD_MANAGER",
    "KUBE_SRC",
    "NODE_ANNOTATION",
    "POD_CIDR",
    "RELEASE_IDENTITY",
    "RELEASE_RBAC_DIR",
    "REPO_ROOT",
    "SERVICE_CIDR",
    "START_TIMEOUT",
    "STATE_FILE",
    "KubeApi",
    "KubeCluster",
    "KubeError",
    "airflow_connection",
    "default_bin_dir",
    "image_pull_backoff_stage",
    "kube_version",
    "missing_binaries",
    "port_open",
    "read_state",
    "release_rbac",
    "running",
    "start_in_background",
    "stop_recorded",
]
