"""Requests for serving's tests: records from bank.csv, the proxy events, and bad bodies with their 400 messages."""

from __future__ import annotations

import csv
import itertools
import json
from typing import Any

from bank_serving.schema import RECORD_FIELDS
from tests.support.paths import BANK_CSV as BANK

INT_FIELDS = {name for name, kind, *_ in RECORD_FIELDS if kind == "int"}


def bank_records(n: int) -> list[dict[str, Any]]:
    """The first n rows of bank.csv as request records (duration and y dropped)."""
    fields = {name for name, *_ in RECORD_FIELDS}
    with open(BANK, newline="") as f:
        rows = list(itertools.islice(csv.DictReader(f, delimiter=";"), n))
    return [{k: int(v) if k in INT_FIELDS else v for k, v in row.items() if k in fields} for row in rows]


RECORDS = bank_records(50)
RECORD = RECORDS[0]


def proxy_v1(body: Any, **extra: Any) -> dict[str, Any]:
    return {
        "resource": "/predict", "path": "/predict", "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"}, "requestContext": {"stage": "prod"},
        "isBase64Encoded": False, "body": body if isinstance(body, str) else json.dumps(body), **extra,
    }  # fmt: skip


def proxy_v2(body: Any, **extra: Any) -> dict[str, Any]:
    return {
        "version": "2.0", "routeKey": "POST /predict", "rawPath": "/predict",
        "requestContext": {"http": {"method": "POST"}}, "isBase64Encoded": False,
        "body": body if isinstance(body, str) else json.dumps(body), **extra,
    }  # fmt: skip


def _with(**changes: Any) -> dict[str, Any]:
    record = dict(RECORD, **changes)
    return {k: v for k, v in record.items() if v is not _DROP}


_DROP = object()

BAD_BODIES: list[tuple[str, Any, str]] = [
    ("array body", [RECORD], "body: expected a JSON object (one record or {\"records\": [...]}), got list"),
    ("string body", "hello", "body: expected a JSON object (one record or {\"records\": [...]}), got str"),
    ("number body", 3, "body: expected a JSON object (one record or {\"records\": [...]}), got int"),
    ("null body", None, "body: expected a JSON object (one record or {\"records\": [...]}), got null"),
    ("records not a list", {"records": RECORD}, "records: expected a list of records, got object"),
    ("empty list", {"records": []}, "records: expected at least one record, got an empty list"),
    ("too many", {"records": [RECORD] * 1001}, "records: at most 1000 records per request, got 1001"),
    ("record not an object", {"records": [RECORD, "x"]}, "records[1]: expected an object, got str"),
    ("missing field", {"records": [RECORD, _with(age=_DROP)]}, "records[1].age: required field missing"),
    ("missing field, single", _with(poutcome=_DROP), "poutcome: required field missing"),
    ("str for int", {"records": [RECORD] * 3 + [_with(age="42")]}, "records[3].age: expected int, got str"),
    ("bool for int", _with(balance=True), "balance: expected int, got bool"),
    ("float for int", _with(day=5.0), "day: expected int, got float"),
    ("null for int", _with(campaign=None), "campaign: expected int, got null"),
    ("int for str", _with(job=3), "job: expected str, got int"),
    ("list for str", _with(marital=["single"]), "marital: expected str, got list"),
    ("empty category", _with(education="  "), "education: must not be empty"),
    ("age too high", _with(age=121), "age: 121 is out of range 1..120"),
    ("age zero", _with(age=0), "age: 0 is out of range 1..120"),
    ("day out of range", _with(day=32), "day: 32 is out of range 1..31"),
    ("campaign zero", _with(campaign=0), "campaign: 0 is out of range 1..2147483647"),
    ("pdays below -1", _with(pdays=-2), "pdays: -2 is out of range -1..2147483647"),
    ("previous negative", _with(previous=-1), "previous: -1 is out of range 0..2147483647"),
    ("balance beyond int32", _with(balance=2**31), "balance: 2147483648 is out of range -2147483648..2147483647"),
    ("huge int", _with(balance=10**30), "balance: 1000000000000000000000000000000 is out of range"),
    ("enormous int", _with(balance=-(10**300)), "balance: a 301-digit negative int is out of range -2147483648.."),
    ("unknown month", _with(month="Jan"), "month: expected a month jan..dec (lower case), got 'Jan'"),
    ("month as number", _with(month=1), "month: expected str, got int"),
    ("yes/no other", _with(housing="maybe"), "housing: expected \"yes\" or \"no\", got 'maybe'"),
    ("yes/no capitalised", {"records": [RECORD, _with(loan="Yes")]},
     "records[1].loan: expected \"yes\" or \"no\", got 'Yes'"),
]  # fmt: skip
