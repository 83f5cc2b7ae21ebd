"""Lambda function URLs on devstack: the URL config API with a Qualifier, and the URL served for real.

The function runs the real serving image with a small real model, in a
container, so what comes back through the URL is the handler's own answer.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from devstack import Devstack
from tests.support.devstack_helpers import live_function
from tests.support.devstack_image_helpers import serving_model_image, trained_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RECORD = {"age": 41, "job": "technician", "marital": "married", "education": "secondary", "default": "no",
          "balance": 1200, "housing": "yes", "loan": "no", "contact": "cellular", "day": 15, "month": "may",
          "campaign": 2, "pdays": -1, "previous": 0, "poutcome": "unknown"}  # fmt: skip


@pytest.fixture(scope="module")
def keys(ds: Devstack) -> Credentials:
    """devstack's admin key (an IAM user allowed everything): IAM is enforced, so it may call the URL."""
    return Credentials(*ds.admin)


@pytest.fixture(scope="module")
def lam(ds: Devstack) -> Any:
    return ds.client("lambda")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_model(tmp_path_factory.mktemp("url-model"))


@pytest.fixture(scope="module")
def function(ds: Devstack, lam: Any, model_dir: Path) -> str:
    """A function on the real serving image and model, its version 1 behind the alias live."""
    image = serving_model_image(ds.registry_url, "url-test", model_dir)
    role = ds.client("iam").create_role(
        RoleName=f"url-test-{uuid.uuid4().hex[:6]}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
    )["Role"]["Arn"]  # fmt: skip
    return live_function(lam, "url-test", image, role)


@pytest.fixture(scope="module")
def iam_url(lam: Any, function: str) -> str:
    return lam.create_function_url_config(FunctionName=function, Qualifier="live", AuthType="AWS_IAM")["FunctionUrl"]


def signed(method: str, url: str, body: bytes, keys: Credentials, region: str = "us-east-1",
           service: str = "lambda", headers: dict[str, str] | None = None) -> requests.Response:  # fmt: skip
    """The request signed with SigV4 as AWS's SDKs sign a function URL call."""
    request = AWSRequest(
        method=method, url=url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    SigV4Auth(keys, service, region).add_auth(request)
    return requests.request(method, url, data=body, headers=dict(request.headers), timeout=60)


def user_allowed(ds: Devstack, *actions: str) -> Credentials:
    """The key of a new IAM user whose policy allows ``actions`` on every resource."""
    iam = ds.client("iam")
    user = f"url-caller-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="invoke", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]}))  # fmt: skip
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def test_the_url_config_belongs_to_the_alias(lam: Any, function: str, iam_url: str) -> None:
    config = lam.get_function_url_config(FunctionName=function, Qualifier="live")
    assert config["FunctionUrl"] == iam_url and iam_url.startswith("http://127.0.0.1:") and iam_url.endswith("/")
    assert config["FunctionArn"].endswith(f":function:{function}:live") and config["AuthType"] == "AWS_IAM"
    assert config["InvokeMode"] == "BUFFERED"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=function)  # the function itself has none
    with pytest.raises(ClientError) as conflict:
        lam.create_function_url_config(FunctionName=function, Qualifier="live", AuthType="AWS_IAM")
    assert conflict.value.response["Error"]["Code"] == "ResourceConflictException"


@pytest.mark.parametrize(
    ("qualifier", "auth", "code"),
    [("live", "BASIC", "ValidationException"), ("1", "AWS_IAM", "ValidationException"),
     ("no-such-alias", "AWS_IAM", "ResourceNotFoundException")],
)  # fmt: skip
def test_bad_url_configs_are_refused(lam: Any, function: str, qualifier: str, auth: str, code: str) -> None:
    with pytest.raises(ClientError) as info:
        lam.create_function_url_config(FunctionName=function, Qualifier=qualifier, AuthType=auth)
    assert info.value.response["Error"]["Code"] == code


def test_a_signed_post_gets_the_handlers_answer(
    function: str, iam_url: str, model_dir: Path, keys: Credentials
) -> None:
    resp = signed("POST", iam_url, json.dumps(RECORD).encode(), keys)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    answer = resp.json()
    assert answer["model_version"] == json.loads((model_dir / "model.json").read_text())["version"]
    [prediction] = answer["predictions"]
    assert 0 <= prediction["probability"] <= 1 and prediction["label"] in (0, 1)
    assert "@sha256:" in resp.headers["x-devstack-container-image"]


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"{not json", "body"), (json.dumps({**RECORD, "age": "forty"}).encode(), "age"),
     (json.dumps({"records": [RECORD, {**RECORD, "month": "smarch"}]}).encode(), "records[1].month")],
)  # fmt: skip
def test_a_bad_body_gets_the_handlers_400_naming_the_field(
    iam_url: str, body: bytes, field: str, keys: Credentials
) -> None:
    resp = signed("POST", iam_url, body, keys)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"].startswith(f"{field}: ")


