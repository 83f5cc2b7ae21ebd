"""What bank_batch_score does besides wiring operators.

- Which model a run scores with (Param, Asset event, live.json); the features
  come from ``features.resolve_features_manifest``.
- What the step needs staged: the job (``spark_steps.stage_job``), and the nodes' wheelhouse
  the deployment staged (``spark_steps.require_wheelhouse``), as the features job.
- The check of the committed scores.

Light at import (the DAG imports it at parse time): no pandas, pyarrow or boto3
until a task calls in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from bank_pipeline import spark_steps
from bank_pipeline.errors import BadInputError, ScoresInvalidError
from bank_pipeline.features_emr_tasks import newest_extra
from bank_pipeline.lake import MANIFEST_NAME, parquet_problems, read_manifest, split_s3_uri

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.settings import Settings

JOB = "batch_score"


# --------------------------------------------------------------------------- inputs


def output_uri(cfg: Settings, run_id: str) -> str:
    """This run's own output directory, under the bank_scores Asset's URI."""
    return cfg.lake.scores_run(run_id)


def resolve_model_version(
    param: str, live_model_events: Iterable[Any], live: Callable[[], Mapping[str, Any] | None]
) -> str:
    """The model to score with: the Param, else the triggering bank_live_model event's, else live.json's.

    The triggering event wins over live.json: a later release must not change
    what an earlier event's run scores with. `live` reads live.json, only when needed.
    """
    if param:
        return param
    found = newest_extra(live_model_events, "version")
    if found:
        return found
    record = live()
    if record and record.get("version"):
        return str(record["version"])
    raise BadInputError(
        "no model to score with: nothing is live yet; run bank_model_release first, or give model_version"
    )


# --------------------------------------------------------------------------- prepare


class PreparedScore(TypedDict):
    """prepare_score's XCom: the EMR step, where its code went, and what validation checks against."""

    steps: list[dict[str, Any]]
    output_uri: str
    bootstrap_uri: str
    wheelhouse_uri: str
    code_uri: str
    features_manifest_uri: str
    features_manifest_sha256: str
    features_rows: int
    model_version: str
    model_sha256: str


def prepare(
    hook: S3Hook,
    cfg: Settings,
    *,
    run_id: str,
    features_manifest_uri: str,
    model_version: str,
    instance_type: str,
) -> PreparedScore:
    """Check that the inputs exist, stage the code, and build the step; what the later tasks need."""
    from bank_pipeline.model_registry import COMMIT_FILE, ModelRegistry

    bucket, key = split_s3_uri(features_manifest_uri)
    if posixpath.basename(key) != MANIFEST_NAME:
        raise BadInputError(f"features_manifest_uri must name a {MANIFEST_NAME}, got {features_manifest_uri}")
    if not hook.check_for_key(key, bucket_name=bucket):
        raise BadInputError(f"features manifest {features_manifest_uri} does not exist")
    manifest_bytes = hook.get_key(key, bucket_name=bucket).get()["Body"].read()
    try:
        features_rows = int(json.loads(manifest_bytes)["rows"]["out"])
    except (ValueError, KeyError, TypeError) as err:
        raise BadInputError(f"features manifest {features_manifest_uri} has no rows.out: {err!r}") from err

    registry = ModelRegistry(hook, cfg.lake.models)
    info = registry.model_info(model_version)
    if info is None:
        raise BadInputError(
            f"model version {model_version} is not registered: "
            f"{registry.uri(model_version, COMMIT_FILE)} does not exist"
        )
    if not isinstance(info.get("sha256"), str):
        raise BadInputError(f"model version {model_version}: {registry.uri(model_version, COMMIT_FILE)} has no sha256")

    wheels = spark_steps.require_wheelhouse(hook, cfg.lake.code, instance_type)
    code = spark_steps.stage_job(hook, cfg.lake.code, JOB)
    output = output_uri(cfg, run_id)
    args = [
        "--features", f"s3://{bucket}/{posixpath.dirname(key)}/",
        "--model", registry.uri(model_version) + "/",
        "--output", output,
        "--run-id", run_id,
        "--psi-threshold", f"{cfg.drift_psi_threshold:g}",
    ]  # fmt: skip
    return {
        "steps": [spark_steps.job_step("bank_batch_score", code, args)],
        "output_uri": output,
        "bootstrap_uri": code.bootstrap_uri,
        "wheelhouse_uri": wheels,
        "code_uri": code.script_uri,
        "features_manifest_uri": features_manifest_uri,
        "features_manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "features_rows": features_rows,
        "model_version": model_version,
        "model_sha256": info["sha256"],
    }


# --------------------------------------------------------------------------- validate


