"""Check a committed features output against its manifest.

The Spark job commits by writing ``_manifest.json`` last (docs/interfaces.md);
this module is the reader's side: it trusts nothing the manifest says that it
can check cheaply. Row counts come from the parquet footers (a ranged read per
file), never from scanning the data.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bank_pipeline.errors import BadInputError, FeaturesInvalidError

if TYPE_CHECKING:
    import pyarrow.fs

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

MANIFEST_NAME = "_manifest.json"


@dataclass(frozen=True)
class CommittedFeatures:
    """What a validated run produced, as the Asset event and the summary report it."""

    manifest_uri: str
    features_uri: str
    run_id: str
    rows_in: int
    rows_out: int
    rows_quarantined: int
    baseline: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``; anything else is a BadInputError."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise BadInputError(f"expected an s3://bucket/key URI, got {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


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
        problems.append(
            f"rows do not add up: in={rows['in']} != out={rows['out']} + quarantined={rows['quarantined']}"
        )
    if rows["out"] == 0:
        problems.append("no rows were written")
    ratio = rows["quarantined"] / rows["in"] if rows["in"] else 0.0
    if ratio > max_quarantine_ratio:
        problems.append(f"quarantined share {ratio:.4f} exceeds max_quarantine_ratio {max_quarantine_ratio}")
    if input_etag and manifest["input"].get("etag") not in (None, input_etag):
        problems.append(
            f"input changed during the run: ETag {manifest['input'].get('etag')} in the manifest, "
            f"{input_etag} now"
        )
    if not manifest["files"]:
        problems.append("manifest lists no parquet files")
    return problems


def arrow_s3(hook: S3Hook) -> pyarrow.fs.S3FileSystem:
    """A pyarrow S3 filesystem with the hook's credentials, region and endpoint (devstack or AWS)."""
    from pyarrow import fs

    creds = hook.get_credentials()
    endpoint = hook.conn_config.endpoint_url
    kwargs: dict[str, Any] = {}
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs = {"endpoint_override": parts.netloc, "scheme": parts.scheme or "https"}
    return fs.S3FileSystem(
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        session_token=creds.token,
        region=hook.conn_region_name or "us-east-1",
        **kwargs,
    )


def read_manifest(hook: S3Hook, output_uri: str) -> tuple[str, dict[str, Any]]:
    """The committed manifest of ``output_uri`` and its URI; FeaturesInvalidError if there is none."""
    bucket, prefix = split_s3_uri(output_uri)
    key = posixpath.join(prefix, MANIFEST_NAME)
    manifest_uri = f"s3://{bucket}/{key}"
    if not hook.check_for_key(key, bucket_name=bucket):
        raise FeaturesInvalidError(f"no committed output: {manifest_uri} does not exist")
    try:
        manifest = json.loads(hook.read_key(key, bucket_name=bucket))
    except json.JSONDecodeError as err:
        raise FeaturesInvalidError(f"{manifest_uri} is not JSON: {err}") from err
    return manifest_uri, manifest


def parquet_problems(hook: S3Hook, bucket: str, prefix: str, manifest: Mapping[str, Any]) -> list[str]:
    """Every listed parquet file that cannot be read, else a mismatch of their rows with ``rows.out``.

    Counts rows from the footers (a ranged read per file), so a commit whose
    manifest outran its data is caught without scanning it.
    """
    import pyarrow.parquet as pq

    s3 = arrow_s3(hook)
    problems: list[str] = []
    parquet_rows = 0
    for rel in manifest["files"]:
        path = posixpath.join(bucket, prefix, rel)
        try:
            with s3.open_input_file(path) as f:
                parquet_rows += pq.ParquetFile(f).metadata.num_rows
        except OSError as err:  # FileNotFoundError included
            problems.append(f"listed file s3://{path} unreadable: {err}")
    if not problems and parquet_rows != manifest["rows"]["out"]:
        problems.append(
            f"parquet holds {parquet_rows} rows but the manifest says rows.out={manifest['rows']['out']}"
        )
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
    problems = check_manifest(
        manifest, run_id=run_id, max_quarantine_ratio=max_quarantine_ratio, input_etag=input_etag
    )
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
        baseline=manifest.get("baseline", {}),
    )
