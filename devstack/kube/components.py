"""The control plane's processes as they are started: each component's command line, and the
fake Nodes kwok keeps Ready. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import random
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.kube.api import KubeError
from devstack.kube.metrics import kwok_flags as kwok_metrics_flags
from devstack.kube.metrics import node_annotations

SERVICE_CIDR = "10.96.0.0/16"  # never routed: there is no kube-proxy; only API objects
POD_CIDR = "10.244.0.0/16"  # kwok hands pod IPs out of this (each cluster a /24 of it: pod_cidr)
NODE_ANNOTATION = "kwok.x-k8s.io/node"
# The controllers that Deployments, Jobs, Services, HPAs, PDBs, namespaces and RBAC's
# aggregated roles (admin, edit, view) need, and the node lifecycle controller, which
# lifts the not-ready taint (put on every new Node by the TaintNodesByCondition
# admission plugin) once kwok reports the Node Ready. Names as in 1.36's --help.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "disruption-controller",
    "horizontal-pod-autoscaler-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "service-cidr-controller",
    "node-lifecycle-controller",
    "pod-garbage-collector-controller",
    "resourcequota-controller",
)


def etcd_version(etcd: Path) -> tuple[int, int]:
    out = subprocess.run([str(etcd), "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"etcd Version: (\d+)\.(\d+)", out)
    if not match:
        raise KubeError(f"cannot tell the version of {etcd}: {out!r}")
    return int(match.group(1)), int(match.group(2))


def etcd_argv(etcd: Path, state_dir: Path, ports: Mapping[str, int]) -> list[str]:
    client = f"http://127.0.0.1:{ports['etcd']}"
    peer = f"http://127.0.0.1:{ports['etcd-peer']}"
    argv = [
        str(etcd),
        "--name=devstack",
        f"--data-dir={state_dir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devstack={peer}",
        "--log-level=warn",
    ]
    if etcd_version(etcd) < (3, 5):
        argv.append("--logger=zap")  # 3.4 defaults to the deprecated capnslog
    else:
        # A throwaway local store: skip fsync (etcd's own flag for tests and dev).
        argv.append("--unsafe-no-fsync")
    return argv


def apiserver_argv(bin_dir: Path, state_dir: Path, pki: Path, ports: Mapping[str, int]) -> list[str]:
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports['apiserver']}",
        "--advertise-address=127.0.0.1",
        # The endpoints of Service `kubernetes` would be 127.0.0.1, which Endpoints
        # validation refuses: no reconciler (nothing in-cluster dials it here).
        "--endpoint-reconciler-type=none",
        f"--cert-dir={state_dir / 'apiserver'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        # Published in kube-system/extension-apiserver-authentication, which the
        # controller manager, scheduler and metrics-server read. The API server is the
        # front proxy: it calls aggregated APIs (metrics.k8s.io) with the proxy client
        # certificate (CN front-proxy-client), passing the user in the headers below.
        f"--requestheader-client-ca-file={pki / 'ca.crt'}",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--profiling=false",
    ]


def _component_flags(pki: Path, port: int, user: str) -> list[str]:
    kubeconfig = pki / f"{user}.kubeconfig"
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def controller_manager_argv(bin_dir: Path, pki: Path, ports: Mapping[str, int]) -> list[str]:
    return [
        str(bin_dir / "kube-controller-manager"),
        *_component_flags(pki, ports["controller-manager"], "kube-controller-manager"),
        f"--controllers={','.join(CONTROLLERS)}",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        # Lift the not-ready taint soon after kwok marks a new Node Ready.
        "--node-monitor-period=1s",
        # The HPA reconsiders every 5 s, not 15 s: a test sees a scale in seconds. Its behaviour
        # settings (windows, policies) are what bound how fast it scales, as on any cluster.
        "--horizontal-pod-autoscaler-sync-period=5s",
    ]


def scheduler_argv(bin_dir: Path, pki: Path, ports: Mapping[str, int]) -> list[str]:
    return [str(bin_dir / "kube-scheduler"), *_component_flags(pki, ports["scheduler"], "kube-scheduler")]


def pod_cidr() -> str:
    """A /24 of POD_CIDR for one cluster's pods: random, and none of whose addresses is on lo already.

    devstack.kube.pods puts running pods' IPs on lo, so two clusters at once (make test's workers, the
    demo beside a test) must not hand out the same ones.
    """
    taken = set()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, timeout=10
        )
        taken = {int(ip.split(".")[2]) for ip in re.findall(r"inet (10\.244\.\d+\.\d+)", out.stdout)}
    free = [n for n in range(1, 255) if n not in taken]
    return f"10.244.{random.choice(free)}.0/24"


def kwok_argv(bin_dir: Path, pki: Path, cidr: str = POD_CIDR, metrics_port: int | None = None) -> list[str]:
    """kwok's command line; with ``metrics_port``, its simulated kubelets serve resource metrics there."""
    argv = [
        str(bin_dir / "kwok"),
        f"--kubeconfig={pki / 'kwok.kubeconfig'}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
        "--enable-crds=Stage",
        f"--cidr={cidr}",
        "--node-ip=127.0.0.1",
        "--node-lease-duration-seconds=40",
    ]
    if metrics_port is None:
        return argv
    return [a for a in argv if not a.startswith("--enable-crds=")] + kwok_metrics_flags(pki, metrics_port)


def kwok_node(name: str) -> dict[str, Any]:
    """A Node that kwok manages (by its annotation) and keeps Ready; metrics-server, when there is one,
    asks kwok for its resource metrics at the path its last annotation names (devstack.kube.metrics)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                NODE_ANNOTATION: "fake",
                "node.alpha.kubernetes.io/ttl": "0",
                **node_annotations(name),
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {},
    }
