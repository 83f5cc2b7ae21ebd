"""``python -m devstack.kube up|down|status [--state-dir DIR]``: the control plane from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devstack import kube, procs
from devstack.kube.api import KubeError
from devstack.kube.cluster import DEFAULT_STATE_DIR, KubeCluster
from devstack.kube.state import is_ours, read_state, stop_recorded


def _status(state_dir: Path) -> int:
    state = read_state(state_dir)
    if not state:
        print(f"no cluster recorded in {state_dir}")
        return 1
    print(f"server      {state['server']}")
    print(f"kubeconfig  {state['kubeconfig']}")
    if state.get("view_url"):
        print(f"view        {state['view_url']}/")
    print(f"version     {state.get('version', '')}")
    alive = True
    for name, info in state["processes"].items():
        pid = info["pid"]
        ours = is_ours(pid, info["binary"])
        alive &= ours
        rss = procs.rss_bytes(pid) if ours else None
        mem = f"{rss / 2**20:7.1f} MiB" if rss else "      -"
        print(f"{name:24s} pid {pid:<8d} {'running' if ours else 'GONE   '} rss {mem}")
    print("ports       " + " ".join(f"{k}={v}" for k, v in state["ports"].items()))
    return 0 if alive else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.kube up|down|status [--state-dir DIR] [--nodes N]``."""
    parser = argparse.ArgumentParser(prog="python -m devstack.kube", description=kube.__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--nodes", type=int, default=2, help="fake kwok Nodes to create (up)")
    parser.add_argument("--etcd", type=Path, default=None, help="etcd binary to use instead of the built one")
    parser.add_argument("--reset", action="store_true", help="wipe etcd's data first (up)")
    parser.add_argument("--no-view", action="store_true", help="no read-only web view of the Deployments (up)")
    parser.add_argument("--no-metrics", action="store_true", help="no metrics-server: no metrics API, no HPA (up)")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "down":
        stopped = stop_recorded(state_dir)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        return 0
    if args.command == "status":
        return _status(state_dir)
    cluster = KubeCluster(
        state_dir, nodes=args.nodes, etcd_binary=args.etcd, reset=args.reset,
        view=not args.no_view, metrics=not args.no_metrics,
    )  # fmt: skip
    try:
        cluster.start()
    except KubeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # The components run in their own sessions and outlive this process; `down` stops them.
    print(f"kube-apiserver {cluster.version.get('gitVersion')} listening on {cluster.server}")
    print(f"ready in {cluster.timings['ready']:.1f} s; logs in {cluster.logs}")
    if cluster.view_url:
        print(f"Deployments (read-only view): {cluster.view_url}/")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
