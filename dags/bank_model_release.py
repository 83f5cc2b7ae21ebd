"""
### Bank model release: retrain, gate, register, and release to AWS Lambda

Runs when `bank_features_emr` emits a `bank_features` Asset event, or by hand.

* **resolve_features**: the features manifest to train on: the Param
  `features_manifest_uri` if given, else the triggering Asset event, else the
  Asset's latest event.
* **prepare_training**: checks the features and the nodes' wheelhouse (staged at
  deploy time, `python -m bank_pipeline.wheelhouse`) exist, stages the model build's
  code by content hash.
* **build_needed**: a build is keyed by what decides its outcome (the features manifest,
  the code, the hyperparameters, the gate's settings, the live model, the nodes'
  wheelhouse). When one with the same key is on record and its version registered, the
  cluster is skipped and its record read instead: a rerun after a failed deploy costs no
  cluster.
* **create_cluster** → **run_train** → **wait_for_train**, **terminate_cluster**
  (teardown): the model is built on a temporary EMR cluster (`bank_spark.train_job`):
  scikit-learn (one-hot + HistGradientBoosting) on a seeded stratified 20 % holdout,
  exported to ONNX (what serving runs; parity with scikit-learn is checked); ROC
  AUC, PR AUC and Brier beside the pyspark.ml baseline and beside the live model
  scored on the *same* holdout. The step registers the version in S3
  (`models/bank/<version>/`: model, metrics.json with lineage, model card, ROC and
  PR curves; versions are content hashes and immutable) and writes the candidate
  record. The worker never imports the ML stack.
* **read_candidate**: the record, checked against this run and the registry.
* **deploy_gate**: deploy only if ROC AUC ≥ `min_roc_auc` and not worse than the
  live model by more than `roc_auc_tolerance` (or `force_deploy`), as the build
  decided and recorded. Otherwise the rest is skipped and the log says why: a
  skipped branch, not a failed run.
* **push_image**: serving base image + one layer with the model, pushed through
  the registry API (no Docker daemon), tagged `<model version>-<base digest>` (never
  an existing tag moved: ECR's immutable tags); same model and base → same digest.
* **deploy_lambda**: refuse an image of another architecture than the function's;
  update the function to the image *by digest* (or create it and wait until it is
  Active), publish a version, wait until it is Active, smoke-test *that version*,
  and only then move the `live` alias. A failed smoke test leaves the alias alone.
* **lambda_url**: the `live` alias's function URL (auth `AWS_IAM`, or `NONE`
  when the Param `function_url_auth` says so, with both public statements Lambda
  requires: `lambda:InvokeFunctionUrl` and `lambda:InvokeFunction` through the
  URL), smoke-tested with a POST retried every few seconds while it is not
  answering yet; the release goes on only once it answers.
* **rollout_kubernetes**: after the URL answered. Refuse an image of another
  architecture than the Deployment's `kubernetes.io/arch` node selector; patch
  the Deployment's image to the same digest, wait for the rollout as `kubectl
  rollout status` judges it (deferred), roll back on failure with the stuck pods'
  reasons. Skipped, saying so, when no Kubernetes connection is configured (or it
  names no cluster).
* **revert_lambda**: the release is all-or-nothing. If any step after the alias
  moved failed (`lambda_url`, or `rollout_kubernetes`), move it back (or delete
  it on a first release) and fail saying which step failed and what was undone;
  skipped otherwise.
* **record_live**: `models/bank/live.json`, written only after every configured
  target serves the version, and the `bank_live_model` Asset event, which
  schedules `bank_batch_score`.

Which targets run is configuration (`BANK_RELEASE_TARGETS`: `lambda`,
`kubernetes` or both, default both), so the graph shows only what will run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, chain, task

from bank_pipeline import assets, settings
from bank_pipeline.model_release_tasks import SMOKE_RECORD, PreparedTraining, check_prediction
from bank_pipeline.operators.images import ModelImagePushOperator, PushedImage
from bank_pipeline.operators.kubernetes_rollout import KubernetesRolloutOperator, RolloutResult
from bank_pipeline.operators.lambda_deploy import LambdaAliasRevertOperator, LambdaImageDeployOperator
from bank_pipeline.operators.lambda_url import LambdaFunctionUrlOperator
from bank_pipeline.plans.lambda_release import LambdaRelease
from bank_pipeline.spark_steps import cluster_params, transient_spark_step

CFG = settings.load()
DAG_ID = "bank_model_release"


@task(inlets=[assets.FEATURES])
def resolve_features(params: dict, triggering_asset_events=None, inlet_events=None) -> str:
    """The manifest to train on: Param, else the triggering event, else the Asset's latest event."""
    from bank_pipeline.features_emr_tasks import resolve_features_manifest

    return resolve_features_manifest(
        params["features_manifest_uri"],
        # The accessor itself, not dict.get: Airflow 3.0's Asset is not hashable.
        triggering_asset_events[assets.FEATURES] if triggering_asset_events else [],
        inlet_events[assets.FEATURES] if inlet_events is not None else [],
        purpose="train on",
    )


