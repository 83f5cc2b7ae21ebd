"""
### Bank features on a temporary EMR cluster

Raw UCI bank-marketing CSV in S3 → a Spark step on a cluster made for this run
→ validated features parquet in S3 → an event on the `bank_features` Asset,
which schedules `bank_model_release`.

* **create_cluster** is a setup task and **terminate_cluster** its teardown: the
  cluster is terminated whatever fails, and its auto-termination idle timeout is
  a second guard.
* **run_features** runs `spark_jobs/bank_features.py`. Rows that do not parse go
  to a quarantine with their reason; the step fails when their share exceeds
  `max_quarantine_ratio`. A failed step fails **wait_for_features** with the
  step's FailureDetails and the tail of its stderr.
* **validate_features** checks the committed output against its manifest
  (row counts from the parquet footers) before the Asset event is emitted.

Output: `s3://<lake>/features/bank/run=<run id>/_manifest.json` and the parquet it
names. Rerunning a run replaces its output; rows are never duplicated.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
    EmrTerminateJobFlowOperator,
)
from airflow.sdk import DAG, Param, chain, task

from bank_pipeline import assets, settings
from bank_pipeline.emr import EmrStepSensorWithLogs, cluster_params, job_flow_overrides

CFG = settings.load()
DAG_ID = "bank_features_emr"
# The bundle ships spark_jobs/ beside dags/; compose mounts it the same way.
JOB_SCRIPT = Path(__file__).resolve().parents[1] / "spark_jobs" / "bank_features.py"
JOB_FLOW_OVERRIDES = job_flow_overrides(CFG, "bank-features")


@task(multiple_outputs=True)
def prepare_step(params: dict, run_id: str) -> dict:
    """Check the source exists, stage the job code by content hash, and build the EMR step."""
    import hashlib

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.emr import run_key, spark_step
    from bank_pipeline.errors import BadInputError
    from bank_pipeline.features import split_s3_uri

    s3 = S3Hook(aws_conn_id=CFG.aws_conn_id)
    source_uri = params["source_uri"]
    bucket, key = split_s3_uri(source_uri)
    head = s3.head_object(key, bucket_name=bucket)
    if head is None:
        raise BadInputError(f"source_uri {source_uri} does not exist")

    code = JOB_SCRIPT.read_bytes()
    code_bucket, code_prefix = split_s3_uri(CFG.code_prefix)
    code_key = f"{code_prefix}bank_features/{hashlib.sha256(code).hexdigest()[:16]}/{JOB_SCRIPT.name}"
    if not s3.check_for_key(code_key, bucket_name=code_bucket):
        s3.load_bytes(code, code_key, bucket_name=code_bucket)
    code_uri = f"s3://{code_bucket}/{code_key}"

    output_uri = f"{CFG.features_prefix}run={run_key(run_id)}/"
    etag = head["ETag"].strip('"')
    args = [
        "--input", source_uri,
        "--output", output_uri,
        "--run-id", run_id,
        "--max-quarantine-ratio", str(params["max_quarantine_ratio"]),
        "--input-etag", etag,
    ]  # fmt: skip
    # CANCEL_AND_WAIT, not TERMINATE_CLUSTER: the teardown terminates the cluster
    # after the sensor has read the step's logs.
    step = spark_step("bank_features", code_uri, args, action_on_failure="CANCEL_AND_WAIT")
    return {"steps": [step], "output_uri": output_uri, "source_etag": etag, "code_uri": code_uri}


@task(outlets=[assets.FEATURES])
def validate_features(
    output_uri: str, source_etag: str, params: dict, run_id: str, outlet_events=None
) -> dict:
    """Check the committed output against its manifest; emit the Asset event on success."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.features import validate_output

    committed = validate_output(
        S3Hook(aws_conn_id=CFG.aws_conn_id),
        output_uri,
        run_id=run_id,
        max_quarantine_ratio=params["max_quarantine_ratio"],
        input_etag=source_etag,
    )
    outlet_events[assets.FEATURES].extra = {
        "manifest_uri": committed.manifest_uri,
        "features_uri": committed.features_uri,
        "rows": committed.rows_out,
    }
    return committed.as_dict()


with DAG(
    dag_id=DAG_ID,
    description="Raw bank CSV → Spark on a temporary EMR cluster → validated features parquet",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["bank", "emr", "spark", "features"],
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=1)},
    # InstanceCount must reach EMR as an int, not the string Jinja renders.
    render_template_as_native_obj=True,
    params={
        "source_uri": Param(
            CFG.raw_bank_uri,
            type="string",
            pattern="^s3://[a-z0-9.-]{3,63}/.+",
            title="Source CSV",
            description="s3:// URI of the semicolon-separated bank CSV with its header row.",
        ),
        "max_quarantine_ratio": Param(
            0.01,
            type="number",
            minimum=0,
            maximum=1,
            title="Max quarantined share",
            description="Fail the run when more than this share of rows does not parse.",
        ),
        **cluster_params(),
    },
) as dag:
    prepared = prepare_step()

    create_cluster = EmrCreateJobFlowOperator(
        task_id="create_cluster",
        aws_conn_id=CFG.aws_conn_id,
        job_flow_overrides=JOB_FLOW_OVERRIDES,
    )
    run_features = EmrAddStepsOperator(
        task_id="run_features",
        aws_conn_id=CFG.aws_conn_id,
        job_flow_id=create_cluster.output,
        steps=prepared["steps"],
        # A retried add would run the job twice on the same cluster.
        retries=0,
    )
    wait_for_features = EmrStepSensorWithLogs(
        task_id="wait_for_features",
        aws_conn_id=CFG.aws_conn_id,
        job_flow_id=create_cluster.output,
        step_id="{{ ti.xcom_pull(task_ids='run_features')[0] }}",
        deferrable=True,
        poke_interval=CFG.poll_seconds,
        max_attempts=int(timedelta(hours=3).total_seconds() // CFG.poll_seconds),
    )
    validated = validate_features(prepared["output_uri"], prepared["source_etag"])
    terminate_cluster = EmrTerminateJobFlowOperator(
        task_id="terminate_cluster",
        aws_conn_id=CFG.aws_conn_id,
        job_flow_id=create_cluster.output,
        deferrable=True,
        waiter_delay=CFG.poll_seconds,
        waiter_max_attempts=max(20, 1200 // CFG.poll_seconds),
    ).as_teardown(setups=create_cluster)

    chain(prepared, create_cluster, run_features, wait_for_features, [validated, terminate_cluster])
