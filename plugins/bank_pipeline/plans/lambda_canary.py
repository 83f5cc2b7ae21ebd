"""The decisions of a Lambda canary, as pure functions: the traffic steps of a strategy, the CloudWatch
queries that judge the new version, and the verdict over their answers.

A strategy shifts the alias's traffic to the new version in steps (``RoutingConfig``: the new version
as the additional one, with its share as weight), bakes each step, and promotes (the alias on the new
version, no routing) when every step passed. A step fails as soon as one threshold is crossed by the
new version's own metrics (``ExecutedVersion`` on the alias) or a named alarm is in ALARM; the
release then clears the weights, which leaves the alias on the old version. A first release has no
old version to keep traffic on: it goes all at once.

Nothing here calls a service (tests/unit/bank_pipeline/plans/test_lambda_canary.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from bank_pipeline.errors import BadInputError

Kind = Literal["all_at_once", "canary", "linear"]
KINDS: tuple[Kind, ...] = ("all_at_once", "canary", "linear")


@dataclass(frozen=True)
class Strategy:
    """How traffic moves: the new version's share at each step before all of it, each baked ``bake_seconds``."""

    kind: Kind
    shares: tuple[float, ...] = ()
    bake_seconds: float = 0.0


def strategy(kind: str, *, percent: float = 10.0, bake_seconds: float = 600.0) -> Strategy:
    """The strategy the release's Params ask for; BadInputError naming a wrong one.

    ``canary``: ``percent`` of the traffic for ``bake_seconds``, then all. ``linear``: ``percent`` more
    at each step, each baked ``bake_seconds``, until all.
    """
    if kind not in KINDS:
        raise BadInputError(f"release_strategy={kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "all_at_once":
        return Strategy("all_at_once")
    if not 0 < percent < 100:
        raise BadInputError(f"canary_percent={percent!r}: expected more than 0 and less than 100")
    if not 0 <= bake_seconds <= 86_400:
        raise BadInputError(f"bake_seconds={bake_seconds!r}: expected 0 to 86400")
    if kind == "canary":
        return Strategy("canary", (percent / 100,), float(bake_seconds))
    steps = math.ceil(100 / percent) - 1
    return Strategy("linear", tuple(round(min(1.0, (i + 1) * percent / 100), 6) for i in range(steps)), bake_seconds)


@dataclass(frozen=True)
class Thresholds:
    """What the new version may not exceed during a bake: its error rate, its p99 duration (ms), its throttles."""

    max_error_rate: float = 0.05
    max_p99_ms: float | None = None
    max_throttles: float = 0.0


@dataclass(frozen=True)
class Metrics:
    """The new version's figures since its bake began (None: no data point yet)."""

    invocations: float
    errors: float
    throttles: float
    p99_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# GetMetricData ids -> (MetricName, Stat)
QUERIES = {
    "invocations": ("Invocations", "Sum"),
    "errors": ("Errors", "Sum"),
    "throttles": ("Throttles", "Sum"),
    "p99_ms": ("Duration", "p99"),
}


def metric_queries(function: str, alias: str, version: str, period: int) -> list[dict[str, Any]]:
    """GetMetricData's queries for ``version`` run through ``alias``: one data point per ``period`` seconds."""
    dimensions = [
        {"Name": "FunctionName", "Value": function},
        {"Name": "Resource", "Value": f"{function}:{alias}"},
        {"Name": "ExecutedVersion", "Value": version},
    ]
    return [
        {
            "Id": query_id,
            "ReturnData": True,
            "MetricStat": {
                "Metric": {"Namespace": "AWS/Lambda", "MetricName": name, "Dimensions": dimensions},
                "Period": period,
                "Stat": stat,
            },
        }
        for query_id, (name, stat) in QUERIES.items()
    ]


def metrics_of(results: list[dict[str, Any]]) -> Metrics:
    """GetMetricData's MetricDataResults as Metrics: sums added up, the worst p99 of the periods."""
    values = {r["Id"]: [float(v) for v in r.get("Values", []) if v is not None] for r in results}
    p99 = values.get("p99_ms") or []
    return Metrics(
        invocations=sum(values.get("invocations", [])),
        errors=sum(values.get("errors", [])),
        throttles=sum(values.get("throttles", [])),
        p99_ms=max(p99) if p99 else None,
    )


def breach(metrics: Metrics, thresholds: Thresholds, alarms: dict[str, str | None]) -> str | None:
    """The first threshold the new version crossed, with the metric and its value; None if none was.

    ``alarms``: each named alarm's StateValue, None for one that does not exist (a setting naming
    no alarm would watch nothing: it fails the step rather than pass it unseen).
    """
    missing = sorted(name for name, state in alarms.items() if state is None)
    if missing:
        return f"alarm {', '.join(missing)} does not exist"
    firing = sorted(name for name, state in alarms.items() if state == "ALARM")
    if firing:
        return f"alarm {', '.join(firing)} in ALARM"
    if metrics.invocations and metrics.errors / metrics.invocations > thresholds.max_error_rate:
        rate = metrics.errors / metrics.invocations
        return (
            f"Errors {metrics.errors:g} of {metrics.invocations:g} invocations ({rate:.1%}) "
            f"above the {thresholds.max_error_rate:.1%} allowed"
        )
    if metrics.throttles > thresholds.max_throttles:
        return f"Throttles {metrics.throttles:g} above the {thresholds.max_throttles:g} allowed"
    if thresholds.max_p99_ms is not None and metrics.p99_ms is not None and metrics.p99_ms > thresholds.max_p99_ms:
        return f"Duration p99 {metrics.p99_ms:.1f} ms above the {thresholds.max_p99_ms:g} ms allowed"
    return None


def window(started: datetime, now: datetime) -> tuple[datetime, datetime, int]:
    """GetMetricData's StartTime, EndTime and Period covering a bake begun at ``started``: one period of whole minutes."""
    start = started.replace(second=0, microsecond=0)
    period = 60 * max(1, math.ceil((now - start).total_seconds() / 60) + 1)
    return start, start + timedelta(seconds=period), period
