"""The HTTP front of devstack's function URLs: a listener per URL (``UrlConfig``) on a port of its own, whose
handler checks the caller (``devstack.aws.function_url_auth``), turns the request into the function-URL event,
invokes the function through devstack's Lambda and maps its result back to the HTTP answer, as
``devstack.aws.function_urls`` describes."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import lambda_backends

from devstack.aws.function_url_auth import authorize

log = logging.getLogger("devstack.aws.function_urls")

MAX_REQUEST_BYTES = 6 * 1024 * 1024  # 6,291,456: Lambda's synchronous invoke payload limit
# Bodies of these content types reach the function as text; any other body is base64, as on Lambda.
TEXT_TYPES = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "+json",
    "+xml",
)


@dataclass
class UrlConfig:
    """One function URL: its target (function, qualifier), settings and listener."""

    account_id: str
    region: str
    function_name: str
    qualifier: str | None
    function_arn: str  # qualified when the URL belongs to an alias
    auth_type: str
    cors: dict[str, Any] | None
    invoke_mode: str
    url_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
    last_modified: str = ""
    server: http.server.ThreadingHTTPServer | None = None
    url: str = ""

    def as_dict(self, with_modified: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"FunctionUrl": self.url, "FunctionArn": self.function_arn, "AuthType": self.auth_type,
               "CreationTime": self.created, "InvokeMode": self.invoke_mode}  # fmt: skip
        if self.cors:
            out["Cors"] = self.cors
        if with_modified:
            out["LastModifiedTime"] = self.last_modified or self.created
        return out


@dataclass
class _Settings:
    host: str = "127.0.0.1"  # where listeners bind
    public_host: str = "127.0.0.1"  # the host name in FunctionUrl


SETTINGS = _Settings()


# -- serving a URL ---------------------------------------------------------------


def start_listener(config: UrlConfig) -> None:
    """Serve ``config`` on a port of its own: its ``url`` and ``server``."""
    handler = type("UrlHandler", (_Handler,), {"config": config})
    server = http.server.ThreadingHTTPServer((SETTINGS.host, 0), handler)
    server.daemon_threads = True
    config.server = server
    config.url = f"http://{SETTINGS.public_host}:{server.server_address[1]}/"
    threading.Thread(target=server.serve_forever, name=f"function-url-{config.url_id[:8]}", daemon=True).start()


def stop_listener(config: UrlConfig) -> None:
    """Stop serving ``config`` (its config was deleted, or devstack stops)."""
    if config.server is not None:
        config.server.shutdown()
        config.server.server_close()
        config.server = None


def _json(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


FORBIDDEN = _json(403, {"Message": "Forbidden"})


class _TooLarge(Exception):
    """A request body over MAX_REQUEST_BYTES."""


class _Handler(http.server.BaseHTTPRequestHandler):
    """One function URL's requests: any method, any path."""

    config: UrlConfig
    protocol_version = "HTTP/1.1"
    server_version = "devstack-function-url"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def _any(self) -> None:
        request_id = str(uuid.uuid4())
        message = f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction operation"
        try:
            body = self._body()
        except _TooLarge:
            self.close_connection = True  # the rest of the body is not read: nothing else can follow on it
            return self._send(*_json(413, {"Message": message}), request_id)
        except ValueError:  # a Content-Length or chunk size that is not a number
            self.close_connection = True
            return self._send(*_json(400, {"Message": "Bad Request"}), request_id)
        try:
            status, headers, out = self._answer(body, request_id)
        except Exception:  # noqa: BLE001 - a bug here must not kill the listener; the client gets a 500
            log.exception("function URL %s", self.config.url)
            status, headers, out = _json(500, {"Message": "Internal Server Error"})
        self._send(status, headers, out, request_id)

    def _body(self) -> bytes:
        """The request body (Content-Length or chunked), refused past MAX_REQUEST_BYTES before it is all read."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk_size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
                if chunk_size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                size += chunk_size
                if size > MAX_REQUEST_BYTES:
                    raise _TooLarge
                chunks.append(self.rfile.read(chunk_size))
                self.rfile.readline(8)  # the CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            raise _TooLarge
        return self.rfile.read(length) if length else b""

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any  # noqa: N815

    def _send(self, status: int, headers: dict[str, Any], body: bytes, request_id: str) -> None:
        self.send_response(status)
        cookies = headers.pop("Set-Cookie", [])
        for key, value in headers.items():
            self.send_header(key, str(value))
        for cookie in cookies:
            self.send_header("Set-Cookie", cookie)
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer(self, body: bytes, request_id: str) -> tuple[int, dict[str, Any], bytes]:
        config = self.config
        caller = authorize(config, self.command, self.path, dict(self.headers.items()), body)
        if caller is None:
            return FORBIDDEN
        event = url_event(config, self.command, self.path, self.headers, body, request_id, caller,
                          self.client_address[0])  # fmt: skip
        backend = lambda_backends[config.account_id][config.region]
        response_headers: dict[str, str] = {}
        try:
            payload = backend.invoke(config.function_name, config.qualifier, json.dumps(event), {}, response_headers)
        except LambdaClientError as exc:
            log.warning("function URL %s: invoke refused: %s", config.url, exc)
            return _json(502, {"Message": "Internal Server Error"})
        extra = {k: v for k, v in response_headers.items() if k.startswith("x-devstack")}
        if response_headers.get("x-amz-function-error"):
            status, headers, out = _json(502, {"Message": "Internal Server Error"})
            return status, {**headers, **extra}, out
        status, headers, out = url_response(payload if isinstance(payload, bytes) else str(payload or "").encode())
        return status, {**headers, **extra}, out


# -- the event and the answer -------------------------------------------------------


def url_event(
    config: UrlConfig, method: str, raw_path: str, headers: Any, body: bytes, request_id: str,
    caller: dict[str, Any], source_ip: str,
) -> dict[str, Any]:  # fmt: skip
    """The event Lambda sends for a function URL request (payload format version 2.0)."""
    parts = urlsplit(raw_path)
    merged: dict[str, str] = {}
    for key, value in headers.items():
        key = key.lower()
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    cookies = [c.strip() for c in merged.pop("cookie", "").split(";") if c.strip()]
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    content_type = merged.get("content-type", "")
    text = not body or any(t in content_type for t in TEXT_TYPES)
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path or "/",
        "rawQueryString": parts.query,
        "headers": merged,
        "requestContext": {
            "accountId": caller.get("accountId", "anonymous"),
            "apiId": config.url_id,
            "domainName": f"{config.url_id}.lambda-url.{config.region}.on.aws",
            "domainPrefix": config.url_id,
            "http": {
                "method": method,
                "path": parts.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },  # fmt: skip
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "body": body.decode() if text else base64.b64encode(body).decode(),
        "pathParameters": None,
        "isBase64Encoded": not text,
        "stageVariables": None,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if caller.get("iam"):
        event["requestContext"]["authorizer"] = {"iam": caller["iam"]}
    return event


def url_response(payload: bytes) -> tuple[int, dict[str, Any], bytes]:
    """The HTTP answer to a function's result, as Lambda maps it for function URLs."""
    try:
        result = json.loads(payload) if payload else None
    except ValueError:
        return 200, {"Content-Type": "application/json"}, payload
    if not (isinstance(result, dict) and "statusCode" in result):
        return 200, {"Content-Type": "application/json"}, payload  # Lambda infers the rest
    headers: dict[str, Any] = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    headers.setdefault("Content-Type", "application/json")
    if result.get("cookies"):
        headers["Set-Cookie"] = [str(c) for c in result["cookies"]]
    body = result.get("body")
    if body is None:
        out = b""
    elif isinstance(body, str):
        out = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    else:
        out = json.dumps(body).encode()
    return int(result["statusCode"]), headers, out
