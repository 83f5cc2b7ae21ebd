"""
### Bank batch scoring on a temporary EMR cluster

Scores a committed features dataset with a registered model and writes the
predictions as parquet: every feature row with `probability` and `predicted`,
computed by the same ONNX scorer the Lambda runs, so a row scores here exactly
as it would online. Runs when `bank_model_release` makes a model live (the
`bank_live_model` Asset), or by hand.

* **prepare_score**: which features (Param `features_manifest_uri`, else the
  newest `bank_features` event) and which model (Param `model_version`, else the
  triggering `bank_live_model` event, else `live.json`); checks both exist, stages
  the job, its py-files zip (bank_spark + bank_serving), the bootstrap script
  and the nodes' pinned wheels by content hash, and builds the step.
* **create_cluster** (setup; reuses the run's cluster on a retry) makes a Python
  3.11 with those wheels on every node (bootstrap action, no internet needed) and
  points driver and executors at it (`spark.pyspark.python`,
  `spark.pyspark.driver.python`); **terminate_cluster** (teardown) ends it
  whatever fails, also when it already ended with errors.
* **run_score** runs the scoring job (`bank_spark.batch_score_job`); a failed step fails
  **wait_for_score** with the job's `batch_score: error: ...` line.
* **validate_scores** checks the committed output against its manifest (rows in
  = rows out = the features' rows, same model and features) and emits the
  `bank_scores` Asset event.
* **flag_drift** emits the `bank_drift` Asset event when the job found a feature or the
  score drifted from the model's training data (population stability above
  `BANK_DRIFT_PSI_THRESHOLD`, default 0.2; the report, JSON and a page with each feature's
  bins, is beside the scores); otherwise it is skipped and says why.

Output: `s3://<lake>/scores/bank/run=<run id>/_manifest.json` and the parquet it
names. Rerunning a run replaces its output.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, chain, task

from bank_pipeline import assets, settings
from bank_pipeline.batch_score_tasks import PreparedScore
from bank_pipeline.spark_steps import cluster_params, transient_spark_step

CFG = settings.load()
DAG_ID = "bank_batch_score"


@task(multiple_outputs=True, inlets=[assets.FEATURES])
def prepare_score(params: dict, run_id: str, triggering_asset_events=None, inlet_events=None) -> PreparedScore:
    """Pick the features and the model, check they exist, stage the code, build the EMR step."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline import batch_score_tasks as batch_score
    from bank_pipeline.features_emr_tasks import resolve_features_manifest
    from bank_pipeline.model_registry import ModelRegistry

    s3 = S3Hook(aws_conn_id=CFG.aws_conn_id)
    features = resolve_features_manifest(
        params["features_manifest_uri"],
        [],
        inlet_events[assets.FEATURES] if inlet_events is not None else [],
        purpose="score",
    )
    model_version = batch_score.resolve_model_version(
        params["model_version"],
        # The accessor itself, not dict.get: Airflow 3.0's Asset is not hashable.
        triggering_asset_events[assets.LIVE_MODEL] if triggering_asset_events else [],
        ModelRegistry(s3, CFG.lake.models).live,
    )
    print(f"scoring {features} with model {model_version}")
    return batch_score.prepare(
        s3,
        CFG,
        run_id=run_id,
        features_manifest_uri=features,
        model_version=model_version,
        instance_type=params["instance_type"],
    )


@task(outlets=[assets.SCORES])
def validate_scores(
    output_uri: str,
    model_sha256: str,
    features_manifest_uri: str,
    features_manifest_sha256: str,
    features_rows: int,
    run_id: str,
    outlet_events=None,
) -> dict:
    """Check the committed scores against their manifest and this run's inputs; emit the Asset event."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.batch_score_tasks import validate_scores as validate

    committed = validate(
        S3Hook(aws_conn_id=CFG.aws_conn_id),
        output_uri,
        run_id=run_id,
        model_sha256=model_sha256,
        features_manifest_uri=features_manifest_uri,
        features_manifest_sha256=features_manifest_sha256,
        features_rows=features_rows,
    )
    outlet_events[assets.SCORES].extra = {
        "manifest_uri": committed.manifest_uri,
        "scores_uri": committed.scores_uri,
        "rows": committed.rows,
        "model_version": committed.model_version,
        "features_manifest_uri": committed.features_manifest_uri,
    }
    return committed.as_dict()


@task(outlets=[assets.DRIFT])
def flag_drift(validated: dict, outlet_events=None) -> dict:
    """Emit the bank_drift Asset event if the scored data drifted; skip (no event) if it did not."""
    from bank_pipeline.batch_score_tasks import drift_event
    from bank_pipeline.utils.compat import AirflowSkipException

    extra, why = drift_event(validated)
    print(why)
    if extra is None:
        raise AirflowSkipException(why)
    outlet_events[assets.DRIFT].extra = extra
    return extra


with DAG(
    dag_id=DAG_ID,
    description="Features parquet + the live model → batch scores parquet, on a temporary EMR cluster",
    doc_md=__doc__,
    schedule=[assets.LIVE_MODEL],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["bank", "emr", "spark", "scoring"],
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=1)},
    # InstanceCount must reach EMR as an int, not the string Jinja renders.
    render_template_as_native_obj=True,
    params={
        "features_manifest_uri": Param(
            "",
            type="string",
            pattern=r"^$|^s3://[a-z0-9.-]{3,63}/.+/_manifest\.json$",
            title="Features manifest",
            description="s3:// URI of a features _manifest.json; empty: the latest bank_features event.",
        ),
        "model_version": Param(
            "",
            type="string",
            pattern=r"^$|^[0-9a-f]{16}$",
            title="Model version",
            description="A registered version (16 hex digits); "
            "empty: the model that triggered the run, else the live one.",
        ),
        **cluster_params(),
    },  # fmt: skip
) as dag:
    prepared = prepare_score()

    emr = transient_spark_step(CFG, name="score", cluster_name="bank-batch-score", prepared=prepared)
    validated = validate_scores(
        prepared["output_uri"],
        prepared["model_sha256"],
        prepared["features_manifest_uri"],
        prepared["features_manifest_sha256"],
        prepared["features_rows"],
    )

    chain(prepared, emr.create_cluster, emr.add_step, emr.wait_for_step, [validated, emr.terminate_cluster])
    flag_drift(validated)