def test_a_body_over_6_mb_is_413(iam_url: str, keys: Credentials) -> None:
    resp = signed("POST", iam_url, b"[" + b" " * (6 * 1024 * 1024) + b"]", keys)
    assert resp.status_code == 413
    assert "6291456 bytes" in resp.json()["Message"]


def test_a_chunked_body_is_read_and_limited_too(iam_url: str) -> None:
    """A body without Content-Length (Transfer-Encoding: chunked) is read whole, and refused with 413 as
    soon as the chunks announced pass 6 MB, before their data is read."""
    port = int(iam_url.rsplit(":", 1)[1].rstrip("/"))

    def post_chunked(head: bytes) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.putrequest("POST", "/")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            conn.send(head)
            return conn.getresponse().status
        finally:
            conn.close()

    assert post_chunked(b'7\r\n{"age":\r\n4\r\n 41}\r\n0\r\n\r\n') == 403  # read whole; no signature
    assert post_chunked(b"%x\r\n" % (6 * 1024 * 1024 + 1)) == 413  # a chunk past the limit: no data sent


def test_without_valid_credentials_it_is_403(
    ds: Devstack, iam_url: str, keys: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps(RECORD).encode()
    assert requests.post(iam_url, data=body, timeout=30).status_code == 403  # not signed
    assert signed("POST", iam_url, body, Credentials(keys.access_key, "wrong")).status_code == 403
    assert signed("POST", iam_url, body, Credentials("AKIANOSUCHKEY0000000", "x")).status_code == 403
    # devstack's default client key is nobody once IAM is enforced.
    assert signed("POST", iam_url, body, Credentials("testing", "testing")).status_code == 403
    assert signed("POST", iam_url, body, keys, region="eu-west-1").status_code == 403
    assert signed("POST", iam_url, body, keys, service="execute-api").status_code == 403
    # A body changed after signing.
    request = AWSRequest(method="POST", url=iam_url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(keys, "lambda", "us-east-1").add_auth(request)
    assert requests.post(iam_url, data=body + b" ", headers=dict(request.headers), timeout=30).status_code == 403
    # A user whose policies do not allow both lambda:InvokeFunctionUrl and lambda:InvokeFunction (URLs
    # created since October 2025 need both): a valid signature is not enough.
    assert signed("POST", iam_url, body, user_allowed(ds, "lambda:InvokeFunction")).status_code == 403
    assert signed("POST", iam_url, body, user_allowed(ds, "lambda:InvokeFunctionUrl")).status_code == 403
    both = user_allowed(ds, "lambda:InvokeFunctionUrl", "lambda:InvokeFunction")
    assert signed("POST", iam_url, body, both).status_code == 200
    # A signature made 20 minutes ago.
    import botocore.auth

    stale = datetime.now(UTC) - timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: stale.replace(tzinfo=None))
    assert signed("POST", iam_url, body, keys).status_code == 403
    monkeypatch.undo()
    assert signed("POST", iam_url, body, keys).status_code == 200


URL_PERMISSION = {"StatementId": "FunctionURLAllowPublicAccess", "Action": "lambda:InvokeFunctionUrl", "Principal": "*",
                  "FunctionUrlAuthType": "NONE"}  # fmt: skip
INVOKE_PERMISSION = {"StatementId": "FunctionURLAllowInvokeAction", "Action": "lambda:InvokeFunction", "Principal": "*",
                     "InvokedViaFunctionUrl": True}  # fmt: skip


def public_url(lam: Any, function: str, alias: str) -> str:
    lam.create_alias(FunctionName=function, Name=alias, FunctionVersion="1")
    return lam.create_function_url_config(FunctionName=function, Qualifier=alias, AuthType="NONE")["FunctionUrl"]


def post(url: str) -> requests.Response:
    return requests.post(url, data=json.dumps(RECORD), headers={"Content-Type": "application/json"}, timeout=60)


def test_auth_none_needs_both_public_permissions(lam: Any, function: str) -> None:
    """As on Lambda for URLs created since October 2025: lambda:InvokeFunctionUrl (auth type NONE) and
    lambda:InvokeFunction for "*" in the alias's resource policy, else 403."""
    url = public_url(lam, function, "public")
    assert post(url).status_code == 403  # no resource policy yet
    lam.add_permission(FunctionName=function, Qualifier="public", **URL_PERMISSION)
    assert post(url).status_code == 403  # the permission alone, as before October 2025: not enough
    lam.add_permission(FunctionName=function, Qualifier="public", **INVOKE_PERMISSION)
    resp = post(url)
    assert resp.status_code == 200 and resp.json()["predictions"][0]["label"] in (0, 1)
    lam.remove_permission(FunctionName=function, Qualifier="public", StatementId="FunctionURLAllowPublicAccess")
    assert post(url).status_code == 403  # lambda:InvokeFunction alone: not enough either
    lam.add_permission(FunctionName=function, Qualifier="public", **URL_PERMISSION)
    assert post(url).status_code == 200

    lam.update_function_url_config(FunctionName=function, Qualifier="public", AuthType="AWS_IAM")
    assert post(url).status_code == 403
    lam.delete_function_url_config(FunctionName=function, Qualifier="public")
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=function, Qualifier="public")


