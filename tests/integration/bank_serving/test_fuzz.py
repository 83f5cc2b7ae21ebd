"""Property-based fuzzing of the serving contract: whatever a client sends, the answer is a 200 that
matches the scorer or a 400 whose message starts with the field (or `body`) it is about; never a 5xx.

Hypothesis generates the events (direct invocations as values, JSON text and bytes; API Gateway
proxy v1 and v2 and function URL events with every kind of broken body) and the records (valid
ones, and valid ones with one field mutated, lone UTF-16 surrogates included). The runs are
derandomized with a fixed example budget (BUDGET per test), so CI is deterministic and each test
takes a few seconds; a failing example found here becomes a named regression test below.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bank_serving.features import derive_features
from bank_serving.schema import INT32_MAX, MAX_RECORDS, MONTHS, RECORD_FIELDS
from bank_serving.validation import validate_records
from tests.support.http_server import Server
from tests.support.serving_requests import RECORD, RECORDS, proxy_v1, proxy_v2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BUDGET = 500  # examples per property test; with derandomize the same ones on every run
FUZZ = settings(
    derandomize=True,
    max_examples=BUDGET,
    deadline=None,  # CI machines are shared: time is checked by the suite's timeout, not per example
    database=None,  # derandomized: nothing to replay, and no .hypothesis/ directory in the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FIELDS = [name for name, *_ in RECORD_FIELDS]
_FIELD = "|".join(FIELDS)
# What a 400's message starts with: `body`, `records`, `records[i]`, `records[i].<field>` or `<field>`.
MESSAGE_PATH = re.compile(rf"^(body|records|records\[\d+\](\.({_FIELD}))?|({_FIELD})): \S")
CATEGORIES = {name: sorted({r[name] for r in RECORDS}) for name, kind, *_ in RECORD_FIELDS if kind == "category"}

# ------------------------------------------------------------------------------------------ strategies

# Any code point, lone surrogates included (hypothesis leaves them out unless asked).
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=8,
)


def _field_values(kind: str, low: int, high: int, name: str) -> st.SearchStrategy[Any]:
    if kind == "int":
        return st.integers(low, high)
    if kind == "yes_no":
        return st.sampled_from(["yes", "no"])
    if kind == "month":
        return st.sampled_from(MONTHS)
    # A category: a value seen in training, or any text that is not blank (unseen categories are valid).
    return st.sampled_from(CATEGORIES[name]) | st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(
        str.strip
    )


valid_records = st.fixed_dictionaries(
    {name: _field_values(kind, low, high, name) for name, kind, low, high in RECORD_FIELDS},
    optional={"duration": json_values, "customer_id": json_values},  # extra fields are ignored
)


def _edge_values(kind: str, low: int, high: int) -> st.SearchStrategy[Any]:
    """Values near the contract's edges, more likely to break it than random JSON."""
    if kind == "int":
        return st.sampled_from(
            [low - 1, low, high, high + 1, 2**31, -(2**31) - 1, 2**63, 10**30, -(10**300), True, False, 5.0,
             float("nan"), float("inf"), "1", None]
        )  # fmt: skip
    near = ["", " ", "\t", "Yes", "NO", "Jan", "jan ", "\x00", "\ud800", "\udfff", "a\ud83d", "\ud83d\ude00"]
    return st.sampled_from(near) | st.builds(lambda s, c: s + c, any_text, surrogate)


@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    """A valid record with one field deleted or replaced; (record, name of that field)."""
    record = draw(valid_records)
    name, kind, low, high = draw(st.sampled_from(RECORD_FIELDS))
    how = draw(st.sampled_from(["delete", "edge", "any"]))
    if how == "delete":
        del record[name]
    else:
        record[name] = draw(_edge_values(kind, low, high) if how == "edge" else json_values)
    return record, name


@st.composite
def request_bodies(draw: st.DrawFn) -> tuple[Any, str | None]:
    """(body, the path a 400 must name or None if the body is valid): one record or {"records": [...]}."""
    mutate = draw(st.booleans())
    record, name = draw(mutated_records()) if mutate else (draw(valid_records), None)
    if draw(st.booleans()):
        return record, name
    others = draw(st.lists(valid_records, max_size=6))
    index = draw(st.integers(0, len(others)))
    others.insert(index, record)
    return {"records": others}, (f"records[{index}].{name}" if name else None)


def json_text(body: Any, ascii_only: bool) -> str:
    """JSON text of a body; with ascii_only=False lone surrogates stay raw (not \\u escapes)."""
    return json.dumps(body, ensure_ascii=ascii_only)


