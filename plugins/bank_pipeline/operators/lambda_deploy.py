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
5. only then create or move the alias to it: at once, or as a canary whose steps are judged on the
   new version's own metrics (operators.lambda_traffic; ``release_strategy``).

A version that fails its smoke test is never behind the alias: the task fails
naming the version and why, and the alias is left where it was (nothing to roll
back). A rerun with the image the alias already serves publishes nothing and
only repeats the smoke test. ``LambdaAliasRevertOperator`` moves the alias back
when a later step of the same release fails (the release is all-or-nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from bank_pipeline.errors import BadInputError, DeployFailedError
from bank_pipeline.hooks.aws_lambda import LambdaReleaseHook
from bank_pipeline.operators.lambda_traffic import TRAFFIC_FIELDS, LambdaTrafficOperator
from bank_pipeline.plans import lambda_release as plan
from bank_pipeline.plans.lambda_release import LambdaRelease, SmokeCheck, check_http_ok
from bank_pipeline.triggers.lambda_waiters import (
    LambdaFunctionActiveTrigger,
    LambdaFunctionUpdatedTrigger,
    LambdaPublishedVersionActiveTrigger,
)
from bank_pipeline.utils.compat import conf

if TYPE_CHECKING:
    from airflow.sdk import Context

TRIGGERS = {"create": LambdaFunctionActiveTrigger, "update": LambdaFunctionUpdatedTrigger}


class LambdaImageDeployOperator(LambdaTrafficOperator):
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
    :param plain_http_registries: registries reached over plain HTTP (settings' BANK_PLAIN_HTTP_REGISTRIES).
    :param release_strategy: and the canary's other parameters: see LambdaTrafficOperator.
    :return: a LambdaRelease
    """

    template_fields: Sequence[str] = aws_template_fields(
        "function_name", "image_uri", "alias", "smoke_event", "smoke_expect", "role_arn", "environment",
        "image_platform", *TRAFFIC_FIELDS,
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
        plain_http_registries: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plain_http_registries = tuple(plain_http_registries)
        self.function_name, self.image_uri, self.alias = function_name, image_uri, alias
        self.smoke_event, self.smoke_expect, self.smoke_check = smoke_event, smoke_expect or {}, smoke_check
        self.role_arn, self.architecture, self.image_platform = role_arn, architecture, image_platform
        self.memory_size, self.timeout, self.environment = memory_size, timeout, environment
        self.waiter_delay, self.waiter_max_attempts, self.deferrable = waiter_delay, waiter_max_attempts, deferrable

    def execute(self, context: Context) -> LambdaRelease:
        from bank_pipeline.hooks.image_registry import ImageRegistryHook

        self._link_context = context
        plan.check_request(self.image_uri, self.architecture)
        self.log.info("Release strategy: %s", self.strategy)  # a wrong one is refused before any change
        fn = self.function_name
        config = self.hook.configuration(fn)
        function_arch = plan.function_architecture(fn, config, self.architecture)
        platform = ImageRegistryHook.image_platform(
            self.image_uri, self.aws_conn_id, self.plain_http_registries, given=self.image_platform
        )
        problem = plan.architecture_mismatch(self.image_uri, platform, fn, function_arch)
        if problem:
            raise BadInputError(f"refused before any change: {problem}")
        previous = self.hook.alias_version(fn, self.alias) if config else None
        live_image = self.hook.image_of(fn, previous) if previous else None
        step = plan.starting_step(
            function=fn,
            exists=config is not None,
            live_image=live_image,
            image_uri=self.image_uri,
            role_arn=self.role_arn,
        )
        if step == "smoke_live":
            assert previous is not None  # the alias serves the image
            self.log.info("Alias %s already serves %s (version %s)", self.alias, self.image_uri, previous)
            self._persist_link(previous)
            return self._smoke_then_alias(previous, live=True)
        if step == "create":
            self.log.info("Creating function %s (%s) from %s", fn, self.architecture, self.image_uri)
            self.hook.create_image_function(
                function=fn, image_uri=self.image_uri, role_arn=str(self.role_arn), architecture=self.architecture,
                memory_size=self.memory_size, timeout=self.timeout, environment=self.environment or {},
            )  # fmt: skip
        else:
            self.log.info("Updating %s to %s", fn, self.image_uri)
            self.hook.update_image(fn, self.image_uri)
        if self.deferrable:
            self.defer(
                trigger=TRIGGERS[step](function_name=fn, **self._waiter_kwargs()),
                method_name="execute_complete",
                timeout=self._defer_timeout(),
            )
        self._wait(plan.WAITER[step], {"FunctionName": fn})
        return self._publish()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> LambdaRelease:
        """Resumed after the create or update: publish (and wait for the version)."""
        self._link_context = context
        self._raise_unless_ready(event)
        return self._publish()

    def _publish(self) -> LambdaRelease:
        version = self.hook.publish(self.function_name, f"image {self.image_uri}")
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
        self._raise_unless_ready(event, str(version))
        return self._smoke_then_alias(str(version))

    def _smoke_then_alias(self, version: str, *, live: bool = False) -> LambdaRelease:
        # The alias has not moved, so it still names the version before this run
        # (read again rather than carried through the deferrals).
        fn, alias = self.function_name, self.alias
        previous = version if live else self.hook.alias_version(fn, alias)
        invocation = self.hook.invoke_version(fn, version, self.smoke_event)
        problem = plan.smoke_problem(invocation, self.smoke_expect, self.smoke_check)
        if problem:
            raise plan.smoke_failure(
                problem,
                function=fn,
                version=version,
                image_uri=self.image_uri,
                alias=alias,
                previous=previous,
                live=live,
            )
        self.log.info("Smoke test of %s version %s passed; alias %s was on %s", fn, version, alias, previous)
        return self._move_alias(previous, version)


class LambdaAliasRevertOperator(AwsBaseOperator[LambdaReleaseHook]):
    """Undo a LambdaImageDeployOperator's alias move when a later step of the same release failed.

    A release is all-or-nothing: "live" is the version every configured target serves. If the
    deploy (``release``, its LambdaRelease) moved the alias and a later step then failed, this
    moves the alias back to the release's ``previous_version`` (or deletes it if the release
    created it) and fails saying so: the release is not live. It skips if the deploy moved
    nothing, and leaves alone an alias that someone else has moved since. Idempotent.

    :param release: the deploy task's output (an XComArg; None if it did not finish).
    :param steps: the release's tasks after the alias moves, in order (each runs only if the one
        before it succeeded): ``{task_id: {"result": its output, "failure": what its failure
        means}}``. The first without a result is the one that failed.
    :param reason: what failed downstream, for the message, when ``steps`` does not say.
    """

    aws_hook_class = LambdaReleaseHook
    template_fields: Sequence[str] = aws_template_fields("release", "steps", "reason")

    def __init__(
        self,
        *,
        release: Any,
        steps: dict[str, dict[str, Any]] | None = None,
        reason: str = "a later release step failed",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.release = release
        self.steps = dict(steps or {})
        self.reason = reason

    def execute(self, context: Context) -> None:
        from bank_pipeline.utils.compat import AirflowSkipException

        done: LambdaRelease | None = self.release
        if not done or not done.get("changed"):
            raise AirflowSkipException(
                "nothing to undo on Lambda: the deploy did not move the alias in this run"
                + (f" ({done['alias']} already served version {done['version']})" if done else "")
            )
        finished = [name for name, step in self.steps.items() if step.get("result") is not None]
        failed = plan.failed_step(list(self.steps), finished)
        reason = self.steps[failed]["failure"] if failed else self.reason
        function, alias = done["function_name"], done["alias"]
        action, undone = plan.revert_step(done, self.hook.alias_version(function, alias))
        if action == "delete":
            self.hook.delete_alias(function, alias)
        elif action == "update":
            self.hook.point_alias(function, alias, str(done.get("previous_version")), exists=True)
        self.log.warning(undone)
        raise DeployFailedError(f"the release is not live: {reason}; {undone}")
