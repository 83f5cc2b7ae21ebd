"""uvicorn's h11 protocol plus the limits a production server needs (bank_serving.http uses it).

h11 itself bounds what a request head may buffer (request line and headers,
MAX_HEAD_BYTES): beyond it h11 stops parsing, and this layer answers 414 if the
request line never ended, else 431, instead of uvicorn's text/plain 400. What
uvicorn lacks, added here, in one small class:

- a request timeout: a connection whose request (head and body) is not complete
  REQUEST_TIMEOUT seconds after it opened or after its request began is answered
  408 and closed (a connection that sent nothing is just closed), so slow or
  silent clients cannot hold connections for ever;
- error answers as JSON, like every other answer, with ``Connection: close``,
  followed by a lingering close (half-close, then discard what the client still
  sends for up to LINGER_SECONDS) so that the client reads the answer instead of
  a reset;
- draining: at shutdown uvicorn closes every connection not busy with an
  answer, cutting requests on their way; here a connection receiving a request
  keeps it, an idle one stays open SHUTDOWN_IDLE_GRACE for a request already
  sent, and such answers carry ``Connection: close`` (the application adds it
  while draining); `close_unfinished` answers 503 to requests still incomplete
  at the graceful timeout, before uvicorn would cancel them into a 500 with a
  traceback.

The keep-alive idle timeout is uvicorn's (Config.timeout_keep_alive). This
relies on H11Protocol's attributes (conn, cycle, transport, the keep-alive
timer): uvicorn is pinned, and tests/integration/bank_serving/test_http_limits.py
exercises every path over raw sockets.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# The server's limits (docs/serving.md and docs/openapi.json state them).
MAX_HEAD_BYTES = 16 * 1024  # request line + headers, buffered at most: h11's default, and Node.js's
MAX_TARGET_BYTES = 8 * 1024  # request target (path + query); longer: 414
MAX_HEADERS = 100  # header fields; more: 431
# 1 MiB: four times the largest valid compact body (1,000 records), and ingress-nginx's default limit.
DEFAULT_MAX_BODY_BYTES = 1 << 20
REQUEST_TIMEOUT = 10.0  # seconds for a whole request (head + body) to arrive, from connect or its first byte
# Idle keep-alive: longer than the 60 s after which ingress-nginx and AWS load balancers drop an idle
# upstream connection, so the proxy closes first and never reuses one this server is closing (a 502).
KEEP_ALIVE_TIMEOUT = 75
LINGER_SECONDS = 2.0  # after an error answer: how long to drain what the client still sends
# At shutdown an idle keep-alive connection stays open this long: a request the client sent before it
# could see the close is still answered (with Connection: close) instead of being cut.
SHUTDOWN_IDLE_GRACE = 1.0


class LimitedH11Protocol(H11Protocol):
    """One HTTP/1.1 connection: uvicorn's H11Protocol with a request timeout and clean error closes."""

    request_timeout: float = REQUEST_TIMEOUT

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._lingering = False
        # Armed from the start: a connection that never sends a complete request is closed too.
        self._request_timer: asyncio.TimerHandle | None = self.loop.call_later(self.request_timeout, self._timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # after an error answer: read and drop, so the close is not a reset
            return
        super().data_received(data)
        self._watch_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._watch_request()  # a pipelined request may have begun

    def _incomplete(self) -> bool:
        """True while a request has begun (some bytes of it, or its head) but is not complete."""
        state = self.conn.their_state
        return state is h11.SEND_BODY or (state is h11.IDLE and bool(self.conn.trailing_data[0]))

    def _watch_request(self) -> None:
        if not self._incomplete():
            self._cancel_request_timer()
        elif self._request_timer is None:  # not re-armed per chunk: the timeout is for the whole request
            self._request_timer = self.loop.call_later(self.request_timeout, self._timed_out)

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        if self._incomplete():
            self.close_with(408, f"request: not complete within {self.request_timeout:g} s")
        elif self.cycle is None:  # connected, sent nothing
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this when h11 refuses the request (malformed, or a head larger than MAX_HEAD_BYTES)."""
        buffered = self.conn.trailing_data[0]
        if len(buffered) > MAX_HEAD_BYTES:
            if b"\n" in buffered:
                self.close_with(431, f"headers: request line and headers larger than {MAX_HEAD_BYTES} bytes")
            else:
                self.close_with(414, f"url: request line larger than {MAX_HEAD_BYTES} bytes")
        else:
            self.close_with(400, "request: invalid HTTP/1.1")

    def close_with(self, status: int, message: str) -> None:
        """Answer `status` with {"error": message} unless an answer has begun, then close without a reset."""
        self._cancel_request_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            if self.cycle.response_started:  # too late to answer: just close
                self.transport.close()
                return
            # The application waits for a body that will not come: it sees a disconnect and answers nothing.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = json.dumps({"error": message}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]  # fmt: skip
            response = h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode())
            events = (response, h11.Data(data=body), h11.EndOfMessage())
            self.transport.write(b"".join(self.conn.send(event) or b"" for event in events))
        self._linger()

    def _linger(self) -> None:
        """Close our side now and the connection once the client closes its side, or in LINGER_SECONDS."""
        self._lingering = True
        self._unset_keepalive_if_required()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def shutdown(self) -> None:
        """Called by uvicorn when the listening socket closes: let requests on their way finish."""
        if self._lingering or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            super().shutdown()  # an answer is under way: uvicorn closes after it
        elif not self._incomplete():
            # Idle: close after a short grace, through the keep-alive timer, which a request's first byte cancels.
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(SHUTDOWN_IDLE_GRACE, self._linger)
        # else a request is arriving: it finishes (or the request timeout or graceful timeout ends it)

    def close_unfinished(self) -> None:
        """At the graceful timeout: answer a request still incomplete 503 and close; idle ones just close."""
        if self._lingering or self.transport.is_closing():
            return
        if self._incomplete():
            self.close_with(503, "request: not complete when the server stopped; retry it")
        elif self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def limited_h11(request_timeout: float = REQUEST_TIMEOUT) -> type[LimitedH11Protocol]:
    """The protocol class with this request timeout (uvicorn instantiates the class it is given)."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"request_timeout": request_timeout})
