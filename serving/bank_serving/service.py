"""Lambda events in, predictions out (the rule is documented in lambda_handler.py and docs/interfaces.md).

- API Gateway proxy event (REST v1, HTTP API v2, function URL): it has
  `requestContext`, `httpMethod` or `routeKey`; the request is its `body`, a
  JSON string (base64 when `isBase64Encoded`). Answer:
  ``{"statusCode", "headers": {"Content-Type": "application/json"}, "body": "<JSON text>"}``.
- Direct invocation: the event itself is the request (an object, or JSON text).
  Answer: the same dict, but `body` is the JSON value itself, not text.

Bad requests answer 400 ``{"error": "<path>: <problem>"}``; only a bug answers
500 (logged with its traceback, never with the request's data).

Both front ends share one path: `respond` turns a request into (status, answer);
handle_event (Lambda) reads the request from the event, and `respond_to_body`
(bank_serving.http, and a proxy event's body) from raw JSON bytes or text.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from bank_serving.features import derive_features
from bank_serving.model import OnnxModel
from bank_serving.validation import RequestError, parse_body

logger = logging.getLogger(__name__)

_PROXY_KEYS = ("requestContext", "httpMethod", "routeKey")
_HEADERS = {"Content-Type": "application/json"}


def is_proxy_event(event: Any) -> bool:
    """True for an API Gateway / function URL proxy event, False for a direct invocation."""
    return isinstance(event, dict) and any(key in event for key in _PROXY_KEYS)


def _decode_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError as err:
        raise RequestError("body: invalid JSON: nested too deeply") from err
    except ValueError as err:  # JSONDecodeError, bad UTF-8, ints longer than Python's digit limit
        raise RequestError(f"body: invalid JSON: {err}") from err


def read_body(body: str | bytes | None) -> Any:
    """A request body from its raw JSON text or bytes; RequestError if it is missing or not JSON."""
    if body is None or len(body) == 0:
        raise RequestError('body: missing; send one record or {"records": [...]} as JSON')
    return _decode_json(body)


def _proxy_request(event: dict[str, Any]) -> Any:
    body = event.get("body")
    if body is not None and not isinstance(body, str):
        raise RequestError(f"body: expected JSON text, got {type(body).__name__}")
    if body and event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError as err:  # binascii.Error, or non-ASCII text
            raise RequestError(f"body: invalid base64: {err}") from err
        return read_body(raw)
    return read_body(body)


def _direct_request(event: Any) -> Any:
    return _decode_json(event) if isinstance(event, (str, bytes)) else event


def predict(body: Any, model: OnnxModel) -> dict[str, Any]:
    """The answer to a decoded request body; RequestError if the body breaks the contract."""
    features = derive_features(parse_body(body))
    probabilities = model.predict_proba(features)
    labels = model.labels(probabilities).tolist()
    # Six decimals: float32 carries about seven significant digits; more would be noise.
    rounded = np.round(probabilities.astype(np.float64), 6).tolist()
    return {
        "model_version": model.version,
        "predictions": [{"probability": p, "label": label} for p, label in zip(rounded, labels, strict=True)],
    }


def respond(request: Callable[[], Any], model: OnnxModel) -> tuple[int, dict[str, Any]]:
    """(status, answer) for the request that request() returns (it raises RequestError if unreadable)."""
    try:
        return 200, predict(request(), model)
    except RequestError as err:
        return 400, {"error": str(err)}
    except Exception:  # noqa: BLE001 - a bug must still answer JSON, not crash the runtime
        logger.exception("prediction failed")
        return 500, {"error": "internal error"}


def respond_to_body(body: str | bytes | None, model: OnnxModel) -> tuple[int, dict[str, Any]]:
    """(status, answer) for a raw request body (JSON text or bytes), as an HTTP POST carries it."""
    return respond(lambda: read_body(body), model)


def encode_answer(answer: dict[str, Any]) -> str:
    """An answer as compact JSON text (what API Gateway and the HTTP server send)."""
    return json.dumps(answer, separators=(",", ":"))


def handle_event(event: Any, model: OnnxModel) -> dict[str, Any]:
    """Answer a Lambda event (proxy or direct) with the response dict described in the module doc."""
    proxy = is_proxy_event(event)
    status, payload = respond(lambda: _proxy_request(event) if proxy else _direct_request(event), model)
    return {
        "statusCode": status,
        "headers": dict(_HEADERS),
        "body": encode_answer(payload) if proxy else payload,
    }
