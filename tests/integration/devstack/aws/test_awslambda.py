"""Lambda image functions on devstack: the image in the registry runs as a container, as Lambda runs it.

The images are the real serving image (the local Lambda base: Debian's Python,
awslambdaric, AWS's RIE) with a stand-in handler and a model layer
(tests/support/devstack_image_helpers.py).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError, WaiterError

from devstack import Devstack
from devstack.containers import lambda_containers, podman
from tests.support.alias_traffic import two_versions, weighted_alias
from tests.support.devstack_image_helpers import model_image

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

INIT_FAILS = "raise RuntimeError('model.onnx: corrupt at import')\n"


@pytest.fixture(scope="module")
def images(ds: Devstack) -> dict[str, str]:
    """ImageUri by digest of two model images (v1, v2) on the same stand-in, and one whose init fails."""
    uri = {v: f"{ds.registry_url}/bank-serving@{model_image(ds.registry_url, v).digest}" for v in ("v1", "v2")}
    uri["init-fails"] = (
        f"{ds.registry_url}/bank-serving@{model_image(ds.registry_url, 'v3', handler=INIT_FAILS).digest}"
    )
    return uri


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
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    return name


def publish(lam: Any, name: str) -> str:
    """Publish a version and wait until it is Active, as a client of Lambda must before invoking it."""
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier=version, WaiterConfig={"Delay": 0.2})
    return version


def update(lam: Any, name: str, image_uri: str) -> dict[str, Any]:
    """UpdateFunctionCode, then wait until LastUpdateStatus is Successful."""
    answer = lam.update_function_code(FunctionName=name, ImageUri=image_uri)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    return answer


def invoke(lam: Any, name: str, event: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], Any]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), **kwargs)
    return resp, json.loads(resp["Payload"].read())


def containers_of(ds: Devstack, name: str) -> list[str]:
    """The function's containers, as podman lists them (by the environment variable they were started with)."""
    out = podman.podman(
        "ps", "-a", "--filter", f"label={podman.LABEL}={lambda_containers.label_for(ds.state_dir)}",
        "--format", "{{.Names}} {{.Status}}",
    )  # fmt: skip
    names = []
    for line in out.splitlines():
        cname = line.split()[0]
        env = podman.podman("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", cname)
        if f"AWS_LAMBDA_FUNCTION_NAME={name}" in env.splitlines():
            names.append(cname)
    return names


def test_invoke_through_an_alias_runs_the_image_in_a_container(
    ds: Devstack, lam: Any, role: str, images: dict[str, str]
) -> None:
    name = new_function(
        lam, role, images["v1"], Timeout=10, MemorySize=256,
        Environment={"Variables": {"EXTRA_DIR": "/opt/ml/model", "PLAIN": "/not/in/the/image"}},
    )  # fmt: skip
    version = publish(lam, name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)

    resp, body = invoke(lam, name, {"record": {"age": 41}}, Qualifier="live", LogType="Tail")
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp
    assert resp["ExecutedVersion"] == version == "1"
    assert body["model"] == {"version": "v1"}
    assert body["event"] == {"record": {"age": 41}}
    # The image's own paths, as the container sees them: nothing is rewritten any more.
    assert body["model_dir"] == "/opt/ml/model" and body["extra_dir_listing"] == ["model.json", "model.onnx"]
    assert body["plain"] == "/not/in/the/image"
    assert body["cwd"] == "/var/task" and body["uid"] == 993  # Lambda's layout, an unprivileged user
    assert body["aws_endpoint"] == ds.endpoint_url  # a handler calling AWS reaches devstack
    assert (body["memory_size"], body["function_version"]) == ("256", "1")
    assert 0 < body["remaining_ms"] <= 10_000
    tail = base64.b64decode(resp["LogResult"]).decode()
    assert f"START RequestId: {body['request_id']} Version: 1" in tail and "handling" in tail
    assert f"REPORT RequestId: {body['request_id']}" in tail
    # The container ran the image by the digest the version was published with.
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-devstack-container-image"] == images["v1"]

    # The same container again (warm: same init), through "name:alias" and through the version number.
    [container] = containers_of(ds, name)
    assert invoke(lam, f"{name}:live", {})[1]["init_pid"] == body["init_pid"]
    assert invoke(lam, name, {}, Qualifier="1")[1]["model"] == {"version": "v1"}
    assert containers_of(ds, name) == [container]
    limit = podman.podman("inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.ReadonlyRootfs}}", container)
    assert limit.split() == [str(256 * 1024 * 1024), "true"]


