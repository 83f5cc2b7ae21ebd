"""AWS Lambda entry point of the bank-marketing model: ``bank_serving.lambda_handler.handler``.

The model is loaded once per container, at import (Lambda's init phase), from
$BANK_MODEL_DIR (default /opt/ml/model: model.onnx + model.json). A missing or
corrupt model, one built with another scikit-learn release, or one whose inputs
differ from the contract raises bank_serving.model.ModelLoadError here, so the
function fails its init with that message instead of answering requests.

Request: one record (a JSON object) or {"records": [...]} with at most 1,000.
Response rule, the same dict for both kinds of invocation:

    {"statusCode": 200 | 400 | 500,
     "headers": {"Content-Type": "application/json"},
     "body": <answer>}

- API Gateway proxy events (REST v1, HTTP API v2, function URLs; recognised by
  `requestContext`, `httpMethod` or `routeKey`): the request is the event's
  `body` (JSON text, base64 if `isBase64Encoded`) and the answer is JSON *text*,
  as API Gateway requires.
- Direct invocations (Invoke API, tests, the release DAG's smoke test): the event
  itself is the request (an object, or JSON text) and `body` is the answer as
  a JSON *value*, so callers do not decode twice.

Answers: 200 {"model_version": "...", "predictions": [{"probability": p, "label": 0|1}, ...]}
(label = probability >= the model's threshold); 400 {"error": "records[3].age: expected
int, got str"} for anything the caller can fix; 500 {"error": "internal error"} only for a bug.
"""

from __future__ import annotations

import os
from typing import Any

from bank_serving.model import OnnxModel, load_model_dir
from bank_serving.service import handle_event

DEFAULT_MODEL_DIR = "/opt/ml/model"

MODEL: OnnxModel = load_model_dir(os.environ.get("BANK_MODEL_DIR") or DEFAULT_MODEL_DIR)


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda handler: answer one invocation with the loaded model (see the module doc)."""
    return handle_event(event, MODEL)
