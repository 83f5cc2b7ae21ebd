"""EMR that runs its steps: a small patch to moto's EMR models plus an executor.

moto's EMR only records API calls: a cluster is WAITING (or TERMINATED) the
moment it is created, steps stay RUNNING forever and nothing executes. The
patch (``install()``) hands the lifecycle to ``Executor``, a thread living in
the moto server's process, which walks clusters and steps through EMR's states:

    cluster  STARTING -> BOOTSTRAPPING -> WAITING <-> RUNNING
             -> TERMINATING -> TERMINATED | TERMINATED_WITH_ERRORS
    step     PENDING -> RUNNING -> COMPLETED | FAILED | CANCELLED

Faithful to EMR: one step at a time per cluster in submission order
(StepConcurrencyLevel 1); ActionOnFailure (TERMINATE_CLUSTER/TERMINATE_JOB_FLOW,
CANCEL_AND_WAIT, CONTINUE); KeepJobFlowAliveWhenNoSteps=false terminates once
no step is left; AutoTerminationPolicy.IdleTimeout; TerminateJobFlows cancels
the running step (its process group is killed) and pending ones; step logs
under ``<LogUri>/<cluster-id>/steps/<step-id>/{stdout,stderr,controller}.gz``;
Status.FailureDetails {Reason, Message, LogFile} and StateChangeReason.Code.

Spark reads and writes s3:// itself, through Hadoop's S3A client against
devstack's endpoint (EMRFS's part on EMR; ``devstack.spark_local.s3a_properties``
in the cluster's spark-defaults.conf), so paths and errors name s3:// URIs.

Not faithful: only ``command-runner.jar`` + ``spark-submit`` steps run (any
other step FAILS; MainClass and Properties are ignored), with the project's
PySpark in ``local[2]`` client mode on this machine, whatever the instance
types or ``--deploy-mode`` (recorded in controller.gz); S3A is not EMRFS (no
consistent view or EMRFS-specific settings; S3A's committer and renames);
STARTING, BOOTSTRAPPING and TERMINATING last about a second, not minutes; applications are recorded,
not installed (bootstrap actions and the Spark classifications are applied:
``devstack.aws.emr_node``); StepConcurrencyLevel
> 1 and CancelSteps are not supported; an IdleTimeout below EMR's 60 s minimum
is accepted (handy in tests); logs are uploaded once, when the step ends, and
controller.gz holds devstack's own notes (command, exit code); S3A, the logs,
bootstrap actions and the step's own AWS calls use devstack's admin credentials
(on EMR, the nodes' instance profile: its policy is not exercised here).

Where a failure's message comes from: spark-submit's PythonRunner merges the
Python driver's stderr into stdout, so the job's ``prog: error: ...`` line is
in stdout.gz while Spark's log4j lines are in stderr.gz; ``failure_message``
looks at both (FailureDetails.LogFile still names stderr.gz, as on EMR).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from moto.core.utils import utcnow
from moto.emr.exceptions import ValidationException
from moto.emr.models import Cluster, Step
from moto.emr.responses import ElasticMapReduceResponse

from devstack.aws import emr_network

if TYPE_CHECKING:
    from devstack.aws.emr_executor import _Bootstrap, _Run

log = logging.getLogger("devstack.aws.emr")

# One lock for every state transition, shared by the patched moto methods
# (request threads) and the executor; its condition wakes the executor early.
LOCK = threading.Condition(threading.RLock())
TICK_SECONDS = 0.2
# Dwell time in STARTING, BOOTSTRAPPING and TERMINATING, so that a poller (the
# Airflow waiters, the tests) can observe each state, as it can on EMR.
PHASE_SECONDS = 0.5
KILL_GRACE_SECONDS = 5.0
ENDED = ("TERMINATED", "TERMINATED_WITH_ERRORS")
ENDING = ("TERMINATING", *ENDED)
_LOG_URI = re.compile(r"^s3[an]?://([^/]+)/?(.*)$")
_MAX_MESSAGE = 1024


# --------------------------------------------------------------------------
# The patch: the smallest change that hands the lifecycle to the executor.
# --------------------------------------------------------------------------

_installed = False


def install() -> None:
    """Patch moto's EMR models (idempotent). Call before the server serves."""
    global _installed
    with LOCK:
        if _installed:
            return
        # Cluster.__init__ calls start_cluster (STARTING, kept) then
        # run_bootstrap_actions, which jumped straight to WAITING/TERMINATED.
        Cluster.run_bootstrap_actions = _run_bootstrap_actions  # type: ignore[method-assign]
        Cluster.add_steps = _add_steps  # type: ignore[method-assign]
        Cluster.terminate = _terminate  # type: ignore[method-assign]
        Cluster.status = property(_cluster_status)  # type: ignore[method-assign,assignment]
        # Cluster.__init__ stamps a start time on the first step; the executor
        # does it when the step really starts.
        Step.start = lambda self: None  # type: ignore[method-assign]
        Step.status = property(_step_status)  # type: ignore[method-assign,assignment]
        ElasticMapReduceResponse.run_job_flow = _run_job_flow_keeping_idle_timeout(  # type: ignore[method-assign]
            ElasticMapReduceResponse.run_job_flow
        )
        _installed = True


def _run_bootstrap_actions(self: Cluster) -> None:
    self._ds_since = time.monotonic()  # stays STARTING until the executor's tick


