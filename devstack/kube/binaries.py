"""Where the control plane's binaries are: built from the Go modules pinned here by build.sh."""

from __future__ import annotations

import os
import re
from pathlib import Path

from devstack.cache import cache_dir
from devstack.kube.api import KubeError

KUBE_SRC = Path(__file__).resolve().parent
# Every binary build.sh puts into the bin directory; kwok.d/ holds kwok's manifests.
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "metrics-server")
# What build.sh copies from the modules beside them: kwok's CRDs, stages and metrics, metrics-server's objects.
MANIFESTS = ("kwok.d/stage-crd.yaml", "kwok.d/metrics/metrics-resource.yaml", "metrics-server.d/rbac.yaml")


def kube_version() -> str:
    """The k8s.io/kubernetes version pinned in devstack/kube/go.mod (e.g. ``v1.36.3``)."""
    text = (KUBE_SRC / "go.mod").read_text()
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise KubeError(f"no k8s.io/kubernetes requirement in {KUBE_SRC / 'go.mod'}")
    return match.group(1)


def default_bin_dir() -> Path:
    """Where build.sh puts the binaries: $BANK_KUBE_BIN_DIR, else
    ``${BANK_CACHE_DIR:-~/.cache/bank-ml}/kube/<k8s version>/bin``."""
    if os.environ.get("BANK_KUBE_BIN_DIR"):
        return Path(os.environ["BANK_KUBE_BIN_DIR"])
    return cache_dir() / "kube" / kube_version() / "bin"


def missing_binaries(bin_dir: Path | None = None) -> list[str]:
    """The binaries (and kwok manifests) not in ``bin_dir``; empty when all were built."""
    bin_dir = bin_dir or default_bin_dir()
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    return missing + [m for m in MANIFESTS if not (bin_dir / m).is_file()]
