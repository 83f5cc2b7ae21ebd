"""EMR under devstack: cluster lifecycle, real spark-submit steps, failures, termination.

Real Spark steps cost a JVM start each (~2 s without a SparkSession, ~10 s
with one on 2 cores), so the suite runs four: one real Spark job, and scripts
that fail or sleep before creating a session (one of them in the CLI test).
Steps that devstack refuses (not spark-submit) fail at once, without a JVM:
the ActionOnFailure tests use those.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import pytest

from devstack import Devstack
from tests.support.devstack_helpers import (
    SLEEPING,
    cluster_state,
    new_cluster,
    put_script,
    session_others,
    spark_step,
    step_processes,
    step_states,
    wait_until,
)

pytestmark = pytest.mark.integration

ENDED = ("COMPLETED", "FAILED", "CANCELLED")

# Reads and writes s3:// itself (S3A, as EMRFS on EMR): parquet through Spark, a file
# deleted and a manifest written through the Hadoop FileSystem API, as the bundle's jobs do.
JOB = """\
import argparse, json
from pyspark.sql import SparkSession

parser = argparse.ArgumentParser()
parser.add_argument("--input")
parser.add_argument("--output")
args = parser.parse_args()
spark = SparkSession.builder.appName("devstack-test").getOrCreate()
df = spark.read.option("header", True).option("sep", ";").csv(args.input)
df.filter(df.y == "yes").write.mode("overwrite").parquet(args.output + "_attempts/a1/features")
jvm = spark._jvm
out = jvm.org.apache.hadoop.fs.Path(args.output)
fs = out.getFileSystem(spark._jsc.hadoopConfiguration())
print("filesystem", fs.getClass().getName(), fs.getUri().toString())
fs.delete(jvm.org.apache.hadoop.fs.Path(out, "stale.txt"), False)
stream = fs.create(jvm.org.apache.hadoop.fs.Path(out, "_manifest.json"), True)
stream.write(bytearray(json.dumps({"rows": df.count()}).encode()))
stream.close()
spark.stop()
"""

FAIL_MESSAGE = "bank_features: error: column 'age' has 3 non-integer values"
FAILING = f"""\
import sys

