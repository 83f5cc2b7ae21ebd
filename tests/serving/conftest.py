"""A small real model for the serving tests, trained once on bank.csv (about 1 s, no Spark).

Features come from serving's own derivation (tests/ml holds it equal to the
Spark job's); the model directory holds model.onnx + model.json as the image does.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bank_ml import artifacts, data, release
from tests.support.http_server import Server
from tests.support.paths import BANK_CSV as BANK


@pytest.fixture(scope="session")
def small_candidate() -> release.Candidate:
    return release.train_candidate(data.features_from_csv(BANK))


@pytest.fixture(scope="session")
def model_dir(small_candidate: release.Candidate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    artifacts.write_model_files(directory, small_candidate.onnx_bytes, small_candidate.threshold)
    return directory


def import_handler(model_dir: Path) -> ModuleType:
    """A fresh copy of bank_serving.lambda_handler (its init loads the model) with BANK_MODEL_DIR=model_dir.

    A new module object each time, not registered in sys.modules: tests over different
    model directories do not disturb each other (Lambda runs one init per container).
    """
    previous = os.environ.get("BANK_MODEL_DIR")
    os.environ["BANK_MODEL_DIR"] = str(model_dir)
    try:
        spec = importlib.util.find_spec("bank_serving.lambda_handler")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if previous is None:
            os.environ.pop("BANK_MODEL_DIR", None)
        else:
            os.environ["BANK_MODEL_DIR"] = previous


@pytest.fixture(scope="session")
def handler(model_dir: Path) -> ModuleType:
    return import_handler(model_dir)


@pytest.fixture
def load_handler() -> Callable[[Path], ModuleType]:
    """import_handler, for tests that need a handler over another model directory."""
    return import_handler


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