def utf8(text: str) -> bytes:
    """Text as bytes the way a client would send it; lone surrogates as their 3-byte encoding (ED A0 80)."""
    return text.encode("utf-8", "surrogatepass")


broken_texts = st.one_of(
    st.just(""),
    any_text,
    st.text(st.sampled_from('{}[]",:0123456789.eE+-tfnul\\ '), max_size=40),  # JSON-ish noise
    st.builds(lambda n: "[" * n, st.integers(1, 200000)),
    st.builds(lambda n: '{"age": ' + "9" * n + "}", st.integers(4290, 4310)),
    st.sampled_from(["NaN", "-Infinity", '{"records": NaN}', '{"age": 1, "age": "x"}', "null", "[]", '"\\ud800"']),
    st.builds(lambda body: json.dumps(body)[: len(json.dumps(body)) // 2], st.just(RECORD)),  # truncated
)


@st.composite
def proxy_events(draw: st.DrawFn) -> dict[str, Any]:
    """An API Gateway v1/v2 or function URL event whose body is valid, mutated or broken in any way."""
    kind = draw(st.sampled_from(["valid-or-mutated", "broken-text", "random-bytes", "not-text", "bad-base64"]))
    base64_encoded = draw(st.booleans())
    if kind == "valid-or-mutated":
        body, _ = draw(request_bodies())
        raw = utf8(json_text(body, draw(st.booleans())))
    elif kind == "broken-text":
        raw = utf8(draw(broken_texts))
    else:
        raw = draw(st.binary(max_size=64))
    if kind == "not-text":
        event_body: Any = draw(json_values.filter(lambda v: not isinstance(v, str)))
    elif kind == "bad-base64":
        event_body, base64_encoded = draw(any_text), True
    elif base64_encoded:
        event_body = base64.b64encode(raw).decode()
    else:
        event_body = raw.decode("utf-8", "surrogatepass") if kind != "random-bytes" else raw.decode("latin-1")
    shape = draw(st.sampled_from([proxy_v1, proxy_v2, function_url]))
    return shape(event_body, isBase64Encoded=base64_encoded)


def function_url(body: Any, **extra: Any) -> dict[str, Any]:
    """A Lambda function URL event (payload format 2.0, route key $default)."""
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": "/predict", "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"domainName": "abc.lambda-url.eu-west-1.on.aws", "http": {"method": "POST"}},
        "body": body, "isBase64Encoded": False, **extra,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------ checks


def check_answer(handler: ModuleType, response: dict[str, Any], body: Any = None, path: str | None = None) -> None:
    """The contract: a 200 matching the scorer (if the request `body` is known), or a 400 naming a field
    (`path`, if the request breaks only that one)."""
    assert set(response) == {"statusCode", "headers", "body"}, response
    assert response["headers"] == {"Content-Type": "application/json"}
    status, answer = response["statusCode"], response["body"]
    if isinstance(answer, str):
        answer = json.loads(answer)
    assert status in (200, 400), (status, answer)
    if status == 400:
        assert set(answer) == {"error"} and MESSAGE_PATH.match(answer["error"]), answer
        if path is not None:
            assert answer["error"].startswith(f"{path}: "), (path, answer)
        return
    assert set(answer) == {"model_version", "predictions"} and answer["model_version"] == handler.MODEL.version
    if body is None:
        return
    records = body["records"] if "records" in body else [body]
    probabilities = handler.MODEL.predict_proba(derive_features(validate_records(copy.deepcopy(records))))
    expected = [
        {"probability": p, "label": int(q >= handler.MODEL.threshold)}
        for p, q in zip(np.round(probabilities.astype(np.float64), 6).tolist(), probabilities, strict=True)
    ]
    assert answer["predictions"] == expected


# ------------------------------------------------------------------------------------------ properties


@FUZZ
@given(request=request_bodies(), shape=st.sampled_from(["direct", "direct-text", "direct-bytes", "v1", "v2", "url"]))
def test_records_with_one_field_mutated(handler: ModuleType, request: tuple[Any, str | None], shape: str) -> None:
    body, path = request
    if shape == "direct":
        event: Any = copy.deepcopy(body)
    elif shape == "direct-text":
        event = json_text(body, ascii_only=True)
    elif shape == "direct-bytes":
        event = utf8(json_text(body, ascii_only=False))
    else:
        event = {"v1": proxy_v1, "v2": proxy_v2, "url": function_url}[shape](json_text(body, ascii_only=True))
    # The mutated value may still be valid (a deleted field never is): then a 200 that matches the scorer.
    check_answer(handler, handler.handler(event, None), body, path)


@FUZZ
@given(event=proxy_events())
def test_proxy_events_with_any_body(handler: ModuleType, event: dict[str, Any]) -> None:
    check_answer(handler, handler.handler(event, None))


@FUZZ
@given(event=json_values | st.binary(max_size=64) | broken_texts)
def test_direct_invocations_of_any_value(handler: ModuleType, event: Any) -> None:
    check_answer(handler, handler.handler(event, None))


@FUZZ
@given(records=st.lists(valid_records, min_size=1, max_size=20))
def test_valid_records_match_the_scorer(handler: ModuleType, records: list[dict[str, Any]]) -> None:
    body = {"records": records}
    for event in (copy.deepcopy(body), proxy_v2(json_text(body, ascii_only=False))):
        check_answer(handler, handler.handler(event, None), body)


@settings(FUZZ, max_examples=BUDGET // 3)
@given(request=request_bodies(), ascii_only=st.booleans())
def test_http_bodies_get_the_lambdas_answer(
    server: Server, handler: ModuleType, request: tuple[Any, str | None], ascii_only: bool
) -> None:
    body, path = request
    raw = utf8(json_text(body, ascii_only))  # lone surrogates as \ud800 escapes, or as raw bytes ED A0 80
    status, _, answer = server.request("POST", "/predict", raw)
    lambda_response = handler.handler(proxy_v1(base64.b64encode(raw).decode(), isBase64Encoded=True), None)
    assert (status, answer) == (lambda_response["statusCode"], json.loads(lambda_response["body"]))
    check_answer(handler, lambda_response, body, path)


# ------------------------------------------------------------------------------------------ regressions

# Failing examples hypothesis found (or the issue reported), kept as named tests.


@pytest.mark.parametrize(
    "value",
    ["\ud800", "\udfff", "admin.\ud83d", "\ude00x"],
    ids=["high-surrogate", "low-surrogate", "trailing-high", "leading-low"],
)
def test_a_lone_surrogate_in_a_category_is_a_400(handler: ModuleType, value: str) -> None:
    body = dict(RECORD, job=value)
    for event in (body, proxy_v1(json.dumps(body)), proxy_v2(json.dumps(body, ensure_ascii=False))):
        response = handler.handler(copy.deepcopy(event), None)
        check_answer(handler, response, path="job")
    assert "UTF-8" in handler.handler(body, None)["body"]["error"]


def test_raw_surrogate_bytes_in_a_body_are_a_400(handler: ModuleType, server: Server) -> None:
    # json.loads(bytes) decodes with surrogatepass: ED A0 80 becomes the lone surrogate U+D800.
    raw = json.dumps(dict(RECORD, marital="x"), ensure_ascii=False).encode().replace(b'"x"', b'"\xed\xa0\x80"')
    event = proxy_v1(base64.b64encode(raw).decode(), isBase64Encoded=True)
    check_answer(handler, handler.handler(event, None), path="marital")
    check_answer(handler, handler.handler(raw, None), path="marital")
    status, _, answer = server.request("POST", "/predict", raw)
    assert status == 400 and answer["error"].startswith("marital: cannot be encoded as UTF-8"), answer


def test_one_surrogate_record_names_its_index_in_a_full_batch(handler: ModuleType) -> None:
    records = (RECORDS * 20)[:MAX_RECORDS]
    records[737] = dict(records[737], poutcome="\udcff")
    response = handler.handler(proxy_v2({"records": records}), None)
    check_answer(handler, response, path="records[737].poutcome")


@example(value=10**5000)
@example(value=-(10**4300))
@given(value=st.integers(min_value=10**4290, max_value=10**4400))
@settings(derandomize=True, max_examples=20, database=None, deadline=None)
def test_a_direct_int_too_large_to_print_is_a_400(handler: ModuleType, value: int) -> None:
    for name in ("age", "balance", "campaign"):
        response = handler.handler(dict(RECORD, **{name: value}), None)
        check_answer(handler, response, path=name)
        assert "digit" in response["body"]["error"], response


def test_int32_max_is_still_valid(handler: ModuleType) -> None:
    check_answer(handler, handler.handler(dict(RECORD, campaign=INT32_MAX), None), dict(RECORD, campaign=INT32_MAX))
