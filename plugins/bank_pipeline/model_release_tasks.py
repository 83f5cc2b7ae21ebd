"""What bank_model_release does besides wiring operators: build the model on EMR, then record what went live.

- ``prepare_training``: check the features and the nodes' wheelhouse, stage the model
  build (``bank_spark.train_job``: train, compare with the live model on the same holdout,
  export to ONNX, write the card and plots, register) and build its EMR step; or, when a
  build of the same inputs is on record, name its record instead: no cluster.
- ``read_candidate``: the candidate record the step wrote, which the gate reads.
- ``live_record``: live.json's content after a release.
- ``SMOKE_RECORD`` / ``check_prediction``: the smoke test a new Lambda version must pass.

Orchestration only: nothing here (nor anything it imports) needs the ML stack.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import TYPE_CHECKING, Any, TypedDict, cast

from bank_pipeline import spark_steps
from bank_pipeline.errors import BadInputError, CandidateInvalidError
from bank_pipeline.lake import MANIFEST_NAME, read_json, split_s3_uri
from bank_pipeline.model_registry import ModelRegistry
from bank_pipeline.resources import code_version

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.operators.images import PushedImage
    from bank_pipeline.operators.kubernetes_rollout import RolloutResult
    from bank_pipeline.plans.lambda_release import LambdaRelease
    from bank_pipeline.settings import Settings

JOB = "bank_train"

# A client known before the call; the smoke test checks the answer's shape and version.
SMOKE_RECORD: dict[str, Any] = {
    "age": 41, "job": "management", "marital": "married", "education": "tertiary", "default": "no",
    "balance": 1270, "housing": "yes", "loan": "no", "contact": "cellular", "day": 15, "month": "may",
    "campaign": 2, "pdays": -1, "previous": 0, "poutcome": "unknown",
}  # fmt: skip


def check_prediction(answer: dict[str, Any]) -> str | None:
    """The smoke answer holds one prediction: a probability in [0, 1] and a 0/1 label."""
    predictions = (answer.get("body") or {}).get("predictions")
    if not isinstance(predictions, list) or len(predictions) != 1:
        return f"expected one prediction, got {predictions!r}"
    p = predictions[0]
    if not (isinstance(p.get("probability"), float) and 0.0 <= p["probability"] <= 1.0 and p.get("label") in (0, 1)):
        return f"malformed prediction {p!r}"
    return None


class TrainedCandidate(TypedDict):
    """read_candidate's XCom (multiple outputs: the DAG reads version, deploy and reason)."""

    version: str
    registered: bool
    registry_uri: str
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    live: dict[str, Any] | None
    deploy: bool
    reason: str
    phase_seconds: dict[str, float]


class PreparedTraining(TypedDict):
    """prepare_training's XCom: the EMR step, what the cluster's bootstrap needs, and where the record lands.

    ``built_by`` is the run whose build the record is: this run's, or an earlier run's whose build
    had the same inputs (then ``reused`` and no cluster is needed).
    """

    steps: list[dict[str, Any]]
    candidate_uri: str
    bootstrap_uri: str
    wheelhouse_uri: str
    code_uri: str
    built_by: str
    reused: bool


def candidate_uri(cfg: Settings, run_id: str) -> str:
    """The candidate record of ``run_id``'s model build."""
    return cfg.lake.candidate(run_id)