@pytest.mark.parametrize(
    ("alias", "invoke"),
    [
        (
            "with-source",
            {"InvokedViaFunctionUrl": None, "SourceArn": "arn:aws:s3:::some-bucket"},
        ),  # not a URL's request
        ("for-account", {"Principal": "123456789012"}),  # not everyone
    ],
)
def test_auth_none_refuses_an_invoke_permission_that_is_not_public(
    lam: Any, function: str, alias: str, invoke: dict[str, Any]
) -> None:
    url = public_url(lam, function, alias)
    lam.add_permission(FunctionName=function, Qualifier=alias, **URL_PERMISSION)
    statement = {**INVOKE_PERMISSION, "StatementId": f"invoke-{alias}", **invoke}
    lam.add_permission(FunctionName=function, Qualifier=alias, **{k: v for k, v in statement.items() if v is not None})
    assert post(url).status_code == 403
    lam.add_permission(FunctionName=function, Qualifier=alias, **INVOKE_PERMISSION)  # the public one besides
    assert post(url).status_code == 200


def test_each_alias_has_its_own_resource_policy_as_lambda_writes_it(lam: Any, function: str) -> None:
    lam.create_alias(FunctionName=function, Name="policy", FunctionVersion="1")
    arn = lam.get_alias(FunctionName=function, Name="policy")["AliasArn"]
    lam.add_permission(FunctionName=function, Qualifier="policy", **URL_PERMISSION)
    lam.add_permission(FunctionName=function, Qualifier="policy", **INVOKE_PERMISSION)
    policy = json.loads(lam.get_policy(FunctionName=function, Qualifier="policy")["Policy"])
    assert policy["Statement"] == [
        {"Sid": "FunctionURLAllowPublicAccess", "Effect": "Allow", "Principal": "*", "Action": "lambda:InvokeFunctionUrl",
         "Resource": arn, "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}}},
        {"Sid": "FunctionURLAllowInvokeAction", "Effect": "Allow", "Principal": "*", "Action": "lambda:InvokeFunction",
         "Resource": arn, "Condition": {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}},
    ]  # fmt: skip
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=function)  # the function's own policy is another, empty
    with pytest.raises(ClientError) as taken:
        lam.add_permission(FunctionName=function, Qualifier="policy", **URL_PERMISSION)
    assert taken.value.response["Error"]["Code"] == "ResourceConflictException"
    assert "(FunctionURLAllowPublicAccess) provided already exists" in taken.value.response["Error"]["Message"]
    lam.remove_permission(FunctionName=function, Qualifier="policy", StatementId="FunctionURLAllowPublicAccess")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.remove_permission(FunctionName=function, Qualifier="policy", StatementId="FunctionURLAllowPublicAccess")
    assert [s["Sid"] for s in json.loads(lam.get_policy(FunctionName=function, Qualifier="policy")["Policy"])["Statement"]] == [
        "FunctionURLAllowInvokeAction"]  # fmt: skip
    # Deleting the alias deletes its policy: a new alias of that name starts without one.
    lam.delete_alias(FunctionName=function, Name="policy")
    lam.create_alias(FunctionName=function, Name="policy", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=function, Qualifier="policy")


def test_curl_with_aws_sigv4_like_the_book(iam_url: str, keys: Credentials) -> None:
    """The README's and the demo's curl line, run for real (curl: the Makefile's APT_NEEDS)."""
    assert shutil.which("curl"), "curl is not installed: `make setup` installs it"
    result = subprocess.run(
        ["curl", "-sS", "--aws-sigv4", "aws:amz:us-east-1:lambda", "--user", f"{keys.access_key}:{keys.secret_key}",
         "-H", "Content-Type: application/json", "-d", json.dumps(RECORD), "-w", "\n%{http_code}", iam_url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    body, _, status = result.stdout.rpartition("\n")
    assert (result.returncode, status) == (0, "200"), result.stdout + result.stderr
    assert json.loads(body)["predictions"][0]["label"] in (0, 1)
