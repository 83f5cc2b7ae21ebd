"""The stack `python -m devstack.harness.stack up` starts (devstack, the local Kubernetes, `airflow
standalone`), shared by the stack's tests and the browser's: one up and one down per session, each
about a minute of both cores. Its teardown is the down test: nothing of it may be left running."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack import kube, procs
from devstack.harness import stack
from devstack.harness.airflow_env import REPO


def run_stack(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack.harness.stack", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@dataclass(frozen=True)
class StackUp:
    """A stack that `up` started: where its state lives, its port, what `up` printed, its state file, devstack's pid."""

    state_dir: Path
    port: int
    up: subprocess.CompletedProcess[str]
    state: dict[str, Any]
    devstack_pid: int

    @property
    def common(self) -> tuple[str, ...]:
        return ("--state-dir", str(self.state_dir))


@pytest.fixture(scope="session")
def stack_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackUp]:
    """`up` once; at the end `down`, then every process of the stack gone and `down` idempotent."""
    state_dir = tmp_path_factory.mktemp("stack") / "stack"
    port = procs.free_port()
    common = ("--state-dir", str(state_dir))
    up = run_stack("up", "--port", str(port), "--devstack-port", "0", *common, timeout=400)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = stack.read_state(state_dir)
        assert state is not None, up.stdout + up.stderr
        airflow_pids = stack.stack_pids(state)
        devstack_pid = json.loads((state_dir / "devstack" / "devstack.json").read_text())["pid"]
        kube_processes = kube.read_state(Path(state["kube_dir"]))["processes"]
        yield StackUp(state_dir, port, up, state, devstack_pid)
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
