"""LambdaFunctionUrlOperator against devstack: the alias's URL, its auth, the public permission, the smoke POST."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from bank_pipeline.errors import BadInputError, DeployFailedError
from bank_pipeline.operators.lambda_url import LambdaFunctionUrlOperator, curl_command
from bank_pipeline.release import SMOKE_RECORD, check_prediction
from devstack import Devstack
from devstack.airflow_env import LAMBDA_ROLE_ARN
from devstack.infra import Account
from tests.devstack.devstack_helpers import live_function
from tests.devstack.devstack_image_helpers import RAISING_HANDLER, model_image, serving_model_image, trained_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def lam(ds: Devstack) -> Any:
    return ds.client("lambda")


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    model_dir = trained_model(tmp_path_factory.mktemp("url-op-model"))
    return model_dir, json.loads((model_dir / "model.json").read_text())["version"]


def new_function(ds: Devstack, lam: Any, image: str) -> str:
    return live_function(lam, "url-op", image, LAMBDA_ROLE_ARN)


@pytest.fixture(scope="module")
def function(ds: Devstack, account: Account, lam: Any, version: tuple[Path, str]) -> str:
    """A function on the real serving image and model (``account``: the template made the Lambda role)."""
    return new_function(ds, lam, serving_model_image(ds.registry_url, "url-op", version[0]))


@pytest.fixture
def aws_env(ds: Devstack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ds.env().items():
        monkeypatch.setenv(key, value)


def run(function: str, auth: str = "AWS_IAM", expect: dict[str, Any] | None = None, **kw: Any) -> Any:
    op = LambdaFunctionUrlOperator(
        task_id="lambda_url", aws_conn_id=None, function_name=function, auth_type=auth,
        smoke_body=SMOKE_RECORD, smoke_expect=expect, smoke_check=check_prediction, poll_interval=0.2, **kw,
    )  # fmt: skip
    return op.execute(context={})


def test_iam_url_is_created_smoke_tested_and_kept(aws_env: None, lam: Any, function: str, version: tuple[Path, str]) -> None:
    expect = {"statusCode": 200, "body": {"model_version": version[1]}}
    first = run(function, expect=expect)
    assert first["url"].startswith("http://127.0.0.1:") and first["auth_type"] == "AWS_IAM" and first["changed"]
    assert first["function_arn"].endswith(f":{function}:live") and first["alias"] == "live"
    assert first["smoke"]["status"] == 200 and first["smoke"]["answer"]["model_version"] == version[1]
    assert first["smoke"]["attempts"] == 1
    assert lam.get_function_url_config(FunctionName=function, Qualifier="live")["AuthType"] == "AWS_IAM"
    assert requests.post(first["url"], json=SMOKE_RECORD, timeout=30).status_code == 403  # unsigned

    again = run(function, expect=expect)
    assert (again["url"], again["changed"]) == (first["url"], False)


def test_none_adds_the_public_permission_and_iam_removes_it(
    aws_env: None, ds: Devstack, account: Account, lam: Any, version: tuple[Path, str]
) -> None:
    function = new_function(ds, lam, serving_model_image(ds.registry_url, "url-op", version[0]))
    public = run(function, auth="NONE")
    assert public["changed"] and public["auth_type"] == "NONE"
    resp = requests.post(public["url"], json=SMOKE_RECORD, timeout=30)
    assert resp.status_code == 200 and resp.json()["model_version"] == version[1]
    policy = json.loads(lam.get_policy(FunctionName=function, Qualifier="live")["Policy"])
    [statement] = [s for s in policy["Statement"] if s["Sid"] == "FunctionURLAllowPublicAccess"]
    assert statement["Action"] == "lambda:InvokeFunctionUrl" and statement["Principal"] == "*"
    assert run(function, auth="NONE")["changed"] is False  # the permission is there already: no error

    private = run(function, auth="AWS_IAM")
    assert private["changed"] and private["url"] == public["url"]
    assert requests.post(public["url"], json=SMOKE_RECORD, timeout=30).status_code == 403


def test_a_wrong_answer_fails_naming_it(aws_env: None, function: str) -> None:
    with pytest.raises(DeployFailedError, match=r"failed its smoke POST: answer.body.model_version: expected 'v0'"):
        run(function, expect={"body": {"model_version": "v0"}})


def test_a_url_that_never_answers_well_fails_after_the_timeout(aws_env: None, ds: Devstack, account: Account, lam: Any) -> None:
    broken = new_function(ds, lam, f"{ds.registry_url}/url-op-bad@{model_image(ds.registry_url, 'v1', 'url-op-bad', RAISING_HANDLER).digest}")
    with pytest.raises(DeployFailedError, match=r"did not answer the smoke POST within 1 s \([0-9]+ attempts\); last: 502"):
        run(broken, smoke_timeout=1.0)


def test_bad_auth_type_is_refused(aws_env: None, function: str) -> None:
    with pytest.raises(BadInputError, match=r"auth_type='BASIC': expected one of AWS_IAM, NONE"):
        run(function, auth="BASIC")


def test_a_missing_alias_is_an_error(aws_env: None, ds: Devstack, lam: Any, function: str) -> None:
    op = LambdaFunctionUrlOperator(task_id="u", aws_conn_id=None, function_name=function, alias="nope",
                                   smoke_body=SMOKE_RECORD)  # fmt: skip
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        op.execute(context={})


def test_the_curl_line() -> None:
    line = curl_command("http://127.0.0.1:1234/", '{"age": 41}', "AWS_IAM", "us-east-1")
    assert line == ("curl --aws-sigv4 'aws:amz:us-east-1:lambda' --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" "
                    "-H 'Content-Type: application/json' -d '{\"age\": 41}' http://127.0.0.1:1234/")  # fmt: skip
    assert curl_command("http://x/", "{}", "NONE", "us-east-1") == "curl -H 'Content-Type: application/json' -d '{}' http://x/"
