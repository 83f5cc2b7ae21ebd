"""The book's chapter 6 example on devstack: a Spark step submitted with the AWS CLI's
`aws emr add-steps --steps Type=Spark,...`, reading and writing s3:// through Spark itself."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devstack import Devstack
from tests.support.devstack_helpers import new_cluster, wait_until
from tests.support.paths import BANK_CSV

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCRIPT = Path(__file__).with_name("book") / "spark_bank_step.py"


def aws_cli(ds: Devstack, *args: str) -> subprocess.CompletedProcess[str]:
    """The AWS CLI (from PyPI) against devstack, as a user would type it."""
    aws = Path(sys.executable).parent / "aws"
    env = {**os.environ, **ds.env(), "AWS_PAGER": ""}
    return subprocess.run([str(aws), *args], env=env, capture_output=True, text=True, timeout=60)


def add_spark_step(ds: Devstack, cluster_id: str, args: list[str]) -> str:
    result = aws_cli(
        ds, "emr", "add-steps", "--cluster-id", cluster_id,
        "--steps", f"Type=Spark,Name=bank-book-step,ActionOnFailure=CONTINUE,Args=[{','.join(args)}]",
        "--query", "StepIds[0]", "--output", "text",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def finish(emr: Any, cluster_id: str, step_id: str) -> dict[str, Any]:
    wait_until(
        lambda: emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]["State"],
        lambda state: state in ("COMPLETED", "FAILED", "CANCELLED"),
        timeout=240,
    )
    return emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]


@pytest.fixture(scope="module")
def book_cluster(ds: Devstack, emr: Any, s3: Any) -> Any:
    bucket = f"book-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(BANK_CSV), bucket, "data/bank.csv")
    s3.upload_file(str(SCRIPT), bucket, "code/spark_bank_step.py")
    cluster_id = new_cluster(emr, log_uri=f"s3://{bucket}/logs/")
    yield bucket, cluster_id
    emr.terminate_job_flows(JobFlowIds=[cluster_id])


def test_the_books_chapter_6_step_writes_4521_labelled_rows(ds: Devstack, emr: Any, s3: Any, book_cluster: Any) -> None:
    bucket, cluster_id = book_cluster
    step_id = add_spark_step(ds, cluster_id, [
        "--deploy-mode", "cluster",  # the book's clusters run the driver on YARN; accepted and recorded
        f"s3://{bucket}/code/spark_bank_step.py",
        "--input_path", f"s3://{bucket}/data/bank.csv",
        "--output_path", f"s3://{bucket}/results.parquet",
    ])  # fmt: skip
    step = finish(emr, cluster_id, step_id)
    assert step["Status"]["State"] == "COMPLETED", step["Status"]
    assert step["Config"]["Jar"] == "command-runner.jar" and step["Config"]["Args"][0] == "spark-submit"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="results.parquet/")["Contents"]]
    parts = [k for k in keys if k.endswith(".parquet")]
    table = pa.concat_tables(
        [pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())) for k in parts]
    )
    assert table.num_rows == 4521
    assert table.schema.field("age").type == pa.int32()  # inferSchema read the ints as ints
    assert set(table.column("label").to_pylist()) == {0, 1}
    assert sum(table.column("label").to_pylist()) == sum(1 for v in table.column("y").to_pylist() if v == "yes")


def test_a_missing_input_fails_with_sparks_own_error_naming_the_s3_uri(
    ds: Devstack, emr: Any, book_cluster: Any
) -> None:
    bucket, cluster_id = book_cluster
    missing = f"s3://{bucket}/data/absent.csv"
    step_id = add_spark_step(ds, cluster_id, [
        f"s3://{bucket}/code/spark_bank_step.py", "--input_path", missing,
        "--output_path", f"s3://{bucket}/never.parquet",
    ])  # fmt: skip
    step = finish(emr, cluster_id, step_id)
    assert step["Status"]["State"] == "FAILED"
    message = step["Status"]["FailureDetails"]["Message"]
    assert "PATH_NOT_FOUND" in message and missing in message, message
