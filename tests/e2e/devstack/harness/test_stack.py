"""`python -m devstack.harness.stack up|down`: devstack + the local Kubernetes + `airflow standalone`, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devstack import kube, procs
from devstack.harness import stack
from devstack.harness.airflow_env import REPO

pytestmark = pytest.mark.e2e


def run_stack(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack.harness.stack", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.timeout(600)
def test_up_lists_the_dags_and_down_leaves_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    port = procs.free_port()
    common = ("--state-dir", str(state_dir))
    try:
        up = run_stack("up", "--port", str(port), "--devstack-port", "0", *common)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{port}/" in up.stdout and "admin / password admin" in up.stdout

        state = stack.read_state(state_dir)
        assert state is not None and state["api_url"] == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{state['api_url']}/api/v2/version", timeout=10) as resp:
            assert json.loads(resp.read())["version"].startswith("3.")
        token = stack.api_token(state["api_url"], "admin", "admin")
        req = urllib.request.Request(f"{state['api_url']}/api/v2/dags", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            dags = {d["dag_id"]: d for d in json.loads(resp.read())["dags"]}
        assert {"bank_features_emr", "bank_model_release"} <= dags.keys()
        assert not dags["bank_model_release"]["is_paused"]

        again = run_stack("up", "--port", str(port), *common)  # idempotent: reports, starts nothing
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
        assert stack.read_state(state_dir)["pid"] == state["pid"]
        assert run_stack("status", *common).returncode == 0

        airflow_pids = stack.stack_pids(state)
        assert state["pid"] in airflow_pids and len(airflow_pids) >= 4  # standalone + its components
        devstack_pid = json.loads((state_dir / "devstack" / "devstack.json").read_text())["pid"]

        # Alive but not answering for a while (a busy machine): waited for, not taken for stale.
        os.kill(devstack_pid, signal.SIGSTOP)
        resume = threading.Timer(4.0, os.kill, (devstack_pid, signal.SIGCONT))
        resume.start()
        try:
            slow = run_stack("status", *common)
        finally:
            resume.cancel()
            os.kill(devstack_pid, signal.SIGCONT)
        assert slow.returncode == 0, slow.stdout + slow.stderr

        # The control plane runs, and the release's identity has its connection.
        cluster = kube.KubeCluster.attach(Path(state["kube_dir"]))
        assert f"Kubernetes {cluster.version['gitVersion']} at {state['kube_server']}" in up.stdout
        kube_processes = kube.read_state(Path(state["kube_dir"]))["processes"]
        assert set(kube_processes) == {*kube.BINARIES, "view"}
        account = cluster.get(f"/api/v1/namespaces/{stack.KUBE_NAMESPACE}/serviceaccounts/{kube.RELEASE_IDENTITY}")
        assert account["metadata"]["name"] == kube.RELEASE_IDENTITY
        # Where the Deployment link leads answers, before any release too.
        link = f"{state['kube_view_url']}/deployments/{stack.KUBE_NAMESPACE}/bank-model"
        try:
            urllib.request.urlopen(link, timeout=10)
            raise AssertionError(f"{link}: a Deployment before any release")
        except urllib.error.HTTPError as err:
            assert err.code == 404 and b"There is no Deployment bank/bank-model (yet)." in err.read()
    finally:
        down = run_stack("down", *common, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    # Nothing left: no live process of either session, none with the stack's marker in its environment.
    assert stack.stack_pids(state) == []
    assert [p for p in airflow_pids if procs.alive(p)] == []
    assert procs.session_pids(devstack_pid) == [] and not procs.alive(devstack_pid)
    assert [name for name, info in kube_processes.items() if procs.alive(info["pid"])] == []
    assert stack.read_state(state_dir) is None
    assert run_stack("down", *common).returncode == 0  # idempotent
    assert run_stack("status", *common).returncode == 1
