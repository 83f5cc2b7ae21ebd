"""``python -m devstack up|down|status|serve [--port P] [--registry-port R] [--state-dir DIR]``.

- up: start the server detached (log: <state-dir>/devstack.log), wait until it
  answers, print endpoints and shell exports; idempotent.
- down: stop it and every process it started; idempotent.
- status: exit 0 if running, 1 if not, 3 if the state file is stale.
- serve: run in the foreground (compose, debugging); SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import devstack
from devstack import procs

SERVICES = ("S3", "EMR", "ECR", "Lambda", "IAM", "STS", "CloudFormation")


def _print_endpoints(state: dict[str, Any]) -> None:
    url = state["endpoint_url"]
    print(f"devstack running (pid {state['pid']}), log: {state.get('log')}")
    for service in SERVICES:
        print(f"  {service:<7}{url}")
    registry = state.get("registry_url")
    if registry:
        print(f"  Images (registry API) http://{registry}  image refs: {registry}/REPO@sha256:...")
    print("IAM is " + ("enforced; the shell exports are devstack's admin key" if state.get("iam", True) else "off"))
    print("Shell:")
    for key, value in devstack.client_env(url, devstack.admin_credentials(state)).items():
        print(f"  export {key}={value}")
    if registry:
        print(f"  export BANK_REGISTRY={registry}")


def _live_state(state_dir: Path) -> dict[str, Any] | None:
    state = devstack.read_state(state_dir)
    if state and devstack.is_devstack_server(int(state["pid"])) and devstack.healthy(state["endpoint_url"]):
        return state
    return None


def up(port: int, state_dir: Path, registry_port: int = 0) -> int:
    state = _live_state(state_dir)
    if state is None:
        stale = devstack.read_state(state_dir)
        if stale and devstack.is_devstack_server(int(stale["pid"])):
            print(f"devstack: pid {stale['pid']} is not answering; run `down` first", file=sys.stderr)
            return 1
        devstack.remove_state(state_dir)
        try:
            _proc, state = devstack.start_server(state_dir, port, registry_port)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    _print_endpoints(state)
    return 0


def down(state_dir: Path) -> int:
    state = devstack.read_state(state_dir)
    if state is None:
        print("devstack: not running")
        return 0
    pid = int(state["pid"])
    if not devstack.is_devstack_server(pid):
        print(f"devstack: not running (removed stale state of pid {pid})")
        # The server died without cleaning up: its steps, registry and Lambda
        # runs may remain in its session. The pid may have been reused, so only
        # kill processes working in this devstack's directories.
        for sub in ("work", "registry"):
            procs.kill_session(pid, only_under=state_dir / sub)
        _remove_lambda_containers(state_dir)
        devstack.remove_state(state_dir)
        return 0
    left = devstack.stop_server(pid)
    devstack.remove_state(state_dir)
    if left:
        print(f"devstack: processes {left} survived SIGKILL", file=sys.stderr)
        return 1
    print(f"devstack: stopped (pid {pid})")
    return 0


def _remove_lambda_containers(state_dir: Path) -> None:
    """The Lambda containers a crashed server of ``state_dir`` left (none if podman is not installed)."""
    from devstack.containers import lambda_containers

    lambda_containers.remove_leftovers(lambda_containers.label_for(state_dir))


def status(state_dir: Path) -> int:
    state = devstack.read_state(state_dir)
    if state is None:
        print("devstack: not running")
        return 1
    if _live_state(state_dir) is None:
        print(f"devstack: stale state file {state_dir / devstack.STATE_FILE} (pid {state['pid']} not answering)")
        return 3
    print(f"devstack: running (pid {state['pid']}) at {state['endpoint_url']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status", "serve"))
    parser.add_argument("--port", type=int, default=devstack.DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--registry-port", type=int, default=0, help="the image registry's port (0: a free one)")
    parser.add_argument("--state-dir", type=Path, default=devstack.DEFAULT_STATE_DIR)
    parser.add_argument("--host", default="127.0.0.1", help="serve: address to bind (0.0.0.0 in compose)")
    parser.add_argument("--public-host", default="127.0.0.1", help="serve: the registry's name in image references")
    parser.add_argument(
        "--no-iam", action="store_true", help="serve: do not enforce IAM (any credentials may do anything)"
    )
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.command == "up":
        return up(args.port, state_dir, args.registry_port)
    if args.command == "down":
        return down(state_dir)
    if args.command == "status":
        return status(state_dir)
    from devstack.aws.server import serve

    return serve(
        args.port, state_dir, args.registry_port, host=args.host, public_host=args.public_host, iam=not args.no_iam
    )


if __name__ == "__main__":
    sys.exit(main())
