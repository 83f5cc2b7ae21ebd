"""The HTTP server (python -m bank_serving.http) as a real process: routes, the Lambda's answers and
messages, body limits, readiness while the model loads, a failed load, and draining on SIGTERM."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bank_serving.protocol import DEFAULT_MAX_BODY_BYTES as LIMIT
from tests.support.http_server import Server, lambda_answer
from tests.support.paths import REPO  # noqa: E402
from tests.support.serving_requests import BAD_BODIES, RECORD, RECORDS

SERVING = REPO / "serving"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _raw(port: int, data: bytes) -> tuple[int, dict[str, str], Any]:
    """Send raw bytes, read until the server closes; (status, headers, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


@pytest.mark.parametrize("body", [RECORD, {"records": RECORDS}], ids=["one-record", "records"])
def test_predict_answers_as_the_lambda(server: Server, handler: ModuleType, body: Any) -> None:
    status, headers, answer = server.request("POST", "/predict", json.dumps(body))
    assert (status, headers["content-type"]) == (200, "application/json")
    assert (status, answer) == lambda_answer(handler, json.dumps(body))
    assert len(answer["predictions"]) == (len(body["records"]) if "records" in body else 1)


UNREADABLE = [
    ("bad-json", "{not json"),
    ("empty-body", ""),
    ("deep-nesting", "[" * 100000),
    ("huge-number", '{"age": ' + "9" * 5000 + "}"),
]


@pytest.mark.parametrize(
    "body",
    [json.dumps(b) for _, b, _ in BAD_BODIES] + [b for _, b in UNREADABLE],
    ids=[i for i, _, _ in BAD_BODIES] + [i for i, _ in UNREADABLE],
)
def test_bad_body_is_the_lambdas_400(server: Server, handler: ModuleType, body: str) -> None:
    status, _, answer = server.request("POST", "/predict", body)
    assert status == 400
    assert (status, answer) == lambda_answer(handler, body)


def test_invalid_utf8_is_a_400(server: Server) -> None:
    status, _, answer = server.request("POST", "/predict", b'{"age": "\xff"}')
    assert status == 400 and answer["error"].startswith("body: invalid JSON: 'utf-8' codec can't decode"), answer


def test_health_and_readiness(server: Server, handler: ModuleType) -> None:
    assert server.request("GET", "/healthz")[::2] == (200, {"status": "ok"})
    assert server.request("GET", "/readyz")[::2] == (200, {"status": "ready", "model_version": handler.MODEL.version})


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [("GET", "/", 404, None), ("POST", "/predict/", 404, None), ("GET", "/predict", 405, "POST"),
     ("PUT", "/predict", 405, "POST"), ("POST", "/healthz", 405, "GET"), ("DELETE", "/readyz", 405, "GET")],
)  # fmt: skip
def test_other_paths_and_methods(server: Server, method: str, path: str, status: int, allow: str | None) -> None:
    got, headers, answer = server.request(method, path, "{}" if method in ("POST", "PUT") else None)
    assert got == status and headers["content-type"] == "application/json" and answer["error"], answer
    assert headers.get("allow") == allow


def test_body_limit(server: Server) -> None:
    # At the limit: read and parsed (whitespace is not JSON: a 400, not a 413).
    status, _, answer = server.request("POST", "/predict", b" " * LIMIT)
    assert status == 400 and answer["error"].startswith("body: invalid JSON"), answer
    # Above it: refused from Content-Length alone, before the body is sent, and the connection closed.
    head = f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: {LIMIT + 1}\r\n\r\n".encode()
    status, headers, answer = _raw(server.port, head)
    assert (status, answer) == (413, {"error": f"body: larger than {LIMIT} bytes"})
    assert headers["connection"] == "close"


def test_chunked_body_limit(start: Any, model_dir: Path, handler: ModuleType) -> None:
    server = start(model_dir, "--max-body-bytes", "1000")
    server.wait_for("/readyz", 200)
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"

    def chunked(*parts: bytes) -> bytes:
        return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"

    record = json.dumps(RECORD).encode()
    status, _, answer = _raw(server.port, chunked(record[:100], record[100:]))
    assert (status, answer) == lambda_answer(handler, record.decode())
    status, _, answer = _raw(server.port, chunked(b" " * 600, b" " * 401))
    assert (status, answer) == (413, {"error": "body: larger than 1000 bytes"})
    assert server.stop() == 0


# --------------------------------------------------------------------------- start-up


