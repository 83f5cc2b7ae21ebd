"""CloudWatch metric alarms that are evaluated: moto 5.2.5 stores them and leaves every one OK forever.

``install`` makes devstack's CloudWatch judge each single-metric alarm against the data in its store
whenever the alarms are read (DescribeAlarms, DescribeAlarmsForMetric) and once when one is created,
as CloudWatch does every minute:

- the metric is the alarm's namespace, name, unit (when given) and *exactly* its dimensions (CloudWatch
  identifies a metric by its whole dimension set: an alarm on ``FunctionName`` does not see the data
  Lambda also puts under ``FunctionName`` + ``Resource``);
- the last ``EvaluationPeriods`` periods, each reduced by the alarm's Statistic or ExtendedStatistic
  (``p99``: devstack.aws.lambda_metrics), compared with the threshold by ``ComparisonOperator``;
- ALARM when at least ``DatapointsToAlarm`` (default: all of them) breach; ``TreatMissingData``
  says what a period without data is: ``missing`` (default) or ``ignore`` leave it out, and all
  missing is INSUFFICIENT_DATA (``ignore``: the state stays); ``notBreaching`` and ``breaching``
  count it as such.

A state set by SetAlarmState lasts until the data's verdict changes, as it lasts until the next
evaluation on AWS. Not faithful: periods end now rather than at the last complete minute (devstack's
metrics have no minute of delay either), so an alarm fires as soon as its data says so; alarms
on metric math or anomaly bands and composite alarms are not evaluated (they keep the state
SetAlarmState gives them); low-sample percentiles are evaluated; alarm actions are not run.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.cloudwatch.models import Alarm, CloudWatchBackend, Statistics
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.utils import utcnow

# ComparisonOperator -> (how the reason says it, the comparison of a datapoint with the threshold)
_OPERATORS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "GreaterThanOrEqualToThreshold": ("greater than or equal to", operator.ge),
    "GreaterThanThreshold": ("greater than", operator.gt),
    "LessThanThreshold": ("less than", operator.lt),
    "LessThanOrEqualToThreshold": ("less than or equal to", operator.le),
}
_ORIGINAL: dict[str, Any] = {}
# The verdict each alarm's data gave at its last evaluation, by alarm ARN: a new one changes the state.
_VERDICTS: dict[str, str] = {}


def install() -> None:
    """Evaluate alarms when they are created and read (idempotent)."""
    if _ORIGINAL:
        return
    _ORIGINAL.update(
        put=CloudWatchBackend.put_metric_alarm,
        describe=CloudWatchResponse.describe_alarms,
        for_metric=CloudWatchResponse.describe_alarms_for_metric,
    )
    CloudWatchBackend.put_metric_alarm = _put_metric_alarm  # type: ignore[method-assign]
    CloudWatchResponse.describe_alarms = _evaluating("describe")  # type: ignore[method-assign]
    CloudWatchResponse.describe_alarms_for_metric = _evaluating("for_metric")  # type: ignore[method-assign]


def _put_metric_alarm(self: CloudWatchBackend, *args: Any, **kwargs: Any) -> Alarm:
    alarm: Alarm = _ORIGINAL["put"](self, *args, **kwargs)
    _VERDICTS.pop(alarm.alarm_arn, None)  # a changed alarm is judged afresh, like a new one
    evaluate(self, alarm)
    return alarm


def _evaluating(name: str) -> Any:
    def respond(self: CloudWatchResponse) -> Any:
        backend = self.cloudwatch_backend
        for alarm in list(backend.alarms.values()):
            evaluate(backend, alarm)
        return _ORIGINAL[name](self)

    return respond


def evaluate(backend: CloudWatchBackend, alarm: Alarm, now: datetime | None = None) -> None:
    """Judge ``alarm`` on ``backend``'s data up to ``now``; change its state when the verdict changed."""
    verdict = judge(backend, alarm, now or utcnow())
    if verdict is None or _VERDICTS.get(alarm.alarm_arn) == verdict[0]:
        return
    _VERDICTS[alarm.alarm_arn] = verdict[0]
    if alarm.state_value != verdict[0]:
        alarm.update_state(verdict[1], json.dumps(verdict[2]), verdict[0])


def judge(backend: CloudWatchBackend, alarm: Alarm, now: datetime) -> tuple[str, str, dict[str, Any]] | None:
    """(state, reason, reason data) the data gives ``alarm``, or None when devstack cannot judge it."""
    known = _OPERATORS.get(alarm.comparison_operator)
    stat = alarm.extended_statistic or alarm.statistic
    if alarm.rule is not None or alarm.metric_data_queries or known is None or not stat or alarm.threshold is None:
        return None
    words, compare = known
    period, count = int(alarm.period), int(alarm.evaluation_periods)
    needed = int(alarm.datapoints_to_alarm or count)
    values = [_reduce(backend, alarm, stat, now - timedelta(seconds=period * k), period) for k in range(count, 0, -1)]
    missing = alarm.treat_missing_data or "missing"
    present = [value for value in values if value is not None]
    breaching = sum(compare(value, alarm.threshold) for value in present)
    if missing == "breaching":
        breaching += len(values) - len(present)
    data = {"version": "1.0", "statistic": stat, "period": period, "threshold": alarm.threshold,
            "recentDatapoints": present, "evaluatedDatapoints": len(values)}  # fmt: skip
    shown = ", ".join(f"{value:g}" for value in present) or "no datapoints"
    if breaching >= needed:
        reason = f"Threshold Crossed: {breaching} out of the last {count} datapoints [{shown}] were {words} the threshold ({alarm.threshold:g})"
        return "ALARM", reason, data
    if not present and missing in ("missing", "ignore"):
        if missing == "ignore":
            return None
        return "INSUFFICIENT_DATA", f"Insufficient Data: {count} datapoints were unknown.", data
    reason = f"Threshold Crossed: no {needed} of the last {count} datapoints [{shown}] were {words} the threshold ({alarm.threshold:g})"
    return "OK", reason, data


def _reduce(backend: CloudWatchBackend, alarm: Alarm, stat: str, start: datetime, period: int) -> float | None:
    """The alarm's statistic over its metric's data in [start, start + period), None without data."""
    end = start + timedelta(seconds=period)
    wanted = sorted((d.name, d.value) for d in alarm.dimensions)
    stats = Statistics([stat], start)
    stats.metric_data = [
        datum
        for datum in backend.get_all_metrics()
        if datum.namespace == alarm.namespace
        and datum.name == alarm.metric_name
        and (not alarm.unit or datum.unit == alarm.unit)
        and start <= _naive(datum.timestamp) < end
        and sorted((d.name, d.value) for d in datum.dimensions) == wanted
    ]
    if not stats.metric_data:
        return None
    value = stats.get_statistics_for_type(stat)
    return None if value is None else float(value)


def _naive(moment: datetime) -> datetime:
    """UTC without a zone, as moto's utcnow(): data put with a zoned Timestamp compares with it too."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)
