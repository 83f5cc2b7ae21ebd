"""The local stack: devstack plus `airflow standalone` with the bundle's DAGs.

    python -m devstack.harness.stack up [--port 8080] [--devstack-port 4566] [--state-dir build/stack]
    python -m devstack.harness.stack down [--state-dir build/stack]
    python -m devstack.harness.stack status [--state-dir build/stack]

- up: start devstack (the `python -m devstack up` machinery, state under
  <state-dir>/devstack), deploy infra/bank-ml.cfn.yaml on it and make the Airflow
  workers' user (devstack.aws.infra), seed it (the raw CSV in the lake, the serving
  base image) while the local Kubernetes control plane starts
  (devstack.kube, state under <state-dir>/kube, with its read-only Deployment
  view), give the release's ServiceAccount (bank_pipeline/manifests/rbac) a token
  in namespace `bank` for the `kubernetes_default` connection, then start
  `airflow standalone` (SQLite, LocalExecutor, the simple auth manager with a
  known user) in its own session; wait until the API answers and both DAGs are
  parsed; print the UI address and the login. The UI's "Kubernetes Deployment"
  link opens the view's page of the Deployment.
  Idempotent: a running stack is reported, not started twice.
- down: SIGINT Airflow's process group (what Ctrl-C does with job control on;
  `standalone` then stops its components), wait until every process of its
  session is gone (task processes run in their own groups in that session),
  SIGKILL what is left after a deadline; then stop devstack and the control
  plane. Idempotent.
- status: exit 0 if Airflow, devstack and the control plane answer (a stack whose
  processes all run gets ANSWER_GRACE_S to answer), 1 if not
  running, 3 if stale.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import devstack
from devstack import __main__ as devstack_cli
from devstack import kube, procs
from devstack.aws.infra import Account, provision
from devstack.harness.airflow_env import REPO, airflow_env, seed_lake, seed_release, seed_wheelhouse
from devstack.procs import free_port

DEFAULT_STATE_DIR = REPO / "build" / "stack"
DEFAULT_PORT = 8080
STATE_FILE = "stack.json"
LOG_FILE = "airflow-standalone.log"
USER = "admin"
DEFAULT_PASSWORD = "admin"
DAG_IDS = ("bank_features_emr", "bank_model_release")
START_TIMEOUT = 240.0  # first start migrates the DB and parses the DAGs; slow on a loaded 2-core machine
STOP_TIMEOUT = 30.0  # half for SIGINT, half for SIGTERM, then SIGKILL (LocalExecutor workers may linger)
MARKER_VAR = "BANK_STACK_ID"  # in every Airflow process's environment: a second way to find them
KUBE_NAMESPACE = "bank"  # where the release rolls out (the kubernetes_default connection's namespace)
KUBE_TOKEN_SECONDS = 30 * 24 * 3600  # the connection's token outlives any stack; a new one at each `up`


# -- state --------------------------------------------------------------------


def read_state(state_dir: Path) -> dict[str, Any] | None:
    return devstack.read_state(state_dir, STATE_FILE)


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    devstack.write_state(state_dir, state, STATE_FILE)


# -- processes ----------------------------------------------------------------


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return b""


def marked_pids(marker: str) -> list[int]:
    """Live processes whose environment carries this stack's marker (even if they left the session)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    me = os.getpid()
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me:
            pid = int(entry.name)
            if needle in _environ(pid).split(b"\0") and procs.alive(pid):
                pids.append(pid)
    return sorted(pids)


def stack_pids(state: dict[str, Any]) -> list[int]:
    """Every live process this stack's Airflow started: its session, plus anything carrying its marker."""
    return sorted(set(procs.session_pids(int(state["pid"]))) | set(marked_pids(state["marker"])))


def is_standalone(pid: int, marker: str) -> bool:
    return procs.alive(pid) and f"{MARKER_VAR}={marker}".encode() in _environ(pid).split(b"\0")


