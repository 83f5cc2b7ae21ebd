"""
### Bank features on a temporary EMR cluster

Raw UCI bank-marketing CSV in S3 → a Spark step on a cluster made for this run
→ validated features parquet in S3 → an event on the `bank_features` Asset,
which schedules `bank_model_release`.

* **prepare_step** checks the source exists and stages the job, its py-files zip,
  the bootstrap script and the nodes' pinned wheels by content hash.
* **create_cluster** is a setup task and **terminate_cluster** its teardown: the
  cluster is terminated whatever fails (also when it already ended with errors),
  and its auto-termination idle timeout is a second guard. A retried
  create_cluster reuses the run's cluster. Every node runs the jobs' Python 3.11,
  made from the staged wheels by a bootstrap action; account settings (subnet,
  security groups, roles) come from the `emr_default` connection's extra,
  merged deeply under the DAG's overrides.
* **run_features** runs the features job (`bank_spark.features_job`). Rows that do not parse go
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

from airflow.sdk import DAG, Param, chain, task

from bank_pipeline import assets, settings
from bank_pipeline.features_emr_tasks import PreparedStep
from bank_pipeline.spark_steps import cluster_params, transient_spark_step

CFG = settings.load()
DAG_ID = "bank_features_emr"


@task(multiple_outputs=True)
def prepare_step(params: dict, run_id: str) -> PreparedStep:
    """Check the source exists, stage the job code by content hash, and build the EMR step."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline import features_emr_tasks as features

    return features.prepare_step(
        S3Hook(aws_conn_id=CFG.aws_conn_id),
        CFG,
        source_uri=params["source_uri"],
        run_id=run_id,
        max_quarantine_ratio=params["max_quarantine_ratio"],
        instance_type=params["instance_type"],
    )


@task(outlets=[assets.FEATURES])
def validate_features(output_uri: str, source_etag: str, params: dict, run_id: str, outlet_events=None) -> dict:
    """Check the committed output against its manifest; emit the Asset event on success."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.features_emr_tasks import validate_output

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
            CFG.lake.raw_input,
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
    emr = transient_spark_step(CFG, name="features", cluster_name="bank-features", prepared=prepared)
    validated = validate_features(prepared["output_uri"], prepared["source_etag"])

    chain(prepared, emr.create_cluster, emr.add_step, emr.wait_for_step, [validated, emr.terminate_cluster])
