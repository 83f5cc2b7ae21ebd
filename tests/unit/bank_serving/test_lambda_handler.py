"""The Lambda handler: proxy v1/v2 and direct invocations, predictions, and every bad request -> 400."""

from __future__ import annotations

import base64
import copy
import json
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bank_ml import release
from bank_serving import service
from bank_serving.features import derive_features
from bank_serving.validation import validate_records
from tests.support.serving_requests import BAD_BODIES, RECORD, RECORDS, proxy_v1, proxy_v2

pytestmark = pytest.mark.unit


def answer(response: dict[str, Any]) -> Any:
    """The body of a response as a value, whatever the invocation."""
    body = response["body"]
    return json.loads(body) if isinstance(body, str) else body


def sklearn_probabilities(candidate: release.Candidate, records: list[dict[str, Any]]) -> np.ndarray:
    features = pd.DataFrame(derive_features(validate_records(records)))
    return candidate.pipeline.predict_proba(features)[:, 1]


# --------------------------------------------------------------------------- good requests


@pytest.mark.parametrize("make_event", [proxy_v1, proxy_v2], ids=["proxy-v1", "proxy-v2"])
def test_proxy_event_answers_json_text(handler: ModuleType, make_event: Any) -> None:
    response = handler.handler(make_event(RECORD), None)
    assert response["statusCode"] == 200
    assert response["headers"] == {"Content-Type": "application/json"}
    assert isinstance(response["body"], str)
    body = json.loads(response["body"])
    assert body["model_version"] == handler.MODEL.version
    assert len(body["predictions"]) == 1 and set(body["predictions"][0]) == {"probability", "label"}


def test_direct_invocation_answers_the_same_dict_with_a_json_value(handler: ModuleType) -> None:
    direct = handler.handler(copy.deepcopy(RECORD), None)
    assert direct["statusCode"] == 200 and direct["headers"] == {"Content-Type": "application/json"}
    assert isinstance(direct["body"], dict)
    assert direct["body"] == answer(handler.handler(proxy_v2(RECORD), None))
    # JSON text as the event is a direct request too.
    assert handler.handler(json.dumps(RECORD), None)["body"] == direct["body"]


def test_base64_proxy_body_is_decoded(handler: ModuleType) -> None:
    encoded = base64.b64encode(json.dumps(RECORD).encode()).decode()
    response = handler.handler(proxy_v1(encoded, isBase64Encoded=True), None)
    assert response["statusCode"] == 200
    assert answer(response) == answer(handler.handler(proxy_v1(RECORD), None))


@pytest.mark.parametrize("invoke", ["proxy", "direct"])
def test_a_list_of_records_matches_sklearn(
    handler: ModuleType, small_candidate: release.Candidate, invoke: str
) -> None:
    body = {"records": RECORDS}
    response = handler.handler(proxy_v2(body) if invoke == "proxy" else body, None)
    assert response["statusCode"] == 200
    predictions = answer(response)["predictions"]
    probabilities = np.array([p["probability"] for p in predictions])
    expected = sklearn_probabilities(small_candidate, RECORDS)
    assert np.abs(probabilities - expected).max() <= 1e-5
    assert [p["label"] for p in predictions] == [int(p >= handler.MODEL.threshold) for p in probabilities]
    assert all(type(p["label"]) is int for p in predictions)


def test_unseen_categories_and_extra_fields_are_accepted(
    handler: ModuleType, small_candidate: release.Candidate
) -> None:
    odd = dict(RECORD, job="astronaut", education="doctorate", poutcome="maybe", pdays=120, previous=3)
    with_extras = dict(RECORD, duration=261, y="no", customer_id="c-17")
    response = handler.handler({"records": [odd, with_extras]}, None)
    assert response["statusCode"] == 200
    got = [p["probability"] for p in response["body"]["predictions"]]
    assert np.abs(np.array(got) - sklearn_probabilities(small_candidate, [odd, RECORD])).max() <= 1e-5


def test_a_thousand_records_is_the_limit(handler: ModuleType) -> None:
    records = (RECORDS * 20)[:1000]
    response = handler.handler(proxy_v1({"records": records}), None)
    assert response["statusCode"] == 200 and len(answer(response)["predictions"]) == 1000


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(("body", "message"), [(b, m) for _, b, m in BAD_BODIES], ids=[i for i, _, _ in BAD_BODIES])
def test_bad_body_is_a_400_naming_the_field(handler: ModuleType, body: Any, message: str) -> None:
    for event in (proxy_v1(json.dumps(body)), proxy_v2(json.dumps(body))):
        response = handler.handler(event, None)
        assert response["statusCode"] == 400, response
        assert json.loads(response["body"])["error"].startswith(message)
    if not isinstance(body, str):  # a direct event that is a string is read as JSON text
        response = handler.handler(copy.deepcopy(body), None)
        assert (response["statusCode"], response["body"]["error"][: len(message)]) == (400, message)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (proxy_v1("{not json"), "body: invalid JSON: Expecting property name enclosed in double quotes"),
        (proxy_v2(""), 'body: missing; send one record or {"records": [...]} as JSON'),
        (dict(proxy_v2(""), body=None), "body: missing"),
        (dict(proxy_v2("x"), body={"age": 1}), "body: expected JSON text, got dict"),
        (proxy_v1("not base64!", isBase64Encoded=True), "body: invalid base64"),
        (proxy_v1("[" * 100000), "body: invalid JSON: nested too deeply"),
        (proxy_v1('{"age": ' + "9" * 5000 + "}"), "body: invalid JSON: Exceeds the limit"),
        ('{"age": 1', "body: invalid JSON: Expecting ',' delimiter"),
    ],
    ids=[
        "bad-json",
        "empty-body",
        "null-body",
        "body-not-text",
        "bad-base64",
        "deep-nesting",
        "huge-number",
        "direct-bad-json",
    ],
)
def test_unreadable_body_is_a_400(handler: ModuleType, event: Any, message: str) -> None:
    response = handler.handler(event, None)
    assert response["statusCode"] == 400
    assert answer(response)["error"].startswith(message), answer(response)


def test_a_bug_answers_500_without_details(handler: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(columns: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service, "derive_features", broken)
    response = handler.handler(proxy_v1(RECORD), None)
    assert response["statusCode"] == 500 and json.loads(response["body"]) == {"error": "internal error"}
