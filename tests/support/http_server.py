"""A live `python -m bank_serving.http` for the HTTP tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devstack.procs import free_port
from tests.unit.bank_serving.test_lambda_handler import proxy_v1


class Server:
    """`python -m bank_serving.http` on a free loopback port; its log goes to a file (no pipe to fill)."""

    def __init__(self, model_dir: Path, log: Path, *args: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.log = log
        env = dict(os.environ)
        env.pop("BANK_MODEL_DIR", None)
        cmd = [sys.executable, "-m", "bank_serving.http", "--host", "127.0.0.1", "--port", str(self.port),
               "--model-dir", str(model_dir), "--metrics-port", str(self.metrics_port), *args]  # fmt: skip
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.log.parent, env=env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def request(self, method: str, path: str, body: bytes | str | None = None) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())
        finally:
            conn.close()

    def metrics(self) -> str:
        """GET /metrics on the metrics port: the Prometheus text."""
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            assert response.status == 200, response.status
            return response.read().decode()
        finally:
            conn.close()

    def wait_for(self, path: str, status: int, timeout: float = 30.0) -> Any:
        """Poll GET path until it answers `status`; its answer. Fails at once if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited {self.proc.returncode}:\n{self.output()}"
            try:
                got, _, answer = self.request("GET", path)
                if got == status:
                    return answer
            except OSError:  # not listening yet
                pass
            time.sleep(0.01)
        pytest.fail(f"GET {path} did not answer {status} within {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit code; a process still running after `timeout` is killed and fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server still running {timeout} s after SIGTERM:\n{self.output()}")


def lambda_answer(handler: ModuleType, body: str) -> tuple[int, Any]:
    response = handler.handler(proxy_v1(body), None)
    return response["statusCode"], json.loads(response["body"])


# --------------------------------------------------------------------------- requests