def _get(url: str, token: str | None = None, timeout: float = 3.0) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def api_token(api_url: str, user: str, password: str, timeout: float = 10.0) -> str:
    """A JWT from the simple auth manager (POST /auth/token)."""
    req = urllib.request.Request(
        f"{api_url}/auth/token",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())["access_token"]


def answers(api_url: str) -> bool:
    try:
        _get(f"{api_url}/api/v2/version", timeout=2.0)
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def dags_listed(api_url: str, user: str, password: str) -> list[str]:
    try:
        token = api_token(api_url, user, password)
        dags = _get(f"{api_url}/api/v2/dags?limit=100", token)["dags"]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return []
    return sorted(d["dag_id"] for d in dags)


# -- environment ----------------------------------------------------------------


def stack_env(
    state_dir: Path,
    ds: devstack.Devstack,
    account: Account,
    port: int,
    marker: str,
    password: str,
    kubernetes_connection: str | None = None,
    kube_view_url: str = "",
) -> dict[str, str]:
    """airflow_env() for a long-running `airflow standalone` on ``port``."""
    home = state_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({USER: password}))
    secrets = home / "secrets.json"  # stable across restarts: tokens and sessions survive `down`/`up`
    if not secrets.exists():
        secrets.write_text(json.dumps({"jwt": uuid.uuid4().hex + uuid.uuid4().hex, "api": uuid.uuid4().hex}))
    secret = json.loads(secrets.read_text())
    env = airflow_env(home, ds.env(), account, kubernetes_connection)
    base = f"http://127.0.0.1:{port}"
    env.update(
        {
            MARKER_VAR: marker,
            # standalone runs its components as `airflow ...` from PATH: this venv's.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",  # 2 cores: 4 task processes at most
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secret["api"],
            "AIRFLOW__API_AUTH__JWT_SECRET": secret["jwt"],
            # Quick local feedback: new or edited DAG files show up within seconds.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The log servers' fixed defaults (8793, 8794) would clash with a second stack (tests).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port() if port != DEFAULT_PORT else 8793),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port() if port != DEFAULT_PORT else 8794),
        }
    )
    # The Kubernetes Deployment link's template is read by the API server (airflow_env drops BANK_*):
    # the caller's dashboard, else the local cluster's read-only view.
    dashboard = os.environ.get("BANK_KUBERNETES_DASHBOARD_URL") or (
        f"{kube_view_url}/deployments/{{namespace}}/{{deployment}}" if kube_view_url else ""
    )
    if dashboard:
        env["BANK_KUBERNETES_DASHBOARD_URL"] = dashboard
    # The Lambda version link: moto's dashboard lists the functions and versions it holds (the Lambda
    # API itself needs a signed request; an unsigned browser GET is routed to S3).
    motos = f"{ds.endpoint_url.rstrip('/')}/moto-api/"
    env["BANK_LAMBDA_CONSOLE_URL"] = os.environ.get("BANK_LAMBDA_CONSOLE_URL") or motos
    return env


# -- commands -------------------------------------------------------------------


def _print_ready(state: dict[str, Any]) -> None:
    print(f"Airflow UI: {state['api_url']}/  (log in as {state['user']} / password {state['password']})")
    print(f"  DAGs: {', '.join(DAG_IDS)}; Airflow log: {state['log']}")
    print(f"  devstack (AWS endpoint): {state['endpoint_url']}  registry: {state.get('registry_url') or '-'}")
    if state.get("kube_server"):
        print(f"  Kubernetes {state.get('kube_version', '')}: {state['kube_server']} (export KUBECONFIG={state['kube_dir']}/kubeconfig);"
              f" Deployments: {state['kube_view_url']}/")  # fmt: skip
    print(f"Stop everything: python -m devstack.harness.stack down --state-dir {state['state_dir']}")


# How long a stack whose processes all run may take to answer before it counts as stale:
# a busy machine (a Spark step, a test suite) can hold one request past its timeout, and
# tearing down a live stack for that would cost a minute's restart and its runs.
ANSWER_GRACE_S = 30.0


