"""What bank_features_emr does besides wiring operators, and which features the other DAGs read.

- ``prepare_step``: check the source exists, stage the job, build the EMR step.
- ``validate_output``: check a committed features output against its manifest.
  The Spark job commits by writing ``_manifest.json`` last (docs/interfaces.md);
  this is the reader's side: it trusts nothing the manifest says that it can
  check cheaply. Row counts come from the parquet footers (a ranged read per
  file), never from scanning the data.
- ``resolve_features_manifest``: the features a release or a scoring run uses.

Light at import (DAG files import it at parse time): no pyarrow or boto3 until a task calls in.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from bank_pipeline import spark_steps
from bank_pipeline.errors import BadInputError, FeaturesInvalidError
from bank_pipeline.lake import parquet_problems, read_manifest, split_s3_uri

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bank_pipeline.settings import Settings

JOB = "bank_features"


class PreparedStep(TypedDict):
    """prepare_step's XCom: the EMR step and what validation checks against."""

    steps: list[dict[str, Any]]
    output_uri: str
    source_etag: str
    code_uri: str
    bootstrap_uri: str
    wheelhouse_uri: str


def prepare_step(
    hook: S3Hook, cfg: Settings, *, source_uri: str, run_id: str, max_quarantine_ratio: float, instance_type: str
) -> PreparedStep:
    """Check the source and the nodes' wheelhouse exist, stage the job code by content hash, build the EMR step."""
    bucket, key = split_s3_uri(source_uri)
    head = hook.head_object(key, bucket_name=bucket)
    if head is None:
        raise BadInputError(f"source_uri {source_uri} does not exist")
    wheels = spark_steps.require_wheelhouse(hook, cfg.lake.code, instance_type)
    staged = spark_steps.stage_job(hook, cfg.lake.code, JOB)
    output_uri = cfg.lake.features_run(run_id)
    etag = head["ETag"].strip('"')
    args = [
        "--input", source_uri,
        "--output", output_uri,
        "--run-id", run_id,
        "--max-quarantine-ratio", str(max_quarantine_ratio),
        "--input-etag", etag,
    ]  # fmt: skip
    return {
        "steps": [spark_steps.job_step(JOB, staged, args)],
        "output_uri": output_uri,
        "source_etag": etag,
        "code_uri": staged.script_uri,
        "bootstrap_uri": staged.bootstrap_uri,
        "wheelhouse_uri": wheels,
    }


@dataclass(frozen=True)
class CommittedFeatures:
    """What a validated run produced, as the Asset event and the summary report it."""

    manifest_uri: str
    features_uri: str
    run_id: str
    rows_in: int
    rows_out: int
    rows_quarantined: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_manifest(
    manifest: dict[str, Any],
    *,
    run_id: str,
    max_quarantine_ratio: float,
    input_etag: str | None,
) -> list[str]:
    """Every way ``manifest`` contradicts this run; empty when it is consistent."""
    problems: list[str] = []
    missing = [k for k in ("run_id", "rows", "files", "paths", "input") if k not in manifest]
    if missing:
        return [f"manifest lacks {', '.join(missing)}"]
    if manifest["run_id"] != run_id:
        problems.append(f"manifest is for run {manifest['run_id']!r}, not {run_id!r}")
    rows = manifest["rows"]
    if rows["in"] != rows["out"] + rows["quarantined"]:
        problems.append(f"rows do not add up: in={rows['in']} != out={rows['out']} + quarantined={rows['quarantined']}")
    if rows["out"] == 0:
        problems.append("no rows were written")
    ratio = rows["quarantined"] / rows["in"] if rows["in"] else 0.0
    if ratio > max_quarantine_ratio:
        problems.append(f"quarantined share {ratio:.4f} exceeds max_quarantine_ratio {max_quarantine_ratio}")
    if input_etag and manifest["input"].get("etag") not in (None, input_etag):
        problems.append(
            f"input changed during the run: ETag {manifest['input'].get('etag')} in the manifest, {input_etag} now"
        )
    if not manifest["files"]:
        problems.append("manifest lists no parquet files")
    return problems


def validate_output(
    hook: S3Hook,
    output_uri: str,
    *,
    run_id: str,
    max_quarantine_ratio: float,
    input_etag: str | None,
) -> CommittedFeatures:
    """Check the committed output of ``run_id`` and return what it holds.

    Raises FeaturesInvalidError listing every problem found.
    """
    manifest_uri, manifest = read_manifest(hook, output_uri)
    problems = check_manifest(manifest, run_id=run_id, max_quarantine_ratio=max_quarantine_ratio, input_etag=input_etag)
    bucket, prefix = split_s3_uri(output_uri)
    if not problems:
        problems = parquet_problems(hook, bucket, prefix, manifest)
    if problems:
        raise FeaturesInvalidError(f"features at {output_uri} are invalid: " + "; ".join(problems))
    rows = manifest["rows"]
    return CommittedFeatures(
        manifest_uri=manifest_uri,
        features_uri=f"s3://{bucket}/{posixpath.join(prefix, manifest['paths']['features'])}",
        run_id=run_id,
        rows_in=rows["in"],
        rows_out=rows["out"],
        rows_quarantined=rows["quarantined"],
    )


def newest_extra(events: Iterable[Any], key: str) -> str | None:
    """`extra[key]` of the newest event that has it."""
    for event in reversed(list(events)):
        value = (getattr(event, "extra", None) or {}).get(key)
        if value:
            return str(value)
    return None


def resolve_features_manifest(
    param: str, triggering_events: Iterable[Any], inlet_events: Iterable[Any], *, purpose: str
) -> str:
    """The features manifest to use: the Param, else the newest triggering bank_features event's,
    else the newest bank_features event's. ``purpose`` ("train on") words the error."""
    if param:
        return param
    found = newest_extra(triggering_events, "manifest_uri") or newest_extra(inlet_events, "manifest_uri")
    if found:
        return found
    raise BadInputError(f"no features to {purpose}: run bank_features_emr first, or give features_manifest_uri")
