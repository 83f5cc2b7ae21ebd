"""LambdaImageDeployOperator against devstack's Lambda: create, update, no-op, refusals, and release safety.

devstack's Lambda shows the states Lambda shows (a new function Pending, an update InProgress,
a new version Pending, then Active; Failed with a reason) and refuses to invoke anything that
is not Active, so these tests see the operator wait where it must.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred

from bank_pipeline.errors import BadInputError, DeployFailedError
from bank_pipeline.operators.lambda_deploy import LambdaAliasRevertOperator, LambdaImageDeployOperator
from bank_pipeline.plans.lambda_release import architecture_mismatch, subset_mismatch
from bank_pipeline.triggers.lambda_waiters import LambdaFunctionActiveTrigger
from bank_pipeline.utils.oci_image import Platform
from devstack.harness.airflow_env import LAMBDA_ROLE_ARN, seed_release
from tests.support.alias_traffic import FLAKY_HANDLER, clients
from tests.support.devstack_image_helpers import RAISING_HANDLER, index_image, model_image, unpackable_image

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def images(ds, account):
    """Good images (models v1, v2; v1 also for arm64), one whose handler raises, one that cannot be
    pulled, and an image index (what `docker buildx build` pushes without --provenance=false); all but
    the last two run as containers of the serving image with a stand-in handler."""
    seed_release(ds.registry_url)  # `account` made the Lambda role
    uri = lambda pushed, repo: f"{ds.registry_url}/{repo}@{pushed.digest}"  # noqa: E731
    v1 = model_image(ds.registry_url, "v1", repo="deploy-good")
    return {
        "v1": uri(v1, "deploy-good"),
        "v2": uri(model_image(ds.registry_url, "v2", repo="deploy-good"), "deploy-good"),
        "v1-arm64": uri(model_image(ds.registry_url, "v1", repo="deploy-good", architecture="arm64"), "deploy-good"),
        "bad": uri(model_image(ds.registry_url, "v3", repo="deploy-bad", handler=RAISING_HANDLER), "deploy-bad"),
        "flaky": uri(model_image(ds.registry_url, "v4", repo="deploy-flaky", handler=FLAKY_HANDLER), "deploy-flaky"),
        "unpackable": unpackable_image(ds.registry_url, "deploy-broken"),
        "index": index_image(ds.registry_url, "deploy-good", v1.digest),
    }


@pytest.fixture
def aws_env(ds, monkeypatch):
    for key, value in ds.env().items():
        monkeypatch.setenv(key, value)


def operator(function: str, image_uri: str, version_expected: str | None = None, **kw) -> LambdaImageDeployOperator:
    return LambdaImageDeployOperator(
        task_id="deploy",
        aws_conn_id=None,
        function_name=function,
        image_uri=image_uri,
        role_arn=LAMBDA_ROLE_ARN,
        smoke_event={"ping": 1},
        smoke_expect={"model": {"version": version_expected}} if version_expected else None,
        smoke_check=lambda answer: None,  # the stand-in handler answers without statusCode
        # devstack's registry speaks plain HTTP (as its airflow_env says with BANK_PLAIN_HTTP_REGISTRIES)
        plain_http_registries=[os.environ["BANK_REGISTRY"]],
        **{"deferrable": False, "waiter_delay": 1, **kw},
    )


def deploy(function: str, image_uri: str, version_expected: str | None = None, **kw):
    return operator(function, image_uri, version_expected, **kw).execute(context={})


def versions(lam, function: str) -> list[str]:
    return [v["Version"] for v in lam.list_versions_by_function(FunctionName=function)["Versions"]]


def test_first_deploy_creates_then_update_moves_alias_then_rerun_is_a_no_op(aws_env, images, ds):
    lam = ds.client("lambda")
    first = deploy("fn-cycle", images["v1"], "v1")
    assert first == {
        "function_name": "fn-cycle", "version": "1", "alias": "live",
        "previous_version": None, "image_uri": images["v1"], "changed": True,
    }  # fmt: skip
    assert lam.get_function_configuration(FunctionName="fn-cycle")["Architectures"] == ["x86_64"]
    second = deploy("fn-cycle", images["v2"], "v2")
    assert (second["version"], second["previous_version"], second["changed"]) == ("2", "1", True)
    again = deploy("fn-cycle", images["v2"], "v2")
    assert (again["version"], again["changed"]) == ("2", False)
    assert versions(lam, "fn-cycle") == ["$LATEST", "1", "2"]


def test_a_version_failing_its_smoke_test_never_gets_the_alias(aws_env, images, ds):
    lam = ds.client("lambda")
    deploy("fn-smoke", images["v1"], "v1")
    before = lam.get_alias(FunctionName="fn-smoke", Name="live")
    with pytest.raises(
        DeployFailedError,
        match=r"version 2 of fn-smoke \(.*deploy-bad@sha256:.*\) failed its smoke test: the function raised "
        r"\(Unhandled\): .*boom at smoke.*; alias live not moved \(still on version 1\)",
    ):
        deploy("fn-smoke", images["bad"])
    after = lam.get_alias(FunctionName="fn-smoke", Name="live")
    # Not rolled back: never moved (an alias gets a new RevisionId with every change).
    assert (after["FunctionVersion"], after["RevisionId"]) == ("1", before["RevisionId"])
    assert versions(lam, "fn-smoke") == ["$LATEST", "1", "2"]  # published and tested, never served


def test_wrong_answer_on_first_deploy_creates_no_alias(aws_env, images, ds):
    lam = ds.client("lambda")
    with pytest.raises(DeployFailedError, match=r"answer.model.version: expected 'v9', got 'v1'; no alias created"):
        deploy("fn-first-bad", images["v1"], "v9")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName="fn-first-bad", Name="live")


def test_a_function_whose_creation_fails_says_why_at_once(aws_env, images, ds):
    lam = ds.client("lambda")
    started = time.monotonic()
    with pytest.raises(
        DeployFailedError,
        match=r"fn-failed: State Failed \(InvalidImage\): devstack: cannot pull image .*deploy-broken@sha256:.*; "
        r"alias live not moved",
    ):
        deploy("fn-failed", images["unpackable"], waiter_max_attempts=600)
    # The Failed state ends the wait (function_active_v2), not 600 attempts of a second.
    assert time.monotonic() - started < 30
    assert lam.get_function_configuration(FunctionName="fn-failed")["State"] == "Failed"
    assert versions(lam, "fn-failed") == ["$LATEST"]
    # A rerun names the dead function's state rather than trying to update it.
    with pytest.raises(DeployFailedError, match=r"fn-failed is in State Failed \(InvalidImage: .*delete it"):
        deploy("fn-failed", images["v1"])


def test_an_image_of_another_architecture_is_refused_before_any_change(aws_env, images, ds):
    lam = ds.client("lambda")
    deploy("fn-arch", images["v1"], "v1")
    code_before = lam.get_function_configuration(FunctionName="fn-arch")["CodeSha256"]
    with pytest.raises(
        BadInputError,
        match=r"refused before any change: image .*@sha256:\w+ is built for linux/arm64 \(Lambda arm64\) but "
        r"function fn-arch is x86_64: build it with `docker buildx build --platform linux/amd64 --provenance=false`",
    ):
        deploy("fn-arch", images["v1-arm64"], "v1")
    assert lam.get_function_configuration(FunctionName="fn-arch")["CodeSha256"] == code_before
    assert versions(lam, "fn-arch") == ["$LATEST", "1"]
    # A function this run would create as arm64 refuses the amd64 image, and is not created.
    with pytest.raises(BadInputError, match=r"linux/amd64 \(Lambda x86_64\) but function fn-arm is arm64"):
        deploy("fn-arm", images["v1"], "v1", architecture="arm64")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="fn-arm")
    # The matching pair deploys.
    assert deploy("fn-arm", images["v1-arm64"], "v1", architecture="arm64")["version"] == "1"


def test_an_image_index_is_refused(aws_env, images):
    with pytest.raises(BadInputError, match=r"is an image index \(linux/amd64, unknown/unknown\), not one image: "
                                            r"build it with .*--provenance=false"):  # fmt: skip
        deploy("fn-index", images["index"])


def test_deferred_release_waits_in_triggers_and_reports_a_failed_state(aws_env, images, ds):
    """The deferrable path: each wait is a trigger; the task resumes with its event only."""

    def run(trigger) -> dict:
        async def first_event():
            async for event in trigger.run():
                return event.payload

        return asyncio.run(first_event())

    op = operator("fn-deferred", images["v1"], "v1", deferrable=True)
    with pytest.raises(TaskDeferred) as created:
        op.execute(context={})
    assert type(created.value.trigger).__name__ == "LambdaFunctionActiveTrigger"
    with pytest.raises(TaskDeferred) as published:
        getattr(op, created.value.method_name)(context={}, event=run(created.value.trigger))
    assert published.value.trigger.serialize()[1]["version"] == "1"
    released = getattr(op, published.value.method_name)(context={}, event=run(published.value.trigger))
    assert (released["version"], released["changed"]) == ("1", True)
    assert ds.client("lambda").get_alias(FunctionName="fn-deferred", Name="live")["FunctionVersion"] == "1"

    # A creation that fails: the trigger's event carries the state and its reason; the task says so.
    op = operator("fn-deferred-bad", images["unpackable"], deferrable=True)
    with pytest.raises(TaskDeferred) as created:
        op.execute(context={})
    assert isinstance(created.value.trigger, LambdaFunctionActiveTrigger)
    event = run(created.value.trigger)
    assert event["status"] == "error" and "Failed - InvalidImage - devstack: cannot pull image" in event["message"]
    with pytest.raises(DeployFailedError, match=r"fn-deferred-bad: State Failed \(InvalidImage\)"):
        getattr(op, created.value.method_name)(context={}, event=event)


CANARY = {"release_strategy": "canary", "canary_percent": 50, "bake_poll_seconds": 0.5}


def test_a_canary_failing_one_request_in_five_is_rolled_back_naming_the_metric(aws_env, images, ds):
    lam = ds.client("lambda")
    first = deploy("fn-canary-bad", images["v1"], "v1", **CANARY, bake_seconds=60)
    assert first["version"] == "1" and "traffic" not in first  # a first release goes all at once
    with clients(ds, "fn-canary-bad") as served, pytest.raises(DeployFailedError) as failed:
        deploy("fn-canary-bad", images["flaky"], **CANARY, bake_seconds=60)
    message = str(failed.value)
    assert message.startswith("canary of version 2 of fn-canary-bad rolled back at 50% of the traffic: Errors ")
    assert message.endswith("alias live on version 1 with all of it")
    assert served["2"] > 0  # the canary did serve its share before it was judged
    alias = lam.get_alias(FunctionName="fn-canary-bad", Name="live")
    assert alias["FunctionVersion"] == "1" and not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    with clients(ds, "fn-canary-bad") as after:
        time.sleep(1)
    assert after["2"] == 0 and after["1"] > 0  # all of the traffic is back on the old version


def test_a_good_canary_is_promoted_with_its_steps_recorded(aws_env, images, ds):
    lam = ds.client("lambda")
    deploy("fn-canary-good", images["v1"], "v1")
    with clients(ds, "fn-canary-good") as served:
        released = deploy("fn-canary-good", images["v2"], "v2", **CANARY, bake_seconds=3)
    assert (released["version"], released["previous_version"], released["changed"]) == ("2", "1", True)
    [step] = released["traffic"]
    assert (step["share"], step["status"]) == (0.5, "passed") and step["metrics"]["errors"] == 0
    assert 0 < step["metrics"]["invocations"] <= served["2"]
    assert step["ended_at"] - step["started_at"] >= 3  # the step's time at its share: the whole bake
    alias = lam.get_alias(FunctionName="fn-canary-good", Name="live")
    assert alias["FunctionVersion"] == "2" and not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")


def test_a_deferred_canary_bakes_in_the_triggerer_and_resumes_with_the_verdict(aws_env, images, ds):
    deploy("fn-canary-deferred", images["v1"], "v1")
    op = operator("fn-canary-deferred", images["v2"], "v2", **CANARY, bake_seconds=1)
    lam = ds.client("lambda")
    lam.update_function_code(FunctionName="fn-canary-deferred", ImageUri=images["v2"])
    lam.get_waiter("function_updated_v2").wait(FunctionName="fn-canary-deferred", WaiterConfig={"Delay": 0.2})
    version = lam.publish_version(FunctionName="fn-canary-deferred")["Version"]
    lam.get_waiter("published_version_active").wait(FunctionName="fn-canary-deferred", Qualifier=version)
    op.deferrable = True
    with pytest.raises(TaskDeferred) as baking:
        op.execute_version_active(context={}, event={"status": "success", "version": version})
    trigger = baking.value.trigger
    assert type(trigger).__name__ == "LambdaCanaryTrigger" and baking.value.method_name == "execute_baked"
    assert lam.get_alias(FunctionName="fn-canary-deferred", Name="live")["RoutingConfig"] == {
        "AdditionalVersionWeights": {"2": 0.5}
    }
    event = asyncio.run(anext(trigger.run())).payload
    assert event["status"] == "passed" and event["state"]["version"] == "2"
    released = op.execute_baked(context={}, event=event)
    assert released["version"] == "2" and released["traffic"][0]["status"] == "passed"

    with pytest.raises(BadInputError, match="release_strategy='blue_green'"):
        deploy("fn-canary-deferred", images["v1"], release_strategy="blue_green")


def test_mutable_tag_is_refused(aws_env, ds):
    with pytest.raises(BadInputError, match="deploy by digest, not by a mutable tag"):
        deploy("fn-tag", f"{ds.registry_url}/deploy-good:model-v1")


def test_missing_function_without_role_is_refused(aws_env, images):
    op = LambdaImageDeployOperator(
        task_id="d", aws_conn_id=None, function_name="fn-no-role", image_uri=images["v1"], smoke_event={},
        plain_http_registries=[os.environ["BANK_REGISTRY"]],
    )  # fmt: skip
    with pytest.raises(BadInputError, match="does not exist and no role_arn was given"):
        op.execute(context={})


def revert(release):
    op = LambdaAliasRevertOperator(task_id="revert", aws_conn_id=None, release=release, reason="k8s failed")
    return op.execute(context={})


def test_revert_moves_the_alias_back_or_deletes_it_and_fails_saying_so(aws_env, images, ds):
    from airflow.sdk.exceptions import AirflowSkipException

    lam = ds.client("lambda")
    first = deploy("fn-revert", images["v1"], "v1")
    with pytest.raises(DeployFailedError, match=r"the release is not live: k8s failed; alias live of fn-revert "
                                                r"deleted \(this release had created it, on version 1\)"):  # fmt: skip
        revert(first)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName="fn-revert", Name="live")

    deploy("fn-revert", images["v1"], "v1")  # the alias again, on version 1
    second = deploy("fn-revert", images["v2"], "v2")
    with pytest.raises(DeployFailedError, match="moved back from version 2 to version 1"):
        revert(second)
    assert lam.get_alias(FunctionName="fn-revert", Name="live")["FunctionVersion"] == "1"
    with pytest.raises(DeployFailedError, match="already back on version 1"):  # idempotent
        revert(second)
    with pytest.raises(DeployFailedError, match="failed its smoke test"):
        deploy("fn-revert", images["bad"])  # publishes version 3, which someone then moves the alias to
    lam.update_alias(FunctionName="fn-revert", Name="live", FunctionVersion="3")
    with pytest.raises(DeployFailedError, match=r"left alone: it is on version 3 now, not this run's 2"):
        revert(second)
    assert lam.get_alias(FunctionName="fn-revert", Name="live")["FunctionVersion"] == "3"
    # Nothing to undo: the deploy moved nothing, or did not finish.
    with pytest.raises(AirflowSkipException, match="did not move the alias"):
        revert({**second, "changed": False})
    with pytest.raises(AirflowSkipException, match="did not move the alias"):
        revert(None)


@pytest.mark.parametrize(
    ("expected", "actual", "problem"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, None),
        ({"a": {"b": "x"}}, {"a": {"b": "x", "c": 0}}, None),
        ({"a": 1}, {"b": 1}, "answer.a: missing"),
        ({"a": {"b": "x"}}, {"a": {"b": "y"}}, "answer.a.b: expected 'x', got 'y'"),
        ({"a": {"b": "x"}}, {"a": [1]}, "answer.a: expected an object, got [1]"),
    ],
)
def test_subset_mismatch(expected, actual, problem):
    assert subset_mismatch(expected, actual) == problem


@pytest.mark.parametrize(
    ("platform", "function_arch", "problem"),
    [
        (Platform("linux", "amd64"), "x86_64", None),
        (Platform("linux", "arm64", "v8"), "arm64", None),
        (Platform("linux", "arm64"), "x86_64", "is built for linux/arm64 (Lambda arm64) but function f is x86_64"),
        (Platform("linux", "amd64"), "arm64", "--platform linux/arm64 --provenance=false"),
        (Platform("linux", "s390x"), "x86_64", "is built for linux/s390x, which Lambda cannot run"),
        (Platform("windows", "amd64"), "x86_64", "is built for windows/amd64, which Lambda cannot run"),
    ],
)
def test_architecture_mismatch(platform, function_arch, problem):
    found = architecture_mismatch("img", platform, "f", function_arch)
    assert found is None if problem is None else problem in found
