"""The command-line contract both jobs keep (docs/interfaces.md): exit 0 and a one-line
JSON summary, or exit 2 (usage) / 1 (failure) with ``<prog>: error: <message>`` as the
last line of the driver's stderr, which EMR puts in the step's FailureDetails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from pyspark.sql import SparkSession

C = TypeVar("C")  # a job's parsed command line


class JobError(ValueError):
    """A failure a job reports as `<prog>: error: <message>`, without a traceback."""


class JobArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises the job's usage error instead of exiting, so run_job reports it."""

    def __init__(self, *args: Any, usage_error: type[JobError], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.usage_error = usage_error

    def error(self, message: str) -> Any:
        raise self.usage_error(message)


def error_line(error: BaseException) -> str:
    """The message of the contract's error line: a job error as is, anything else with its type, on one line."""
    if isinstance(error, JobError):
        message = str(error)
    else:
        message = f"{type(error).__name__}: {str(error)[:500]}"
    return " ".join(message.split())  # one line, whatever the exception text holds


def report_error(line: str) -> None:
    """Print the contract's error line so that it is the last line of the driver's stderr.

    Under spark-submit, Python runs as a child of the driver JVM, whose
    PythonRunner merges Python's stderr into the JVM's *stdout*; there the line
    also has to go through the JVM's own System.err, with logging turned down
    to WARN so that the JVM's shutdown hooks do not log after it.
    """
    say(line, quiet_jvm=True)


def say(line: str, *, quiet_jvm: bool = False) -> None:
    """Print ``line`` on Python's stderr and, under spark-submit, on the JVM's (see report_error);
    ``quiet_jvm``: turn the JVM's logging down to WARN first."""
    print(line, file=sys.stderr, flush=True)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # we started the JVM: it shares our stderr
        return
    try:
        from pyspark import SparkContext
        from pyspark.java_gateway import launch_gateway

        jvm = (SparkContext._gateway or launch_gateway()).jvm  # type: ignore[attr-defined]
        if quiet_jvm:
            log4j = jvm.org.apache.logging.log4j
            log4j.core.config.Configurator.setRootLevel(log4j.Level.WARN)
        jvm.System.err.println(line)
        jvm.System.err.flush()
    except Exception:  # noqa: BLE001 - the line is already on Python's stderr
        pass


def small_shuffles(spark: SparkSession) -> None:
    """Shuffle partitions = the cluster's parallelism unless spark-submit set them: the bank data
    is small, and Spark's default 200 partitions would be mostly scheduling overhead."""
    if spark.conf.get("spark.sql.shuffle.partitions", None) is None:
        spark.conf.set("spark.sql.shuffle.partitions", str(max(2, spark.sparkContext.defaultParallelism)))


def run_job(
    prog: str,
    argv: list[str] | None,
    parse: Callable[[list[str] | None], C],
    run: Callable[[SparkSession, C], dict[str, Any]],
    *,
    configure: Callable[[SparkSession], None],
    summarize: Callable[[C, dict[str, Any]], dict[str, Any]],
    translate: Callable[[BaseException], BaseException] = lambda error: error,
) -> int:
    """A job's command line: 0 and a one-line JSON summary, or 2 (usage) / 1 (failure) with the
    contract's `<prog>: error: <message>` as the last line of stderr.

    `configure` sets the job's session options (on a session someone else
    started too); `translate` may turn a failure into the JobError it stands for.
    """
    try:
        config = parse(argv)
    except JobError as exc:  # a parser raises its job's UsageError
        report_error(f"usage: see {prog} --help\n{prog}: error: {error_line(exc)}")
        return 2

    # Reuse a session someone else started (tests, notebooks) and leave it running;
    # stop only the one created here.
    spark = SparkSession.getActiveSession()
    owned = spark is None
    error: BaseException | None = None
    manifest: dict[str, Any] = {}
    try:
        if spark is None:
            spark = SparkSession.builder.appName(prog).getOrCreate()
            # Keeps INFO chatter (including the JVM's shutdown hooks) from landing
            # after our error line: the contract makes that line the last on stderr.
            spark.sparkContext.setLogLevel("WARN")
        configure(spark)
        manifest = run(spark, config)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the contract's error line
        error = translate(exc)
        if not isinstance(error, JobError):
            traceback.print_exc(file=sys.stderr)
    finally:
        if owned and spark is not None:
            spark.stop()

    if error is not None:
        report_error(f"{prog}: error: {error_line(error)}")
        return 1
    print(json.dumps(summarize(config, manifest)), flush=True)
    return 0
