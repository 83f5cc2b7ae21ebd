"""The machine's cache of what is slow to build: S3A jars, container images and their store, the
Kubernetes binaries. It outlives checkouts and worktrees, so only a machine's first run pays.

``${BANK_CACHE_DIR:-$HOME/.cache/bank-ml}``; devstack/kube/build.sh spells the same default in shell.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$BANK_CACHE_DIR``, else ``~/.cache/bank-ml`` (not created here)."""
    return Path(os.environ.get("BANK_CACHE_DIR") or Path.home() / ".cache" / "bank-ml")