def build_key(build_args: list[str], manifest: bytes, live_version: str | None, wheelhouse_uri: str) -> str:
    """What decides a model build's outcome, hashed: the same key, the same record.

    The step's arguments that do not name the run (features, registry, code version,
    hyperparameters, the gate's settings), the features manifest's bytes (a rerun of a
    features run rewrites it), the live model the build compares with, and the nodes'
    wheelhouse (their library versions). Training is seeded, so these fix the model.
    """
    inputs = {
        "args": build_args,
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "live": live_version,
        "wheelhouse": wheelhouse_uri,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def prepare_training(
    hook: S3Hook,
    cfg: Settings,
    *,
    manifest_uri: str,
    hyperparameters: dict[str, Any],
    min_roc_auc: float,
    roc_auc_tolerance: float,
    force_deploy: bool,
    run_id: str,
    instance_type: str,
) -> PreparedTraining:
    """Check the features and the nodes' wheelhouse exist, stage the model build's code, build its EMR step.

    When a build with the same inputs (``build_key``) recorded a version the registry still
    holds, its record is named instead and ``reused`` is set: the DAG then starts no cluster.
    """
    bucket, key = split_s3_uri(manifest_uri)
    if posixpath.basename(key) != MANIFEST_NAME:
        raise BadInputError(f"features_manifest_uri must name a {MANIFEST_NAME}, got {manifest_uri}")
    if not hook.check_for_key(key, bucket_name=bucket):
        raise BadInputError(f"features manifest {manifest_uri} does not exist")
    wheels = spark_steps.require_wheelhouse(hook, cfg.lake.code, instance_type)
    staged = spark_steps.stage_job(hook, cfg.lake.code, JOB)
    record = candidate_uri(cfg, run_id)
    build_args = [
        "--features", f"s3://{bucket}/{posixpath.dirname(key)}/",
        "--registry", cfg.lake.models,
        "--code-version", code_version(),
        "--hyperparameters", json.dumps(hyperparameters, sort_keys=True),
        "--min-roc-auc", str(min_roc_auc),
        "--roc-auc-tolerance", str(roc_auc_tolerance),
        *(["--force-deploy"] if force_deploy else []),
    ]  # fmt: skip
    registry = ModelRegistry(hook, cfg.lake.models)
    live = (registry.live() or {}).get("version")
    build = cfg.lake.build(build_key(build_args, hook.read_key(key, bucket_name=bucket).encode(), live, wheels))
    built_by = _reusable_build(hook, registry, build)
    args = [*build_args, "--output", record, "--run-id", run_id, "--build-record", build]
    return {
        "steps": [spark_steps.job_step("bank_train", staged, args)],
        "candidate_uri": build if built_by else record,
        "bootstrap_uri": staged.bootstrap_uri,
        "wheelhouse_uri": wheels,
        "code_uri": staged.script_uri,
        "built_by": built_by or run_id,
        "reused": built_by is not None,
    }


def _reusable_build(hook: S3Hook, registry: ModelRegistry, build_uri: str) -> str | None:
    """The run whose build is on record at ``build_uri``, if the registry still holds its version whole."""
    try:
        record = read_json(hook, build_uri, CandidateInvalidError, missing=None)
    except CandidateInvalidError:
        return None  # not a record a build wrote whole: build again, which rewrites it
    if not isinstance(record, dict) or not isinstance(record.get("version"), str):
        return None
    run = record.get("run_id")
    if not isinstance(run, str) or not run or registry.model_info(record["version"]) is None:
        return None
    return run


def read_candidate(
    hook: S3Hook, cfg: Settings, record_uri: str, *, run_id: str, reused: bool = False
) -> TrainedCandidate:
    """The candidate record ``run_id``'s model build wrote, checked against that run and the registry.

    ``run_id`` is this run, or the earlier run whose build this one reuses (``reused``).

    Raises CandidateInvalidError when the record is missing, for another run, or names a
    version the registry does not hold whole (model.json is written last).
    """
    record = read_json(hook, record_uri, CandidateInvalidError, missing="the model build wrote no candidate record")
    if not isinstance(record, dict):
        raise CandidateInvalidError(f"{record_uri}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in TrainedCandidate.__annotations__ if k not in record]
    if missing:
        raise CandidateInvalidError(f"{record_uri} lacks {', '.join(missing)}")
    if record.get("run_id") != run_id:
        raise CandidateInvalidError(f"{record_uri} is for run {record.get('run_id')!r}, not {run_id!r}")
    version = record["version"]
    registry = ModelRegistry(hook, cfg.lake.models)
    if not isinstance(version, str) or registry.model_info(version) is None:
        raise CandidateInvalidError(f"{record_uri} names version {version!r}, which the registry does not hold")
    trained = cast(TrainedCandidate, {k: record[k] for k in TrainedCandidate.__annotations__})
    if reused:
        trained["registered"] = False  # this run registered nothing: an earlier build had
    return trained


def live_record(
    version: str,
    image: PushedImage,
    deployed: LambdaRelease | None,
    rollout: RolloutResult | None,
    deployed_at: str,
) -> dict[str, Any]:
    """live.json's content: the version, its image, and where it runs (a target that did not run is None)."""
    return {
        "version": version,
        "image_uri": image["image_uri"],
        "lambda_function": deployed["function_name"] if deployed else None,
        "lambda_version": deployed["version"] if deployed else None,
        "lambda_alias": deployed["alias"] if deployed else None,
        "kubernetes_deployment": rollout["deployment"] if rollout else None,
        "kubernetes_namespace": rollout["namespace"] if rollout else None,
        "deployed_at": deployed_at,
    }