def _add_steps(self: Cluster, steps: list[dict[str, Any]]) -> list[Step]:
    with LOCK:
        # Called from Cluster.__init__ before self.state exists.
        if getattr(self, "state", None) in ENDING:
            raise ValidationException("A job flow that is shutting down, terminated, or finished may not be modified.")
        added = [Step(state="PENDING", **step) for step in steps]
        self.steps.extend(added)
        LOCK.notify_all()
        return added


def _terminate(self: Cluster) -> None:
    with LOCK:
        begin_termination(self, "USER_REQUEST", "Terminated by user request", errors=False)


def _cluster_status(self: Cluster) -> dict[str, Any]:
    code, message = getattr(self, "_ds_reason", (None, None))
    return {
        "State": self.state,
        "StateChangeReason": {k: v for k, v in (("Code", code), ("Message", message)) if v},
        "Timeline": {
            "CreationDateTime": self.creation_datetime,
            "ReadyDateTime": self.ready_datetime,
            "EndDateTime": self.end_datetime,
        },
    }


def _step_status(self: Step) -> dict[str, Any]:
    status: dict[str, Any] = {
        "State": self.state,
        "StateChangeReason": {k: v for k, v in (("Message", getattr(self, "last_state_change_reason", None)),) if v},
        "Timeline": {
            "CreationDateTime": self.creation_date_time,
            "StartDateTime": self.start_date_time,
            "EndDateTime": self.end_date_time,
        },
    }
    failure = getattr(self, "_ds_failure", None)
    if failure:
        status["FailureDetails"] = failure  # moto's Status has no such key
    return status


# EMR on EC2 release labels (the EMR release guide): RunJobFlow refuses any other.
RELEASE_LABELS = frozenset(
    [f"emr-6.{minor}.0" for minor in range(16)]
    + ["emr-6.0.1", "emr-6.1.1", "emr-6.2.1", "emr-6.3.1", "emr-6.4.1", "emr-6.5.1"]
    + [f"emr-7.{minor}.0" for minor in range(13)]
)


def check_run_job_flow(params: dict[str, Any], account_id: str) -> None:
    """Refuse what EMR refuses before creating anything: an unknown release label, a service
    role or an instance profile (JobFlowRole) that does not exist in the account's IAM."""
    from moto.iam.models import iam_backends

    label = params.get("ReleaseLabel")
    if label not in RELEASE_LABELS:
        raise ValidationException(f"The specified release label is not valid: {label}")
    iam = iam_backends[account_id]["aws"]
    service_role = str(params.get("ServiceRole") or "")
    if not service_role:
        raise ValidationException("ServiceRole is required to create a cluster.")
    role_name = service_role.rsplit("/", 1)[-1]
    if not any(role.name == role_name for role in iam.roles.values()):
        raise ValidationException(f"Invalid ServiceRole: the role {service_role} does not exist.")
    profile = str(params.get("JobFlowRole") or "")
    profile_name = profile.rsplit("/", 1)[-1]
    if not profile or not any(p.name == profile_name for p in iam.instance_profiles.values()):
        raise ValidationException(f"Invalid InstanceProfile: {profile or '(none given)'}.")


def _run_job_flow_keeping_idle_timeout(original: Any) -> Any:
    # Refuse what EMR refuses; moto's run_job_flow drops AutoTerminationPolicy: keep its IdleTimeout.
    def run_job_flow(self: ElasticMapReduceResponse) -> Any:
        check_run_job_flow(
            {key: self._get_param(key) for key in ("ReleaseLabel", "ServiceRole", "JobFlowRole")},
            self.current_account,
        )
        result = original(self)
        cluster = self.backend.clusters[result.result["JobFlowId"]]
        idle = self._get_param("AutoTerminationPolicy.IdleTimeout")
        keys = ("Ec2SubnetId", *emr_network.GROUP_KEYS)
        network = {key: self._get_param(f"Instances.{key}") for key in keys}
        refused = emr_network.untagged_network(
            network, str(self._get_param("ServiceRole")), self.current_account, self.region
        )
        with LOCK:
            if idle:
                cluster._ds_idle_timeout = float(idle)
            cluster._ds_refused = refused  # ends the cluster before it bootstraps, as EMR does
        return result

    return run_job_flow


# --------------------------------------------------------------------------
# Transitions shared by the patch and the executor (call with LOCK held).
# --------------------------------------------------------------------------


def begin_termination(cluster: Cluster, code: str, message: str, errors: bool) -> None:
    """Cluster -> TERMINATING; cancel pending steps; ask the running one to stop."""
    if cluster.state in ENDING:
        return
    cluster.state = "TERMINATING"
    cluster._ds_since = time.monotonic()
    cluster._ds_reason = (code, message)
    cluster._ds_errors = errors
    cancel_pending(cluster, f"Cancelled: cluster terminating ({message})")
    run: _Run | None = getattr(cluster, "_ds_run", None)
    if run:
        run.cancel.set()
    boot: _Bootstrap | None = getattr(cluster, "_ds_bootstrap", None)
    if boot:
        boot.cancel.set()
    LOCK.notify_all()


def cancel_pending(cluster: Cluster, reason: str) -> None:
    for step in cluster.steps:
        if step.state == "PENDING":
            step.state = "CANCELLED"
            step.last_state_change_reason = reason
            step.end_date_time = utcnow()
