"""devstack: the local stand-in for the AWS services this project uses.

One process (``python -m devstack serve``) runs moto in server mode on
127.0.0.1 (S3, EMR, ECR, Lambda, IAM, STS, CloudFormation on one endpoint) with
IAM enforced (``devstack.aws.iam``), executes EMR
``command-runner.jar spark-submit`` steps with the local PySpark, runs an image
registry (the CNCF distribution registry, a child process) and invokes
container-image Lambda functions from it; see ``devstack.aws.emr``,
``devstack.aws.registry`` and ``devstack.aws.awslambda`` for what is and is not faithful.

Tests and the demo use ``Devstack`` (a context manager that owns a server);
the CLI is ``python -m devstack up|down|status|serve``. This module imports
nothing heavy (moto, boto3 are imported lazily): DAG-side tooling imports it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devstack import procs

# devstack is dev-only and runs from a checkout: its state and the demo's data live in it.
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / "build" / "devstack"
DEFAULT_PORT = 4566
STATE_FILE = "devstack.json"
LOG_FILE = "devstack.log"
START_TIMEOUT = 60.0  # imports + bind; generous for a loaded 2-core machine
STOP_TIMEOUT = 20.0  # the server's own shutdown kills steps with a 5 s grace

__all__ = ["Devstack", "running", "read_state", "DEFAULT_STATE_DIR", "DEFAULT_PORT"]


# -- state file ---------------------------------------------------------------


def read_state(state_dir: Path, name: str = STATE_FILE) -> dict[str, Any] | None:
    """The state file's content, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(state_dir) / name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(state_dir: Path, state: dict[str, Any], name: str = STATE_FILE) -> None:
    path = Path(state_dir) / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)  # readers never see half a file


def remove_state(state_dir: Path, pid: int | None = None) -> None:
    """Remove the state file (only if it names ``pid``, when given)."""
    state = read_state(state_dir)
    if state is not None and (pid is None or state.get("pid") == pid):
        (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)


def client_env(endpoint_url: str, credentials: tuple[str, str] = ("testing", "testing")) -> dict[str, str]:
    """AWS_* variables that point boto3/botocore (and the AWS CLI) at ``endpoint_url`` with ``credentials``.

    With IAM enforced, "testing" is nobody: give devstack's admin key (the state
    file's ``admin``) or a user's.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": credentials[0],
        "AWS_SECRET_ACCESS_KEY": credentials[1],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def admin_credentials(state: dict[str, Any]) -> tuple[str, str]:
    """devstack's admin key pair from its state (``testing`` for a devstack serving without IAM)."""
    admin = state.get("admin") or {}
    return admin.get("access_key_id", "testing"), admin.get("secret_access_key", "testing")


# -- process helpers ----------------------------------------------------------


def is_devstack_server(pid: int) -> bool:
    """True if ``pid`` is a live ``devstack serve`` (guards against pid reuse)."""
    argv = procs.cmdline(pid)
    return procs.alive(pid) and "devstack" in argv and "serve" in argv


def healthy(endpoint_url: str, timeout: float = 2.0) -> bool:
    """True if the moto server answers."""
    try:
        with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_tail(state_dir: Path, lines: int = 30) -> str:
    try:
        return "\n".join((Path(state_dir) / LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def start_server(state_dir: Path, port: int, registry_port: int = 0) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start ``python -m devstack serve`` in its own session; wait until it answers.

    Returns the process and its state. Raises RuntimeError (with the log's tail)
    if it exits or does not answer within START_TIMEOUT.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / LOG_FILE).open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack",
                "serve",
                "--port",
                str(port),
                "--registry-port",
                str(registry_port),
                "--state-dir",
                str(state_dir),
            ],  # fmt: skip
            cwd=REPO_ROOT,  # `python -m devstack` imports devstack from here
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: everything it starts is findable
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"devstack exited with {proc.returncode}:\n{log_tail(state_dir)}")
        state = read_state(state_dir)
        if state and state.get("pid") == proc.pid and healthy(state["endpoint_url"]):
            return proc, state
        time.sleep(0.1)
    stop_server(proc.pid)
    proc.wait()
    raise RuntimeError(f"devstack did not answer within {START_TIMEOUT:.0f} s:\n{log_tail(state_dir)}")


def stop_server(pid: int, timeout: float = STOP_TIMEOUT) -> list[int]:
    """SIGTERM a server's process group, wait, then SIGKILL its whole session.

    The server is its session's leader and runs steps in process groups of
    that session, so the session is everything it started. Returns the pids of
    that session still alive at the end (empty on success).
    """
    try:
        # A foreground `serve` started from a script may not lead its group.
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not procs.alive(pid) and not procs.session_pids(pid):
            return []
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return procs.kill_session(pid)


# -- the API ------------------------------------------------------------------


class Devstack:
    """A devstack server for tests and the demo.

    ``with Devstack(state_dir=tmp, port=0) as ds:`` starts ``python -m devstack
    serve`` (port 0: a free port), waits until it answers, and stops it on exit,
    with every process it started. ``running(state_dir)`` attaches to one
    started by ``python -m devstack up`` instead, which ``__exit__`` leaves running.
    ``registry_url`` is the image registry's ``127.0.0.1:PORT`` (image
    references start with it; ``http://`` + it is the registry API).
    ``env()`` and ``client()`` sign with devstack's admin key (IAM is enforced):
    for setting up, never for the DAGs (``devstack.aws.infra`` makes their user).
    """

    def __init__(self, state_dir: Path, port: int = 0, registry_port: int = 0) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.registry_port = registry_port
        self.pid: int | None = None
        self.endpoint_url: str = ""
        self.registry_url: str = ""
        self.admin: tuple[str, str] = ("testing", "testing")
        self._proc: subprocess.Popen[bytes] | None = None
        self._owned = True

    def __enter__(self) -> Devstack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            self.stop()

    def start(self) -> None:
        self._proc, state = start_server(self.state_dir, self.port, self.registry_port)
        self.pid, self.endpoint_url, self.port = state["pid"], state["endpoint_url"], state["port"]
        self.registry_url = state.get("registry_url", "")
        self.admin = admin_credentials(state)

    def stop(self) -> None:
        """Stop the server; raise if any process it started survives."""
        if self.pid is None:
            return
        left = stop_server(self.pid)
        if self._proc is not None:
            self._proc.wait(timeout=10)
        if left:
            raise RuntimeError(f"devstack: processes {left} of session {self.pid} survived SIGKILL")
        self.pid = None

    def env(self) -> dict[str, str]:
        """The environment variables an AWS client (and the image push) needs to use this devstack."""
        return {
            **client_env(self.endpoint_url, self.admin),
            **({"BANK_REGISTRY": self.registry_url} if self.registry_url else {}),
        }

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` pointed at this devstack."""
        import boto3

        env = self.env()
        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
            **kwargs,
        )


def running(state_dir: Path = DEFAULT_STATE_DIR) -> Devstack | None:
    """The healthy devstack whose state is in ``state_dir`` (e.g. from ``up``), or None."""
    state = read_state(Path(state_dir))
    if not state or not is_devstack_server(int(state["pid"])) or not healthy(state["endpoint_url"]):
        return None
    ds = Devstack(Path(state_dir), int(state["port"]))
    ds.pid, ds.endpoint_url, ds._owned = int(state["pid"]), state["endpoint_url"], False
    ds.registry_url = state.get("registry_url", "")
    ds.admin = admin_credentials(state)
    return ds