@dataclass(frozen=True)
class CommittedScores:
    """What a validated run produced, as the Asset event and the task's return value report it."""

    manifest_uri: str
    scores_uri: str
    run_id: str
    rows: int
    model_version: str
    features_manifest_uri: str
    summary: dict[str, Any]
    drift: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The manifest's drift summary, with the reports' URIs when measured (bank_spark.batch_score_job)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_scores_manifest(
    manifest: Mapping[str, Any],
    *,
    run_id: str,
    model_sha256: str,
    features_manifest_sha256: str,
    features_rows: int,
) -> list[str]:
    """Every way ``manifest`` contradicts this run; empty when it is consistent."""
    missing = [k for k in ("run_id", "rows", "files", "paths", "model", "features") if k not in manifest]
    if missing:
        return [f"manifest lacks {', '.join(missing)}"]
    not_objects = [k for k in ("rows", "paths", "model", "features") if not isinstance(manifest[k], Mapping)]
    if not_objects:
        return [f"manifest's {', '.join(not_objects)} must be JSON objects"]
    problems: list[str] = []
    if manifest["run_id"] != run_id:
        problems.append(f"manifest is for run {manifest['run_id']!r}, not {run_id!r}")
    rows = manifest["rows"]
    if rows.get("in") != rows.get("out"):
        problems.append(f"rows in ({rows.get('in')}) != rows out ({rows.get('out')})")
    if rows.get("in") != features_rows:
        problems.append(f"scored {rows.get('in')} rows but the features manifest has rows.out={features_rows}")
    if manifest["model"].get("sha256") != model_sha256:
        problems.append(f"scored with model sha256 {manifest['model'].get('sha256')}, not {model_sha256}")
    if manifest["features"].get("manifest_sha256") != features_manifest_sha256:
        problems.append(
            f"scored features whose manifest has sha256 {manifest['features'].get('manifest_sha256')}, "
            f"not {features_manifest_sha256} (the features were recommitted during the run?)"
        )
    if not manifest["files"]:
        problems.append("manifest lists no parquet files")
    return problems


def validate_scores(
    hook: S3Hook,
    output: str,
    *,
    run_id: str,
    model_sha256: str,
    features_manifest_uri: str,
    features_manifest_sha256: str,
    features_rows: int,
) -> CommittedScores:
    """Check the committed scores of ``run_id`` (row counts from the parquet footers); ScoresInvalidError if not."""
    manifest_uri, manifest = read_manifest(hook, output, error=ScoresInvalidError)
    problems = check_scores_manifest(
        manifest,
        run_id=run_id,
        model_sha256=model_sha256,
        features_manifest_sha256=features_manifest_sha256,
        features_rows=features_rows,
    )
    bucket, prefix = split_s3_uri(output)
    if not problems:
        problems = parquet_problems(hook, bucket, prefix, manifest)
    if problems:
        raise ScoresInvalidError(f"scores at {output} are invalid: " + "; ".join(problems))
    return CommittedScores(
        manifest_uri=manifest_uri,
        scores_uri=f"s3://{bucket}/{posixpath.join(prefix, manifest['paths']['scores'])}",
        run_id=run_id,
        rows=manifest["rows"]["out"],
        model_version=manifest["model"].get("version", ""),
        features_manifest_uri=features_manifest_uri,
        summary=manifest.get("summary", {}),
        drift={
            **manifest.get("drift", {}),
            **{
                f"{name}_uri": f"s3://{bucket}/{posixpath.join(prefix, path)}"
                for name, path in manifest["paths"].items()
                if name.startswith("drift")
            },
        },  # fmt: skip
    )


def drift_event(committed: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The bank_drift Asset event's extra for a validated run (CommittedScores.as_dict()), or None and why not."""
    drift = committed.get("drift") or {}
    if drift.get("status") != "measured":
        return None, f"drift not measured: {drift.get('reason', 'the scoring manifest has no drift section')}"
    if not drift.get("crossed"):
        return (
            None,
            f"no drift: every feature's and the score's PSI at or below {drift['threshold']:g} (max {drift['max_psi']})",
        )
    extra = {
        "crossed": drift["crossed"],
        "threshold": drift["threshold"],
        "max_psi": drift["max_psi"],
        "max_psi_feature": drift["max_psi_feature"],
        "score_psi": drift["score_psi"],
        "new_categories": drift.get("new_categories", {}),
        "report_uri": drift.get("drift_uri"),
        "report_html_uri": drift.get("drift_html_uri"),
        "scores_manifest_uri": committed["manifest_uri"],
        "model_version": committed["model_version"],
        "rows": committed["rows"],
    }
    return extra, f"drifted beyond PSI {drift['threshold']:g}: {', '.join(drift['crossed'])}"
