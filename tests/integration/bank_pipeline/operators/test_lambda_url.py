"""LambdaFunctionUrlOperator against devstack: the alias's URL, its auth, the public permission, the smoke POST."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from bank_pipeline.errors import BadInputError, DeployFailedError
from bank_pipeline.model_release_tasks import SMOKE_RECORD, check_prediction
from bank_pipeline.operators.lambda_url import LambdaFunctionUrlOperator, curl_command
from devstack import Devstack
from devstack.aws.infra import Account
from devstack.harness.airflow_env import LAMBDA_ROLE_ARN
from tests.support.devstack_helpers import live_function
from tests.support.devstack_image_helpers import RAISING_HANDLER, model_image, serving_model_image, trained_model

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


def test_iam_url_is_created_smoke_tested_and_kept(
    aws_env: None, lam: Any, function: str, version: tuple[Path, str]
) -> None:
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


def public_statements(arn: str) -> dict[str, Any]:
    """The two statements auth NONE needs, as Lambda writes them into the alias's policy."""
    return {
        "FunctionURLAllowPublicAccess": {
            "Sid": "FunctionURLAllowPublicAccess", "Effect": "Allow", "Principal": "*",
            "Action": "lambda:InvokeFunctionUrl", "Resource": arn,
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
        },
        "FunctionURLAllowInvokeAction": {
            "Sid": "FunctionURLAllowInvokeAction", "Effect": "Allow", "Principal": "*",
            "Action": "lambda:InvokeFunction", "Resource": arn,
            "Condition": {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}},
        },
    }  # fmt: skip


def alias_policy(lam: Any, function: str) -> dict[str, Any]:
    """The live alias's resource policy by statement id ({} when it has none)."""
    try:
        policy = json.loads(lam.get_policy(FunctionName=function, Qualifier="live")["Policy"])
    except lam.exceptions.ResourceNotFoundException:
        return {}
    return {statement["Sid"]: statement for statement in policy["Statement"]}


def test_none_adds_both_public_permissions_and_iam_removes_them(
    aws_env: None, ds: Devstack, account: Account, lam: Any, version: tuple[Path, str]
) -> None:
    function = new_function(ds, lam, serving_model_image(ds.registry_url, "url-op", version[0]))
    public = run(function, auth="NONE")
    assert public["changed"] and public["auth_type"] == "NONE"
    resp = requests.post(public["url"], json=SMOKE_RECORD, timeout=30)
    assert resp.status_code == 200 and resp.json()["model_version"] == version[1]
    # lambda:InvokeFunctionUrl and lambda:InvokeFunction (only through the URL): URLs since October 2025 need both.
    assert alias_policy(lam, function) == public_statements(public["function_arn"])
    assert run(function, auth="NONE")["changed"] is False  # the permissions are there already: no error

    private = run(function, auth="AWS_IAM")
    assert private["changed"] and private["url"] == public["url"]
    assert alias_policy(lam, function) == {}  # both statements gone
    assert requests.post(public["url"], json=SMOKE_RECORD, timeout=30).status_code == 403
    assert run(function, auth="AWS_IAM")["changed"] is False  # nothing to remove: no error


def test_none_completes_a_url_opened_before_october_2025(
    aws_env: None, ds: Devstack, account: Account, lam: Any, version: tuple[Path, str]
) -> None:
    """A URL made public the old way (lambda:InvokeFunctionUrl only) answers 403; the operator adds the other."""
    function = new_function(ds, lam, serving_model_image(ds.registry_url, "url-op", version[0]))
    url = lam.create_function_url_config(FunctionName=function, Qualifier="live", AuthType="NONE")["FunctionUrl"]
    lam.add_permission(FunctionName=function, Qualifier="live", StatementId="FunctionURLAllowPublicAccess",
                       Action="lambda:InvokeFunctionUrl", Principal="*", FunctionUrlAuthType="NONE")  # fmt: skip
    assert requests.post(url, json=SMOKE_RECORD, timeout=30).status_code == 403

    public = run(function, auth="NONE")
    assert (public["url"], public["changed"], public["smoke"]["status"]) == (url, False, 200)
    assert set(alias_policy(lam, function)) == {"FunctionURLAllowPublicAccess", "FunctionURLAllowInvokeAction"}


def test_a_wrong_answer_fails_naming_it(aws_env: None, function: str) -> None:
    with pytest.raises(DeployFailedError, match=r"failed its smoke POST: answer.body.model_version: expected 'v0'"):
        run(function, expect={"body": {"model_version": "v0"}})


def test_a_url_that_never_answers_well_is_retried_within_seconds_until_the_timeout(
    aws_env: None, ds: Devstack, account: Account, lam: Any
) -> None:
    """Its 502s are retried after 0.5 s, 1 s, then every 2 s (on the test's clock: no sleeping) until the timeout."""
    broken = new_function(
        ds,
        lam,
        f"{ds.registry_url}/url-op-bad@{model_image(ds.registry_url, 'v1', 'url-op-bad', RAISING_HANDLER).digest}",
    )
    now, waits = [0.0], []
    op = LambdaFunctionUrlOperator(task_id="lambda_url", aws_conn_id=None, function_name=broken, auth_type="NONE",
                                   smoke_body=SMOKE_RECORD, smoke_timeout=5.0)  # fmt: skip
    op.monotonic = lambda: now[0]  # type: ignore[method-assign]
    op.sleep = lambda seconds: (waits.append(seconds), now.__setitem__(0, now[0] + seconds))  # type: ignore[method-assign]
    with pytest.raises(DeployFailedError, match=r"did not answer the smoke POST within 5 s \(5 attempts\); last: 502"):
        op.execute(context={})
    assert waits == [0.5, 1.0, 2.0, 1.5]  # the last try at the deadline


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
    assert (
        curl_command("http://x/", "{}", "NONE", "us-east-1")
        == "curl -H 'Content-Type: application/json' -d '{}' http://x/"
    )
