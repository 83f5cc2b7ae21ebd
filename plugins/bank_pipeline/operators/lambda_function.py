"""Deploy a container image to AWS Lambda behind an alias: no traffic ever reaches an untested version.

The Amazon provider can create a function and invoke one, but has no operator
for the release itself. This one, in the provider's style (thin hook calls,
validation in ``execute``, long waits deferred to a trigger):

1. refuse, before any change, an image whose architecture is not the function's
   (the image config's ``architecture`` against the function's ``Architectures``,
   or ``architecture`` for a function this run creates: amd64 <-> x86_64, arm64 <->
   arm64), an image index, or a mutable tag;
2. create the function (PackageType Image) if it is missing and wait until its
   State is Active (``function_active_v2``: a Failed state ends the wait at once,
   with its StateReason); else ``update_function_code(ImageUri=...@sha256:...)``
   and wait until LastUpdateStatus is Successful;
3. publish a version and wait until *that version* is Active (``published_version_active``);
4. invoke that version by ``Qualifier`` with a known event and check the answer;
5. only then create or move the alias to it.

A version that fails its smoke test is never behind the alias: the task fails
naming the version and why, and the alias is left where it was (nothing to roll
back). A rerun with the image the alias already serves publishes nothing and
only repeats the smoke test. ``LambdaAliasRevertOperator`` moves the alias back
when a later step of the same release fails (the release is all-or-nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.providers.amazon.aws.hooks.lambda_function import LambdaHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bank_pipeline.errors import BadInputError, DeployFailedError
from bank_pipeline.links import LambdaFunctionVersionLink
from bank_pipeline.triggers.lambda_function import (
    LambdaFunctionActiveTrigger,
    LambdaFunctionUpdatedTrigger,
    LambdaPublishedVersionActiveTrigger,
)
from bank_pipeline.utils.compat import conf

if TYPE_CHECKING:
    from airflow.sdk import Context

    from bank_pipeline.utils.oci import Platform

SmokeCheck = Callable[[dict[str, Any]], "str | None"]
LAMBDA_ARCHITECTURES = ("x86_64", "arm64")


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


def architecture_mismatch(image_uri: str, platform: Platform, function: str, function_arch: str) -> str | None:
    """Why ``image_uri`` (of ``platform``) cannot run on ``function`` (``function_arch``), or None."""
    from bank_pipeline.utils.oci import lambda_architecture

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


class LambdaImageDeployOperator(AwsBaseOperator[LambdaHook]):
    """Release ``image_uri`` (by digest) to ``function_name`` behind ``alias``, after its version passed a smoke test.

    :param function_name: the Lambda function; created if missing (then ``role_arn`` is required).
    :param image_uri: ``registry/repo@sha256:...``; a mutable tag is refused.
    :param alias: the alias clients call, moved only to a version that passed the smoke test.
    :param smoke_event: the event the new version is invoked with (by Qualifier) before the alias moves.
    :param smoke_expect: values the answer must contain (templated; e.g. the model version).
    :param smoke_check: returns None if the answer is right, else what is wrong.
    :param role_arn: execution role, for creating the function.
    :param architecture: ``x86_64`` or ``arm64``, for creating the function; an existing function's
        own Architectures are what the image is checked against.
    :param image_platform: the image's ``os/architecture`` if known (``linux/amd64``); default: read
        from its config in the registry (ECR with this connection's credentials).
    :param memory_size: MB, on create. :param timeout: seconds, on create.
    :param environment: function environment variables, on create.
    :return: a LambdaRelease
    """

    aws_hook_class = LambdaHook
    operator_extra_links = (LambdaFunctionVersionLink(),)
    template_fields: Sequence[str] = aws_template_fields(
        "function_name", "image_uri", "alias", "smoke_event", "smoke_expect", "role_arn", "environment",
        "image_platform",
    )  # fmt: skip

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
        architecture: str = "x86_64",
        image_platform: str | None = None,
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
        self.architecture = architecture
        self.image_platform = image_platform
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

    def _configuration(self, qualifier: str | None = None) -> dict[str, Any] | None:
        """The function's (or a version's) configuration, or None if the function does not exist."""
        try:
            if qualifier is None:
                return self.hook.conn.get_function_configuration(FunctionName=self.function_name)
            return self.hook.conn.get_function_configuration(FunctionName=self.function_name, Qualifier=qualifier)
        except self.hook.conn.exceptions.ResourceNotFoundException:
            return None

    def _platform(self) -> Platform:
        """The image's os/architecture: given, or read from its config in the registry."""
        from bank_pipeline.utils import oci

        if self.image_platform:
            os_name, _, arch = self.image_platform.partition("/")
            return oci.Platform(os=os_name, architecture=arch)
        from bank_pipeline.operators.images import registry_client

        ref = oci.parse_image_ref(self.image_uri)
        _host, client = registry_client(ref.registry, self.aws_conn_id)
        try:
            return oci.image_platform(client, ref.repo, ref.reference)
        except oci.RegistryError as exc:
            if exc.status == 404 or "image index" in str(exc) or "media type" in str(exc):
                raise BadInputError(f"cannot deploy {self.image_uri}: {exc}") from exc
            raise

    # -- the release --------------------------------------------------------------

    def execute(self, context: Context) -> LambdaRelease:
        self._link_context = context
        if "@sha256:" not in self.image_uri:
            raise BadInputError(f"deploy by digest, not by a mutable tag: image_uri={self.image_uri!r}")
        if self.architecture not in LAMBDA_ARCHITECTURES:
            raise BadInputError(f"architecture={self.architecture!r}: Lambda has {' and '.join(LAMBDA_ARCHITECTURES)}")
        config = self._configuration()
        if config and config.get("State") == "Failed":
            raise DeployFailedError(
                f"function {self.function_name} is in State Failed ({config.get('StateReasonCode')}: "
                f"{config.get('StateReason')}): Lambda cannot update it; delete it and release again"
            )
        function_arch = (config.get("Architectures") or ["x86_64"])[0] if config else self.architecture
        problem = architecture_mismatch(self.image_uri, self._platform(), self.function_name, function_arch)
        if problem:
            raise BadInputError(f"refused before any change: {problem}")

        previous = self._alias_version() if config else None
        if previous is not None and self._image_of(previous) == self.image_uri:
            self.log.info("Alias %s already serves %s (version %s)", self.alias, self.image_uri, previous)
            self._persist_link(previous)
            problem = self._smoke_problem(previous)
            if problem:
                raise DeployFailedError(
                    f"the live version {previous} ({self.image_uri}) fails its smoke test: {problem}"
                )
            return self._release(previous, previous, changed=False)

        if config is None:
            if not self.role_arn:
                raise BadInputError(f"function {self.function_name} does not exist and no role_arn was given")
            self.log.info("Creating function %s (%s) from %s", self.function_name, self.architecture, self.image_uri)
            self.hook.conn.create_function(
                FunctionName=self.function_name,
                PackageType="Image",
                Code={"ImageUri": self.image_uri},
                Role=self.role_arn,
                Architectures=[self.architecture],
                MemorySize=self.memory_size,
                Timeout=self.timeout,
                Environment={"Variables": self.environment or {}},
                Publish=False,
            )
            trigger: Any = LambdaFunctionActiveTrigger
            waiter = "function_active_v2"
        else:
            self.log.info("Updating %s to %s", self.function_name, self.image_uri)
            self.hook.conn.update_function_code(FunctionName=self.function_name, ImageUri=self.image_uri)
            trigger, waiter = LambdaFunctionUpdatedTrigger, "function_updated_v2"

        if self.deferrable:
            self.defer(
                trigger=trigger(function_name=self.function_name, **self._waiter_kwargs()),
                method_name="execute_complete",
                timeout=self._defer_timeout(),
            )
        self._wait(waiter, {"FunctionName": self.function_name})
        return self._publish()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> LambdaRelease:
        """Resumed after the create or update: publish (and wait for the version)."""
        self._link_context = context
        self._check_event(event, "the function's code")
        return self._publish()

    def _publish(self) -> LambdaRelease:
        version = self.hook.conn.publish_version(
            FunctionName=self.function_name, Description=f"image {self.image_uri}"
        )["Version"]
        self.log.info("Published version %s of %s; waiting until it is Active", version, self.function_name)
        self._persist_link(version)
        if self.deferrable:
            self.defer(
                trigger=LambdaPublishedVersionActiveTrigger(
                    function_name=self.function_name, version=version, **self._waiter_kwargs()
                ),
                method_name="execute_version_active",
                timeout=self._defer_timeout(),
            )
        self._wait("published_version_active", {"FunctionName": self.function_name, "Qualifier": version}, version)
        return self._smoke_then_alias(version)

    def execute_version_active(self, context: Context, event: dict[str, Any] | None = None) -> LambdaRelease:
        """Resumed once the published version is Active (the event names it): smoke test, then the alias."""
        self._link_context = context
        version = (event or {}).get("version")
        if not version:
            raise DeployFailedError(f"the version trigger sent no version: {event!r}; alias {self.alias} not moved")
        self._check_event(event, f"version {version}", version)
        return self._smoke_then_alias(str(version))

    def _smoke_then_alias(self, version: str) -> LambdaRelease:
        # The alias has not moved, so it still names the version before this run
        # (read again rather than carried through the deferrals).
        previous = self._alias_version()
        problem = self._smoke_problem(version)
        if problem:
            alias = f"alias {self.alias} not moved (still on version {previous})" if previous else "no alias created"
            raise DeployFailedError(
                f"version {version} of {self.function_name} ({self.image_uri}) failed its smoke test: {problem}; {alias}"
            )
        self.log.info(
            "Smoke test of %s version %s passed; moving alias %s from %s",
            self.function_name,
            version,
            self.alias,
            previous,
        )
        if previous is None:
            self.hook.conn.create_alias(FunctionName=self.function_name, Name=self.alias, FunctionVersion=version)
        elif previous != version:
            self.hook.conn.update_alias(FunctionName=self.function_name, Name=self.alias, FunctionVersion=version)
        return self._release(version, previous, changed=previous != version)

    def _release(self, version: str, previous: str | None, *, changed: bool) -> LambdaRelease:
        return {
            "function_name": self.function_name,
            "version": version,
            "alias": self.alias,
            "previous_version": previous,
            "image_uri": self.image_uri,
            "changed": changed,
        }

    # -- waiting ------------------------------------------------------------------

    def _waiter_kwargs(self) -> dict[str, Any]:
        return {
            "waiter_delay": self.waiter_delay,
            "waiter_max_attempts": self.waiter_max_attempts,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
            "verify": self.verify,
        }

    def _defer_timeout(self) -> timedelta:
        return timedelta(seconds=self.waiter_delay * self.waiter_max_attempts + 60)

    def _wait(self, waiter: str, args: dict[str, Any], version: str | None = None) -> None:
        """Wait in the worker; a Failed state or a timeout becomes an error naming the reason."""
        from botocore.exceptions import WaiterError

        try:
            self.hook.conn.get_waiter(waiter).wait(
                **args, WaiterConfig={"Delay": self.waiter_delay, "MaxAttempts": self.waiter_max_attempts}
            )
        except WaiterError as exc:
            what = f"version {version}" if version else "the function's code"
            self._check_event({"status": "error", "message": str(exc)}, what, version)

    def _check_event(self, event: dict[str, Any] | None, what: str, version: str | None = None) -> None:
        """Raise unless ``event`` says success: a Failed state names its reason; anything else may pass on retry."""
        if event and event.get("status") == "success":
            return
        config = self._configuration(version) or {}
        where = f"{self.function_name}" + (f" version {version}" if version else "")
        alias = f"alias {self.alias} not moved"
        if config.get("State") == "Failed" or config.get("LastUpdateStatus") == "Failed":
            failed_state = config.get("State") == "Failed"
            code = config.get("StateReasonCode" if failed_state else "LastUpdateStatusReasonCode")
            reason = config.get("StateReason" if failed_state else "LastUpdateStatusReason")
            field = "State" if failed_state else "LastUpdateStatus"
            raise DeployFailedError(f"{where}: {field} Failed ({code}): {reason}; {alias} ({self.image_uri})")
        message = (event or {}).get("message", f"no event: {event!r}")
        raise RuntimeError(
            f"{where}: {what} did not become ready (State {config.get('State')}, "
            f"LastUpdateStatus {config.get('LastUpdateStatus')}): {message}; {alias}"
        )

    # -- the smoke test -----------------------------------------------------------

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

    def _smoke_problem(self, version: str) -> str | None:
        """What is wrong with ``version``'s answer to the smoke event (invoked by Qualifier), or None."""
        response = self.hook.invoke_lambda(
            function_name=self.function_name, qualifier=version, payload=json.dumps(self.smoke_event)
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


def failed_step(steps: Sequence[str], finished: Sequence[str]) -> str | None:
    """Which of ``steps`` (the release's steps after the alias moved, in order, each run only if the one
    before it succeeded) failed: the first that did not finish; None if all did."""
    return next((step for step in steps if step not in finished), None)


class LambdaAliasRevertOperator(AwsBaseOperator[LambdaHook]):
    """Undo a LambdaImageDeployOperator's alias move when a later step of the same release failed.

    A release is all-or-nothing: "live" is the version every configured target serves. If the
    deploy task (``deploy_task_id``, its LambdaRelease XCom) moved the alias and a later step
    then failed, this moves the alias back to the release's ``previous_version`` (or deletes it
    if the release created it) and fails saying so: the release is not live. It skips if the
    deploy moved nothing, and leaves alone an alias that someone else has moved since. Idempotent.

    :param deploy_task_id: the LambdaImageDeployOperator task of this run.
    :param steps: the release's tasks after the alias moves, in order (each runs only if the one
        before it succeeded), each with what its failure means for the message. The first without
        a result (XCom) is the one that failed.
    :param reason: what failed downstream, for the message, when ``steps`` does not say.
    """

    aws_hook_class = LambdaHook
    template_fields: Sequence[str] = aws_template_fields("deploy_task_id", "reason")

    def __init__(
        self,
        *,
        deploy_task_id: str,
        steps: dict[str, str] | None = None,
        reason: str = "a later release step failed",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deploy_task_id = deploy_task_id
        self.steps = dict(steps or {})
        self.reason = reason

    def execute(self, context: Context) -> None:
        from bank_pipeline.utils.compat import AirflowSkipException

        ti = context["ti"]
        release: LambdaRelease | None = ti.xcom_pull(task_ids=self.deploy_task_id)
        if not release or not release.get("changed"):
            raise AirflowSkipException(
                f"nothing to undo on Lambda: {self.deploy_task_id} did not move the alias in this run"
                + (f" ({release['alias']} already served version {release['version']})" if release else "")
            )
        finished = [step for step in self.steps if ti.xcom_pull(task_ids=step) is not None]
        failed = failed_step(list(self.steps), finished)
        reason = self.steps[failed] if failed else self.reason
        conn = self.hook.conn
        function, alias, version = release["function_name"], release["alias"], release["version"]
        previous = release.get("previous_version")
        try:
            now = conn.get_alias(FunctionName=function, Name=alias)["FunctionVersion"]
        except conn.exceptions.ResourceNotFoundException:
            now = None
        if now == previous:
            undone = f"alias {alias} of {function} is already back on version {previous}"
        elif now != version:
            undone = f"alias {alias} of {function} left alone: it is on version {now} now, not this run's {version}"
        elif previous is None:
            conn.delete_alias(FunctionName=function, Name=alias)
            undone = f"alias {alias} of {function} deleted (this release had created it, on version {version})"
        else:
            conn.update_alias(FunctionName=function, Name=alias, FunctionVersion=previous)
            undone = f"alias {alias} of {function} moved back from version {version} to version {previous}"
        self.log.warning(undone)
        raise DeployFailedError(f"the release is not live: {reason}; {undone}")
