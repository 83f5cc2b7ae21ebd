"""Every decision of the Lambda release (bank_pipeline.plans.lambda_release), without Lambda.

The same paths run for real against devstack's Lambda in tests/integration/bank_pipeline/operators/test_lambda_deploy.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from bank_pipeline.errors import BadInputError, DeployFailedError
from bank_pipeline.plans import lambda_release as plan
from bank_pipeline.plans.lambda_release import Invocation, LambdaRelease
from bank_pipeline.utils.oci_image import Platform

pytestmark = pytest.mark.unit

IMAGE = "123.dkr.ecr.us-east-1.amazonaws.com/bank-model@sha256:" + "a" * 64
OK = '{"statusCode": 200, "body": {"model_version": "v1"}}'


def test_a_mutable_tag_or_an_unknown_architecture_is_refused() -> None:
    plan.check_request(IMAGE, "arm64")
    with pytest.raises(BadInputError, match="deploy by digest, not by a mutable tag"):
        plan.check_request("host/repo:latest", "x86_64")
    with pytest.raises(BadInputError, match="architecture='amd64': Lambda has x86_64 and arm64"):
        plan.check_request(IMAGE, "amd64")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, "arm64"),  # created with the requested architecture
        ({"State": "Active", "Architectures": ["x86_64"]}, "x86_64"),  # an existing function's own
        ({"State": "Active"}, "x86_64"),  # Lambda's default when the field is absent
    ],
)
def test_the_architecture_the_image_must_match(config: dict[str, Any] | None, expected: str) -> None:
    assert plan.function_architecture("fn", config, "arm64") == expected


def test_a_failed_function_is_refused_naming_lambdas_reason() -> None:
    config = {"State": "Failed", "StateReasonCode": "ImageAccessDenied", "StateReason": "no pull"}
    with pytest.raises(DeployFailedError, match=r"function fn is in State Failed \(ImageAccessDenied: no pull\)"):
        plan.function_architecture("fn", config, "x86_64")


def test_architecture_mismatch_names_the_build_flag() -> None:
    assert plan.architecture_mismatch(IMAGE, Platform("linux", "amd64"), "fn", "x86_64") is None
    problem = plan.architecture_mismatch(IMAGE, Platform("linux", "arm64"), "fn", "x86_64")
    assert problem and "--platform linux/amd64" in problem
    problem = plan.architecture_mismatch(IMAGE, Platform("windows", "amd64"), "fn", "x86_64")
    assert problem and "which Lambda cannot run" in problem


@pytest.mark.parametrize(
    ("exists", "live_image", "role", "step"),
    [
        (True, IMAGE, None, "smoke_live"),  # a rerun: only the smoke test again
        (True, "host/repo@sha256:" + "b" * 64, None, "update"),
        (True, None, None, "update"),  # a function without the alias yet
        (False, None, "arn:aws:iam::1:role/r", "create"),
    ],
)
def test_starting_step(exists: bool, live_image: str | None, role: str | None, step: str) -> None:
    assert (
        plan.starting_step(function="fn", exists=exists, live_image=live_image, image_uri=IMAGE, role_arn=role) == step
    )


def test_creating_needs_a_role() -> None:
    with pytest.raises(BadInputError, match="function fn does not exist and no role_arn was given"):
        plan.starting_step(function="fn", exists=False, live_image=None, image_uri=IMAGE, role_arn=None)


def test_waiters_of_each_change() -> None:
    assert plan.WAITER == {"create": "function_active_v2", "update": "function_updated_v2"}


class TestWaitFailure:
    def failure(self, event: dict[str, Any] | None, config: dict[str, Any] | None, version: str | None = None) -> Any:
        return plan.wait_failure(event, config, function="fn", alias="live", image_uri=IMAGE, version=version)

    def test_success_is_no_failure(self) -> None:
        assert self.failure({"status": "success"}, None) is None

    def test_a_failed_state_names_lambdas_reason_and_is_final(self) -> None:
        error = self.failure(
            {"status": "error", "message": "waiter"},
            {"State": "Failed", "StateReasonCode": "InvalidImage", "StateReason": "exec format error"},
            version="3",
        )
        assert isinstance(error, DeployFailedError)
        assert str(error).startswith(
            "fn version 3: State Failed (InvalidImage): exec format error; alias live not moved"
        )

    def test_a_failed_update_names_its_reason(self) -> None:
        config = {
            "State": "Active",
            "LastUpdateStatus": "Failed",
            "LastUpdateStatusReasonCode": "X",
            "LastUpdateStatusReason": "y",
        }
        error = self.failure({"status": "error", "message": "m"}, config)
        assert isinstance(error, DeployFailedError)
        assert "fn: LastUpdateStatus Failed (X): y" in str(error)

    def test_a_timeout_may_pass_on_retry(self) -> None:
        error = self.failure({"status": "error", "message": "Max attempts exceeded"}, {"State": "Pending"})
        assert type(error) is RuntimeError
        assert "the function's code did not become ready (State Pending, LastUpdateStatus None): Max attempts" in str(
            error
        )

    def test_no_event_and_no_function(self) -> None:
        error = self.failure(None, None, version="2")
        assert (
            type(error) is RuntimeError
            and "version 2 did not become ready" in str(error)
            and "no event: None" in str(error)
        )


@pytest.mark.parametrize(
    ("invocation", "expect", "problem"),
    [
        (Invocation(None, OK), {"body": {"model_version": "v1"}}, None),
        (Invocation("Unhandled", '{"errorMessage": "boom"}'), {}, "the function raised (Unhandled): "),
        (Invocation(None, "<html>"), {}, "the answer is not JSON: '<html>'"),
        (Invocation(None, "[1]"), {}, "the answer is not a JSON object: '[1]'"),
        (Invocation(None, OK), {"body": {"model_version": "v2"}}, "answer.body.model_version: expected 'v2', got 'v1'"),
        (Invocation(None, '{"statusCode": 500}'), {}, "expected statusCode 200, got 500"),
    ],
)
def test_smoke_problem(invocation: Invocation, expect: dict[str, Any], problem: str | None) -> None:
    found = plan.smoke_problem(invocation, expect, plan.check_http_ok)
    assert found == problem if problem is None else (found or "").startswith(problem)


def test_a_custom_check_runs_after_the_expected_values() -> None:
    def never(answer: dict[str, Any]) -> str:
        return "custom says no"

    assert plan.smoke_problem(Invocation(None, OK), {}, never) == "custom says no"


@pytest.mark.parametrize(
    ("previous", "live", "message"),
    [
        ("4", False, "version 5 of fn (IMG) failed its smoke test: bad; alias live not moved (still on version 4)"),
        (None, False, "version 5 of fn (IMG) failed its smoke test: bad; no alias created"),
        ("5", True, "the live version 5 (IMG) fails its smoke test: bad"),
    ],
)
def test_smoke_failure_says_where_the_alias_is(previous: str | None, live: bool, message: str) -> None:
    error = plan.smoke_failure(
        "bad", function="fn", version="5", image_uri="IMG", alias="live", previous=previous, live=live
    )
    assert isinstance(error, DeployFailedError) and str(error) == message


@pytest.mark.parametrize(("previous", "move"), [(None, "create"), ("4", "update"), ("5", None)])
def test_alias_move(previous: str | None, move: str | None) -> None:
    assert plan.alias_move(previous, "5") == move


def test_release_says_whether_the_alias_changed() -> None:
    assert plan.release(function="fn", version="5", alias="live", previous="4", image_uri=IMAGE)["changed"] is True
    assert plan.release(function="fn", version="5", alias="live", previous="5", image_uri=IMAGE)["changed"] is False


def released(previous: str | None) -> LambdaRelease:
    return plan.release(function="fn", version="5", alias="live", previous=previous, image_uri=IMAGE)


@pytest.mark.parametrize(
    ("previous", "now", "action", "message"),
    [
        ("4", "5", "update", "alias live of fn moved back from version 5 to version 4"),
        (None, "5", "delete", "alias live of fn deleted (this release had created it, on version 5)"),
        ("4", "4", None, "alias live of fn is already back on version 4"),
        (None, None, None, "alias live of fn is already back on version None"),
        ("4", "6", None, "alias live of fn left alone: it is on version 6 now, not this run's 5"),
    ],
)
def test_revert_step(previous: str | None, now: str | None, action: str | None, message: str) -> None:
    assert plan.revert_step(released(previous), now) == (action, message)


@pytest.mark.parametrize(
    ("finished", "failed"),
    [([], "lambda_url"), (["lambda_url"], "rollout"), (["lambda_url", "rollout"], None)],
)
def test_failed_step_is_the_first_unfinished(finished: list[str], failed: str | None) -> None:
    assert plan.failed_step(["lambda_url", "rollout"], finished) == failed


@pytest.mark.parametrize(
    ("text", "platform"),
    [("linux/amd64", Platform("linux", "amd64")), ("linux/arm/v7", Platform("linux", "arm", "v7"))],
)
def test_platform_parse_reads_what_str_writes(text: str, platform: Platform) -> None:
    assert Platform.parse(text) == platform and str(platform) == text
