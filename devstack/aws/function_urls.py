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

This module is the API (``install()``, the URL configs in ``URLS``); the
listeners, the event and the answer are ``devstack.aws.function_url_server``'s,
the AWS_IAM and NONE checks ``devstack.aws.function_url_auth``'s.

Not faithful: plain http on 127.0.0.1 (or the compose host), one port per URL
instead of a host name per URL; CORS settings are stored but not applied;
``InvokeMode`` RESPONSE_STREAM is answered buffered; the 403/413/502 bodies are
devstack's approximation of Lambda's.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import LambdaBackend, LambdaStorage
from moto.awslambda.responses import LambdaResponse

from devstack.aws.function_url_server import SETTINGS, UrlConfig, start_listener, stop_listener

log = logging.getLogger("devstack.aws.function_urls")

AUTH_TYPES = ("AWS_IAM", "NONE")


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
        stop_listener(config)


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
        start_listener(config)
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
    stop_listener(config)
    return 204, {"status": 204}, ""


def _drop(account_id: str, region: str, name: str, qualifier: str | None = None) -> None:
    """Forget (and stop) the URL configs of a function, or of one of its qualifiers."""
    with _LOCK:
        keys = [k for k in URLS if k[:3] == (account_id, region, name) and (qualifier is None or k[3] == qualifier)]
        configs = [URLS.pop(k) for k in keys]
    for config in configs:
        stop_listener(config)


def _delete_function(self: LambdaBackend, function_name: str, qualifier: str | None = None) -> None:
    name = function_name.split(":function:", 1)[-1].split(":", 1)[0]
    _ORIGINAL["delete_function"](self, function_name, qualifier)
    if qualifier is None:
        _drop(self.account_id, self.region_name, name)


def _delete_alias(self: LambdaStorage, name: str, function_name: str) -> None:
    _ORIGINAL["delete_alias"](self, name, function_name)
    _drop(self.account_id, self.region_name, function_name.split(":function:", 1)[-1].split(":", 1)[0], name)
