"""The executor of devstack's EMR (devstack.aws.emr says what is faithful): a thread in the moto
server's process that walks clusters and steps through EMR's states and runs each step with
spark-submit, and the pure helpers that read a step's command line and choose its failure's message."""

from __future__ import annotations

import gzip
import logging
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.core.utils import utcnow
from moto.emr.models import Cluster, Step

from devstack import procs, spark_local
from devstack.aws import emr_node
from devstack.aws.emr import (
    _LOG_URI,
    _MAX_MESSAGE,
    KILL_GRACE_SECONDS,
    LOCK,
    PHASE_SECONDS,
    TICK_SECONDS,
    begin_termination,
    cancel_pending,
)

log = logging.getLogger("devstack.aws.emr")


# --------------------------------------------------------------------------
# The executor.
# --------------------------------------------------------------------------


@dataclass
class _Run:
    """The step a cluster is running."""

    step: Step
    cancel: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None


@dataclass
class _Bootstrap:
    """A cluster's bootstrap actions, running in a thread; ``failure`` once one has failed."""

    done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    failure: emr_node.BootstrapFailure | None = None


@dataclass
class _Outcome:
    state: str  # COMPLETED | FAILED | CANCELLED
    failure: dict[str, str] | None = None


def _clusters() -> list[Cluster]:
    from moto.emr.models import emr_backends

    return [c for _a, _r, backend in list(emr_backends.iter_backends()) for c in list(backend.clusters.values())]


