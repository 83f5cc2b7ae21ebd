"""What bank_batch_score does besides wiring operators.

- Which features and which model a run scores (Params, Asset events, live.json).
- The code it ships to EMR: the job script, one zip of the Python it imports
  (spark_jobs/ for the job and the bank_features helpers, serving/bank_serving
  for the scorer the Lambda runs), and the bootstrap action that installs the
  scorer's libraries, staged by content hash so the code that ran is on record.
- The cluster it asks for, and the check of the committed scores.

Light at import (the DAG imports it at parse time): no pandas, pyarrow or boto3
until a task calls in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from bank_pipeline import emr
from bank_pipeline.emr import run_key, spark_step
from bank_pipeline.errors import BadInputError, FeaturesInvalidError, ScoresInvalidError
from bank_pipeline.features import MANIFEST_NAME, parquet_problems, read_manifest, split_s3_uri

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.settings import Settings

# plugins/bank_pipeline/batch_score.py -> the bundle's root (dags/, plugins/, spark_jobs/, serving/)
REPO = Path(__file__).resolve().parents[2]
JOB_NAME = "bank_batch_score"
PY_FILES_NAME = "bank_batch_score.zip"
BOOTSTRAP_NAME = "bootstrap_batch_score.sh"
# What the bootstrap action installs, and what spark-env points PySpark at: EMR 7's
# Amazon Linux 2023 ships Python 3.9, too old for the pinned numpy and onnxruntime.
EMR_PYTHON = "/usr/bin/python3.11"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same sources give the same zip, hence the same code hash


# --------------------------------------------------------------------------- inputs


def output_uri(cfg: Settings, run_id: str) -> str:
    """This run's own output directory, under the bank_scores Asset's URI."""
    return f"s3://{cfg.lake_bucket}/scores/bank/run={run_key(run_id)}/"


def _newest(events: Iterable[Any], key: str) -> str | None:
    """`extra[key]` of the newest event that has it."""
    for event in reversed(list(events)):
        value = (getattr(event, "extra", None) or {}).get(key)
        if value:
            return str(value)
    return None


def resolve_features_manifest(param: str, feature_events: Iterable[Any]) -> str:
    """The features manifest to score: the Param, else the newest bank_features Asset event's."""
    if param:
        return param
    found = _newest(feature_events, "manifest_uri")
    if found:
        return found
    raise BadInputError("no features to score: run bank_features_emr first, or give features_manifest_uri")


def resolve_model_version(
    param: str, live_model_events: Iterable[Any], live: Callable[[], Mapping[str, Any] | None]
) -> str:
    """The model to score with: the Param, else the triggering bank_live_model event's, else live.json's.

    The triggering event wins over live.json: a later release must not change
    what an earlier event's run scores with. `live` reads live.json, only when needed.
    """
    if param:
        return param
    found = _newest(live_model_events, "version")
    if found:
        return found
    record = live()
    if record and record.get("version"):
        return str(record["version"])
    raise BadInputError(
        "no model to score with: nothing is live yet; run bank_model_release first, or give model_version"
    )


# --------------------------------------------------------------------------- code shipped to EMR


def py_files_members(repo: Path = REPO) -> list[tuple[str, Path]]:
    """(name in the zip, source file): the job's package and the serving scorer, importable from the zip's root."""
    jobs = repo / "spark_jobs"
    members = [(f"spark_jobs/{name}", jobs / name) for name in ("__init__.py", "bank_features.py", "batch_score.py")]
    members += [(f"bank_serving/{p.name}", p) for p in sorted((repo / "serving" / "bank_serving").glob("*.py"))]
    return members