def test_readyz_is_503_until_the_model_is_loaded(start: Any, model_dir: Path, tmp_path: Path) -> None:
    # model.onnx is a FIFO: the load blocks until the test writes the model into it.
    slow = tmp_path / "slow-model"
    slow.mkdir()
    (slow / "model.json").write_bytes((model_dir / "model.json").read_bytes())
    os.mkfifo(slow / "model.onnx")
    server = start(slow)
    assert server.wait_for("/healthz", 200) == {"status": "ok"}  # alive while loading
    assert server.request("GET", "/readyz")[::2] == (503, {"status": "loading"})
    status, headers, answer = server.request("POST", "/predict", json.dumps(RECORD))
    assert (status, headers["retry-after"]) == (503, "1") and "not loaded" in answer["error"]

    # O_NONBLOCK: fails at once (ENXIO) while the loader has not opened the FIFO yet, instead of hanging.
    deadline = time.monotonic() + 30
    while True:
        try:
            fd = os.open(slow / "model.onnx", os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as err:
            if err.errno != errno.ENXIO or time.monotonic() > deadline or server.proc.poll() is not None:
                raise
            time.sleep(0.01)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as fifo:
        fifo.write((model_dir / "model.onnx").read_bytes())
    ready = server.wait_for("/readyz", 200)
    assert ready["status"] == "ready"
    assert server.request("POST", "/predict", json.dumps(RECORD))[0] == 200
    assert server.stop() == 0


def test_a_missing_model_exits_non_zero_with_the_reason(start: Any, tmp_path: Path) -> None:
    empty = tmp_path / "no-model"
    empty.mkdir()
    termination_log = tmp_path / "termination-log"
    termination_log.touch()  # Kubernetes creates it; the server only writes an existing file
    server = start(empty, "--termination-log", str(termination_log))
    assert server.proc.wait(timeout=30) == 1
    expected = f"model load failed: no model in {empty}: model.onnx is missing"
    assert expected in server.output()
    assert termination_log.read_text().startswith(expected)


# --------------------------------------------------------------------------- shutdown


def test_sigterm_drains_an_in_flight_request_and_exits_0(start: Any, model_dir: Path, handler: ModuleType) -> None:
    server = start(model_dir, "--drain-delay", "1")
    server.wait_for("/readyz", 200)
    body = json.dumps(RECORD).encode()
    head = f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as in_flight:
        in_flight.sendall(head.encode() + body[:50])  # a request in flight: half its body sent
        server.wait_for("/healthz", 200)  # the request has surely reached the server
        server.proc.send_signal(signal.SIGTERM)

        assert server.wait_for("/readyz", 503) == {"status": "draining"}
        assert server.request("GET", "/healthz")[0] == 200  # alive while draining
        # After the drain delay the listening socket closes: new connections are refused.
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "still accepting connections"
            time.sleep(0.01)
        assert server.proc.poll() is None, "exited with a request in flight"

        in_flight.sendall(body[50:])
        reply = b""
        while chunk := in_flight.recv(65536):
            reply += chunk
    head_out, _, answer = reply.partition(b"\r\n\r\n")
    assert head_out.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head_out.lower()
    assert (200, json.loads(answer)) == lambda_answer(handler, body.decode())
    assert server.proc.wait(timeout=15) == 0, server.output()
    assert "stopped cleanly" in server.output()


# --------------------------------------------------------------------------- metrics


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text as {(sample name, labels): value}, read by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def _labels(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def test_metrics_count_answers_by_route_and_status_on_a_port_of_their_own(
    start: Any, model_dir: Path, handler: ModuleType
) -> None:
    server = start(model_dir, "--drain-delay", "2")
    server.wait_for("/readyz", 200)
    before = _samples(server.metrics())
    body = json.dumps({"records": RECORDS})
    for _ in range(3):
        assert server.request("POST", "/predict", body)[0] == 200
    assert server.request("POST", "/predict", "[1]")[0] == 400
    assert server.request("GET", "/no/such/path")[0] == 404
    m = _samples(server.metrics())
    predict_ok = ("bank_serving_requests_total", _labels(route="/predict", status="200"))
    assert m[predict_ok] - before.get(predict_ok, 0) == 3
    assert m[("bank_serving_requests_total", _labels(route="/predict", status="400"))] == 1
    assert m[("bank_serving_requests_total", _labels(route="other", status="404"))] == 1  # no path in a label
    assert m[("bank_serving_records_total", _labels())] == 3 * len(RECORDS)
    assert m[("bank_serving_request_duration_seconds_count", _labels(route="/predict"))] == 4
    assert m[("bank_serving_request_duration_seconds_bucket", _labels(route="/predict", le="+Inf"))] == 4
    assert 0 < m[("bank_serving_request_duration_seconds_sum", _labels(route="/predict"))] < 4
    version = lambda_answer(handler, json.dumps(RECORD))[1]["model_version"]
    assert m[("bank_serving_model_info", _labels(version=version))] == 1
    assert m[("bank_serving_ready", _labels())] == 1
    # The metrics port is not the service's: /predict is not there, /metrics is not on the service's.
    assert server.request("GET", "/metrics")[0] == 404

    server.proc.send_signal(signal.SIGTERM)
    server.wait_for("/readyz", 503)
    assert _samples(server.metrics())[("bank_serving_ready", _labels())] == 0  # still scraped while draining
    assert server.proc.wait(timeout=15) == 0


def test_a_metrics_port_in_use_stops_the_server_naming_it(start: Any, model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start(model_dir, "--metrics-port", str(port))
        assert server.proc.wait(timeout=15) == 1
    assert f"metrics: cannot listen on 127.0.0.1:{port}" in server.output()
