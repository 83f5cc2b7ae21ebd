"""Lambda function URLs on devstack: moto's URL configs, with a Qualifier, each served on a port of its own.

moto 5.2.5 stores a function URL config (Create/Get/Update/DeleteFunctionUrlConfig)
but ignores ``Qualifier`` and serves nothing at the URL it makes up
(``https://<id>.lambda-url.<region>.on.aws``). ``install()`` patches its Lambda
API so that:

- a URL config belongs to the function or to one of its aliases (``Qualifier``:
  an alias name or ``$LATEST``), as on Lambda: FunctionArn is the qualified ARN;
  a second Create for the same target is ``ResourceConflictException``; Get,
  Update and Delete of a missing one are ``ResourceNotFoundException``; AuthType
  must be ``AWS_IAM`` or ``NONE`` (``ValidationException``); deleting the
  function or the alias deletes its URL configs;
- each URL config is served by an HTTP listener on ``http://<public host>:<port>/``
  (the FunctionUrl the API returns), which turns a request into the function-URL
  event (payload format 2.0, as Lambda sends it), invokes the alias's version
  through devstack's Lambda (a container, ``devstack.aws.awslambda``) and maps the
  answer back: ``statusCode``, ``headers``, ``cookies``, ``body`` (base64 when
  ``isBase64Encoded``); a result without ``statusCode`` is 200 with its JSON as
  the body; a function error is 502;
- ``AWS_IAM``: the request must carry a valid SigV4 signature (service
  ``lambda``, the URL's region) by an access key devstack knows (an IAM user's,
  or devstack's own default ``testing`` key), signed within 15 minutes; when
  moto enforces IAM (``INITIAL_NO_AUTH_ACTION_COUNT``), the caller's policies
  must also allow both ``lambda:InvokeFunctionUrl`` and ``lambda:InvokeFunction``
  on the function (Lambda requires both for URLs created since October 2025).
  Otherwise 403 ``{"Message": "Forbidden"}``;
- ``NONE``: the resource policy of the URL's target (the alias's own, see
  ``devstack.aws.awslambda``) must allow principal ``*`` both
  ``lambda:InvokeFunctionUrl`` with ``FunctionUrlAuthType`` ``NONE`` and
  ``lambda:InvokeFunction`` (AddPermission; its only conditions may be the ones
  a URL request meets: ``lambda:InvokedViaFunctionUrl`` true,
  ``lambda:FunctionUrlAuthType`` NONE), as Lambda requires both for URLs created
  since October 2025; else 403 (the log says which statement is missing);
- a request body over 6 MB (Lambda's synchronous payload limit, 6,291,456
  bytes) is 413, without invoking.

Not faithful: plain http on 127.0.0.1 (or the compose host), one port per URL
instead of a host name per URL; CORS settings are stored but not applied;
``InvokeMode`` RESPONSE_STREAM is answered buffered; the 403/413/502 bodies are
devstack's approximation of Lambda's.
"""

from __future__ import annotations

import base64
import hmac
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
from moto.awslambda.models import LambdaBackend, LambdaStorage, lambda_backends
from moto.awslambda.responses import LambdaResponse

log = logging.getLogger("devstack.aws.function_urls")

MAX_REQUEST_BYTES = 6 * 1024 * 1024  # 6,291,456: Lambda's synchronous invoke payload limit
SIGNATURE_MAX_AGE = 15 * 60  # seconds a SigV4 signature is valid, as on AWS
AUTH_TYPES = ("AWS_IAM", "NONE")
DEFAULT_KEYS = {"testing": "testing"}  # devstack's own client credentials (devstack.client_env)
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


class ValidationException(LambdaClientError):
    def __init__(self, message: str) -> None:
        super().__init__("ValidationException", message)


