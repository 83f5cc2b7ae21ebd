"""The HTTP server's limits against hostile or broken clients, over raw sockets: head size and header
count (431/414), request and keep-alive timeouts, Connection: close while draining, a clean 503 for
requests unfinished at the graceful timeout, the body of a request with an Upgrade header, and
protocol errors as JSON."""

from __future__ import annotations

import json
import resource
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bank_serving.protocol import MAX_HEAD_BYTES, MAX_HEADERS, MAX_TARGET_BYTES
from tests.support.http_server import Server, lambda_answer
from tests.support.serving_requests import RECORD

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BODY = json.dumps(RECORD).encode()


def _post_head(length: int = len(BODY), extra: str = "") -> bytes:
    head = f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{extra}Content-Length: {length}"
    return f"{head}\r\n\r\n".encode()


class Reply:
    """What the server sent on one connection until it closed it (or the read timed out)."""

    def __init__(self, data: bytes, closed_after: float | None) -> None:
        self.data = data
        self.closed_after = closed_after  # seconds from the last send to the server's close; None: still open
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if data else None
        self.headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}

    def json(self) -> Any:
        return json.loads(self.body)


def _read(sock: socket.socket, timeout: float) -> Reply:
    """Read until the server closes the connection or `timeout` passes."""
    sock.settimeout(timeout)
    started, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return Reply(data, None)
    except ConnectionResetError:
        pass
    return Reply(data, time.monotonic() - started)


def _exchange(port: int, data: bytes, timeout: float = 10.0) -> Reply:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return _read(sock, timeout)


def _one_response(sock: socket.socket) -> Reply:
    """One response with a Content-Length from a keep-alive connection (which stays open)."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    reply = Reply(data, None)
    while len(reply.body) < int(reply.headers["content-length"]):
        data += sock.recv(65536)
        reply = Reply(data, None)
    return reply


# --------------------------------------------------------------------------- head limits


def test_an_endless_header_is_431_and_closed(server: Server) -> None:
    reply = _exchange(server.port, _post_head()[:-2] + b"X-Flood: " + b"a" * (1 << 20))
    assert reply.status == 431 and reply.closed_after is not None
    assert reply.headers["connection"] == "close" and reply.headers["content-type"] == "application/json"
    assert reply.json()["error"].startswith("headers: ")


def test_a_header_too_large_in_one_read_is_431(server: Server) -> None:
    # Complete in one read, h11 parses it; the application enforces the limit.
    big = "X-Big: " + "a" * (MAX_HEAD_BYTES - 100) + "\r\nX-Big2: " + "b" * 200 + "\r\n"
    reply = _exchange(server.port, _post_head(extra=big) + BODY)
    assert (reply.status, reply.json()) == (431, {"error": f"headers: larger than {MAX_HEAD_BYTES} bytes"})


def test_too_many_headers_is_431(server: Server) -> None:
    many = "".join(f"X-H{i}: v\r\n" for i in range(MAX_HEADERS + 1))
    reply = _exchange(server.port, _post_head(extra=many) + BODY)
    assert (reply.status, reply.json()) == (431, {"error": f"headers: more than {MAX_HEADERS} header fields"})
    fine = "".join(f"X-H{i}: v\r\n" for i in range(MAX_HEADERS - 5))
    assert _exchange(server.port, _post_head(extra=fine + "Connection: close\r\n") + BODY).status == 200


@pytest.mark.parametrize("length", [MAX_TARGET_BYTES + 1, MAX_HEAD_BYTES * 4], ids=["over-target", "endless"])
def test_a_long_url_is_414(server: Server, length: int) -> None:
    reply = _exchange(server.port, b"GET /healthz?" + b"a" * length + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert reply.status == 414 and reply.json()["error"].startswith("url: ")
    assert _exchange(server.port, b"GET /healthz?" + b"a" * 1000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 0.5).status == 200


def test_malformed_http_is_a_json_400(server: Server) -> None:
    reply = _exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert (reply.status, reply.json()) == (400, {"error": "request: invalid HTTP/1.1"})
    assert reply.closed_after is not None


def test_an_upgrade_header_keeps_the_body(server: Server, handler: ModuleType) -> None:
    for upgrade in ("h2c", "websocket"):
        extra = f"Connection: Upgrade, close\r\nUpgrade: {upgrade}\r\n"
        reply = _exchange(server.port, _post_head(extra=extra) + BODY)
        assert (reply.status, reply.json()) == lambda_answer(handler, BODY.decode())


# --------------------------------------------------------------------------- timeouts


def test_a_connection_that_never_completes_a_request_is_closed(start: Any, model_dir: Path) -> None:
    server = start(model_dir, "--request-timeout", "0.5")
    server.wait_for("/readyz", 200)
    silent = _exchange(server.port, b"", timeout=10)
    assert silent.data == b"" and silent.closed_after is not None and silent.closed_after < 5
    partial_head = _exchange(server.port, _post_head()[:30], timeout=10)
    assert partial_head.status == 408 and partial_head.json() == {"error": "request: not complete within 0.5 s"}
    partial_body = _exchange(server.port, _post_head() + BODY[:20], timeout=10)
    assert partial_body.status == 408 and partial_body.headers["connection"] == "close"
    # A slow client: a byte every 0.1 s does not restart the clock.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        try:
            for byte in _post_head()[:-2] + b"X-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)  # the client's pace, not a wait for the server
        except (BrokenPipeError, ConnectionResetError):
            pass
        slow = _read(sock, 10)
    assert slow.status == 408 and time.monotonic() - started < 5
    assert server.stop() == 0
    assert "Traceback" not in server.output()


def test_an_idle_keep_alive_connection_is_closed(start: Any, model_dir: Path) -> None:
    server = start(model_dir, "--keep-alive-timeout", "1", "--request-timeout", "30")
    server.wait_for("/readyz", 200)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(2):  # kept alive between requests
            sock.sendall(_post_head() + BODY)
            reply = _one_response(sock)
            assert reply.status == 200 and "connection" not in reply.headers
        idle = _read(sock, 10)
    assert idle.data == b"" and idle.closed_after is not None and 0.5 < idle.closed_after < 5
    assert server.stop() == 0


# --------------------------------------------------------------------------- draining


def test_answers_carry_connection_close_while_draining(start: Any, model_dir: Path) -> None:
    server = start(model_dir, "--drain-delay", "3")
    server.wait_for("/readyz", 200)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_post_head() + BODY)
        assert "connection" not in _one_response(sock).headers
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_for("/readyz", 503) == {"status": "draining"}
        sock.sendall(_post_head() + BODY)
        reply = _one_response(sock)
        assert reply.status == 200 and reply.headers["connection"] == "close"
        assert _read(sock, 10).closed_after is not None  # and the server closes it
    assert server.proc.wait(timeout=15) == 0


def _wait_until_refused(port: int) -> None:
    """Poll until the listening socket is closed (the shutdown has begun)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, "still accepting connections"
        time.sleep(0.01)