def build_py_files(repo: Path = REPO) -> bytes:
    """The --py-files zip, byte-for-byte reproducible (fixed times and modes, sorted members)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, path in py_files_members(repo):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


@dataclass(frozen=True)
class StagedCode:
    script_uri: str
    py_files_uri: str
    bootstrap_uri: str


def code_files(repo: Path = REPO) -> dict[str, bytes]:
    """The files a run ships, by name: job script, py-files zip, bootstrap script."""
    return {
        "batch_score.py": (repo / "spark_jobs" / "batch_score.py").read_bytes(),
        PY_FILES_NAME: build_py_files(repo),
        BOOTSTRAP_NAME: (repo / "spark_jobs" / BOOTSTRAP_NAME).read_bytes(),
    }


def stage_code(hook: S3Hook, code_prefix: str, repo: Path = REPO) -> StagedCode:
    """Upload the shipped files under ``<code_prefix>bank_batch_score/<hash>/``, each once per content."""
    files = code_files(repo)
    digest = hashlib.sha256()
    for name, data in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    bucket, prefix = split_s3_uri(code_prefix)
    base = f"{prefix}{JOB_NAME}/{digest.hexdigest()[:16]}/"
    for name, data in files.items():
        if not hook.check_for_key(base + name, bucket_name=bucket):
            hook.load_bytes(data, base + name, bucket_name=bucket)
    uri = f"s3://{bucket}/{base}"
    return StagedCode(uri + "batch_score.py", uri + PY_FILES_NAME, uri + BOOTSTRAP_NAME)


def score_step(code: StagedCode, args: list[str]) -> dict[str, Any]:
    """The EMR step: spark-submit --py-files <zip> batch_score.py args (client mode, see spark_step)."""
    # CANCEL_AND_WAIT, not TERMINATE_CLUSTER: the teardown terminates the cluster
    # after the sensor has read the step's logs.
    return spark_step(
        JOB_NAME,
        code.script_uri,
        args,
        action_on_failure="CANCEL_AND_WAIT",
        submit_options=["--py-files", code.py_files_uri],
    )


def job_flow_overrides(cfg: Settings, bootstrap_uri: str) -> dict[str, Any]:
    """The shared temporary cluster (``emr.job_flow_overrides``), plus Python 3.11 with the scorer's libraries.

    ``bootstrap_uri`` may be a template (the staged script's URI is known only
    once prepare_score has run).
    """
    return emr.job_flow_overrides(
        cfg,
        "bank-batch-score",
        # Every node, the primary too: the driver checks the model with onnxruntime.
        bootstrap_actions=[
            {"Name": "python3.11 with the scorer's libraries", "ScriptBootstrapAction": {"Path": bootstrap_uri}}
        ],
        configurations=[
            {
                "Classification": "spark-env",
                "Configurations": [
                    {"Classification": "export", "Properties": {"PYSPARK_PYTHON": EMR_PYTHON}},
                ],
            }
        ],
    )


# --------------------------------------------------------------------------- prepare


def prepare(
    hook: S3Hook,
    cfg: Settings,
    *,
    run_id: str,
    features_manifest_uri: str,
    model_version: str,
    repo: Path = REPO,
) -> dict[str, Any]:
    """Check that the inputs exist, stage the code, and build the step; what the later tasks need."""
    from bank_pipeline.registry import COMMIT_FILE, ModelRegistry

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

    registry = ModelRegistry(hook, cfg.model_registry_prefix)
    info = registry.model_info(model_version)
    if info is None:
        raise BadInputError(
            f"model version {model_version} is not registered: "
            f"{registry.uri(model_version, COMMIT_FILE)} does not exist"
        )
    if not isinstance(info.get("sha256"), str):
        raise BadInputError(f"model version {model_version}: {registry.uri(model_version, COMMIT_FILE)} has no sha256")

    code = stage_code(hook, cfg.code_prefix, repo)
    output = output_uri(cfg, run_id)
    args = [
        "--features", f"s3://{bucket}/{posixpath.dirname(key)}/",
        "--model", registry.uri(model_version) + "/",
        "--output", output,
        "--run-id", run_id,
    ]  # fmt: skip
    return {
        "steps": [score_step(code, args)],
        "output_uri": output,
        "bootstrap_uri": code.bootstrap_uri,
        "code_uri": code.script_uri,
        "features_manifest_uri": features_manifest_uri,
        "features_manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "features_rows": features_rows,
        "model_version": model_version,
        "model_sha256": info.get("sha256"),
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
    try:
        manifest_uri, manifest = read_manifest(hook, output)
    except FeaturesInvalidError as err:  # the shared reader names its error after the features
        raise ScoresInvalidError(str(err)) from err
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
    )
