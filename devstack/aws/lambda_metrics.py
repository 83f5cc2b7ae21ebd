"""Lambda's own CloudWatch metrics, which moto never emits, and the percentiles moto's CloudWatch cannot compute.

Each invoke devstack runs publishes to its CloudWatch, namespace ``AWS/Lambda``, as Lambda does:
``Invocations`` (1), ``Errors`` (1 when the handler or its init failed or timed out, else 0) and
``Duration`` (the REPORT line's milliseconds), each under the dimension sets Lambda uses:
``FunctionName``; ``FunctionName`` + ``Resource`` (``name:alias`` or ``name:version`` when the
invoke named one); and, through an alias, ``FunctionName`` + ``Resource`` + ``ExecutedVersion``,
the version the alias's routing ran, which is how a canary's version is told from the other.

moto 5.2.5's GetMetricData answers only Sum, Average, Minimum, Maximum and SampleCount; a
percentile Stat (``p99``, ``p99.9``) gave nulls. ``install`` adds them: the nearest-rank
percentile of the period's values. Not faithful: Throttles is never emitted (devstack queues an
invoke beyond its containers rather than throttling it) and metrics appear at once, not a minute late.
"""

from __future__ import annotations

import math
import re
from typing import Any

from moto.awslambda.models import LambdaFunction
from moto.cloudwatch.models import Statistics, cloudwatch_backends

NAMESPACE = "AWS/Lambda"
_REPORT_DURATION = re.compile(r"^REPORT RequestId: .*?(?<!Init )(?<!Billed )Duration: ([0-9.]+) ms", re.MULTILINE)
_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")
_ORIGINAL: dict[str, Any] = {}


def install() -> None:
    """Let moto's CloudWatch compute percentile statistics (idempotent)."""
    if not _ORIGINAL:
        _ORIGINAL["stat"] = Statistics.get_statistics_for_type
        Statistics.get_statistics_for_type = _statistic  # type: ignore[method-assign]


def _statistic(self: Statistics, stat: str) -> Any:
    match = _PERCENTILE.fullmatch(stat)
    if match is None:
        return _ORIGINAL["stat"](self, stat)
    values = sorted(self.metric_single_values_list)
    if not values:
        return None
    rank = max(1, math.ceil(float(match.group(1)) / 100 * len(values)))
    return values[rank - 1]


def duration_ms(log: str) -> float | None:
    """The billed invoke's Duration from its REPORT line, None when the log has none."""
    match = _REPORT_DURATION.search(log)
    return float(match.group(1)) if match else None


def publish(fn: LambdaFunction, qualifier: str | None, errored: bool, duration: float | None) -> None:
    """The metrics of one invoke of version ``fn``, named by ``qualifier`` (an alias, a version or None)."""
    name = fn.function_name
    dimension_sets = [[("FunctionName", name)]]
    if qualifier and qualifier != "$LATEST":
        resource = [("FunctionName", name), ("Resource", f"{name}:{qualifier}")]
        dimension_sets.append(resource)
        if not qualifier.isdigit():
            dimension_sets.append([*resource, ("ExecutedVersion", str(fn.version))])
    values = [("Invocations", 1.0, "Count"), ("Errors", 1.0 if errored else 0.0, "Count")]
    if duration is not None:
        values.append(("Duration", duration, "Milliseconds"))
    data = [
        {"MetricName": metric, "Value": value, "Unit": unit, "Dimensions": [{"Name": k, "Value": v} for k, v in dims]}
        for dims in dimension_sets
        for metric, value, unit in values
    ]
    cloudwatch_backends[fn.account_id][fn.region].put_metric_data(NAMESPACE, data)
