"""``python -m devstack up|status|down`` as a shell uses them (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import devstack
from devstack import procs
from devstack.aws.infra import cluster_network, provision
from tests.support.devstack_helpers import (
    SLEEPING,
    new_cluster,
    put_script,
    spark_step,
    step_processes,
    wait_until,
)
from tests.support.paths import REPO

pytestmark = pytest.mark.integration


def cli(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args, "--state-dir", str(state_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.timeout(120)
def test_up_is_idempotent_and_down_leaves_nothing_running(tmp_path: Path) -> None:
    first = cli("up", "--port", "0", state_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    state = json.loads((tmp_path / "devstack.json").read_text())
    assert set(state) >= {"pid", "endpoint_url", "port", "started_at", "log"}
    assert state["endpoint_url"] == f"http://127.0.0.1:{state['port']}"
    assert f"export AWS_ENDPOINT_URL={state['endpoint_url']}" in first.stdout
    assert f"S3     {state['endpoint_url']}" in first.stdout and "EMR" in first.stdout
    pid = state["pid"]
    try:
        second = cli("up", "--port", "0", state_dir=tmp_path)
        assert second.returncode == 0, second.stderr
        assert second.stdout == first.stdout  # same server, same endpoint
        assert json.loads((tmp_path / "devstack.json").read_text())["pid"] == pid

        status = cli("status", state_dir=tmp_path)
        assert status.returncode == 0 and state["endpoint_url"] in status.stdout

        attached = devstack.running(tmp_path)
        assert attached is not None and attached.endpoint_url == state["endpoint_url"]
        # Leave a Spark step running: down must take it (JVM, Python driver) along.
        account = provision(attached)  # the EMR roles and the tagged network RunJobFlow needs
        s3, emr = attached.client("s3"), attached.client("emr")
        s3.create_bucket(Bucket="cli-test")
        script = put_script(s3, "cli-test", "sleeping_cli.py", SLEEPING)
        new_cluster(emr, steps=[spark_step("sleeps", script)], network=cluster_network(account.outputs))
        wait_until(lambda: step_processes(attached, "sleeping_cli.py"), lambda kinds: kinds == ["java", "python"])
    finally:
        down = cli("down", state_dir=tmp_path)
    assert down.returncode == 0, down.stderr
    assert procs.session_pids(pid) == [] and not procs.alive(pid)
    assert not (tmp_path / "devstack.json").exists()

    status = cli("status", state_dir=tmp_path)
    assert status.returncode == 1 and "not running" in status.stdout
    again = cli("down", state_dir=tmp_path)
    assert again.returncode == 0 and "not running" in again.stdout


@pytest.mark.timeout(60)
def test_stale_state_is_reported_and_cleaned(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "devstack.json").write_text(json.dumps({"pid": dead.pid, "endpoint_url": "http://127.0.0.1:1"}))
    assert cli("status", state_dir=tmp_path).returncode == 3
    down = cli("down", state_dir=tmp_path)
    assert down.returncode == 0 and "not running" in down.stdout
    assert not (tmp_path / "devstack.json").exists()


def test_a_node_of_a_state_dir_in_the_checkout_lives_outside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's Python (third-party site-packages) never lands in the source tree; other state dirs keep it."""
    from devstack.aws.server import node_root

    monkeypatch.setenv("BANK_CACHE_DIR", str(tmp_path / "cache"))
    assert node_root(tmp_path / "state") == (tmp_path / "state" / "node").resolve()
    demo, up = node_root(REPO / "build" / "demo" / "devstack"), node_root(REPO / "build" / "devstack")
    assert demo.parent == up.parent == tmp_path / "cache" / "nodes"
    assert demo != up and not demo.is_relative_to(REPO)
    assert node_root(REPO / "build" / "demo" / "devstack") == demo  # the same one every run: its Python is kept
