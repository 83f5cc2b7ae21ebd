"""How a Lambda release moves its alias to a version that passed its smoke test: all at once, or in a
canary's steps, each baked and judged on the new version's own metrics (plans.lambda_canary).

A step routes its share to the new version (the alias stays on the old one, with the new one as
its additional version), then bakes in the triggerer (LambdaCanaryTrigger) or, not deferrable, in
the worker. Every step passed: the alias moves to the new version with all of the traffic. One
breached (or CloudWatch unreadable to its end): the weights are cleared, so the old version has all
of the traffic again, and the task fails naming the metric and its value. A first release, with no
old version to keep traffic on, goes all at once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bank_pipeline.errors import DeployFailedError
from bank_pipeline.operators.lambda_version import LambdaVersionOperator
from bank_pipeline.plans import lambda_canary as canary
from bank_pipeline.plans import lambda_release as plan
from bank_pipeline.plans.lambda_release import LambdaRelease
from bank_pipeline.triggers.lambda_canary_bake import LambdaCanaryTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

TRAFFIC_FIELDS = ("release_strategy", "canary_percent", "bake_seconds", "canary_alarms")


class LambdaTrafficOperator(LambdaVersionOperator):
    """The base of LambdaImageDeployOperator: the alias's move, at once or as a canary.

    :param release_strategy: ``all_at_once``, ``canary`` (``canary_percent`` for ``bake_seconds``,
        then all) or ``linear`` (``canary_percent`` more each ``bake_seconds``).
    :param canary_thresholds: plans.lambda_canary.Thresholds' fields (error rate, p99 ms, throttles).
    :param canary_alarms: CloudWatch alarms that fail a step when in ALARM (or missing).
    :param bake_poll_seconds: how often a bake reads CloudWatch.
    """

    deferrable: bool

    def __init__(
        self,
        *,
        release_strategy: str = "all_at_once",
        canary_percent: float | str = 10.0,
        bake_seconds: float | str = 600.0,
        canary_thresholds: dict[str, Any] | None = None,
        canary_alarms: list[str] | None = None,
        bake_poll_seconds: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.release_strategy, self.canary_percent, self.bake_seconds = release_strategy, canary_percent, bake_seconds
        self.canary_thresholds = dict(canary_thresholds or {})
        self.canary_alarms = list(canary_alarms or [])
        self.bake_poll_seconds = bake_poll_seconds

    @property
    def strategy(self) -> canary.Strategy:
        """The strategy the (rendered) fields ask for; BadInputError naming a wrong one."""
        return canary.strategy(
            self.release_strategy, percent=float(self.canary_percent), bake_seconds=float(self.bake_seconds)
        )

    def _move_alias(self, previous: str | None, version: str) -> LambdaRelease:
        """Move the alias from ``previous`` to ``version`` as the strategy says."""
        fn, alias = self.function_name, self.alias
        move = plan.alias_move(previous, version)
        if move == "update" and previous is not None and self.strategy.shares:
            return self._bake(previous, version, 0, [])
        if move == "create" and self.strategy.shares:
            self.log.info("First release of %s: no earlier version to keep traffic on, so all at once", fn)
        if move:
            self.hook.point_alias(fn, alias, version, exists=move == "update")
        return plan.release(function=fn, version=version, alias=alias, previous=previous, image_uri=self.image_uri)

    def _bake(self, previous: str, version: str, step: int, traffic: list[dict[str, Any]]) -> LambdaRelease:
        share = self.strategy.shares[step]
        self.hook.route(self.function_name, self.alias, previous, {version: share})
        self.log.info(
            "Canary step %d of %s: version %s gets %.0f%% of alias %s for %g s",
            step + 1, len(self.strategy.shares), version, share * 100, self.alias, self.strategy.bake_seconds,
        )  # fmt: skip
        started = time.time()
        trigger = LambdaCanaryTrigger(
            function_name=self.function_name, alias=self.alias, version=version, started_at=started,
            bake_seconds=self.strategy.bake_seconds, thresholds=self.canary_thresholds, alarm_names=self.canary_alarms,
            poll_interval=self.bake_poll_seconds, aws_conn_id=self.aws_conn_id, region_name=self.region_name,
            verify=self.verify,
            state={"previous": previous, "version": version, "step": step, "traffic": traffic, "started_at": started},
        )  # fmt: skip
        if self.deferrable:
            timeout = timedelta(seconds=self.strategy.bake_seconds + 600)
            self.defer(trigger=trigger, method_name="execute_baked", timeout=timeout)
        return self._baked({**asyncio.run(trigger.bake()), "state": trigger.state})

    def execute_baked(self, context: Context, event: dict[str, Any] | None = None) -> LambdaRelease:
        """Resumed after a step's bake (the event carries its verdict and the canary's state)."""
        self._link_context = context
        return self._baked(event or {})

    def _baked(self, event: dict[str, Any]) -> LambdaRelease:
        state = event.get("state") or {}
        if not state.get("version"):
            raise DeployFailedError(f"the canary's trigger sent no state: {event!r}")
        previous, version, step = str(state["previous"]), str(state["version"]), int(state["step"])
        share = self.strategy.shares[step]
        judged = {k: event.get(k) for k in ("status", "message", "metrics")}
        # When the step's share went live and when its verdict was acted on (epoch seconds).
        span = {"started_at": state.get("started_at"), "ended_at": time.time()}
        traffic = [*state.get("traffic", []), {"share": share, **judged, **span}]
        fn, alias = self.function_name, self.alias
        if event.get("status") != "passed":
            self.hook.route(fn, alias, previous, {})
            raise DeployFailedError(
                f"canary of version {version} of {fn} rolled back at {share:.0%} of the traffic: {event.get('message')}; "
                f"alias {alias} on version {previous} with all of it"
            )
        self.log.info("Canary step %d passed: %s", step + 1, event.get("message"))
        if step + 1 < len(self.strategy.shares):
            return self._bake(previous, version, step + 1, traffic)
        self.hook.point_alias(fn, alias, version, exists=True)
        done = plan.release(function=fn, version=version, alias=alias, previous=previous, image_uri=self.image_uri)
        done["traffic"] = traffic
        return done
