"""The trigger that bakes one step of a Lambda canary in the triggerer: no worker slot is held meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from bank_pipeline.plans import lambda_canary as plan


class LambdaCanaryTrigger(BaseTrigger):
    """Polls the new version's CloudWatch metrics on the alias (and the named alarms) until the bake ends.

    Yields one event: ``{"status": "passed" | "breached" | "error", "message", "metrics", "state"}``:
    ``breached`` as soon as a threshold is crossed (plans.lambda_canary.breach) or an alarm is in
    ALARM; ``passed`` when ``bake_seconds`` after ``started_at`` none was; ``error`` when CloudWatch
    could not be read up to the end (the verdict is unknown: the release rolls back). A failed read
    before the end costs one poll. ``state`` rides along for the task, as in KubernetesRolloutTrigger.
    """

    def __init__(
        self,
        *,
        function_name: str,
        alias: str,
        version: str,
        started_at: float,
        bake_seconds: float,
        thresholds: dict[str, Any] | None = None,
        alarm_names: list[str] | None = None,
        poll_interval: float = 10.0,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__(**kwargs) has no types
        self.function_name, self.alias, self.version = function_name, alias, version
        self.started_at, self.bake_seconds, self.poll_interval = started_at, bake_seconds, poll_interval
        self.thresholds = dict(thresholds or {})
        self.alarm_names = list(alarm_names or [])
        self.aws_conn_id, self.region_name, self.verify = aws_conn_id, region_name, verify
        self.state = state or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        names = (
            "function_name", "alias", "version", "started_at", "bake_seconds", "thresholds", "alarm_names",
            "poll_interval", "aws_conn_id", "region_name", "verify", "state",
        )  # fmt: skip
        return f"{type(self).__module__}.{type(self).__qualname__}", {name: getattr(self, name) for name in names}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent({**await self.bake(), "state": self.state})

    async def bake(self) -> dict[str, Any]:
        """Poll until a verdict (see the class)."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

        thresholds = plan.Thresholds(**self.thresholds)
        end = self.started_at + self.bake_seconds
        hook: AwsGenericHook[Any] = AwsGenericHook(
            aws_conn_id=self.aws_conn_id, client_type="cloudwatch", region_name=self.region_name, verify=self.verify
        )
        async with await hook.get_async_conn() as cloudwatch:
            while True:
                try:
                    metrics, alarms = await self._read(cloudwatch)
                except Exception as exc:  # noqa: BLE001 - reported as an event, never raised
                    if time.time() >= end:
                        return {"status": "error", "message": f"CloudWatch could not be read: {exc}", "metrics": None}
                    self.log.warning("CloudWatch read failed (%s); polling on", exc)
                    await asyncio.sleep(max(0.0, min(self.poll_interval, end - time.time())))
                    continue
                problem = plan.breach(metrics, thresholds, alarms)
                if problem:
                    return {"status": "breached", "message": problem, "metrics": metrics.as_dict()}
                if time.time() >= end:
                    message = (
                        f"{self.bake_seconds:g} s baked: {metrics.invocations:g} invocations, none over a threshold"
                    )
                    return {"status": "passed", "message": message, "metrics": metrics.as_dict()}
                self.log.info("Baking version %s: %s", self.version, metrics.as_dict())
                await asyncio.sleep(max(0.0, min(self.poll_interval, end - time.time())))

    async def _read(self, cloudwatch: Any) -> tuple[plan.Metrics, dict[str, str | None]]:
        start, end, period = plan.window(datetime.fromtimestamp(self.started_at, UTC), datetime.now(UTC))
        queries = plan.metric_queries(self.function_name, self.alias, self.version, period)
        answer = await cloudwatch.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
        alarms: dict[str, str | None] = dict.fromkeys(self.alarm_names)
        if self.alarm_names:
            found = await cloudwatch.describe_alarms(AlarmNames=self.alarm_names)
            for alarm in found.get("MetricAlarms", []) + found.get("CompositeAlarms", []):
                alarms[alarm["AlarmName"]] = alarm["StateValue"]
        return plan.metrics_of(answer["MetricDataResults"]), alarms
