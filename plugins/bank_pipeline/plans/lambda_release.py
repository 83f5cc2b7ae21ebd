"""The decisions of a Lambda release by alias, as pure functions over Lambda's answers.

The release (operators.lambda_deploy) asks LambdaReleaseHook, passes the answers here and
carries out what comes back:

    check_request → starting_step (smoke the live version | create | update) → wait
    → publish → wait → smoke_problem → alias_move (or smoke_failure) ;  revert_step undoes it

Nothing here calls a service, so every path is unit-tested without one (tests/unit/
bank_pipeline/plans/test_lambda_release.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from bank_pipeline.errors import BadInputError, DeployFailedError

if TYPE_CHECKING:
    from bank_pipeline.utils.oci_image import Platform

SmokeCheck = Callable[[dict[str, Any]], "str | None"]
LAMBDA_ARCHITECTURES = ("x86_64", "arm64")
# What to do first: the alias already serves the image (only its smoke test again), or change the code.
Start = Literal["smoke_live", "create", "update"]
# The botocore waiter that says the code change is done.
WAITER: dict[Start, str] = {"create": "function_active_v2", "update": "function_updated_v2"}


class LambdaRelease(TypedDict):
    """What the release returns (its XCom)."""

    function_name: str
    version: str
    alias: str
    previous_version: str | None
    image_uri: str
    changed: bool
    traffic: NotRequired[list[dict[str, Any]]]  # a canary's steps: share, status, message, metrics, started/ended_at


@dataclass(frozen=True)
class Invocation:
    """A synchronous invoke's answer: ``FunctionError`` (None when the handler returned) and the payload."""

    function_error: str | None
    body: str


# -- before any change -----------------------------------------------------------------


def check_request(image_uri: str, architecture: str) -> None:
    """BadInputError for a mutable tag or an architecture Lambda does not have."""
    if "@sha256:" not in image_uri:
        raise BadInputError(f"deploy by digest, not by a mutable tag: image_uri={image_uri!r}")
    if architecture not in LAMBDA_ARCHITECTURES:
        raise BadInputError(f"architecture={architecture!r}: Lambda has {' and '.join(LAMBDA_ARCHITECTURES)}")


def architecture_mismatch(image_uri: str, platform: Platform, function: str, function_arch: str) -> str | None:
    """Why ``image_uri`` (of ``platform``) cannot run on ``function`` (``function_arch``), or None."""
    from bank_pipeline.utils.oci_image import lambda_architecture

    wanted = lambda_architecture(platform)
    if wanted == function_arch:
        return None
    if wanted is None:
        return (
            f"image {image_uri} is built for {platform or 'no platform'}, which Lambda cannot run "
            f"(linux/amd64 = x86_64 or linux/arm64 = arm64); function {function} is {function_arch}"
        )
    return (
        f"image {image_uri} is built for {platform} (Lambda {wanted}) but function {function} is {function_arch}: "
        f"build it with `docker buildx build --platform linux/{'amd64' if function_arch == 'x86_64' else 'arm64'} "
        "--provenance=false`"
    )


def function_architecture(function: str, config: dict[str, Any] | None, architecture: str) -> str:
    """The architecture the image must match: an existing function's own, else the one it is created with.

    DeployFailedError for a function in State Failed, which Lambda cannot update.
    """
    if config is None:
        return architecture
    if config.get("State") == "Failed":
        raise DeployFailedError(
            f"function {function} is in State Failed ({config.get('StateReasonCode')}: "
            f"{config.get('StateReason')}): Lambda cannot update it; delete it and release again"
        )
    return str((config.get("Architectures") or ["x86_64"])[0])


def starting_step(
    *, function: str, exists: bool, live_image: str | None, image_uri: str, role_arn: str | None
) -> Start:
    """Smoke-test the live version again when the alias already serves ``image_uri``; else create or update."""
    if live_image == image_uri:
        return "smoke_live"
    if exists:
        return "update"
    if not role_arn:
        raise BadInputError(f"function {function} does not exist and no role_arn was given")
    return "create"


# -- waiting ---------------------------------------------------------------------------


