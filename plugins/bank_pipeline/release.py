"""What bank_model_release does besides wiring operators: train and register, then record what went live.

- ``train_and_register``: read the committed features, train a candidate
  (bank_ml), score the live model on the same holdout, decide the gate, write
  and register the version in the S3 registry.
- ``live_record``: live.json's content after a release.
- ``SMOKE_RECORD`` / ``check_prediction``: the smoke test a new Lambda version must pass.

Light at import (the DAG imports it at parse time): the ML libraries load when a task calls in.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from bank_pipeline.errors import BadInputError
from bank_pipeline.lake import arrow_s3, split_s3_uri
from bank_pipeline.registry import ModelRegistry

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.operators.images import PushedImage
    from bank_pipeline.operators.kubernetes import RolloutResult
    from bank_pipeline.operators.lambda_function import LambdaRelease

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
    """train_candidate's XCom (multiple outputs: the DAG reads version, deploy and reason)."""

    version: str
    registered: bool
    registry_uri: str
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    live: dict[str, Any] | None
    deploy: bool
    reason: str


def train_and_register(
    hook: S3Hook,
    registry_prefix: str,
    *,
    manifest_uri: str,
    hyperparameters: dict[str, Any],
    min_roc_auc: float,
    roc_auc_tolerance: float,
    force_deploy: bool,
    run_id: str,
) -> TrainedCandidate:
    """Train on the features ``manifest_uri`` commits, compare with the live model on the same holdout,
    decide the gate, and register the version (versions are content hashes: a retrain on the
    same data registers nothing new)."""
    from bank_ml import artifacts, data, gate, release
    from bank_ml.train import HyperParams
    from bank_pipeline.resources import code_version

    bucket, key = split_s3_uri(manifest_uri)
    if not hook.check_for_key(key, bucket_name=bucket):
        raise BadInputError(f"features manifest {manifest_uri} does not exist")
    manifest_bytes = hook.get_key(key, bucket_name=bucket).get()["Body"].read()
    manifest = json.loads(manifest_bytes)
    manifest_dir = f"s3://{bucket}/{posixpath.dirname(key)}"
    table = data.read_features(data.feature_paths(manifest, manifest_dir), filesystem=arrow_s3(hook))

    candidate = release.train_candidate(table, HyperParams.from_dict(hyperparameters))
    registry = ModelRegistry(hook, registry_prefix)
    live_record = registry.live()
    with tempfile.TemporaryDirectory() as tmp:
        live = None
        if live_record:
            live_dir = Path(tmp) / "live"
            for name in ("model.onnx", "model.json"):
                registry.download(live_record["version"], name, live_dir)
            live = release.score_live(live_dir, candidate)
        decision = gate.decide(
            candidate.metrics,
            live and live["metrics"],
            min_roc_auc=min_roc_auc,
            tolerance=roc_auc_tolerance,
            force_deploy=force_deploy,
        )
        lineage = {
            "features_uri": f"{manifest_dir}/{manifest['paths']['features']}",
            "features_manifest_uri": manifest_uri,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "code_version": code_version(),
            "run_id": run_id,
        }
        version = artifacts.write_version(
            tmp, candidate, lineage=lineage, baseline=manifest.get("baseline", {}), live=live, gate=decision
        )
        registered = registry.register(Path(tmp) / version, version)
    return {
        "version": version,
        "registered": registered,
        "registry_uri": registry.uri(version) + "/",
        "metrics": candidate.metrics,
        "baseline": manifest.get("baseline", {}),
        "live": live,
        "deploy": decision.deploy,
        "reason": decision.reason,
    }


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
