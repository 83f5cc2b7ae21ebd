"""Lambda events in, predictions out (the rule is documented in handler.py and docs/interfaces.md).

- API Gateway proxy event (REST v1, HTTP API v2, function URL): it has
  `requestContext`, `httpMethod` or `routeKey`; the request is its `body`, a
  JSON string (base64 when `isBase64Encoded`). Answer:
  ``{"statusCode", "headers": {"Content-Type": "application/json"}, "body": "<JSON text>"}``.
- Direct invocation: the event itself is the request (an object, or JSON text).
  Answer: the same dict, but `body` is the JSON value itself, not text.

Bad requests answer 400 ``{"error": "<path>: <problem>"}``; only a bug answers
500 (logged with its traceback, never with the request's data).
"""

from __future__ import annotations

import base64
import json
import logging
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


def _proxy_request(event: dict[str, Any]) -> Any:
    body = event.get("body")
    if body is None or body == "":
        raise RequestError('body: missing; send one record or {"records": [...]} as JSON')
    if not isinstance(body, str):
        raise RequestError(f"body: expected JSON text, got {type(body).__name__}")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError as err:  # binascii.Error, or non-ASCII text
            raise RequestError(f"body: invalid base64: {err}") from err
        return _decode_json(raw)
    return _decode_json(body)


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


def handle_event(event: Any, model: OnnxModel) -> dict[str, Any]:
    """Answer a Lambda event (proxy or direct) with the response dict described in the module doc."""
    proxy = is_proxy_event(event)
    try:
        body = _proxy_request(event) if proxy else _direct_request(event)
        status, payload = 200, predict(body, model)
    except RequestError as err:
        status, payload = 400, {"error": str(err)}
    except Exception:  # noqa: BLE001 - a bug must still answer JSON, not crash the runtime
        logger.exception("prediction failed")
        status, payload = 500, {"error": "internal error"}
    return {
        "statusCode": status,
        "headers": dict(_HEADERS),
        "body": json.dumps(payload, separators=(",", ":")) if proxy else payload,
    }