@task(multiple_outputs=True)
def prepare_training(manifest_uri: str, params: dict, run_id: str) -> PreparedTraining:
    """Check the features and the nodes' wheelhouse, stage the model build, build its EMR step."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.model_release_tasks import prepare_training as prepare

    return prepare(
        S3Hook(aws_conn_id=CFG.aws_conn_id),
        CFG,
        manifest_uri=manifest_uri,
        hyperparameters=params["hyperparameters"],
        min_roc_auc=params["min_roc_auc"],
        roc_auc_tolerance=params["roc_auc_tolerance"],
        force_deploy=params["force_deploy"],
        run_id=run_id,
        instance_type=params["instance_type"],
    )


@task.short_circuit(ignore_downstream_trigger_rules=False)
def build_needed(reused: bool, built_by: str) -> bool:
    """Start the cluster only if no build of the same inputs is on record (the log says whose is)."""
    if reused:
        print(f"a build of the same features, code, settings and live model is on record (run {built_by}): no cluster")
    return not reused


# none_failed: it reads the record of a build this run skipped (build_needed) as well.
@task(multiple_outputs=True, trigger_rule="none_failed")
def read_candidate(candidate_uri: str, built_by: str, reused: bool) -> dict:
    """The candidate the build registered: its version, metrics, and the gate's decision."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.model_release_tasks import read_candidate as read
    from bank_pipeline.utils.compat import xcom_outputs

    trained = read(S3Hook(aws_conn_id=CFG.aws_conn_id), CFG, candidate_uri, run_id=built_by, reused=reused)
    print(f"model {trained['version']}: ROC AUC {trained['metrics']['roc_auc']:.4f}, gate: {trained['reason']}")
    return xcom_outputs(dict(trained))  # TrainedCandidate; live is None before the first release


@task.short_circuit
def deploy_gate(deploy: bool, reason: str) -> bool:
    """Go on to the release only if the gate passed; the log says why either way."""
    print(reason)
    return deploy