def wait_failure(
    event: dict[str, Any] | None,
    config: dict[str, Any] | None,
    *,
    function: str,
    alias: str,
    image_uri: str,
    version: str | None = None,
) -> Exception | None:
    """None if the wait ended in success; else the error to raise.

    A Failed state (of the function or of its last update) is a DeployFailedError naming Lambda's
    reason; anything else (a timeout, a throttled poll) is a RuntimeError that may pass on retry.
    """
    if event and event.get("status") == "success":
        return None
    config = config or {}
    where = function + (f" version {version}" if version else "")
    what = f"version {version}" if version else "the function's code"
    not_moved = f"alias {alias} not moved"
    for field, code, reason in (
        ("State", "StateReasonCode", "StateReason"),
        ("LastUpdateStatus", "LastUpdateStatusReasonCode", "LastUpdateStatusReason"),
    ):
        if config.get(field) == "Failed":
            return DeployFailedError(
                f"{where}: {field} Failed ({config.get(code)}): {config.get(reason)}; {not_moved} ({image_uri})"
            )
    message = (event or {}).get("message", f"no event: {event!r}")
    return RuntimeError(
        f"{where}: {what} did not become ready (State {config.get('State')}, "
        f"LastUpdateStatus {config.get('LastUpdateStatus')}): {message}; {not_moved}"
    )


# -- the smoke test and the alias --------------------------------------------------------


def check_http_ok(answer: dict[str, Any]) -> str | None:
    """Default smoke check: the handler answered with statusCode 200."""
    if answer.get("statusCode") != 200:
        return f"expected statusCode 200, got {answer.get('statusCode')}: {json.dumps(answer)[:500]}"
    return None


def subset_mismatch(expected: Any, actual: Any, path: str = "answer") -> str | None:
    """Where ``actual`` differs from ``expected`` (dicts compared on expected's keys only), or None."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {json.dumps(actual)[:200]}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing"
            problem = subset_mismatch(value, actual[key], f"{path}.{key}")
            if problem:
                return problem
        return None
    if expected != actual:
        return f"{path}: expected {expected!r}, got {actual!r}"
    return None


def answer_problem(answer: dict[str, Any], expect: dict[str, Any], check: SmokeCheck) -> str | None:
    """What is wrong with a smoke answer: a value ``expect`` names differs, or ``check`` objects."""
    return subset_mismatch(expect, answer) or check(answer)


def smoke_problem(invocation: Invocation, expect: dict[str, Any], check: SmokeCheck) -> str | None:
    """What is wrong with a version's answer to the smoke event, or None."""
    body = invocation.body
    if invocation.function_error:
        return f"the function raised ({invocation.function_error}): {body[:1000]}"
    try:
        answer = json.loads(body)
    except json.JSONDecodeError:
        return f"the answer is not JSON: {body[:500]!r}"
    if not isinstance(answer, dict):
        return f"the answer is not a JSON object: {body[:500]!r}"
    return answer_problem(answer, expect, check)


def smoke_failure(
    problem: str, *, function: str, version: str, image_uri: str, alias: str, previous: str | None, live: bool
) -> DeployFailedError:
    """The error of a version that failed its smoke test: the alias did not move (or never existed)."""
    if live:
        return DeployFailedError(f"the live version {version} ({image_uri}) fails its smoke test: {problem}")
    kept = f"alias {alias} not moved (still on version {previous})" if previous else "no alias created"
    return DeployFailedError(f"version {version} of {function} ({image_uri}) failed its smoke test: {problem}; {kept}")


def alias_move(previous: str | None, version: str) -> Literal["create", "update"] | None:
    """How the alias gets to a version that passed: created, moved, or already there."""
    if previous is None:
        return "create"
    return "update" if previous != version else None


def release(*, function: str, version: str, alias: str, previous: str | None, image_uri: str) -> LambdaRelease:
    return {
        "function_name": function,
        "version": version,
        "alias": alias,
        "previous_version": previous,
        "image_uri": image_uri,
        "changed": previous != version,
    }


# -- undoing it ---------------------------------------------------------------------------


def failed_step(steps: Sequence[str], finished: Sequence[str]) -> str | None:
    """Which of ``steps`` (the release's steps after the alias moved, in order, each run only if the one
    before it succeeded) failed: the first that did not finish; None if all did."""
    return next((step for step in steps if step not in finished), None)


def revert_step(done: LambdaRelease, now: str | None) -> tuple[Literal["delete", "update"] | None, str]:
    """How to put the alias back after ``done`` when a later step failed, given the version it is on ``now``.

    Nothing if it is back already or someone else has moved it since; delete it if this release
    created it; else move it back. With what was (or will be) done, for the message.
    """
    function, alias, version = done["function_name"], done["alias"], done["version"]
    previous = done.get("previous_version")
    if now == previous:
        return None, f"alias {alias} of {function} is already back on version {previous}"
    if now != version:
        return None, f"alias {alias} of {function} left alone: it is on version {now} now, not this run's {version}"
    if previous is None:
        return "delete", f"alias {alias} of {function} deleted (this release had created it, on version {version})"
    return "update", f"alias {alias} of {function} moved back from version {version} to version {previous}"