def _devstack_server(devstack_dir: Path) -> dict[str, Any] | None:
    """devstack's state if its server process still runs, whether or not it answers."""
    ds_state = devstack.read_state(devstack_dir)
    return ds_state if ds_state is not None and devstack.is_devstack_server(int(ds_state["pid"])) else None


def status_of(state_dir: Path, grace_s: float = ANSWER_GRACE_S) -> tuple[int, dict[str, Any] | None]:
    state = read_state(state_dir)
    if state is None:
        return 1, None
    devstack_dir, kube_dir = Path(state["devstack_dir"]), Path(state["kube_dir"])
    deadline = time.monotonic() + grace_s
    while True:
        ds_state = _devstack_server(devstack_dir)
        if not (is_standalone(int(state["pid"]), state["marker"]) and ds_state and kube.running(kube_dir)):
            return 3, state  # a process is gone: no wait can mend that
        if answers(state["api_url"]) and devstack.healthy(ds_state["endpoint_url"]):
            return 0, state
        if time.monotonic() >= deadline:
            return 3, state
        time.sleep(1.0)  # processes alive but busy: ask again


def up(state_dir: Path, port: int, devstack_port: int, password: str = DEFAULT_PASSWORD) -> int:
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    code, state = status_of(state_dir)
    if code == 0 and state is not None:
        print("stack: already running")
        _print_ready(state)
        return 0
    if state is not None:  # stale or half-started: clean up before starting again
        down(state_dir, quiet=True)

    if missing := kube.missing_binaries():
        print(
            f"stack: the local Kubernetes is not built (missing {', '.join(missing)}): run `make kube`", file=sys.stderr
        )
        return 1
    ds_dir = state_dir / "devstack"
    if devstack_cli.up(devstack_port, ds_dir) != 0:
        return 1
    ds = devstack.running(ds_dir)
    if ds is None:
        print("stack: devstack is not answering", file=sys.stderr)
        return 1

    t0 = time.monotonic()
    kube_dir = state_dir / "kube"
    started = kube.start_in_background(kube.KubeCluster(kube_dir, view=True, metrics=True))  # meanwhile: seeding
    try:
        account = provision(ds)
        seed_lake(ds.client("s3"), REPO / "data" / "bank" / "bank-full.csv")
        seed_wheelhouse(ds.env())
        digest = seed_release(ds.registry_url)
    except BaseException:
        with contextlib.suppress(Exception):
            started()  # never left half-started: `down` stops it with the rest
        raise
    try:
        cluster = started()
    except kube.KubeError as exc:
        print(f"stack: the Kubernetes control plane did not start: {exc}", file=sys.stderr)
        down(state_dir, quiet=True)
        return 1
    print(f"deployed infra/bank-ml.cfn.yaml; seeded s3://bank-lake/raw/bank/bank-full.csv and the serving base "
          f"image {digest[:19]}… ({time.monotonic() - t0:.1f}s); Airflow signs as the worker user")  # fmt: skip
    kubeconfig = cluster.release_identity(KUBE_NAMESPACE, seconds=KUBE_TOKEN_SECONDS)
    print(f"Kubernetes {cluster.version['gitVersion']} at {cluster.server}, ready in {cluster.timings['ready']:.1f}s; "
          f"the release runs as {kube.RELEASE_IDENTITY} in namespace {KUBE_NAMESPACE}")  # fmt: skip

    marker = uuid.uuid4().hex
    env = stack_env(
        state_dir,
        ds,
        account,
        port,
        marker,
        password,
        kube.airflow_connection(kubeconfig, KUBE_NAMESPACE),
        cluster.view_url,
    )
    log_path = state_dir / LOG_FILE
    import subprocess

    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session and group: `down` signals the group, reaps the session
        )
    api_url = f"http://127.0.0.1:{port}"
    state = {
        "pid": proc.pid,
        "marker": marker,
        "api_url": api_url,
        "user": USER,
        "password": password,
        "log": str(log_path),
        "state_dir": str(state_dir),
        "devstack_dir": str(ds_dir),
        "endpoint_url": ds.endpoint_url,
        "registry_url": ds.registry_url,
        "kube_dir": str(kube_dir),
        "kube_server": cluster.server,
        "kube_version": cluster.version["gitVersion"],
        "kube_view_url": cluster.view_url,
    }
    write_state(state_dir, state)
    print(f"starting airflow standalone (pid {proc.pid}), log {log_path} ...", flush=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"stack: airflow standalone exited with {proc.returncode}:\n{_tail(log_path)}", file=sys.stderr)
            down(state_dir, quiet=True)
            return 1
        if answers(api_url) and set(DAG_IDS) <= set(dags_listed(api_url, USER, password)):
            print(f"ready in {time.monotonic() - t0:.0f}s")
            _print_ready(state)
            return 0
        time.sleep(1.0)
    print(
        f"stack: Airflow did not answer with both DAGs within {START_TIMEOUT:.0f}s:\n{_tail(log_path)}", file=sys.stderr
    )
    down(state_dir, quiet=True)
    return 1


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _signal(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _wait_gone(state: dict[str, Any], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := stack_pids(state)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def stop_airflow(state: dict[str, Any], timeout: float = STOP_TIMEOUT, verbose: bool = True) -> list[int]:
    """SIGINT standalone's group (Ctrl-C under job control), then SIGTERM, then SIGKILL what is left.

    standalone and its components share its process group; task processes run in
    groups of their own inside its session, so the later steps signal every
    process of the session (and any carrying the stack's marker). Returns survivors.
    """
    pid, marker = int(state["pid"]), state["marker"]
    if is_standalone(pid, marker):
        try:
            os.killpg(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    left = _wait_gone(state, timeout / 2)
    if not left:
        return []
    if verbose:
        print(f"stack: after SIGINT still running: {_describe(left)}; SIGTERM", file=sys.stderr)
    _signal(left, signal.SIGTERM)
    left = _wait_gone(state, timeout / 2)
    for _ in range(3):
        if not left:
            return []
        if verbose:
            print(f"stack: after SIGTERM still running: {_describe(left)}; SIGKILL", file=sys.stderr)
        _signal(left, signal.SIGKILL)
        left = _wait_gone(state, 5.0)
    return left


def _describe(pids: list[int]) -> str:
    return ", ".join(f"{p} ({' '.join(procs.cmdline(p))[:60]})" for p in pids)


def down(state_dir: Path, quiet: bool = False) -> int:
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    code = 0
    if state is None:
        if not quiet:
            print("stack: airflow not running")
    else:
        left = stop_airflow(state)
        if left:
            print(f"stack: airflow processes {left} survived SIGKILL", file=sys.stderr)
            code = 1
        else:
            (state_dir / STATE_FILE).unlink(missing_ok=True)
            if not quiet:
                print(f"stack: airflow stopped (pid {state['pid']})")
    ds_dir = Path(state["devstack_dir"]) if state else state_dir / "devstack"
    if devstack_cli.down(ds_dir) != 0:
        code = 1
    kube_dir = Path(state["kube_dir"]) if state and state.get("kube_dir") else state_dir / "kube"
    stopped = kube.stop_recorded(kube_dir)
    if stopped and not quiet:
        print(f"stack: Kubernetes stopped ({', '.join(stopped)})")
    return code


def status(state_dir: Path) -> int:
    code, state = status_of(state_dir.resolve())
    if state is None:
        print("stack: not running")
    elif code == 3:
        print(f"stack: stale state (pid {state['pid']} or devstack not answering); run down")
    else:
        _print_ready(state)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.harness.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", DEFAULT_PORT)),
                        help="the Airflow API server / UI port")  # fmt: skip
    parser.add_argument("--devstack-port", type=int, default=devstack.DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--password", default=DEFAULT_PASSWORD, help=f"password of the UI user {USER!r}")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.state_dir, args.port, args.devstack_port, args.password)
    if args.command == "down":
        return down(args.state_dir)
    return status(args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
