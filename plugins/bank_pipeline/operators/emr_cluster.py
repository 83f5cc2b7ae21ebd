"""The transient cluster's create and terminate, made safe for a first run in a real account.

The Amazon provider's operators, with three fixes the production review asked for:

- ``EmrCreateRunClusterOperator``: ``EmrHook.create_job_flow`` merges the ``emr_default``
  connection's extra *shallowly* under the DAG's overrides (``config = extra.copy();
  config.update(overrides)``), so a subnet, security groups or role names in the extra
  vanish as soon as the DAG sets ``Instances``. Here the layers are merged deeply:
  account defaults (settings) < the connection's extra < the DAG's overrides. And a
  retried task never starts a second cluster: the run's cluster (found by its
  ``airflow:dag_id`` / ``airflow:run_id`` tags) is reused while it is alive.
- ``EmrTerminateRunClusterOperator``: the provider waits with ``job_flow_terminated``,
  which treats TERMINATED_WITH_ERRORS as a failure; a cluster that already ended that
  way (a bootstrap failure) or ends that way while terminating has ended all the same,
  which is all a teardown needs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.emr import EmrHook
from airflow.providers.amazon.aws.links.emr import EmrClusterLink
from airflow.providers.amazon.aws.operators.emr import EmrCreateJobFlowOperator, EmrTerminateJobFlowOperator
from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

ALIVE = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
ENDED = ("TERMINATED", "TERMINATED_WITH_ERRORS")
RUN_TAGS = ("airflow:dag_id", "airflow:run_id")
# Lists merged item by item, by this key (the rest of the lists: the upper layer's replaces the lower's).
LIST_KEYS = {"Tags": "Key", "Configurations": "Classification", "BootstrapActions": "Name"}
# job_flow_terminated with TERMINATED_WITH_ERRORS accepted: ended is ended.
CLUSTER_ENDED_ACCEPTORS = [
    {"matcher": "path", "argument": "Cluster.Status.State", "expected": state, "state": "success"} for state in ENDED
]


def deep_merge(lower: Mapping[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    """``upper`` over ``lower``: objects merge key by key; Tags, Configurations and BootstrapActions
    merge item by item (by Key, Classification, Name); any other value of ``upper`` replaces ``lower``'s."""
    merged = copy.deepcopy(dict(lower))
    for key, value in upper.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = deep_merge(below, value)
        elif key in LIST_KEYS and isinstance(value, list) and isinstance(below, list):
            merged[key] = _merge_items(below, value, LIST_KEYS[key])
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_items(lower: Sequence[Any], upper: Sequence[Any], key: str) -> list[Any]:
    items = {item.get(key): copy.deepcopy(item) for item in lower if isinstance(item, Mapping)}
    for item in upper:
        name = item.get(key) if isinstance(item, Mapping) else None
        items[name] = deep_merge(items[name], item) if name in items else copy.deepcopy(item)
    return list(items.values())


def run_tags(overrides: Mapping[str, Any]) -> dict[str, str]:
    """The ``airflow:dag_id`` / ``airflow:run_id`` tags of rendered overrides (what identifies the run's cluster)."""
    tags = {tag.get("Key"): tag.get("Value") for tag in overrides.get("Tags") or [] if isinstance(tag, Mapping)}
    return {key: str(tags[key]) for key in RUN_TAGS if tags.get(key)}


