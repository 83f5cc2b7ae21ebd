"""cluster.json: what a started control plane records (server, ports, each process and its binary),
so that another process can attach to it, tell whether it still runs, and stop it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import devstack
from devstack import procs

STATE_FILE = "cluster.json"
STOP_GRACE = 10.0  # the API server drains requests on SIGTERM; etcd closes cleanly
# Stopping order: the clients of the API server first, etcd last.
STOP_ORDER = ("view", "metrics-server", "kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def is_ours(pid: int, binary: str) -> bool:
    """The pid is alive and still runs ``binary`` (not a reused pid)."""
    cmd = procs.cmdline(pid)
    return procs.alive(pid) and bool(cmd) and cmd[0] == binary


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """cluster.json of a state directory, or None."""
    return devstack.read_state(Path(state_dir), STATE_FILE)


def running(state_dir: Path) -> dict[str, Any] | None:
    """cluster.json of a state directory if every process it records still runs, else None."""
    state = read_state(state_dir)
    if not state or not state.get("processes"):
        return None
    if all(is_ours(info["pid"], info["binary"]) for info in state["processes"].values()):
        return state
    return None


def stop_recorded(state_dir: Path) -> list[str]:
    """Stop the processes recorded in ``state_dir``/cluster.json that still run their
    binary (clients first, etcd last); return the names of those it stopped."""
    state = read_state(state_dir)
    if not state:
        return []
    stopped = []
    for name in STOP_ORDER:
        info = state.get("processes", {}).get(name)
        if info and is_ours(info["pid"], info["binary"]):
            procs.terminate_group(info["pid"], grace=STOP_GRACE)
            stopped.append(name)
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    return stopped