class Executor:
    """Moves every EMR cluster of the moto process through its lifecycle and runs steps."""

    def __init__(
        self,
        endpoint_url: str,
        work_root: Path,
        credentials: tuple[str, str] = ("testing", "testing"),
        node_root: Path | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.credentials = credentials  # (access key id, secret): devstack's admin under IAM enforcement
        self.work_root = work_root
        # Where node-local paths (/opt, /mnt, ...) of every cluster live (devstack.aws.emr_node).
        self.node_root = node_root or work_root.parent / "node"
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="devstack-emr", daemon=True)
        self._runners: list[threading.Thread] = []

    def start(self) -> None:
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.node_root.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        """Kill running steps (process groups), wait for their threads, stop the loop."""
        with LOCK:
            self._stopping = True
            for cluster in _clusters():
                for job in (getattr(cluster, "_ds_run", None), getattr(cluster, "_ds_bootstrap", None)):
                    if job:
                        job.cancel.set()
            LOCK.notify_all()
        self._thread.join(5)
        for runner in list(self._runners):
            runner.join(KILL_GRACE_SECONDS + 10)

    def _loop(self) -> None:
        with LOCK:
            while not self._stopping:
                for cluster in _clusters():
                    try:
                        self._advance(cluster, time.monotonic())
                    except Exception:  # one broken cluster must not stop the others
                        log.exception("cannot advance %s", cluster.id)
                LOCK.wait(TICK_SECONDS)

    def _advance(self, cluster: Cluster, now: float) -> None:
        since = getattr(cluster, "_ds_since", None)
        if since is None:  # created before install(), or by a path we did not see
            since = cluster._ds_since = now
        if cluster.state == "STARTING" and getattr(cluster, "_ds_refused", None):
            begin_termination(cluster, "VALIDATION_ERROR", cluster._ds_refused, errors=True)
        elif cluster.state == "STARTING" and now - since >= PHASE_SECONDS:
            cluster.state, cluster._ds_since = "BOOTSTRAPPING", now
            self._start_bootstrap(cluster)
        elif cluster.state == "BOOTSTRAPPING" and now - since >= PHASE_SECONDS:
            boot: _Bootstrap | None = getattr(cluster, "_ds_bootstrap", None)
            if boot is not None and not boot.done.is_set():
                return  # still running its bootstrap actions
            if boot is not None and boot.failure is not None:
                begin_termination(cluster, "BOOTSTRAP_FAILURE", boot.failure.message, errors=True)
                return
            cluster.state, cluster._ds_since, cluster._ds_idle_since = "WAITING", now, now
            cluster.ready_datetime = utcnow()
            log.info("cluster %s ready", cluster.id)
        if cluster.state in ("WAITING", "RUNNING"):
            if getattr(cluster, "_ds_run", None):
                cluster.state = "RUNNING"
                return
            pending = next((s for s in cluster.steps if s.state == "PENDING"), None)
            if pending and not self._stopping:
                self._start(cluster, pending)
                cluster.state = "RUNNING"
                return
            cluster.state = "WAITING"
            idle_timeout = getattr(cluster, "_ds_idle_timeout", None)
            idle_for = now - getattr(cluster, "_ds_idle_since", now)
            if not cluster.keep_job_flow_alive_when_no_steps:
                begin_termination(cluster, "ALL_STEPS_COMPLETED", "Steps completed", errors=False)
            elif idle_timeout is not None and idle_for >= idle_timeout:
                begin_termination(
                    cluster,
                    "ALL_STEPS_COMPLETED",
                    f"Idle for {idle_for:.0f} s, beyond AutoTerminationPolicy.IdleTimeout ({idle_timeout:g} s)",
                    errors=False,
                )
        elif cluster.state == "TERMINATING":
            boot = getattr(cluster, "_ds_bootstrap", None)
            busy = getattr(cluster, "_ds_run", None) is not None or (boot is not None and not boot.done.is_set())
            if not busy and now - since >= PHASE_SECONDS:
                cluster.state = "TERMINATED_WITH_ERRORS" if getattr(cluster, "_ds_errors", False) else "TERMINATED"
                cluster.end_datetime = utcnow()
                log.info("cluster %s %s", cluster.id, cluster.state)

    def _start(self, cluster: Cluster, step: Step) -> None:
        step.state = "RUNNING"
        step.start_date_time = utcnow()
        run = _Run(step)
        run.thread = threading.Thread(
            target=self._run_step, args=(cluster, step, run), name=f"step-{step.id}", daemon=True
        )
        cluster._ds_run = run
        self._runners = [t for t in self._runners if t.is_alive()] + [run.thread]
        log.info("cluster %s runs step %s (%s)", cluster.id, step.id, step.name)
        run.thread.start()

    def _run_step(self, cluster: Cluster, step: Step, run: _Run) -> None:
        try:
            outcome = self._execute(cluster, step, run)
        except Exception as exc:  # a devstack bug must fail the step, not hang it
            log.exception("step %s crashed", step.id)
            outcome = _Outcome("FAILED", {"Reason": "devstack internal error", "Message": f"devstack: {exc}"})
        with LOCK:
            step.state = outcome.state
            step.end_date_time = utcnow()
            if outcome.failure:
                step._ds_failure = {k: v for k, v in outcome.failure.items() if v}
                step.last_state_change_reason = outcome.failure.get("Message")
            elif outcome.state == "CANCELLED":
                step.last_state_change_reason = "Cancelled: cluster terminating"
            cluster._ds_run = None
            cluster._ds_idle_since = time.monotonic()
            log.info("step %s %s", step.id, step.state)
            if outcome.state == "FAILED":
                action = step.action_on_failure
                if action in ("TERMINATE_CLUSTER", "TERMINATE_JOB_FLOW"):
                    begin_termination(cluster, "STEP_FAILURE", "Shut down as step failed", errors=True)
                elif action == "CANCEL_AND_WAIT":
                    cancel_pending(cluster, f"Cancelled: step {step.id} failed (CANCEL_AND_WAIT)")
            LOCK.notify_all()

    # -- one step -----------------------------------------------------------

    def _execute(self, cluster: Cluster, step: Step, run: _Run) -> _Outcome:
        work = self.work_root / f"{cluster.id}-{step.id}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        files = {name: work / name for name in ("stdout", "stderr", "controller")}
        for path in files.values():
            path.touch()
        s3 = self._s3()
        try:
            outcome = self._run_in(work, files, cluster, step, run, s3)
        finally:
            log_file = self._upload_logs(cluster, step, files, s3)
            shutil.rmtree(work, ignore_errors=True)
        if outcome.failure is not None:
            outcome.failure["LogFile"] = log_file or ""
        return outcome

    def _run_in(self, work: Path, files: dict[str, Path], cluster: Cluster, step: Step, run: _Run, s3: Any) -> _Outcome:
        def note(line: str) -> None:
            with files["controller"].open("a") as f:
                f.write(line + "\n")

        args = [str(a) for a in step.args]
        jar = str(step.jar)
        if not (
            jar.rsplit("/", 1)[-1] == "command-runner.jar" and args and args[0].rsplit("/", 1)[-1] == "spark-submit"
        ):
            message = (
                "devstack only runs command-runner.jar steps whose Args start with spark-submit "
                f"(this step: Jar={jar!r}, Args={args[:2]!r}...)"
            )
            files["stderr"].write_text(message + "\n")
            return _Outcome("FAILED", {"Reason": "Unsupported step", "Message": message})

        spark_submit = spark_local.SPARK_SUBMIT
        if not spark_submit.exists():
            message = f"devstack: no spark-submit next to {sys.executable}; run devstack with the project's venv"
            files["stderr"].write_text(message + "\n")
            return _Outcome("FAILED", {"Reason": "No spark-submit", "Message": message})
        try:
            jars = spark_local.ensure_jars()
        except (OSError, RuntimeError) as exc:
            message = f"devstack: cannot get the S3A jars ({exc}); run `python -m devstack.spark_local jars`"
            files["stderr"].write_text(message + "\n")
            return _Outcome("FAILED", {"Reason": "No S3A jars", "Message": message})
        options, rest = _split_spark_submit(args)
        command = spark_local.command(work, [*options, *rest])
        (work / "tmp").mkdir()  # Spark's and Python's temp files go with the work dir
        # The cluster's Spark configuration as EMR writes it: the interpreter comes from there,
        # and s3:// is Hadoop's S3A client against devstack (EMRFS's part on EMR).
        aws = self._aws_env()
        s3a = spark_local.s3a_properties(
            self.endpoint_url, aws["AWS_ACCESS_KEY_ID"], aws["AWS_SECRET_ACCESS_KEY"], jars
        )
        conf_dir = emr_node.write_spark_conf(work / "conf", cluster.configurations or [], self.node_root, s3a)
        env = emr_node.offline(dict(spark_local.environment(work, conf_dir=conf_dir, short_job=True), **aws))
        note(f"devstack: step {step.id}: {shlex.join(args)}")
        deploy_mode = _option(args, "--deploy-mode")
        if deploy_mode and deploy_mode != "client":
            note(f"devstack: --deploy-mode {deploy_mode} recorded; devstack runs every step in client mode")
        note(f"devstack: runs {shlex.join(command)}")
        with LOCK:
            if run.cancel.is_set():
                return _Outcome("CANCELLED")
            with files["stdout"].open("wb") as out, files["stderr"].open("wb") as err:
                # Own process group (same session), so that killing the step
                # kills spark-submit, its JVM and the Python workers, nothing else.
                run.proc = subprocess.Popen(
                    command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, process_group=0
                )
        code = self._wait(run)
        note(f"devstack: exit code {code}")
        if run.cancel.is_set():
            note("devstack: cancelled")
            return _Outcome("CANCELLED")
        if code == 0:
            return _Outcome("COMPLETED")
        message = failure_message(files["stdout"], files["stderr"], code)
        log.info("step %s failed: %s", step.id, message)
        return _Outcome("FAILED", {"Reason": f"Step failed with exit code {code}", "Message": message})

    def _wait(self, run: _Run) -> int:
        proc = run.proc
        assert proc is not None
        while proc.poll() is None:
            if run.cancel.wait(TICK_SECONDS):
                procs.terminate_group(proc.pid, KILL_GRACE_SECONDS)
                break
        code = proc.wait()
        # Leftovers of the step's group (e.g. Python workers) die with it.
        if procs.group_pids(proc.pid):
            procs.terminate_group(proc.pid, 1.0)
        return code

    def _aws_env(self) -> dict[str, str]:
        """A job or a bootstrap action that calls AWS itself (boto3, the AWS CLI) reaches devstack."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.credentials[0],
            "AWS_SECRET_ACCESS_KEY": self.credentials[1],
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    # -- bootstrap actions --------------------------------------------------

    def _start_bootstrap(self, cluster: Cluster) -> None:
        """Run the cluster's bootstrap actions in a thread (call with LOCK held)."""
        boot = cluster._ds_bootstrap = _Bootstrap()
        actions = list(cluster.bootstrap_actions)
        if not actions:
            boot.done.set()
            return

        def run() -> None:
            work = self.work_root / f"{cluster.id}-bootstrap"
            try:
                boot.failure = emr_node.run_bootstrap_actions(
                    actions,
                    s3=self._s3(),
                    work=work,
                    node_root=self.node_root,
                    env=emr_node.bootstrap_env(self._aws_env()),
                    log_uri=cluster.log_uri,
                    cluster_id=cluster.id,
                    cancelled=boot.cancel,
                )
            except Exception as exc:  # noqa: BLE001 - a devstack bug fails the bootstrap, never hangs it
                log.exception("bootstrap of %s crashed", cluster.id)
                boot.failure = emr_node.BootstrapFailure(0, f"devstack: bootstrap crashed: {exc}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
                with LOCK:
                    boot.done.set()
                    LOCK.notify_all()

        thread = threading.Thread(target=run, name=f"bootstrap-{cluster.id}", daemon=True)
        self._runners = [t for t in self._runners if t.is_alive()] + [thread]
        thread.start()

    def _s3(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.credentials[0],
            aws_secret_access_key=self.credentials[1],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def _upload_logs(self, cluster: Cluster, step: Step, files: dict[str, Path], s3: Any) -> str | None:
        """gzip the step's logs under the LogUri, EMR's layout; return stderr.gz's URI."""
        match = _LOG_URI.match(cluster.log_uri or "")
        if not match:
            return None
        bucket, prefix = match.group(1), match.group(2).strip("/")
        base = "/".join(p for p in (prefix, cluster.id, "steps", step.id) if p)
        try:
            for name, path in files.items():
                s3.put_object(Bucket=bucket, Key=f"{base}/{name}.gz", Body=gzip.compress(path.read_bytes()))
        except Exception as exc:  # noqa: BLE001 - e.g. the log bucket does not exist: EMR loses them too
            log.warning("cannot upload logs of %s to %s: %s", step.id, cluster.log_uri, exc)
            return None
        return f"s3://{bucket}/{base}/stderr.gz"


# --------------------------------------------------------------------------
# Helpers.
# --------------------------------------------------------------------------


def _option(args: list[str], name: str) -> str | None:
    """The value of spark-submit option ``name`` in ``args`` (``--name value`` or ``--name=value``)."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


# spark-submit options that take no value.
_FLAGS = {"--verbose", "-v", "--supervise", "--help", "-h", "--version", "--usage-error"}


def _split_spark_submit(args: list[str]) -> tuple[list[str], list[str]]:
    """Split ``spark-submit OPTIONS RESOURCE ARGS`` into options (minus --master and
    --deploy-mode, which devstack sets) and the application with its arguments."""
    options: list[str] = []
    i = 1
    while i < len(args) and args[i].startswith("-"):
        width = 1 if ("=" in args[i] or args[i] in _FLAGS) else 2
        if args[i].split("=", 1)[0] not in ("--master", "--deploy-mode"):
            options += args[i : i + width]
        i += width
    return options, args[i:]


_LOG4J_CHATTER = re.compile(r"^\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} (TRACE|DEBUG|INFO|WARN) ")
_CONTRACT_ERROR = re.compile(r"^\S+: error: ")  # "bank_features: error: ..." (argparse style)
_ERRORISH = re.compile(r"error\b|exception\b|\bfatal\b", re.IGNORECASE)


def _tail_lines(path: Path, size: int = 256 * 1024) -> list[str]:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        text = f.read().decode(errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def failure_message(stdout: Path, stderr: Path, code: int) -> str:
    """The log line that best explains a failed step (see docs/interfaces.md).

    spark-submit's PythonRunner merges the Python driver's stderr into its own
    stdout, so the job's last stderr line lands in stdout; Spark's log4j lines
    go to stderr, and its shutdown hooks log INFO lines after the job exits.
    So, in order: the job's own ``prog: error: ...`` line; the last line that
    looks like an error (a Python traceback's last line, a Java exception);
    the last line that is not log4j chatter; the last line; "exit code N".
    """
    out, err = _tail_lines(stdout), _tail_lines(stderr)
    quiet = [[ln for ln in lines if not _LOG4J_CHATTER.match(ln)] for lines in (out, err)]
    for pick in (
        lambda ln: bool(_CONTRACT_ERROR.match(ln)),
        lambda ln: bool(_ERRORISH.search(ln)),
        lambda ln: True,
    ):
        for lines in quiet:  # the Python driver's output (stdout) first
            hits = [ln for ln in lines if pick(ln)]
            if hits:
                return hits[-1][:_MAX_MESSAGE]
    for lines in (err, out):
        if lines:
            return lines[-1][:_MAX_MESSAGE]
    return f"exit code {code}"
