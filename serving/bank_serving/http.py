"""HTTP front end of the bank-marketing model, for Kubernetes: ``python -m bank_serving.http``.

The same image as the Lambda (serving/Dockerfile) with another command. Routes:

- ``POST /predict``: the Lambda's request and answer. The body is one record or
  ``{"records": [...]}`` as JSON; the answer is 200 ``{"model_version", "predictions"}``,
  400 ``{"error": "<field>: <problem>"}`` with the Lambda's very messages (both call
  bank_serving.service.respond_to_body), 500 ``{"error": "internal error"}`` only for a
  bug; 413 if the body is larger than --max-body-bytes; 503 while the model loads.
- ``GET /healthz``: liveness, 200 while the process serves (model loading or draining included).
- ``GET /readyz``: readiness, 200 ``{"status": "ready", "model_version"}`` only once the
  model is loaded and until SIGTERM; 503 ``{"status": "loading" | "draining"}`` otherwise.
- ``GET /openapi.json``: the OpenAPI document of all this (bank_serving.openapi, docs/openapi.json).
- anything else: 404 (unknown path) or 405 (known path, other method), JSON ``{"error"}``.

Metrics: Prometheus text on a port of its own, ``GET /metrics`` on --metrics-port (9090;
-1 for none): answers by route and status, their durations, records scored, the model
version, readiness (bank_serving.metrics). It answers while the server drains.

Limits (bank_serving.protocol): request line + headers buffered up to 16 KiB; a
target over 8 KiB gets 414, more than 100 header fields or 16 KiB of them 431; a
request not complete within --request-timeout (10 s) of its start, or of the
connection's, gets 408 and the connection closes; an idle keep-alive connection
closes after --keep-alive-timeout (75 s). Protocol errors answer JSON too.

Start-up: the socket listens first, then the model loads in a background thread
from $BANK_MODEL_DIR (default /opt/ml/model), checked exactly as the Lambda's init
checks it. /healthz answers during a slow load, so a liveness probe does not
restart a pod that is only loading, and /readyz stays 503 until the model can
score. A load that fails (missing, corrupt, other scikit-learn) logs the error,
writes it to the Kubernetes termination log (/dev/termination-log, when it
exists) and exits 1: `kubectl get pods` shows the crash, `describe` the reason.

Shutdown: on SIGTERM (or SIGINT) /readyz answers 503 at once and every answer
carries ``Connection: close``, so keep-alive clients move to other pods; after
--drain-delay seconds (default 0; give Kubernetes' endpoint removal a few
seconds to spread, or use a preStop sleep) the connections still in the kernel's
listen backlog are accepted (closing the socket would reset them, requests sent
included), the listening socket closes, idle
keep-alive connections close, requests in flight or still arriving finish (at
most --graceful-timeout seconds; those still incomplete then get 503 and a
close, not a cancelled task) and the process exits 0. Keep drain delay +
graceful timeout below the pod's terminationGracePeriodSeconds (default 30).

Server: uvicorn with h11 and uvloop, and a plain ASGI callable (no framework).
h11 rather than httptools: h11 bounds the request head it buffers (httptools
accumulates an endless header or URL on the event loop: hundreds of MB from a
few connections) and keeps the body of a request with an ``Upgrade`` header
(httptools stops parsing at it); it costs about 40 % of the peak throughput,
which stays about twice the goal (BENCHMARKS.md). Scoring runs on the event
loop: it is CPU work of about 0.06 ms per record (5 ms for 1,000), cheaper than
a hop to a thread. One process serves one core; scale with replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from bank_serving.metrics import ServingMetrics
from bank_serving.model import OnnxModel, load_model_dir
from bank_serving.openapi import build_openapi
from bank_serving.protocol import (
    DEFAULT_MAX_BODY_BYTES,
    KEEP_ALIVE_TIMEOUT,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_TARGET_BYTES,
    REQUEST_TIMEOUT,
    limited_h11,
)
from bank_serving.service import encode_answer, respond_to_body

logger = logging.getLogger("bank_serving.http")

DEFAULT_MODEL_DIR = "/opt/ml/model"  # as handler.py
DEFAULT_METRICS_PORT = 9090  # Prometheus' usual port; the manifest names it "metrics"
TERMINATION_LOG = "/dev/termination-log"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")
_ROUTES = {"/predict": "POST", "/healthz": "GET", "/readyz": "GET", "/openapi.json": "GET"}
_ROUTE_LIST = ", ".join(f"{method} {path}" for path, method in _ROUTES.items())


class TooLarge(Exception):
    """The request body is larger than the limit."""


class Disconnected(Exception):
    """The client went away before sending its whole body."""


def _json(
    status: int, answer: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    body = encode_answer(answer).encode()
    return status, body, [_JSON, (b"content-length", str(len(body)).encode()), *headers]


class ServingApp:
    """The ASGI application: routes, the model once loaded, and the draining flag."""

    def __init__(self, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, metrics: ServingMetrics | None = None) -> None:
        self.max_body_bytes = max_body_bytes
        self.model: OnnxModel | None = None
        self.draining = False
        self.metrics = metrics or ServingMetrics()
        self._openapi: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan and websockets are switched off in the Config
            return
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        allowed = _ROUTES.get(path)
        too_large = _too_large(scope)
        if too_large is not None:
            status, body, headers = too_large
        elif allowed is None:
            status, body, headers = _json(404, {"error": f"not found: {path} (routes: {_ROUTE_LIST})"})
        elif method != allowed:
            status, body, headers = _json(
                405, {"error": f"method {method} not allowed on {path}; use {allowed}"}, [(b"allow", allowed.encode())]
            )
        elif path == "/predict":
            try:
                status, body, headers = await self._predict(scope, receive)
            except Disconnected:
                return
        elif path == "/healthz":
            status, body, headers = _json(200, {"status": "ok"})
        elif path == "/readyz":
            status, body, headers = self._readiness()
        else:
            body = self.openapi()
            status, headers = 200, [_JSON, (b"content-length", str(len(body)).encode())]
        if self.draining and _CLOSE not in headers:  # keep-alive clients reconnect, through the Service, elsewhere
            headers = [*headers, _CLOSE]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(path, status, time.perf_counter() - started)

    def openapi(self) -> bytes:
        """The OpenAPI document, encoded on first use (not at start-up: it costs nothing until asked)."""
        if self._openapi is None:
            self._openapi = json.dumps(build_openapi(), separators=(",", ":")).encode()
        return self._openapi

    def _readiness(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if self.draining:
            return _json(503, {"status": "draining"})
        if self.model is None:
            return _json(503, {"status": "loading"})
        return _json(200, {"status": "ready", "model_version": self.model.version})

    async def _predict(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        try:
            raw = await self._read_body(scope, receive)
        except TooLarge:
            # Close the connection: the rest of the body is not read, so it cannot carry another request.
            return _json(413, {"error": f"body: larger than {self.max_body_bytes} bytes"}, [_CLOSE])
        model = self.model
        if model is None:
            answer = {"error": "model not loaded yet; retry when /readyz answers 200"}
            return _json(503, answer, [(b"retry-after", b"1")])
        status, answer = respond_to_body(raw, model)
        if status == 200:
            self.metrics.records.inc(len(answer["predictions"]))
        return _json(status, answer)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and int(value) > self.max_body_bytes:  # h11 checked it is digits
                raise TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:  # chunked transfer: no content-length to check up front
                raise TooLarge
            if not message.get("more_body", False):
                return chunk if not chunks else b"".join([*chunks, chunk])
            chunks.append(chunk)


def _too_large(scope: Scope) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """431 or 414 for a head within what h11 buffers but beyond the limits; None for the rest."""
    headers = scope["headers"]
    if len(headers) > MAX_HEADERS:
        return _json(431, {"error": f"headers: more than {MAX_HEADERS} header fields"}, [_CLOSE])
    # h11 refuses a head over MAX_HEAD_BYTES only while it is incomplete; one read can bring a whole one.
    if sum(len(name) + len(value) for name, value in headers) > MAX_HEAD_BYTES:
        return _json(431, {"error": f"headers: larger than {MAX_HEAD_BYTES} bytes"}, [_CLOSE])
    if len(scope["raw_path"]) + len(scope["query_string"]) > MAX_TARGET_BYTES:
        return _json(414, {"error": f"url: longer than {MAX_TARGET_BYTES} bytes"}, [_CLOSE])
    return None


class ServingServer(uvicorn.Server):
    """uvicorn's server, plus: load the model once listening, drain on SIGTERM, exit 0 after a drain."""

    def __init__(self, config: uvicorn.Config, app: ServingApp, model_dir: Path, drain_delay: float,
                 termination_log: str = TERMINATION_LOG, graceful_timeout: float = 20,
                 metrics_port: int | None = None) -> None:  # fmt: skip
        super().__init__(config)
        self.app = app
        self.metrics_port = metrics_port
        self.model_dir = model_dir
        self.drain_delay = drain_delay
        self.graceful_timeout = graceful_timeout
        self.termination_log = termination_log
        self.exit_code = 0
        self._drain_until: float | None = None

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started:
            return
        if self.metrics_port is not None:
            try:
                self.app.metrics.serve(self.config.host, self.metrics_port)
            except OSError as err:  # as uvicorn's own port: say which, and stop
                logger.error("metrics: cannot listen on %s:%d: %s", self.config.host, self.metrics_port, err)
                self.exit_code, self.should_exit = 1, True
                return
            logger.info("metrics on http://%s:%d/metrics", self.config.host, self.app.metrics.port)
        # Listening: now load, so /healthz answers meanwhile.
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            model = load_model_dir(self.model_dir)
        except Exception as err:  # noqa: BLE001 - ModelLoadError, or anything else: the pod must not stay up
            message = f"model load failed: {err}"
            logger.error(message, exc_info=not isinstance(err, RuntimeError))
            self._write_termination_log(message)
            self.exit_code = 1
            self.should_exit = True
            return
        self.app.model = model
        if not self.app.draining:
            self.app.metrics.loaded(model.version)
        logger.info("model %s loaded from %s in %.0f ms: ready", model.version, self.model_dir,
                    (time.perf_counter() - started) * 1000)  # fmt: skip

    def _write_termination_log(self, message: str) -> None:
        """Kubernetes shows this file's text as the container's termination message (only if it exists)."""
        try:
            if os.path.isfile(self.termination_log):
                Path(self.termination_log).write_text(message + "\n")
        except OSError:
            pass

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.app.draining:  # a second signal: stop now (SIGINT) or at least do not wait any longer
            self.should_exit = True
            self.force_exit = self.force_exit or sig == signal.SIGINT
            return
        self.app.draining = True
        self.app.metrics.ready.set(0)
        logger.info("%s: /readyz answers 503; draining (delay %.1f s)", signal.Signals(sig).name, self.drain_delay)
        if self.drain_delay > 0:
            self._drain_until = time.monotonic() + self.drain_delay
        else:
            self.should_exit = True

    async def shutdown(self, sockets: Any = None) -> None:
        # At the graceful timeout, requests still arriving get a 503 and a close: uvicorn would
        # cancel their tasks a moment later (its own timeout is one second longer), which logs a
        # traceback and answers text/plain 500.
        loop = asyncio.get_running_loop()
        adopted = await self._adopt_backlog()
        if adopted:
            logger.info("serving %d connection(s) still in the listen backlog", adopted)
        timer = loop.call_later(self.graceful_timeout, self._close_unfinished)
        try:
            await super().shutdown(sockets=sockets)
        finally:
            timer.cancel()
            self.app.metrics.close()

    async def _adopt_backlog(self) -> int:
        """Accept the connections the kernel holds in the listen backlog, as the server's own, before uvicorn closes
        the listening socket: closing it would reset each of them, a request already sent included (an overloaded
        pod, or one stopped with no drain delay, holds hundreds). uvicorn closes the listener right after, with no
        await between, so none can queue up in between but for the instant of two system calls."""
        loop = asyncio.get_running_loop()
        adopted = 0
        for server in self.servers:
            for listener in server.sockets or ():
                sock = socket.socket(fileno=os.dup(listener.fileno()))  # the same listening socket
                sock.setblocking(False)
                try:
                    while True:
                        try:
                            conn, _ = sock.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        await loop.connect_accepted_socket(self._protocol, conn)
                        adopted += 1
                finally:
                    sock.close()  # the duplicate only
        return adopted

    def _protocol(self) -> asyncio.Protocol:
        """A connection's protocol, as uvicorn's startup makes them."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )

    def _close_unfinished(self) -> None:
        unfinished = list(self.server_state.connections)
        if unfinished:
            logger.warning("graceful timeout: closing %d connection(s) with an unfinished request", len(unfinished))
        for connection in unfinished:
            close = getattr(connection, "close_unfinished", None)
            if close is not None:
                close()

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises a caught SIGTERM after shutting down, so the process would die of it
        # (exit 143); a drained stop is a clean one here: exit 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def build_server(
    model_dir: str | os.PathLike[str],
    host: str = "0.0.0.0",
    port: int = 8080,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    drain_delay: float = 0.0,
    graceful_timeout: int = 20,
    request_timeout: float = REQUEST_TIMEOUT,
    keep_alive_timeout: int = KEEP_ALIVE_TIMEOUT,
    access_log: bool = False,
    termination_log: str = TERMINATION_LOG,
    metrics_port: int | None = None,
) -> ServingServer:
    app = ServingApp(max_body_bytes)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=limited_h11(request_timeout),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,  # our logging.basicConfig formats uvicorn's records too
        access_log=access_log,
        server_header=False,
        timeout_keep_alive=keep_alive_timeout,
        # A backstop: ServingServer.shutdown closes unfinished requests at graceful_timeout itself.
        timeout_graceful_shutdown=graceful_timeout + 1,
    )
    return ServingServer(config, app, Path(model_dir), drain_delay, termination_log, graceful_timeout, metrics_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bank_serving.http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model-dir", default=os.environ.get("BANK_MODEL_DIR") or DEFAULT_MODEL_DIR,
                        help="model.onnx + model.json (default: $BANK_MODEL_DIR, else /opt/ml/model)")  # fmt: skip
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="larger bodies get 413")
    parser.add_argument("--drain-delay", type=float, default=0.0,
                        help="seconds between SIGTERM (readyz 503) and closing the listening socket")  # fmt: skip
    parser.add_argument("--graceful-timeout", type=int, default=20,
                        help="seconds in-flight requests get to finish after the socket closes")  # fmt: skip
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT,
                        help="seconds a request (head and body) may take to arrive; then 408 and close")  # fmt: skip
    parser.add_argument("--keep-alive-timeout", type=int, default=KEEP_ALIVE_TIMEOUT,
                        help="seconds an idle keep-alive connection stays open")  # fmt: skip
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                        help="Prometheus metrics on this port, GET /metrics (-1: none)")  # fmt: skip
    parser.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--termination-log", default=TERMINATION_LOG, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    server = build_server(
        args.model_dir,
        args.host,
        args.port,
        max_body_bytes=args.max_body_bytes,
        drain_delay=args.drain_delay,
        graceful_timeout=args.graceful_timeout,
        request_timeout=args.request_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        access_log=args.access_log,
        termination_log=args.termination_log,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
    )
    server.run()
    if server.started and server.exit_code == 0:
        logger.info("stopped cleanly")
    return server.exit_code if server.started else 3  # 3: could not listen (uvicorn logged why)


if __name__ == "__main__":
    sys.exit(main())
