"""Lambda image functions on devstack: the handler of the image in the registry really runs."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devstack import Devstack
from tests.devstack.devstack_image_helpers import model_image, write_serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def images(ds: Devstack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """ImageUri by digest of two model images (v1, v2) on the same base."""
    source = write_serving(tmp_path_factory.mktemp("serving"))
    return {v: f"{ds.registry_url}/bank-serving@{model_image(ds.registry_url, source, v).digest}" for v in ("v1", "v2")}


@pytest.fixture(scope="module")
def role(ds: Devstack) -> str:
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                   "Action": "sts:AssumeRole"}]}  # fmt: skip
    return ds.client("iam").create_role(RoleName=f"bank-serving-{uuid.uuid4().hex[:6]}",
                                        AssumeRolePolicyDocument=json.dumps(doc))["Role"]["Arn"]  # fmt: skip


@pytest.fixture(scope="module")
def lam(ds: Devstack) -> Any:
    return ds.client("lambda")


def new_function(lam: Any, role: str, image_uri: str, **extra: Any) -> str:
    name = f"bank-serving-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Role=role, PackageType="Image", Code={"ImageUri": image_uri}, **extra)
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    return name


def invoke(lam: Any, name: str, event: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], Any]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), **kwargs)
    return resp, json.loads(resp["Payload"].read())


def test_invoke_through_an_alias_runs_the_image_handler(
    ds: Devstack, lam: Any, role: str, images: dict[str, str]
) -> None:
    name = new_function(
        lam, role, images["v1"], Timeout=10,
        Environment={"Variables": {"EXTRA_DIR": "/opt/ml/model", "PLAIN": "/not/in/the/image"}},
    )  # fmt: skip
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)

    resp, body = invoke(lam, name, {"record": {"age": 41}}, Qualifier="live", LogType="Tail")
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp
    assert resp["ExecutedVersion"] == version == "1"
    assert body["model"] == {"version": "v1"}
    assert body["event"] == {"record": {"age": 41}}
    # BANK_MODEL_DIR=/opt/ml/model (image config) and EXTRA_DIR (function env) point into the extracted image.
    rootfs = ds.state_dir / "lambda-images"
    assert Path(body["model_dir"]).is_relative_to(rootfs) and body["model_dir"].endswith("/rootfs/opt/ml/model")
    assert body["extra_dir_listing"] == ["model.json", "model.onnx"]
    assert body["plain"] == "/not/in/the/image"  # not in the image: left alone
    assert body["cwd"].endswith("/rootfs/var/task")
    assert body["aws_endpoint"] == ds.endpoint_url  # a handler calling AWS reaches devstack
    tail = base64.b64decode(resp["LogResult"]).decode()
    assert f"START RequestId: {body['request_id']} Version: 1" in tail and "handling" in tail

    # The same through "name:alias" and through the version number.
    assert invoke(lam, f"{name}:live", {})[1]["model"] == {"version": "v1"}
    assert invoke(lam, name, {}, Qualifier="1")[1]["model"] == {"version": "v1"}


def test_versions_keep_their_images_and_aliases_move(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"])
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    updated = lam.update_function_code(FunctionName=name, ImageUri=images["v2"])
    assert updated["LastUpdateStatus"] == "Successful" and updated["State"] == "Active"
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"

    assert invoke(lam, name, {}, Qualifier="1")[1]["model"] == {"version": "v1"}
    assert invoke(lam, name, {}, Qualifier="2")[1]["model"] == {"version": "v2"}
    assert invoke(lam, name, {})[1]["model"] == {"version": "v2"}  # $LATEST
    assert invoke(lam, name, {}, Qualifier="live")[1]["model"] == {"version": "v1"}
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "2"
    resp, body = invoke(lam, name, {}, Qualifier="live")
    assert body["model"] == {"version": "v2"} and resp["ExecutedVersion"] == "2"

    # Version 1 kept its own code; CodeSha256 is the image's manifest digest, as on Lambda.
    v1 = lam.get_function(FunctionName=name, Qualifier="1")
    assert v1["Code"]["ImageUri"] == images["v1"]
    assert v1["Code"]["ResolvedImageUri"] == images["v1"]
    assert "sha256:" + v1["Configuration"]["CodeSha256"] == images["v1"].rsplit("@", 1)[1]

    # Nothing changed since version 2 (even after an update to the same image): no new version.
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    lam.update_function_code(FunctionName=name, ImageUri=images["v2"])
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    lam.update_function_code(FunctionName=name, ImageUri=images["v1"])
    assert lam.publish_version(FunctionName=name)["Version"] == "3"


def test_a_raising_handler_is_an_unhandled_function_error(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"])
    resp, body = invoke(lam, name, {"fail": "records[3].age: expected int, got str"})
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "records[3].age: expected int, got str"
    assert any('File "/var/task/bank_serving/lambda_handler.py"' in frame for frame in body["stackTrace"])

    # ImageConfig.Command overrides the image's Cmd.
    other = new_function(lam, role, images["v1"], ImageConfig={"Command": ["bank_serving.lambda_handler.no_such_function"]})
    resp, body = invoke(lam, other, {})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "Handler 'no_such_function' missing on module 'bank_serving.lambda_handler'"


def test_timeout_is_an_unhandled_function_error(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"], Timeout=1)
    started = time.monotonic()
    resp, body = invoke(lam, name, {"sleep": 30})
    assert time.monotonic() - started < 8
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]


def test_an_image_missing_from_the_registry_is_rejected(ds: Devstack, lam: Any, role: str) -> None:
    with pytest.raises(ClientError, match="does not exist") as info:
        lam.create_function(
            FunctionName=f"missing-{uuid.uuid4().hex[:6]}", Role=role, PackageType="Image",
            Code={"ImageUri": f"{ds.registry_url}/bank-serving:no-such-tag"},
        )  # fmt: skip
    assert info.value.response["Error"]["Code"] == "InvalidParameterValueException"
