"""Deploy a container image to AWS Lambda behind an alias, with a smoke test and rollback.

The Amazon provider can create a function and invoke one, but has no operator
for the release itself. This one, in the provider's style (thin hook calls,
validation in ``execute``, long waits deferred to a trigger):

1. create the function (PackageType Image) if it is missing, else
   ``update_function_code(ImageUri=...@sha256:...)``;
2. wait until LastUpdateStatus is Successful (deferred);
3. publish a version, move the alias to it;
4. invoke the alias with a known event and check the answer;
5. on any failure after the alias moved, move it back to the version it had
   (or delete it if this deploy created it), then fail saying why.

A rerun with the image the alias already serves publishes nothing and only
repeats the smoke test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.providers.amazon.aws.hooks.lambda_function import LambdaHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import conf

from bank_pipeline.errors import BadInputError, DeployFailedError
from bank_pipeline.links import LambdaFunctionVersionLink
from bank_pipeline.triggers.lambda_function import LambdaFunctionUpdatedTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

SmokeCheck = Callable[[dict[str, Any]], "str | None"]


class LambdaRelease(TypedDict):
    """What LambdaImageDeployOperator returns (its XCom)."""

    function_name: str
    version: str
    alias: str
    previous_version: str | None
    image_uri: str
    changed: bool


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


class LambdaImageDeployOperator(AwsBaseOperator[LambdaHook]):
    """Release ``image_uri`` (by digest) to ``function_name`` behind ``alias``; roll back if the smoke test fails.

    :param function_name: the Lambda function; created if missing (then ``role_arn`` is required).
    :param image_uri: ``registry/repo@sha256:...``; a mutable tag is refused.
    :param alias: the alias clients call, moved only to a version that passed the smoke test.
    :param smoke_event: the event the alias is invoked with after it moves.
    :param smoke_expect: values the answer must contain (templated; e.g. the model version).
    :param smoke_check: returns None if the answer is right, else what is wrong.
    :param role_arn: execution role, for creating the function.
    :param memory_size: MB, on create. :param timeout: seconds, on create.
    :param environment: function environment variables, on create.
    :return: a LambdaRelease
    """

    aws_hook_class = LambdaHook
    operator_extra_links = (LambdaFunctionVersionLink(),)
    template_fields: Sequence[str] = aws_template_fields(
        "function_name", "image_uri", "alias", "smoke_event", "smoke_expect", "role_arn", "environment"
    )

    def __init__(
        self,
        *,
        function_name: str,
        image_uri: str,
        smoke_event: dict[str, Any],
        alias: str = "live",
        smoke_expect: dict[str, Any] | None = None,
        smoke_check: SmokeCheck = check_http_ok,
        role_arn: str | None = None,
        memory_size: int = 1024,
        timeout: int = 30,
        environment: dict[str, str] | None = None,
        waiter_delay: int = 5,
        waiter_max_attempts: int = 120,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.function_name = function_name
        self.image_uri = image_uri
        self.smoke_event = smoke_event
        self.alias = alias
        self.smoke_expect = smoke_expect or {}
        self.smoke_check = smoke_check
        self.role_arn = role_arn
        self.memory_size = memory_size
        self.timeout = timeout
        self.environment = environment
        self.waiter_delay = waiter_delay
        self.waiter_max_attempts = waiter_max_attempts
        self.deferrable = deferrable

    # -- the API calls ----------------------------------------------------------

    def _alias_version(self) -> str | None:
        try:
            return self.hook.conn.get_alias(FunctionName=self.function_name, Name=self.alias)["FunctionVersion"]
        except self.hook.conn.exceptions.ResourceNotFoundException:
            return None

    def _image_of(self, qualifier: str) -> str | None:
        code = self.hook.conn.get_function(FunctionName=self.function_name, Qualifier=qualifier)["Code"]
        return code.get("ImageUri")

    def _function_exists(self) -> bool:
        try:
            self.hook.conn.get_function(FunctionName=self.function_name)
        except self.hook.conn.exceptions.ResourceNotFoundException:
            return False
        return True

    # -- the release --------------------------------------------------------------

    def execute(self, context: Context) -> LambdaRelease:
        self._link_context = context
        if "@sha256:" not in self.image_uri:
            raise BadInputError(f"deploy by digest, not by a mutable tag: image_uri={self.image_uri!r}")
        exists = self._function_exists()
        previous = self._alias_version() if exists else None
        if previous is not None and self._image_of(previous) == self.image_uri:
            self.log.info("Alias %s already serves %s (version %s)", self.alias, self.image_uri, previous)
            self._persist_link(previous)
            return self._smoke_or_rollback(version=previous, previous=previous, changed=False)

        if not exists:
            if not self.role_arn:
                raise BadInputError(f"function {self.function_name} does not exist and no role_arn was given")
            self.log.info("Creating function %s from %s", self.function_name, self.image_uri)
            self.hook.conn.create_function(
                FunctionName=self.function_name,
                PackageType="Image",
                Code={"ImageUri": self.image_uri},
                Role=self.role_arn,
                MemorySize=self.memory_size,
                Timeout=self.timeout,
                Environment={"Variables": self.environment or {}},
                Publish=False,
            )
        else:
            self.log.info("Updating %s to %s", self.function_name, self.image_uri)
            self.hook.conn.update_function_code(FunctionName=self.function_name, ImageUri=self.image_uri)

        if self.deferrable:
            self.defer(
                trigger=LambdaFunctionUpdatedTrigger(
                    function_name=self.function_name,
                    waiter_delay=self.waiter_delay,
                    waiter_max_attempts=self.waiter_max_attempts,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.waiter_delay * self.waiter_max_attempts + 60),
            )
        self.hook.conn.get_waiter("function_updated_v2").wait(
            FunctionName=self.function_name,
            WaiterConfig={"Delay": self.waiter_delay, "MaxAttempts": self.waiter_max_attempts},
        )
        return self._publish_and_move(previous)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> LambdaRelease:
        self._link_context = context
        # The alias has not moved yet, so it still names the version to roll back to
        # (read again rather than carried through the deferral).
        previous = self._alias_version()
        if not event or event.get("status") != "success":
            raise DeployFailedError(
                f"{self.function_name} never reached LastUpdateStatus Successful: {event}; "
                f"alias {self.alias} left on version {previous}"
            )
        return self._publish_and_move(previous)

    def _publish_and_move(self, previous: str | None) -> LambdaRelease:
        version = self.hook.conn.publish_version(
            FunctionName=self.function_name, Description=f"image {self.image_uri}"
        )["Version"]
        self.log.info("Published version %s; moving alias %s from %s", version, self.alias, previous)
        self._persist_link(version)
        if previous is None:
            self.hook.conn.create_alias(FunctionName=self.function_name, Name=self.alias, FunctionVersion=version)
        else:
            self.hook.conn.update_alias(FunctionName=self.function_name, Name=self.alias, FunctionVersion=version)
        return self._smoke_or_rollback(version=version, previous=previous, changed=True)

    def _persist_link(self, version: str) -> None:
        """The version's link in the UI (kept also if its smoke test then fails)."""
        LambdaFunctionVersionLink.persist(
            getattr(self, "_link_context", None) or {},
            self,
            function_name=self.function_name,
            version=version,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            endpoint_url=self.hook.conn_config.endpoint_url,
        )

    def _smoke_or_rollback(self, *, version: str, previous: str | None, changed: bool) -> LambdaRelease:
        problem = self._smoke_problem()
        if problem is None:
            self.log.info("Smoke test of %s:%s (version %s) passed", self.function_name, self.alias, version)
            return {
                "function_name": self.function_name,
                "version": version,
                "alias": self.alias,
                "previous_version": previous,
                "image_uri": self.image_uri,
                "changed": changed,
            }
        if not changed:
            raise DeployFailedError(f"the live version {version} fails its smoke test: {problem}")
        if previous is None:
            self.hook.conn.delete_alias(FunctionName=self.function_name, Name=self.alias)
            where = f"alias {self.alias} removed (this was the first deploy)"
        else:
            self.hook.conn.update_alias(FunctionName=self.function_name, Name=self.alias, FunctionVersion=previous)
            where = f"alias {self.alias} rolled back to version {previous}"
        raise DeployFailedError(f"version {version} ({self.image_uri}) failed its smoke test: {problem}; {where}")

    def _smoke_problem(self) -> str | None:
        """What is wrong with the alias's answer to the smoke event, or None."""
        response = self.hook.invoke_lambda(
            function_name=self.function_name, qualifier=self.alias, payload=json.dumps(self.smoke_event)
        )
        body = response["Payload"].read().decode("utf-8", "replace")
        if response.get("FunctionError"):
            return f"the function raised ({response['FunctionError']}): {body[:1000]}"
        try:
            answer = json.loads(body)
        except json.JSONDecodeError:
            return f"the answer is not JSON: {body[:500]!r}"
        if not isinstance(answer, dict):
            return f"the answer is not a JSON object: {body[:500]!r}"
        return subset_mismatch(self.smoke_expect, answer) or self.smoke_check(answer)
