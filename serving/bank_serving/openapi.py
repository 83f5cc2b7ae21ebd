"""The OpenAPI document of the HTTP server, built from the contract's constants (bank_serving.schema).

Served at ``GET /openapi.json`` and kept in docs/openapi.json (a test holds the two
equal; rewrite it with ``python -m bank_serving.openapi > docs/openapi.json``).
Built from RECORD_FIELDS, so the documented ranges, enums and limits cannot
drift from the code; tests/integration/bank_serving/test_openapi.py runs
schemathesis against a live server with it.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from bank_serving.protocol import DEFAULT_MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, MAX_TARGET_BYTES
from bank_serving.schema import MAX_RECORDS, MONTHS, RECORD_FIELDS

_FIELDS = "|".join(re.escape(name) for name, *_ in RECORD_FIELDS)
# A 400 from /predict names what it is about: body, records, records[i], records[i].<field> or <field>.
FIELD_MESSAGE = rf"^(body|records|records\[[0-9]+\](\.({_FIELDS}))?|({_FIELDS})): "


def _field_schema(kind: str, low: int, high: int) -> dict[str, Any]:
    if kind == "int":
        return {"type": "integer", "minimum": low, "maximum": high}
    if kind == "yes_no":
        return {"type": "string", "enum": ["yes", "no"]}
    if kind == "month":
        return {"type": "string", "enum": list(MONTHS)}
    # Any category, seen in training or not; not blank (the Spark job treats blank as missing).
    return {"type": "string", "pattern": r"\S", "description": "any non-blank text; unseen categories are scored"}


def _error(description: str, pattern: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "string"}
    if pattern:
        message["pattern"] = pattern
    schema = {"type": "object", "required": ["error"], "properties": {"error": message}, "additionalProperties": False}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _status(enum: list[str], **extra: Any) -> dict[str, Any]:
    properties = {"status": {"type": "string", "enum": enum}, **extra}
    return {"type": "object", "required": list(properties), "properties": properties, "additionalProperties": False}


# Answers any request can get from the protocol layer, before a route sees it.
_PROTOCOL_ERRORS = {
    "400": _error("not valid HTTP/1.1"),
    "408": _error("the request (head and body) was not complete within the request timeout"),
    "414": _error(f"the request target is longer than {MAX_TARGET_BYTES} bytes"),
    "431": _error(f"more than {MAX_HEADERS} header fields, or request line and headers over {MAX_HEAD_BYTES} bytes"),
}


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of `python -m bank_serving.http`."""
    record = {
        "type": "object",
        "required": [name for name, *_ in RECORD_FIELDS],
        "properties": {name: _field_schema(kind, low, high) for name, kind, low, high in RECORD_FIELDS}
        | {"records": False},  # an object with `records` is the list form
        "additionalProperties": True,  # extra fields (duration, y, ids) are ignored
    }
    records = {
        "type": "object",
        "required": ["records"],
        "properties": {
            "records": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Record"},
                "minItems": 1,
                "maxItems": MAX_RECORDS,
            },  # fmt: skip
        },
    }
    predictions = {
        "type": "object",
        "required": ["model_version", "predictions"],
        "additionalProperties": False,
        "properties": {
            "model_version": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "predictions": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_RECORDS,
                "items": {
                    "type": "object",
                    "required": ["probability", "label"],
                    "additionalProperties": False,
                    "properties": {
                        "probability": {"type": "number", "minimum": 0, "maximum": 1},
                        "label": {"type": "integer", "enum": [0, 1]},
                    },
                },
            },
        },
    }
    json_body = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bank-model serving",
            "version": "1",
            "description": (
                "Scores bank-marketing records with the released ONNX model. The same request and answers as "
                "the Lambda handler (docs/interfaces.md). Every answer is JSON."
            ),
        },
        "paths": {
            "/predict": {
                "post": {
                    "operationId": "predict",
                    "summary": f"Score one record or up to {MAX_RECORDS}",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Record"},
                                        {"$ref": "#/components/schemas/Records"},
                                    ]
                                },  # fmt: skip
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "one prediction per record, in order; label = probability >= threshold",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Predictions"}}},
                        },
                        **_PROTOCOL_ERRORS,
                        "400": _error(
                            "the body breaks the contract; the message starts with the field it is about "
                            "(records[3].age: expected int, got str), or with `body` if it is not JSON",
                            FIELD_MESSAGE,
                        ),
                        "413": _error(f"the body is larger than --max-body-bytes (default {DEFAULT_MAX_BODY_BYTES})"),
                        "503": _error(
                            "the model is not loaded yet (Retry-After: 1), or the server stopped "
                            "before the request was complete"
                        ),  # fmt: skip
                    },
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness: 200 while the process serves (model loading and draining included)",
                    "responses": {
                        "200": {"description": "alive", "content": {"application/json": {"schema": _status(["ok"])}}},
                        **_PROTOCOL_ERRORS,
                    },
                },
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: 200 once the model is loaded, until SIGTERM",
                    "responses": {
                        "200": {
                            "description": "ready to score",
                            "content": {
                                "application/json": {
                                    "schema": _status(
                                        ["ready"], model_version={"type": "string", "pattern": "^[0-9a-f]{16}$"}
                                    )
                                }
                            },
                        },  # fmt: skip
                        "503": {
                            "description": "the model is loading, or the server is draining",
                            "content": {"application/json": {"schema": _status(["loading", "draining"])}},
                        },
                        **_PROTOCOL_ERRORS,
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1", **json_body}, **_PROTOCOL_ERRORS},
                },
            },
        },
        "components": {"schemas": {"Record": record, "Records": records, "Predictions": predictions}},
    }


def render() -> str:
    """The document as docs/openapi.json holds it."""
    return json.dumps(build_openapi(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
