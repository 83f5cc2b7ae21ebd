"""Live HTTP servers (python -m bank_serving.http) over the session's small model (``model_dir``, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.http_server import Server


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """Start servers for one test; none may outlive it (a leftover is killed and fails the test)."""
    servers: list[Server] = []

    def _start(model_dir: Path, *args: str) -> Server:
        server = Server(model_dir, tmp_path / f"server{len(servers)}.log", *args)
        servers.append(server)
        return server

    yield _start
    left = [s for s in servers if s.proc.poll() is None]
    for server in left:
        server.proc.kill()
        server.proc.wait()
    assert not left, "server process left running"


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ready server for the request tests; it must stop with 0 on SIGTERM."""
    running = Server(model_dir, tmp_path_factory.mktemp("http") / "server.log")
    try:
        running.wait_for("/readyz", 200)
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.output()
