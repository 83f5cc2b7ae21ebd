"""`python -m devstack.harness.stack up|down`: devstack + the local Kubernetes + `airflow standalone`, and nothing
left behind (stack_up's teardown, conftest.py: the stack is the browser tests' too)."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devstack import kube
from devstack.harness import stack
from tests.e2e.devstack.harness.conftest import StackUp, run_stack

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
def test_up_lists_the_dags_and_a_second_up_starts_nothing(stack_up: StackUp) -> None:
    up, port, state, common = stack_up.up, stack_up.port, stack_up.state, stack_up.common
    assert f"http://127.0.0.1:{port}/" in up.stdout and "admin / password admin" in up.stdout
    assert state["api_url"] == f"http://127.0.0.1:{port}"
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
    assert stack.read_state(stack_up.state_dir)["pid"] == state["pid"]
    assert run_stack("status", *common).returncode == 0

    airflow_pids = stack.stack_pids(state)
    assert state["pid"] in airflow_pids and len(airflow_pids) >= 4  # standalone + its components
    devstack_pid = stack_up.devstack_pid

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
    # `down` and that it leaves nothing: the teardown of stack_up (conftest.py), after the browser's tests.