# none_failed: a Kubernetes rollout skipped for want of a connection still records the release.
@task(trigger_rule="none_failed", outlets=[assets.LIVE_MODEL])
def record_live(
    version: str,
    image: PushedImage,
    lambda_release: LambdaRelease | None,
    rollout: RolloutResult | None,
    outlet_events=None,
) -> dict:
    """Point models/bank/live.json at the version now released; the bank_live_model event schedules scoring."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.model_registry import ModelRegistry
    from bank_pipeline.model_release_tasks import live_record
    from bank_pipeline.utils.compat import timezone, xcom_outputs

    record = live_record(version, image, lambda_release, rollout, deployed_at=timezone.utcnow().isoformat())
    ModelRegistry(S3Hook(aws_conn_id=CFG.aws_conn_id), CFG.lake.models).set_live(record)
    outlet_events[assets.LIVE_MODEL].extra = {"version": version, "image_uri": image["image_uri"]}
    return xcom_outputs(record)  # a target that did not run is None; `-> dict` pushes each key


with DAG(
    dag_id=DAG_ID,
    description="Build the model on EMR from new features, gate it against the live model, release it to Lambda and Kubernetes",
    doc_md=__doc__,
    schedule=[assets.FEATURES],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["bank", "ml", "emr", "lambda", "release"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "min_roc_auc": Param(
            0.80,
            type="number",
            minimum=0.5,
            maximum=1,
            title="Minimum ROC AUC",
            description="Floor on the holdout ROC AUC below which nothing is deployed.",
        ),
        "roc_auc_tolerance": Param(
            0.005,
            type="number",
            minimum=0,
            maximum=0.1,
            title="Tolerance vs live",
            description="Deploy only if the new ROC AUC is at most this much below the live model's, on the same holdout.",
        ),
        "force_deploy": Param(
            False,
            type="boolean",
            title="Force deploy",
            description="Deploy even if the gate fails (the reason is still recorded).",
        ),
        "features_manifest_uri": Param(
            "",
            type="string",
            pattern=r"^$|^s3://[a-z0-9.-]{3,63}/.+/_manifest\.json$",
            title="Features manifest",
            description="s3:// URI of a features _manifest.json; empty: the latest bank_features event.",
        ),
        "function_url_auth": Param(
            "AWS_IAM",
            type="string",
            enum=["AWS_IAM", "NONE"],
            title="Function URL auth",
            description="AWS_IAM: callers sign with SigV4. NONE: anyone on the internet may call the URL.",
        ),
        "release_strategy": Param(
            "all_at_once",
            type="string",
            enum=["all_at_once", "canary", "linear"],
            title="Lambda release strategy",
            description="all_at_once; canary: the share below for the bake, then all; linear: that share more at "
            "each bake. Lambda: the alias's weights, judged on the new version's CloudWatch errors, throttles and "
            "p99; Kubernetes: a canary Deployment's share of the pods, judged on their own metrics (BANK_CANARY_* "
            "settings). A breach rolls it back.",
        ),
        "canary_percent": Param(
            10,
            type="number",
            exclusiveMinimum=0,
            exclusiveMaximum=100,
            title="Canary share (%)",
            description="The new version's share of the alias's traffic at each canary step.",
        ),
        "bake_seconds": Param(
            600,
            type="integer",
            minimum=0,
            maximum=86400,
            title="Bake (seconds)",
            description="How long each canary step is watched before the next (or the promotion).",
        ),
        "hyperparameters": Param(
            {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31, "l2_regularization": 1.0},
            type="object",
            title="Hyperparameters",
            description="HistGradientBoostingClassifier settings: learning_rate, max_iter, max_leaf_nodes, "
            "min_samples_leaf, l2_regularization.",
            properties={
                "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "max_iter": {"type": "integer", "minimum": 1, "maximum": 5000},
                "max_leaf_nodes": {"type": "integer", "minimum": 2, "maximum": 1024},
                "min_samples_leaf": {"type": "integer", "minimum": 1},
                "l2_regularization": {"type": "number", "minimum": 0},
            },
            additionalProperties=False,
        ),
        **cluster_params(core_instance_count=1),
    },  # fmt: skip
) as dag:
    manifest_uri = resolve_features()
    prepared = prepare_training(manifest_uri)
    needed = build_needed(prepared["reused"], prepared["built_by"])
    build = transient_spark_step(CFG, name="train", cluster_name="bank-train", prepared=prepared)
    candidate = read_candidate(prepared["candidate_uri"], prepared["built_by"], prepared["reused"])
    gate = deploy_gate(candidate["deploy"], candidate["reason"])
    version = candidate["version"]
    push_image = ModelImagePushOperator(
        task_id="push_image",
        version=version,
        registry_prefix=CFG.lake.models,
        registry=CFG.image_registry,
        repository=CFG.image_repository,
        base_tag=CFG.serving_base_tag,
        aws_conn_id=CFG.aws_conn_id,
        plain_http_registries=sorted(CFG.plain_http_registries),
    )
    image_uri = push_image.output["image_uri"]
    expect = {"statusCode": 200, "body": {"model_version": version}}
    deploy = url = rollout = None
    if "lambda" in CFG.release_targets:
        deploy = LambdaImageDeployOperator(
            task_id="deploy_lambda",
            aws_conn_id=CFG.aws_conn_id,
            function_name=CFG.lambda_function,
            image_uri=image_uri,
            alias="live",
            role_arn=CFG.lambda_role_arn or None,
            smoke_event={"records": [SMOKE_RECORD]},
            smoke_expect=expect,
            smoke_check=check_prediction,
            waiter_delay=CFG.poll_seconds,
            plain_http_registries=sorted(CFG.plain_http_registries),
            release_strategy="{{ params.release_strategy }}",
            canary_percent="{{ params.canary_percent }}",
            bake_seconds="{{ params.bake_seconds }}",
            canary_thresholds=CFG.canary_thresholds,
            canary_alarms=list(CFG.canary_alarms),
            bake_poll_seconds=CFG.poll_seconds,
            # A failed smoke test left the alias alone; retrying would test the same image again.
            retries=0,
        )
        # The alias's HTTP front door, once the alias moved. Its smoke POST retries every few
        # seconds (the operator's own interval), not at the waiters' poll_seconds.
        url = LambdaFunctionUrlOperator(
            task_id="lambda_url",
            aws_conn_id=CFG.aws_conn_id,
            function_name=CFG.lambda_function,
            alias="live",
            auth_type="{{ params.function_url_auth }}",
            smoke_body=SMOKE_RECORD,
            smoke_expect=expect,
            smoke_check=check_prediction,
            # Its smoke POST retries for a minute already; a failure moves the alias back at once.
            retries=0,
        )
    if "kubernetes" in CFG.release_targets:
        rollout = KubernetesRolloutOperator(
            task_id="rollout_kubernetes",
            image=image_uri,
            namespace=CFG.kubernetes_namespace,
            kubernetes_conn_id=CFG.kubernetes_conn_id,
            skip_without_connection=True,
            poll_interval=CFG.poll_seconds,
            aws_conn_id=CFG.aws_conn_id,  # to read an ECR image's architecture
            plain_http_registries=sorted(CFG.plain_http_registries),
            release_strategy="{{ params.release_strategy }}",
            canary_percent="{{ params.canary_percent }}",
            bake_seconds="{{ params.bake_seconds }}",
            canary_thresholds=CFG.canary_thresholds,
            retries=0,  # a failed rollout has already rolled back
        )
    live = record_live(
        version,
        push_image.output,
        deploy.output if deploy else None,
        rollout.output if rollout else None,
    )

    chain(manifest_uri, prepared, needed, build.create_cluster, build.add_step, build.wait_for_step)
    chain(build.wait_for_step, [candidate, build.terminate_cluster])
    # The release, in order: each step runs only if the one before it succeeded.
    chain(candidate, gate, push_image, *(t for t in (deploy, url, rollout) if t), live)
    if deploy:
        # All-or-nothing: if any step after the alias moved fails, the alias goes back.
        failures = {
            "lambda_url": "the function URL failed (task lambda_url says why)",
            "rollout_kubernetes": "the Kubernetes rollout failed (task rollout_kubernetes says why and what it rolled back)",
        }
        LambdaAliasRevertOperator(
            task_id="revert_lambda",
            aws_conn_id=CFG.aws_conn_id,
            release=deploy.output,
            steps={t.task_id: {"result": t.output, "failure": failures[t.task_id]} for t in (url, rollout) if t},
            trigger_rule="one_failed",
        )