class EmrCreateRunClusterOperator(EmrCreateJobFlowOperator):
    """Create the run's cluster, or reuse it when a retry finds it alive; account settings merged deeply.

    :param account_defaults: the lowest layer (e.g. role names from settings), under the
        ``emr_conn_id`` connection's extra, under ``job_flow_overrides``.
    Other parameters: the provider's ``EmrCreateJobFlowOperator``. ``job_flow_overrides``
    must carry the ``airflow:dag_id`` and ``airflow:run_id`` tags (``emr.job_flow_overrides``
    sets them): they are how a retry finds the cluster it started.
    """

    def __init__(self, *, account_defaults: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.account_defaults = dict(account_defaults or {})

    def connection_extra(self) -> dict[str, Any]:
        """The ``emr_conn_id`` connection's extra ({} without a connection), as the provider reads it."""
        if not self.emr_conn_id:
            return {}
        from bank_pipeline.utils.compat import AirflowNotFoundException

        try:
            return dict(self.hook.get_connection(self.emr_conn_id).extra_dejson)
        except AirflowNotFoundException:
            return {}

    def find_run_cluster(self, overrides: Mapping[str, Any]) -> str | None:
        """The id of an alive cluster named like this run's and tagged with its DAG and run, if any."""
        tags = run_tags(overrides)
        if len(tags) != len(RUN_TAGS):
            raise ValueError(f"job_flow_overrides must tag the cluster with {', '.join(RUN_TAGS)}; tags: {tags}")
        name = overrides.get("Name")
        paginator = self.hook.conn.get_paginator("list_clusters")
        for page in paginator.paginate(ClusterStates=list(ALIVE)):
            for summary in page.get("Clusters", []):
                if name and summary.get("Name") != name:
                    continue
                cluster = self.hook.conn.describe_cluster(ClusterId=summary["Id"])["Cluster"]
                have = {tag["Key"]: tag["Value"] for tag in cluster.get("Tags") or []}
                if all(have.get(key) == value for key, value in tags.items()):
                    return str(summary["Id"])
        return None

    def execute(self, context: Context) -> str | None:
        overrides = self.job_flow_overrides
        if not isinstance(overrides, Mapping):
            raise TypeError(f"job_flow_overrides must be a dict here, got {type(overrides).__name__}")
        existing = self.find_run_cluster(overrides)
        if existing is not None:
            self.log.info("Cluster %s of this run is alive: reusing it (a retry must not start a second one)", existing)
            EmrClusterLink.persist(
                context=context,
                operator=self,
                region_name=self.hook.conn_region_name,
                aws_partition=self.hook.conn_partition,
                job_flow_id=existing,
            )
            return existing
        # The hook merges the extra shallowly under what it is given: give it the deep merge,
        # whose top-level values already hold every nested value of the extra.
        merged = deep_merge(deep_merge(self.account_defaults, self.connection_extra()), overrides)
        self.job_flow_overrides = with_integer_counts(merged)
        return super().execute(context)


def with_integer_counts(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with each instance group's InstanceCount an int: Jinja renders "2", RunJobFlow wants 2.

    Done here rather than by rendering the whole DAG as native objects, which would also turn
    a model version such as "1234567890123456" into a number.
    """
    for group in (config.get("Instances") or {}).get("InstanceGroups") or []:
        count = group.get("InstanceCount")
        if isinstance(count, str):
            if not count.strip().isdigit():
                raise ValueError(
                    f"InstanceCount of instance group {group.get('Name')!r} must be a whole number, got {count!r}"
                )
            group["InstanceCount"] = int(count)
    return config


class EmrClusterEndedTrigger(AwsBaseWaiterTrigger):
    """Waits until a cluster has ended: TERMINATED or TERMINATED_WITH_ERRORS (the provider's waiter, widened)."""

    def __init__(
        self,
        *,
        job_flow_id: str,
        waiter_delay: int = 30,
        waiter_max_attempts: int = 60,
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            serialized_fields={"job_flow_id": job_flow_id},
            waiter_name="job_flow_terminated",
            waiter_args={"ClusterId": job_flow_id},
            waiter_config_overrides={"acceptors": CLUSTER_ENDED_ACCEPTORS},
            failure_message=f"Cluster {job_flow_id} did not end",
            status_message=f"Cluster {job_flow_id} is",
            status_queries=["Cluster.Status.State", "Cluster.Status.StateChangeReason"],
            return_key="job_flow_id",
            return_value=job_flow_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            **kwargs,
        )

    def hook(self) -> EmrHook:
        return EmrHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify)


class EmrTerminateRunClusterOperator(EmrTerminateJobFlowOperator):
    """Terminate the run's cluster and wait until it has ended, however it ends.

    A cluster that has already ended (TERMINATED, or TERMINATED_WITH_ERRORS after a
    failed bootstrap action) is left as it is, and its end is logged with the reason.
    """

    def _state(self) -> tuple[str, str]:
        status = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"]["Status"]
        reason = status.get("StateChangeReason") or {}
        return status["State"], " ".join(filter(None, (reason.get("Code"), reason.get("Message"))))

    def execute(self, context: Context) -> None:
        state, reason = self._state()
        if state in ENDED:
            EmrClusterLink.persist(
                context=context,
                operator=self,
                region_name=self.hook.conn_region_name,
                aws_partition=self.hook.conn_partition,
                job_flow_id=self.job_flow_id,
            )
            self.log.info("Cluster %s has already ended: %s (%s)", self.job_flow_id, state, reason or "no reason")
            return
        self.log.info("Terminating cluster %s (%s)", self.job_flow_id, state)
        self.hook.conn.terminate_job_flows(JobFlowIds=[self.job_flow_id])
        if self.deferrable:
            self.defer(
                trigger=EmrClusterEndedTrigger(
                    job_flow_id=self.job_flow_id,
                    waiter_delay=self.waiter_delay,
                    waiter_max_attempts=self.waiter_max_attempts,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.waiter_max_attempts * self.waiter_delay + 60),
            )
        self.hook.get_waiter("job_flow_terminated", config_overrides={"acceptors": CLUSTER_ENDED_ACCEPTORS}).wait(
            ClusterId=self.job_flow_id,
            WaiterConfig={"Delay": self.waiter_delay, "MaxAttempts": self.waiter_max_attempts},
        )
        self._log_end()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        super().execute_complete(context, event)  # validates the event; raises unless it says success
        self._log_end()

    def _log_end(self) -> None:
        state, reason = self._state()
        self.log.info("Cluster %s ended: %s (%s)", self.job_flow_id, state, reason or "no reason")