def test_warm_invokes_reuse_the_container_and_new_code_replaces_it(
    ds: Devstack, lam: Any, role: str, images: dict[str, str]
) -> None:
    name = new_function(lam, role, images["v1"])
    started = time.monotonic()
    first = invoke(lam, name, {})[1]
    cold = time.monotonic() - started
    started = time.monotonic()
    second = invoke(lam, name, {})[1]
    warm = time.monotonic() - started
    assert second["init_pid"] == first["init_pid"] and second["request_id"] != first["request_id"]
    assert warm < cold
    [before] = containers_of(ds, name)

    lam.update_function_code(FunctionName=name, ImageUri=images["v2"])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke(lam, name, {})[1]["model"] == {"version": "v2"}
    [after] = containers_of(ds, name)
    assert after != before  # the old code's container is gone, as Lambda retires its environments

    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"PLAIN": "changed"}})
    assert invoke(lam, name, {})[1]["plain"] == "changed"
    assert containers_of(ds, name) != [after]

    lam.delete_function(FunctionName=name)  # and its execution environments go with it
    assert containers_of(ds, name) == []


def test_versions_keep_their_images_and_aliases_move(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"])
    assert publish(lam, name) == "1"
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    updated = update(lam, name, images["v2"])
    assert updated["LastUpdateStatus"] == "InProgress" and updated["State"] == "Active"
    assert publish(lam, name) == "2"

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
    assert publish(lam, name) == "2"
    update(lam, name, images["v2"])
    assert publish(lam, name) == "2"
    update(lam, name, images["v1"])
    assert publish(lam, name) == "3"


def test_a_raising_handler_is_an_unhandled_function_error(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"])
    resp, body = invoke(lam, name, {"fail": "records[3].age: expected int, got str"})
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "records[3].age: expected int, got str"
    assert any("/var/task/bank_serving/lambda_handler.py" in frame for frame in body["stackTrace"])
    assert invoke(lam, name, {})[1]["model"] == {"version": "v1"}  # the environment survives a handler error

    # ImageConfig.Command overrides the image's Cmd; awslambdaric names the missing handler.
    other = new_function(
        lam, role, images["v1"], ImageConfig={"Command": ["bank_serving.lambda_handler.no_such_function"]}
    )
    resp, body = invoke(lam, other, {})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.HandlerNotFound"
    assert "no_such_function" in body["errorMessage"]


def test_an_init_error_is_a_function_error_and_init_is_retried(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["init-fails"])
    for _ in range(2):  # Lambda initialises again on the next invoke
        resp, body = invoke(lam, name, {})
        assert resp["FunctionError"] == "Unhandled"
        assert body["errorType"] == "RuntimeError" and body["errorMessage"] == "model.onnx: corrupt at import"


def test_timeout_is_an_unhandled_function_error(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"], Timeout=1)
    started = time.monotonic()
    resp, body = invoke(lam, name, {"sleep": 30})
    assert time.monotonic() - started < 10
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    # The RIE killed the runtime: the next invoke is a cold start in the same container, and works.
    assert invoke(lam, name, {})[1]["model"] == {"version": "v1"}


def test_the_memory_limit_is_enforced(ds: Devstack, lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"], MemorySize=128, Timeout=20)
    assert invoke(lam, name, {"allocate_mb": 16})[1]["model"] == {"version": "v1"}
    resp, body = invoke(lam, name, {"allocate_mb": 400})
    # The kernel's OOM killer ends the runtime; the RIE reports it in Lambda's words.
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.ExitError", body
    assert body["errorMessage"].endswith("Error: Runtime exited with error: signal: killed")
    # A new environment serves the next invoke.
    assert invoke(lam, name, {})[1]["model"] == {"version": "v1"}


def test_the_root_file_system_is_read_only_and_tmp_is_writable(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"])
    resp, body = invoke(lam, name, {"write": "/var/task/new-file"})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "OSError"
    assert "Read-only file system" in body["errorMessage"]
    assert invoke(lam, name, {"write": "/tmp/new-file"})[1]["model"] == {"version": "v1"}


def test_concurrent_invokes_get_a_container_each(ds: Devstack, lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"], Timeout=20)
    invoke(lam, name, {})  # one warm container
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: invoke(lam, name, {"sleep": 2})[1], range(2)))
    assert time.monotonic() - started < 3.9  # side by side, not one after the other
    assert [a["model"] for a in answers] == [{"version": "v1"}] * 2
    assert len(containers_of(ds, name)) == 2


def test_an_image_missing_from_the_registry_is_rejected(ds: Devstack, lam: Any, role: str) -> None:
    with pytest.raises(ClientError, match="does not exist") as info:
        lam.create_function(
            FunctionName=f"missing-{uuid.uuid4().hex[:6]}", Role=role, PackageType="Image",
            Code={"ImageUri": f"{ds.registry_url}/bank-serving:no-such-tag"},
        )  # fmt: skip
    assert info.value.response["Error"]["Code"] == "InvalidParameterValueException"


# -- states, as Lambda shows them ------------------------------------------------------------------

SLOW = {"devstack:pending-seconds": "3"}  # long enough to watch each state, however loaded the machine


def conflict(call: Any, **kwargs: Any) -> str:
    """The message of the ResourceConflictException (409) that ``call(**kwargs)`` must raise."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert info.value.response["Error"]["Code"] == "ResourceConflictException", info.value.response
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    return info.value.response["Error"]["Message"]


def test_a_new_function_is_pending_and_refuses_invokes_until_active(
    lam: Any, role: str, images: dict[str, str]
) -> None:
    name = f"bank-serving-{uuid.uuid4().hex[:8]}"
    created = lam.create_function(
        FunctionName=name, Role=role, PackageType="Image", Code={"ImageUri": images["v1"]}, Tags=SLOW
    )
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
    pending = (
        "The operation cannot be performed at this time. The function is currently in the following state: Pending"
    )
    assert conflict(lam.invoke, FunctionName=name, Payload=b"{}") == pending
    assert conflict(lam.publish_version, FunctionName=name) == pending
    assert lam.get_function(FunctionName=name)["Configuration"]["State"] == "Pending"
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    config = lam.get_function_configuration(FunctionName=name)
    assert (config["State"], config["LastUpdateStatus"]) == ("Active", "Successful")
    assert invoke(lam, name, {})[1]["model"] == {"version": "v1"}


def test_an_update_in_progress_runs_the_previous_image_and_refuses_other_changes(
    lam: Any, role: str, images: dict[str, str]
) -> None:
    name = new_function(lam, role, images["v1"], Tags=SLOW)
    updated = lam.update_function_code(FunctionName=name, ImageUri=images["v2"])
    assert (updated["State"], updated["LastUpdateStatus"]) == ("Active", "InProgress")
    assert invoke(lam, name, {})[1]["model"] == {"version": "v1"}  # Lambda keeps serving the previous code
    message = conflict(lam.update_function_code, FunctionName=name, ImageUri=images["v1"])
    assert message.startswith("The operation cannot be performed at this time. An update is in progress for resource: ")
    assert conflict(lam.publish_version, FunctionName=name) == message
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    assert invoke(lam, name, {})[1]["model"] == {"version": "v2"}


def test_a_published_version_is_pending_before_it_is_active(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"], Tags=SLOW)
    version = lam.publish_version(FunctionName=name)
    assert version["State"] == "Pending"
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["State"] == "Pending"
    assert lam.get_function_configuration(FunctionName=name)["State"] == "Active"  # $LATEST is
    assert "in the following state: Pending" in conflict(lam.invoke, FunctionName=name, Qualifier="1", Payload=b"{}")
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert "state: Pending" in conflict(lam.invoke, FunctionName=name, Qualifier="live", Payload=b"{}")
    lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier="1", WaiterConfig={"Delay": 0.2})
    assert invoke(lam, name, {}, Qualifier="live")[1]["model"] == {"version": "v1"}


def test_an_image_that_cannot_be_pulled_fails_the_function_with_its_reason(ds: Devstack, lam: Any, role: str) -> None:
    from tests.support.devstack_image_helpers import unpackable_image

    image = unpackable_image(ds.registry_url, "lambda-broken")
    name = f"broken-{uuid.uuid4().hex[:6]}"
    lam.create_function(FunctionName=name, Role=role, PackageType="Image", Code={"ImageUri": image})
    started = time.monotonic()
    with pytest.raises(WaiterError, match="terminal failure"):
        lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    assert time.monotonic() - started < 20
    config = lam.get_function_configuration(FunctionName=name)
    assert (config["State"], config["StateReasonCode"]) == ("Failed", "InvalidImage")
    assert config["StateReason"].startswith(f"devstack: cannot pull image {image}: ")
    assert "state: Failed" in conflict(lam.invoke, FunctionName=name, Payload=b"{}")


def test_an_update_to_an_image_that_cannot_be_pulled_fails_and_keeps_the_previous_code(
    ds: Devstack, lam: Any, role: str, images: dict[str, str]
) -> None:
    from tests.support.devstack_image_helpers import unpackable_image

    name = new_function(lam, role, images["v1"])
    lam.update_function_code(FunctionName=name, ImageUri=unpackable_image(ds.registry_url, "lambda-broken"))
    with pytest.raises(WaiterError, match="terminal failure"):
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    config = lam.get_function_configuration(FunctionName=name)
    assert (config["State"], config["LastUpdateStatus"], config["LastUpdateStatusReasonCode"]) == (
        "Active", "Failed", "InvalidImage",
    )  # fmt: skip
    assert invoke(lam, name, {})[1]["model"] == {"version": "v1"}


def test_an_image_of_another_architecture_fails_every_invoke(ds: Devstack, lam: Any, role: str) -> None:
    arm = model_image(ds.registry_url, "v1", repo="lambda-arch", architecture="arm64")
    image = f"{ds.registry_url}/lambda-arch@{arm.digest}"
    name = new_function(lam, role, image)  # Lambda takes it: x86_64 is the default
    resp, body = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.InvalidEntrypoint"
    assert "exec format error" in body["errorMessage"] and "is arm64, the function x86_64" in body["errorMessage"]
    other = new_function(lam, role, image, Architectures=["arm64"])
    assert invoke(lam, other, {})[1]["model"] == {"version": "v1"}


def test_an_alias_gets_a_new_revision_id_when_it_moves(lam: Any, role: str, images: dict[str, str]) -> None:
    name = new_function(lam, role, images["v1"])
    publish(lam, name)
    first = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")["RevisionId"]
    assert lam.get_alias(FunctionName=name, Name="live")["RevisionId"] == first
    update(lam, name, images["v2"])
    publish(lam, name)
    assert lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")["RevisionId"] != first


def test_a_weighted_alias_sends_the_additional_version_its_share(lam: Any, role: str, images: dict[str, str]) -> None:
    name = weighted_alias(lam, role, images["v1"], images["v2"], 0.3)
    assert lam.get_alias(FunctionName=name, Name="live")["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.3}}

    served = {"1": 0, "2": 0}
    for number in range(200):
        resp, body = invoke(
            lam, name if number % 2 else f"{name}:live", {}, **({"Qualifier": "live"} if number % 2 else {})
        )
        version = resp["ExecutedVersion"]
        assert body["model"] == {"version": f"v{version}"}  # the version named is the one that ran
        served[version] += 1
    # Binomial(200, 0.3): mean 60, standard deviation 6.5; four of them either way.
    assert 34 <= served["2"] <= 86, served

    lam.update_alias(FunctionName=name, Name="live", RoutingConfig={"AdditionalVersionWeights": {}})
    assert {invoke(lam, name, {}, Qualifier="live")[0]["ExecutedVersion"] for _ in range(10)} == {"1"}
    lam.update_alias(FunctionName=name, Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 1.0}})
    assert {invoke(lam, name, {}, Qualifier="live")[0]["ExecutedVersion"] for _ in range(10)} == {"2"}
    assert {invoke(lam, name, {}, Qualifier="1")[0]["ExecutedVersion"] for _ in range(3)} == {
        "1"
    }  # a version is not routed


def test_a_routing_config_lambda_refuses_is_refused_and_the_alias_kept(
    lam: Any, role: str, images: dict[str, str]
) -> None:
    name = two_versions(lam, role, images["v1"], images["v2"])
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]

    def refused(call: Any, **kwargs: Any) -> tuple[str, str]:
        with pytest.raises(ClientError) as error:
            call(FunctionName=name, Name="live", **kwargs)
        return error.value.response["Error"]["Code"], error.value.response["Error"]["Message"]

    cases = [
        # (a negative weight never leaves boto3, whose validation checks the minimum)
        ({"FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 1.5}}},
         ("ValidationException", "Member must have value less than or equal to 1.0")),
        ({"FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1, "3": 0.1}}},
         ("ValidationException", "Member must have length less than or equal to 1")),
        ({"FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"$LATEST": 0.1}}},
         ("ValidationException", "regular expression pattern: [0-9]+")),
        ({"FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"1": 0.1}}},
         ("InvalidParameterValueException", "Function version 1 is already included in routing configuration")),
        ({"FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"9": 0.1}}},
         ("ResourceNotFoundException", f"Function not found: {arn}:9")),
        ({"FunctionVersion": "$LATEST", "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1}}},
         ("InvalidParameterValueException", "$LATEST is not supported for an alias pointing to more than 1 version")),
    ]  # fmt: skip
    for kwargs, (code, message) in cases:
        got = refused(lam.create_alias, **kwargs)
        assert got[0] == code and message in got[1], (kwargs, got)
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []  # none was created

    lam.create_alias(
        FunctionName=name, Name="live", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}}
    )
    before = lam.get_alias(FunctionName=name, Name="live")
    for kwargs, (code, message) in cases:
        got = refused(lam.update_alias, **kwargs)
        assert got[0] == code and message in got[1], (kwargs, got)
    # Moving the alias onto its additional version, the weights kept: refused as well.
    assert refused(lam.update_alias, FunctionVersion="2")[0] == "InvalidParameterValueException"
    after = lam.get_alias(FunctionName=name, Name="live")
    assert {k: after[k] for k in ("FunctionVersion", "RoutingConfig", "RevisionId")} == {
        k: before[k] for k in ("FunctionVersion", "RoutingConfig", "RevisionId")
    }


def test_each_invoke_publishes_lambdas_metrics_by_executed_version(
    ds: Devstack, lam: Any, role: str, images: dict[str, str]
) -> None:
    """As a canary's judge reads them: Invocations, Errors and Duration (p99 too) of each version behind the alias."""
    import datetime as dt

    name = weighted_alias(lam, role, images["v1"], images["v2"], 0.5)
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    invocations, errors = {"1": 0, "2": 0}, {"1": 0, "2": 0}
    for number in range(40):
        resp, _ = invoke(lam, name, {"fail": "bad record"} if number % 4 == 0 else {}, Qualifier="live")
        invocations[resp["ExecutedVersion"]] += 1
        errors[resp["ExecutedVersion"]] += "FunctionError" in resp
    invoke(lam, name, {}, Qualifier="2")  # a version by number: Resource name:2, no ExecutedVersion
    assert min(invocations.values()) > 0 and sum(errors.values()) == 10

    cloudwatch = ds.client("cloudwatch")

    def stat(metric: str, stat: str, **dimensions: str) -> float | None:
        query = {
            "Id": "m", "ReturnData": True,
            "MetricStat": {"Metric": {"Namespace": "AWS/Lambda", "MetricName": metric,
                                      "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]},
                           "Period": 3600, "Stat": stat},
        }  # fmt: skip
        end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        [result] = cloudwatch.get_metric_data(MetricDataQueries=[query], StartTime=started, EndTime=end)[
            "MetricDataResults"
        ]
        return sum(result["Values"]) if result["Values"] else None

    for version in ("1", "2"):
        by_version = {"FunctionName": name, "Resource": f"{name}:live", "ExecutedVersion": version}
        assert stat("Invocations", "Sum", **by_version) == invocations[version]
        assert stat("Errors", "Sum", **by_version) == errors[version]
        p99, highest = stat("Duration", "p99", **by_version), stat("Duration", "Maximum", **by_version)
        assert p99 is not None and highest is not None and 0 < p99 <= highest
    assert stat("Invocations", "Sum", FunctionName=name, Resource=f"{name}:live") == 40
    assert stat("Invocations", "Sum", FunctionName=name, Resource=f"{name}:2") == 1
    assert stat("Invocations", "Sum", FunctionName=name) == 41
    assert stat("Errors", "Average", FunctionName=name, Resource=f"{name}:live") == 10 / 40