print("reading input")
print("Traceback-looking noise: ValueError somewhere", file=sys.stderr)
print({FAIL_MESSAGE!r}, file=sys.stderr)
sys.exit(2)
"""


def _gunzip(s3: Any, bucket: str, key: str) -> str:
    return gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).decode()


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _step_ids(emr: Any, cluster_id: str, *names: str) -> list[str]:
    by_name = {s["Name"]: s["Id"] for s in emr.list_steps(ClusterId=cluster_id)["Steps"]}
    return [by_name[n] for n in names]


# -- cluster lifecycle (no Spark) ------------------------------------------------


@pytest.mark.timeout(60)
def test_cluster_starts_waits_and_terminates_observably(emr: Any) -> None:
    cluster_id = new_cluster(emr)
    assert cluster_state(emr, cluster_id) == "STARTING"
    _, seen = wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s == "WAITING")
    assert seen[0] == "STARTING" and seen[-1] == "WAITING"
    assert set(seen) <= {"STARTING", "BOOTSTRAPPING", "WAITING"}
    assert emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["Timeline"]["ReadyDateTime"]

    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    status = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]
    assert status["State"] == "TERMINATING"
    assert status["StateChangeReason"]["Code"] == "USER_REQUEST"
    # botocore's own waiter, as Airflow's job_flow_terminated waiter does.
    emr.get_waiter("cluster_terminated").wait(ClusterId=cluster_id, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    assert cluster_state(emr, cluster_id) == "TERMINATED"
    with pytest.raises(emr.exceptions.ClientError, match="may not be modified"):
        emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[spark_step("late", "s3://x/job.py")])


@pytest.mark.timeout(60)
def test_cluster_without_steps_terminates_unless_kept_alive(emr: Any) -> None:
    cluster_id = emr.run_job_flow(
        Name="auto-terminate",
        ReleaseLabel="emr-7.12.0",
        Instances={"InstanceCount": 1, "MasterInstanceType": "m5.xlarge", "KeepJobFlowAliveWhenNoSteps": False},
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    _, seen = wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s.startswith("TERMINATED"))
    assert seen[-2:] == ["TERMINATING", "TERMINATED"]
    reason = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["StateChangeReason"]
    assert reason["Code"] == "ALL_STEPS_COMPLETED"


@pytest.mark.timeout(60)
def test_idle_timeout_terminates_a_forgotten_cluster(emr: Any) -> None:
    cluster_id = new_cluster(emr, AutoTerminationPolicy={"IdleTimeout": 1})
    _, seen = wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s.startswith("TERMINATED"))
    assert seen[-3:] == ["WAITING", "TERMINATING", "TERMINATED"]
    reason = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["StateChangeReason"]
    assert "IdleTimeout" in reason["Message"]


@pytest.mark.timeout(60)
def test_steps_other_than_spark_submit_fail_clearly(emr: Any, s3: Any, bucket: str) -> None:
    cluster_id = new_cluster(emr, log_uri=f"s3://{bucket}/logs/")
    step_ids = emr.add_job_flow_steps(
        JobFlowId=cluster_id,
        Steps=[
            {"Name": "jar", "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": f"s3://{bucket}/my.jar"}},
            {
                "Name": "bash",
                "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["bash", "-c", "echo hi"]},
            },
        ],
    )["StepIds"]
    wait_until(lambda: step_states(emr, cluster_id, step_ids), lambda s: all(x in ENDED for x in s))
    for step_id in step_ids:
        status = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]
        assert status["State"] == "FAILED"
        assert (
            "devstack only runs command-runner.jar steps whose Args start with spark-submit"
            in (status["FailureDetails"]["Message"])
        )
        assert status["FailureDetails"]["LogFile"] == f"s3://{bucket}/logs/{cluster_id}/steps/{step_id}/stderr.gz"
    wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s == "WAITING")  # CONTINUE
    emr.terminate_job_flows(JobFlowIds=[cluster_id])


# -- real spark-submit steps -----------------------------------------------------


@pytest.fixture(scope="module")
def spark_run(emr: Any, s3: Any, bucket: str) -> dict[str, Any]:
    """A real Spark job followed by a failing one, on one cluster; polled to the end."""
    s3.put_object(Bucket=bucket, Key="in/bank.csv", Body=b"age;y\n30;yes\n41;no\n52;yes\n23;yes\n")
    s3.put_object(Bucket=bucket, Key="out/stale.txt", Body=b"from an older run")
    s3.put_object(Bucket=bucket, Key="out/keep.txt", Body=b"left alone")
    job = put_script(s3, bucket, "code/job.py", JOB)
    failing = put_script(s3, bucket, "code/failing.py", FAILING)
    before = {k: s3.head_object(Bucket=bucket, Key=k)["LastModified"] for k in ("in/bank.csv", "out/keep.txt")}

    cluster_id = new_cluster(emr, log_uri=f"s3://{bucket}/emr-logs")  # no trailing slash, on purpose
    step_ids = emr.add_job_flow_steps(
        JobFlowId=cluster_id,
        Steps=[
            spark_step("features", job, "--input", f"s3://{bucket}/in/bank.csv", "--output", f"s3://{bucket}/out/"),
            spark_step("failing", "--conf", "spark.executor.memory=1g", failing, "--input", f"s3://{bucket}/in/"),
        ],
    )["StepIds"]
    _, seen = wait_until(
        lambda: (cluster_state(emr, cluster_id), *step_states(emr, cluster_id, step_ids)),
        lambda s: all(x in ENDED for x in s[1:]),
        timeout=150,
    )
    steps = [emr.describe_step(ClusterId=cluster_id, StepId=i)["Step"] for i in step_ids]
    final_cluster = wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s == "WAITING")[0]
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    return {"cluster_id": cluster_id, "step_ids": step_ids, "seen": seen, "steps": steps,
            "before": before, "final_cluster": final_cluster}  # fmt: skip


@pytest.mark.timeout(180)
def test_spark_step_goes_pending_running_completed(spark_run: dict[str, Any]) -> None:
    seen = spark_run["seen"]
    first = [s[1] for s in seen]
    assert [x for i, x in enumerate(first) if i == 0 or first[i - 1] != x] == ["PENDING", "RUNNING", "COMPLETED"]
    # The cluster is RUNNING while a step runs; the two steps never run together.
    assert any(s[0] == "RUNNING" and "RUNNING" in s[1:] for s in seen)
    assert not any(s[1] == s[2] == "RUNNING" for s in seen)
    assert spark_run["steps"][0]["Status"]["State"] == "COMPLETED"
    assert spark_run["final_cluster"] == "WAITING"


@pytest.mark.timeout(180)
def test_steps_run_in_submission_order(spark_run: dict[str, Any]) -> None:
    first, second = (s["Status"]["Timeline"] for s in spark_run["steps"])
    assert first["StartDateTime"] < first["EndDateTime"] <= second["StartDateTime"] < second["EndDateTime"]


@pytest.mark.timeout(180)
def test_the_job_reads_and_writes_s3_itself(spark_run: dict[str, Any], s3: Any, bucket: str) -> None:
    import pyarrow.parquet as pq

    keys = _keys(s3, bucket, "out/")
    assert "out/stale.txt" not in keys  # deleted by the job -> deleted in S3
    assert "out/keep.txt" in keys
    parts = [k for k in keys if k.startswith("out/_attempts/a1/features/part-") and k.endswith(".parquet")]
    assert parts and not [k for k in keys if k.endswith(".crc")]
    rows = sum(pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())).num_rows for k in parts)
    assert rows == 3
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="out/_manifest.json")["Body"].read())
    assert manifest == {"rows": 4}
    # What the job only read is untouched.
    for key, modified in spark_run["before"].items():
        assert s3.head_object(Bucket=bucket, Key=key)["LastModified"] == modified
    # s3:// is Hadoop's S3A client, not a local copy.
    cluster_id, step_id = spark_run["cluster_id"], spark_run["step_ids"][0]
    stdout = _gunzip(s3, bucket, f"emr-logs/{cluster_id}/steps/{step_id}/stdout.gz")
    assert f"filesystem org.apache.hadoop.fs.s3a.S3AFileSystem s3://{bucket}" in stdout
    controller = _gunzip(s3, bucket, f"emr-logs/{cluster_id}/steps/{step_id}/controller.gz")
    assert "devstack: --deploy-mode cluster recorded; devstack runs every step in client mode" in controller


@pytest.mark.timeout(180)
def test_failing_step_reports_its_error_line_and_logs(spark_run: dict[str, Any], s3: Any, bucket: str) -> None:
    cluster_id, step_id = spark_run["cluster_id"], spark_run["step_ids"][1]
    status = spark_run["steps"][1]["Status"]
    assert status["State"] == "FAILED"
    details = status["FailureDetails"]
    assert details["Message"] == FAIL_MESSAGE
    assert details["Reason"] == "Step failed with exit code 2"
    prefix = f"emr-logs/{cluster_id}/steps/{step_id}/"
    assert details["LogFile"] == f"s3://{bucket}/{prefix}stderr.gz"
    assert {f"{prefix}{name}.gz" for name in ("stdout", "stderr", "controller")} <= set(_keys(s3, bucket, prefix))
    # Spark's log4j output is in stderr.gz; the Python driver's output is in
    # stdout.gz (spark-submit's PythonRunner merges its stderr into stdout).
    assert "ShutdownHookManager" in _gunzip(s3, bucket, f"{prefix}stderr.gz")
    assert FAIL_MESSAGE in _gunzip(s3, bucket, f"{prefix}stdout.gz")


# -- ActionOnFailure and termination ---------------------------------------------


UNSUPPORTED = {"Jar": "s3://nowhere/fails-at-once.jar"}  # fails without a JVM start


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("action", "cluster_end"),
    [("TERMINATE_CLUSTER", "TERMINATED_WITH_ERRORS"), ("CANCEL_AND_WAIT", "WAITING"), ("CONTINUE", "WAITING")],
)
def test_action_on_failure(emr: Any, action: str, cluster_end: str) -> None:
    steps = [
        {"Name": "fails", "ActionOnFailure": action, "HadoopJarStep": UNSUPPORTED},
        {"Name": "next", "ActionOnFailure": "CONTINUE", "HadoopJarStep": UNSUPPORTED},
    ]
    cluster_id = new_cluster(emr, steps=steps)
    step_ids = _step_ids(emr, cluster_id, "fails", "next")
    states, _ = wait_until(lambda: step_states(emr, cluster_id, step_ids), lambda s: all(x in ENDED for x in s))
    assert states == ("FAILED", "FAILED" if action == "CONTINUE" else "CANCELLED")
    _, seen = wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s == cluster_end)
    if action == "TERMINATE_CLUSTER":
        assert seen[-2:] == ["TERMINATING", "TERMINATED_WITH_ERRORS"]
        reason = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["StateChangeReason"]
        assert reason["Code"] == "STEP_FAILURE"
    else:
        emr.terminate_job_flows(JobFlowIds=[cluster_id])


@pytest.mark.timeout(90)
def test_terminate_kills_the_running_step(ds: Devstack, emr: Any, s3: Any, bucket: str) -> None:
    sleeping = put_script(s3, bucket, "code/sleeping.py", SLEEPING)
    cluster_id = new_cluster(emr, steps=[spark_step("sleeps", sleeping), spark_step("pending", sleeping)])
    step_ids = _step_ids(emr, cluster_id, "sleeps", "pending")
    wait_until(lambda: step_states(emr, cluster_id, step_ids), lambda s: s[0] == "RUNNING")
    wait_until(lambda: step_processes(ds, "sleeping.py"), lambda kinds: kinds == ["java", "python"])
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    assert cluster_state(emr, cluster_id) == "TERMINATING"
    _, seen = wait_until(lambda: cluster_state(emr, cluster_id), lambda s: s == "TERMINATED")
    assert seen == ["TERMINATING", "TERMINATED"]
    assert step_states(emr, cluster_id, step_ids) == ("CANCELLED", "CANCELLED")
    assert session_others(ds) == []  # no spark-submit, JVM or Python worker left