def test_an_idle_keep_alive_connection_still_gets_an_answer_at_shutdown(
    start: Any, model_dir: Path, handler: ModuleType
) -> None:
    server = start(model_dir)
    server.wait_for("/readyz", 200)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_post_head() + BODY)
        assert "connection" not in _one_response(sock).headers
        server.proc.send_signal(signal.SIGTERM)
        _wait_until_refused(server.port)
        # Sent before the client could know: answered (uvicorn alone would close the idle connection).
        sock.sendall(_post_head() + BODY)
        reply = _read(sock, 10)
    assert reply.status == 200 and reply.headers["connection"] == "close"
    assert (200, reply.json()) == lambda_answer(handler, BODY.decode())
    assert server.proc.wait(timeout=15) == 0


def test_a_request_arriving_at_shutdown_is_answered(start: Any, model_dir: Path, handler: ModuleType) -> None:
    server = start(model_dir)
    server.wait_for("/readyz", 200)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = _post_head()
        sock.sendall(head[:20])
        server.wait_for("/healthz", 200)  # the partial head has surely reached the server
        server.proc.send_signal(signal.SIGTERM)
        _wait_until_refused(server.port)
        sock.sendall(head[20:] + BODY)
        reply = _read(sock, 10)
    assert reply.status == 200 and reply.headers["connection"] == "close"
    assert (200, reply.json()) == lambda_answer(handler, BODY.decode())
    assert server.proc.wait(timeout=15) == 0


def test_requests_unfinished_at_the_graceful_timeout_get_a_clean_503(start: Any, model_dir: Path) -> None:
    server = start(model_dir, "--graceful-timeout", "1", "--request-timeout", "30")
    server.wait_for("/readyz", 200)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as half_body,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as half_head,
    ):
        half_body.sendall(_post_head() + BODY[:10])
        half_head.sendall(_post_head()[:25])
        server.wait_for("/healthz", 200)  # both have surely reached the server
        server.proc.send_signal(signal.SIGTERM)
        replies = [_read(half_body, 15), _read(half_head, 15)]
    for reply in replies:
        assert reply.status == 503 and reply.headers["connection"] == "close", reply.data
        assert reply.json() == {"error": "request: not complete when the server stopped; retry it"}
    assert server.proc.wait(timeout=15) == 0
    log = server.output()
    assert "Traceback" not in log and "Exception in ASGI application" not in log and "stopped cleanly" in log


MAX_CONNECTIONS = 6000


def test_connections_in_the_listen_backlog_at_shutdown_are_answered_not_reset(
    start: Any, model_dir: Path, handler: ModuleType
) -> None:
    """Clients connect faster than the server answers, so the kernel holds hundreds of connections, each with its
    request sent, in the listen backlog when SIGTERM closes the listening socket (no drain delay). Closing it used to
    reset all of them (about 1,500 of 2,200 in each of 5 tries); each one is answered now, and the log has no error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))  # the server inherits it
    server = start(model_dir, "--drain-delay", "0")
    server.wait_for("/readyz", 200)
    socks: list[socket.socket] = []
    stop = threading.Event()

    def connect() -> None:
        # Bounded: on a busy machine the server takes longer to reach its close, and unbounded clients ran
        # this process out of file descriptors (16,384). 6,000 still leaves hundreds in the backlog at the close.
        while not stop.is_set() and len(socks) < MAX_CONNECTIONS:
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
            except ConnectionRefusedError:  # the listening socket has closed
                return
            sock.sendall(_post_head() + BODY)
            socks.append(sock)

    clients = [threading.Thread(target=connect) for _ in range(4)]
    try:
        for client in clients:
            client.start()
        while len(socks) < 300:  # connections pile up faster than they are answered
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)
    finally:
        for client in clients:
            client.join(timeout=30)
        stop.set()
    replies = [_read(sock, 15) for sock in socks]
    for sock in socks:
        sock.close()
    statuses = Counter(reply.status for reply in replies)  # None: reset or closed with no answer
    assert statuses == {200: len(socks)}, statuses
    assert all(r.closed_after is not None for r in replies)  # and then closed by the server, every one
    assert replies[-1].headers["connection"] == "close"  # answered while draining
    assert (200, replies[-1].json()) == lambda_answer(handler, BODY.decode())
    assert server.proc.wait(timeout=15) == 0
    log = server.output()
    assert "still in the listen backlog" in log  # the case this test is about did happen
    assert "Traceback" not in log and "ERROR" not in log and "stopped cleanly" in log
