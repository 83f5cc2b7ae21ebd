"""How devstack translates between Lambda and what runs it: the RIE's answers, container logs, function-URL events."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from devstack.aws.function_url_server import UrlConfig, url_event, url_response
from devstack.containers.lambda_containers import _LogFile, label_for
from devstack.containers.lambda_rie import _quantity_mb, pod_options, read_function_error

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("status", "body", "error", "payload"),
    [
        (200, b'{"statusCode": 200}', None, {"statusCode": 200}),
        (200, b'"plain string"', None, "plain string"),
        # A handler's exception: the RIE sends no X-Amz-Function-Error; the payload's shape says it.
        (200, b'{"errorMessage": "boom", "errorType": "ValueError", "requestId": "r", "stackTrace": []}', "Unhandled",
         {"errorMessage": "boom", "errorType": "ValueError", "requestId": "r", "stackTrace": []}),
        # An answer that has errorMessage among other keys is an answer, not an error.
        (200, b'{"errorMessage": "x", "errorType": "y", "statusCode": 400}', None,
         {"errorMessage": "x", "errorType": "y", "statusCode": 400}),
        # Init errors come back as 502 with the same shape.
        (502, b'{"errorMessage": "bad model", "errorType": "ModelLoadError", "requestId": "", "stackTrace": []}',
         "Unhandled", {"errorMessage": "bad model", "errorType": "ModelLoadError", "requestId": "", "stackTrace": []}),
        (200, b"Task timed out after 3.00 seconds", "Unhandled",
         {"errorType": "Sandbox.Timedout", "errorMessage": "RequestId: req-1 Error: Task timed out after 3.00 seconds"}),
    ],
)  # fmt: skip
def test_rie_answers_become_lambdas(status: int, body: bytes, error: str | None, payload: object) -> None:
    got_error, got = read_function_error(status, body, "req-1")
    assert got_error == error and json.loads(got) == payload


def test_a_rie_failure_without_a_payload_is_a_runtime_error() -> None:
    error, payload = read_function_error(500, b"", "req-2")
    assert error == "Unhandled"
    assert json.loads(payload) == {
        "errorType": "Runtime.Unknown",
        "errorMessage": "RequestId: req-2 Error: Runtime exited without providing a reason (RIE answered 500: )",
    }


def test_container_log_lines_are_read_once_and_partial_lines_joined(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    log = _LogFile(path)
    assert log.read() == []  # no file yet
    path.write_text("2026-11-28T22:00:00.1+00:00 stdout F START RequestId: a\n2026-11-28T22:00:00.2+00:00 stderr P par")
    assert log.read() == ["START RequestId: a"]  # the unfinished line waits
    with path.open("a") as handle:
        handle.write("t\n2026-11-28T22:00:00.3+00:00 stderr F ial line\n2026-11-28T22:00:00.4+00:00 stdout F \n")
    assert log.read() == ["partial line", ""]
    assert log.read() == []


def test_labels_differ_per_state_directory(tmp_path: Path) -> None:
    assert label_for(tmp_path / "a") == label_for(tmp_path / "a" / ".." / "a") != label_for(tmp_path / "b")


def test_the_deployments_settings_become_podman_options() -> None:
    options, args, env = pod_options()
    assert options[:2] == ["--entrypoint", '["python", "-m", "bank_serving.http"]']
    assert ["--user", "1000:1000"] == options[options.index("--user") : options.index("--user") + 2]
    assert {"--read-only", "--cap-drop=ALL", "--memory=512m", "--cpus=1.0", "/tmp:rw,size=64m"} <= set(options)
    assert args == ["--port", "8080", "--metrics-port", "9090"] and env["BANK_MODEL_DIR"] == "/opt/ml/model"


@pytest.mark.parametrize(("quantity", "mb"), [("512Mi", 512), ("1Gi", 1024), ("64Mi", 64), ("500M", 476)])
def test_kubernetes_quantities(quantity: str, mb: int) -> None:
    assert _quantity_mb(quantity) == mb


def test_an_unknown_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported quantity '5 bananas'"):
        _quantity_mb("5 bananas")


CONFIG = UrlConfig("123456789012", "us-east-1", "f", "live", "arn:aws:lambda:us-east-1:123456789012:function:f:live",
                   "AWS_IAM", None, "BUFFERED", url_id="abc")  # fmt: skip


def test_a_request_becomes_the_function_url_event() -> None:
    headers = [("Content-Type", "application/json"), ("X-Multi", "1"), ("x-multi", "2"), ("Cookie", "a=1; b=2")]
    event = url_event(CONFIG, "POST", "/score?x=1&x=2&y=", _Headers(headers), b'{"age": 41}', "req", {}, "10.0.0.1")
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert (event["rawPath"], event["rawQueryString"]) == ("/score", "x=1&x=2&y=")
    assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert event["headers"] == {"content-type": "application/json", "x-multi": "1,2"}
    assert event["cookies"] == ["a=1", "b=2"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"age": 41}', False)
    context = event["requestContext"]
    assert context["http"] == {"method": "POST", "path": "/score", "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1",
                               "userAgent": ""}  # fmt: skip
    assert context["domainName"] == "abc.lambda-url.us-east-1.on.aws" and context["requestId"] == "req"
    assert context["accountId"] == "anonymous" and "authorizer" not in context


def test_a_binary_body_is_base64() -> None:
    event = url_event(CONFIG, "PUT", "/", _Headers([("Content-Type", "image/png")]), b"\x89PNG", "r", {}, "::1")
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\x89PNG"


@pytest.mark.parametrize(
    ("result", "status", "headers", "body"),
    [
        ({"statusCode": 400, "headers": {"Content-Type": "application/json"}, "body": '{"error": "age: missing"}'},
         400, {"Content-Type": "application/json"}, b'{"error": "age: missing"}'),
        ({"statusCode": 201, "body": "aGk=", "isBase64Encoded": True, "cookies": ["s=1"]},
         201, {"Content-Type": "application/json", "Set-Cookie": ["s=1"]}, b"hi"),
        ({"statusCode": 200, "body": {"a": 1}}, 200, {"Content-Type": "application/json"}, b'{"a": 1}'),
        ({"statusCode": 204}, 204, {"Content-Type": "application/json"}, b""),
        # No statusCode: Lambda answers 200 with the result as the JSON body.
        ({"predictions": []}, 200, {"Content-Type": "application/json"}, b'{"predictions": []}'),
    ],
)  # fmt: skip
def test_a_result_becomes_the_http_answer(result: dict, status: int, headers: dict, body: bytes) -> None:
    payload = json.dumps(result).encode()
    got_status, got_headers, got_body = url_response(payload)
    assert (got_status, got_headers) == (status, headers)
    assert got_body == (payload if "statusCode" not in result else body)


class _Headers:
    """http.server's header list: items() may repeat a name."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, str]]:
        return self._items