class ResourceConflictException(LambdaClientError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("ResourceConflictException", message)


class ResourceNotFoundException(LambdaClientError):
    code = 404

    def __init__(self, message: str = "The resource you requested does not exist.") -> None:
        super().__init__("ResourceNotFoundException", message)


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
URLS: dict[tuple[str, str, str, str], UrlConfig] = {}  # (account, region, function name, qualifier or "")
_LOCK = threading.Lock()
_ORIGINAL: dict[str, Any] = {}


def install(host: str = "127.0.0.1", public_host: str = "127.0.0.1") -> None:
    """Patch moto's function URL API (idempotent); listeners bind ``host``, URLs name ``public_host``."""
    SETTINGS.host, SETTINGS.public_host = host, public_host
    if _ORIGINAL:
        return
    _ORIGINAL.update(
        delete_function=LambdaBackend.delete_function,
        delete_alias=LambdaStorage.delete_alias,
    )
    LambdaResponse.create_function_url_config = _create  # type: ignore[method-assign]
    LambdaResponse.get_function_url_config = _get  # type: ignore[method-assign]
    LambdaResponse.update_function_url_config = _update  # type: ignore[method-assign]
    LambdaResponse.delete_function_url_config = _delete  # type: ignore[method-assign]
    LambdaBackend.delete_function = _delete_function  # type: ignore[method-assign]
    LambdaStorage.delete_alias = _delete_alias  # type: ignore[method-assign]


def close() -> None:
    """Stop every listener (devstack stops)."""
    with _LOCK:
        configs = list(URLS.values())
        URLS.clear()
    for config in configs:
        _stop(config)


# -- the API ------------------------------------------------------------------


def _target(response: LambdaResponse) -> tuple[LambdaBackend, str, str | None, str]:
    """(backend, function name, qualifier, qualified ARN) of a URL config request; errors as Lambda's."""
    from urllib.parse import unquote

    backend = response.backend
    name_or_arn = unquote(response.path.split("/")[-2])
    qualifier = response.querystring.get("Qualifier", [None])[0]
    fn = backend._lambdas.get_function_by_name_or_arn_forbid_qualifier(name_or_arn)
    arn = fn.function_arn.rsplit(":$LATEST", 1)[0]
    if qualifier is None:
        return backend, fn.function_name, None, arn
    if qualifier.isdigit():
        raise ValidationException(
            f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: ((?!^\\d+$)^[0-9a-zA-Z-_]+$)|(^\\$LATEST$)"
        )
    if qualifier != "$LATEST":
        backend._lambdas.get_alias(qualifier, fn.function_name)  # ResourceNotFoundException if missing
    return backend, fn.function_name, qualifier, f"{arn}:{qualifier}"


def _key(backend: LambdaBackend, name: str, qualifier: str | None) -> tuple[str, str, str, str]:
    return backend.account_id, backend.region_name, name, qualifier or ""


def _auth_type(body: dict[str, Any], required: bool) -> str | None:
    auth = body.get("AuthType")
    if auth is None and not required:
        return None
    if auth not in AUTH_TYPES:
        raise ValidationException(
            f"1 validation error detected: Value '{auth}' at 'authType' failed to satisfy constraint: "
            "Member must satisfy enum value set: [NONE, AWS_IAM]"
        )
    return str(auth)


def _create(self: LambdaResponse) -> tuple[int, dict[str, Any], str]:
    backend, name, qualifier, arn = _target(self)
    body = self.json_body
    config = UrlConfig(
        backend.account_id, backend.region_name, name, qualifier, arn, str(_auth_type(body, required=True)),
        body.get("Cors"), body.get("InvokeMode") or "BUFFERED",
    )  # fmt: skip
    with _LOCK:
        if _key(backend, name, qualifier) in URLS:
            raise ResourceConflictException(
                f"Failed to create function url config for [functionArn = {arn}]. "
                "Error message:  FunctionUrlConfig exists for this Lambda function"
            )
        _serve(config)
        URLS[_key(backend, name, qualifier)] = config
    log.info("function URL %s -> %s (%s)", config.url, arn, config.auth_type)
    return 201, {"status": 201}, json.dumps(config.as_dict(with_modified=False))


def _existing(self: LambdaResponse) -> tuple[LambdaBackend, str, str | None, UrlConfig]:
    backend, name, qualifier, _arn = _target(self)
    config = URLS.get(_key(backend, name, qualifier))
    if config is None:
        raise ResourceNotFoundException()
    return backend, name, qualifier, config


def _get(self: LambdaResponse) -> tuple[int, dict[str, Any], str]:
    return 200, {"status": 200}, json.dumps(_existing(self)[3].as_dict())


def _update(self: LambdaResponse) -> tuple[int, dict[str, Any], str]:
    config = _existing(self)[3]
    body = self.json_body
    auth = _auth_type(body, required=False)
    with _LOCK:
        if auth is not None:
            config.auth_type = auth
        if "Cors" in body:
            config.cors = body["Cors"]
        if body.get("InvokeMode"):
            config.invoke_mode = body["InvokeMode"]
        config.last_modified = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return 200, {"status": 200}, json.dumps(config.as_dict())


def _delete(self: LambdaResponse) -> tuple[int, dict[str, Any], str]:
    backend, name, qualifier, config = _existing(self)
    with _LOCK:
        URLS.pop(_key(backend, name, qualifier), None)
    _stop(config)
    return 204, {"status": 204}, ""


def _drop(account_id: str, region: str, name: str, qualifier: str | None = None) -> None:
    """Forget (and stop) the URL configs of a function, or of one of its qualifiers."""
    with _LOCK:
        keys = [k for k in URLS if k[:3] == (account_id, region, name) and (qualifier is None or k[3] == qualifier)]
        configs = [URLS.pop(k) for k in keys]
    for config in configs:
        _stop(config)


def _delete_function(self: LambdaBackend, function_name: str, qualifier: str | None = None) -> None:
    name = function_name.split(":function:", 1)[-1].split(":", 1)[0]
    _ORIGINAL["delete_function"](self, function_name, qualifier)
    if qualifier is None:
        _drop(self.account_id, self.region_name, name)


def _delete_alias(self: LambdaStorage, name: str, function_name: str) -> None:
    _ORIGINAL["delete_alias"](self, name, function_name)
    _drop(self.account_id, self.region_name, function_name.split(":function:", 1)[-1].split(":", 1)[0], name)


# -- serving a URL ---------------------------------------------------------------


def _serve(config: UrlConfig) -> None:
    handler = type("UrlHandler", (_Handler,), {"config": config})
    server = http.server.ThreadingHTTPServer((SETTINGS.host, 0), handler)
    server.daemon_threads = True
    config.server = server
    config.url = f"http://{SETTINGS.public_host}:{server.server_address[1]}/"
    threading.Thread(target=server.serve_forever, name=f"function-url-{config.url_id[:8]}", daemon=True).start()


def _stop(config: UrlConfig) -> None:
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


# -- authorization --------------------------------------------------------------------


def authorize(config: UrlConfig, method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """Who is calling (the event's requestContext parts), or None: 403."""
    if config.auth_type == "NONE":
        return {} if public_access_allowed(config) else None
    return verify_sigv4(config, method, path, headers, body)


# What an unauthenticated request through a NONE URL presents to its function's resource policy.
URL_REQUEST_CONTEXT = {"lambda:FunctionUrlAuthType": "NONE", "lambda:InvokedViaFunctionUrl": "true"}
PUBLIC_ACTIONS = ("lambda:InvokeFunctionUrl", "lambda:InvokeFunction")


def public_access_allowed(config: UrlConfig) -> bool:
    """The resource policy of the URL's target allows ``*`` both PUBLIC_ACTIONS for a request through the URL.

    lambda:InvokeFunctionUrl must be the NONE auth type's (its FunctionUrlAuthType
    condition); lambda:InvokeFunction may carry only conditions such a request meets.
    """
    from devstack.aws.lambda_policies import resource_policy

    statements = resource_policy(config.account_id, config.region, config.function_name, config.qualifier)
    missing = [action for action in PUBLIC_ACTIONS if not any(_allows_public(s, action, config) for s in statements)]
    if missing:
        log.info(
            "function URL %s (NONE): 403, its resource policy does not allow * %s", config.url, " nor ".join(missing)
        )
    return not missing


def _allows_public(statement: dict[str, Any], action: str, config: UrlConfig) -> bool:
    actions = statement.get("Action")
    conditions = statement.get("Condition") or {}
    if (
        action == "lambda:InvokeFunctionUrl"
        and (conditions.get("StringEquals") or {}).get("lambda:FunctionUrlAuthType") != "NONE"
    ):
        return False  # the public URL statement names the auth type it opens
    return (
        statement.get("Effect", "Allow") == "Allow"
        and any(a in (action, "lambda:*", "*") for a in (actions if isinstance(actions, list) else [actions]))
        and statement.get("Principal") in ("*", {"AWS": "*"})
        and statement.get("Resource") == config.function_arn
        and _conditions_met(conditions, URL_REQUEST_CONTEXT)
    )


def _conditions_met(conditions: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    """Every condition holds in ``context`` (StringEquals and Bool; any other operator or key does not)."""
    for operator, tests in conditions.items():
        for key, wanted in tests.items():
            values = [str(v) for v in (wanted if isinstance(wanted, list) else [wanted])]
            have = context.get(key)
            if operator == "Bool":
                values, have = [v.lower() for v in values], (have or "").lower()
            elif operator != "StringEquals":
                return False
            if have is None or have not in values:
                return False
    return True


def _secret_of(access_key: str) -> tuple[str, str, str] | None:
    """(secret, account id, user ARN) of an access key devstack knows."""
    from moto.iam.models import iam_backends

    for account_id, partitions in list(iam_backends.items()):
        for backend in partitions.values():
            key = backend.access_keys.get(access_key)
            if key is not None and key.status == "Active":
                who = key.role_arn or f"arn:aws:iam::{account_id}:user/{key.user_name}"
                return key.secret_access_key, account_id, who
    if access_key in DEFAULT_KEYS:
        return DEFAULT_KEYS[access_key], "123456789012", "arn:aws:iam::123456789012:root"
    return None


def verify_sigv4(
    config: UrlConfig, method: str, path: str, headers: dict[str, str], body: bytes
) -> dict[str, Any] | None:
    """The caller of a request signed with SigV4 for this URL, or None (unsigned, unknown key, bad signature...)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return None
    fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 ") :].split(",") if "=" in part)
    try:
        access_key, _date, region, service, _term = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        signature = fields["Signature"]
        stamp = datetime.strptime(lower["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return None
    if service != "lambda" or region != config.region or "host" not in signed:
        return None
    if abs((datetime.now(UTC) - stamp).total_seconds()) > SIGNATURE_MAX_AGE:
        return None
    known = _secret_of(access_key)
    if known is None:
        return None
    secret, account_id, who = known
    token = lower.get("x-amz-security-token")
    signer = SigV4Auth(Credentials(access_key, secret, token), "lambda", region)
    request = AWSRequest(method=method, url=f"http://{lower['host']}{path}", data=body,
                         headers={k: v for k, v in headers.items() if k.lower() in signed})  # fmt: skip
    request.context["timestamp"] = lower["x-amz-date"]
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        return None
    if not _iam_allows(access_key, headers, config, method, path, body):
        return None
    return {
        "accountId": account_id,
        "iam": {
            "accessKey": access_key,
            "accountId": account_id,
            "callerId": access_key,
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": who,
            "userId": access_key,
        },  # fmt: skip
    }


def _iam_allows(
    access_key: str, headers: dict[str, str], config: UrlConfig, method: str, path: str, body: bytes
) -> bool:
    """When moto enforces IAM, the caller's policies must allow lambda:InvokeFunctionUrl and lambda:InvokeFunction
    on the function (both, for URLs created since October 2025)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequest
    from werkzeug.exceptions import HTTPException  # moto's errors (AccessDenied and devstack.aws.iam's JSON one)

    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        return True
    if access_key in DEFAULT_KEYS:
        return False  # not an IAM identity: moto would refuse it too
    for action in ("InvokeFunctionUrl", "InvokeFunction"):
        try:
            request = IAMRequest(account_id=config.account_id, method=method, path=path, data={}, body=body,
                                 headers=headers, action=action)  # fmt: skip
            request.check_action_permitted(config.function_arn)
        except HTTPException as exc:
            log.info("function URL %s: lambda:%s: %s", config.url, action, exc)
            return False
    return True
