"""LambdaFunctionUrlOperator's smoke POST: how often it asks a URL that is not answering yet.

A new function URL or permission reaches Lambda's front end within seconds, so the POST is
retried after 0.5 s, 1 s, then every 2 s until ``smoke_timeout``, whatever the DAG's
``poll_seconds`` (30 on AWS). The URL's answers are scripted and the clock is the test's own:
no sleeping, no server.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import requests

from bank_pipeline.errors import DeployFailedError
from bank_pipeline.operators.lambda_url import LambdaFunctionUrlOperator, retry_delays

pytestmark = pytest.mark.unit

URL = "https://abc.lambda-url.us-east-1.on.aws/"
GOOD = (200, '{"model_version": "v1", "predictions": [{"probability": 0.2, "label": 0}]}')


class Clock:
    """monotonic() and sleep() for the operator: time passes only when it sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Answer:
    def __init__(self, status: int, text: str) -> None:
        self.status_code, self.text = status, text


def smoke(monkeypatch: pytest.MonkeyPatch, answers: list[Any], clock: Clock, **kw: Any) -> Any:
    """Run the operator's smoke POST on ``clock`` against ``answers`` (a status and body, or an exception), in order."""
    script = iter(answers)
    posts: list[str] = []

    def post(url: str, **_: Any) -> Answer:
        posts.append(url)
        answer = next(script)
        if isinstance(answer, Exception):
            raise answer
        return Answer(*answer)

    monkeypatch.setattr(requests, "post", post)
    op = LambdaFunctionUrlOperator(
        task_id="lambda_url", aws_conn_id=None, function_name="f", auth_type="NONE", smoke_body={"age": 41},
        smoke_expect={"statusCode": 200, "body": {"model_version": "v1"}}, **kw,
    )  # fmt: skip
    op.monotonic, op.sleep = clock.monotonic, clock.sleep
    try:
        return op._smoke(URL, b'{"age": 41}')
    finally:
        assert posts == [URL] * len(posts)


def test_retries_come_after_half_a_second_one_second_then_every_two():
    assert list(itertools.islice(retry_delays(2.0), 6)) == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert list(itertools.islice(retry_delays(0.2), 3)) == [0.2, 0.2, 0.2]  # never longer than the interval


def test_a_url_not_answering_yet_is_asked_again_within_seconds(monkeypatch):
    not_yet = [
        requests.ConnectionError("refused"),
        (403, '{"Message": "Forbidden"}'),
        (404, "{}"),
        (502, "{}"),
        (503, "{}"),
    ]
    clock = Clock()
    result = smoke(monkeypatch, [*not_yet, GOOD], clock)

    assert (result["status"], result["attempts"]) == (200, 6)
    assert result["waits"] == clock.slept == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert result["seconds"] == 7.5
    assert result["answer"]["model_version"] == "v1"


def test_a_url_that_never_answers_is_asked_every_two_seconds_until_the_timeout(monkeypatch):
    clock = Clock()
    with pytest.raises(DeployFailedError, match=r"did not answer the smoke POST within 10 s \(8 attempts\); last: 502"):
        smoke(monkeypatch, [(502, "{}")] * 20, clock, smoke_timeout=10.0)
    assert clock.slept == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 0.5]  # the last try at the deadline, not after it
    assert sum(clock.slept) == 10.0

    late = Clock()  # answering at the last try still passes
    assert smoke(monkeypatch, [(503, "{}")] * 7 + [GOOD], late, smoke_timeout=10.0)["attempts"] == 8


def test_a_wrong_answer_is_not_retried(monkeypatch):
    with pytest.raises(DeployFailedError, match=r"failed its smoke POST: answer.statusCode: expected 200, got 400"):
        smoke(monkeypatch, [(400, '{"error": "age: missing"}'), GOOD], clock := Clock())
    assert clock.slept == []
