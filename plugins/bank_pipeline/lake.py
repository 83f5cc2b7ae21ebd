"""The lake in S3, as the DAG tasks read it: URIs, committed outputs, their parquet row counts.

A committed output (features or scores, docs/interfaces.md) is a directory whose
``_manifest.json`` lists its parquet files; readers trust nothing the manifest
says that they can check cheaply. Row counts come from the parquet footers (a
ranged read per file), never from scanning the data.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bank_pipeline.errors import BadInputError, FeaturesInvalidError

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

MANIFEST_NAME = "_manifest.json"


def run_key(run_id: str) -> str:
    """``run_id`` made safe for an S3 key and a Hadoop path (no ``:`` or ``+``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)


def run_dir(prefix: str, run_id: str) -> str:
    """A run's own directory under ``prefix`` (which ends with ``/``): ``run=<run_key>/``."""
    return f"{prefix}run={run_key(run_id)}/"


@dataclass(frozen=True)
class Lake:
    """Where everything lives in the lake bucket (docs/interfaces.md): one value, from the settings
    (``Settings.lake``). Prefixes end with ``/``; a run's own directory is ``run=<run_key>/``."""

    bucket: str

    @property
    def raw_input(self) -> str:
        """The bank CSV bank_features_emr reads unless a run names another."""
        return f"s3://{self.bucket}/raw/bank/bank-full.csv"

    @property
    def features(self) -> str:
        """The bank_features Asset: one committed output per features run."""
        return f"s3://{self.bucket}/features/bank/"

    def features_run(self, run_id: str) -> str:
        return run_dir(self.features, run_id)

    @property
    def scores(self) -> str:
        """The bank_scores Asset: one committed output per batch-scoring run."""
        return f"s3://{self.bucket}/scores/bank/"

    def scores_run(self, run_id: str) -> str:
        return run_dir(self.scores, run_id)

    @property
    def drift(self) -> str:
        """The bank_drift Asset: a scoring run whose data drifted from the model's training data (the
        reports themselves are in that run's scores directory)."""
        return f"s3://{self.bucket}/scores/bank/drift/"

    @property
    def training(self) -> str:
        return f"s3://{self.bucket}/training/bank/"

    def candidate(self, run_id: str) -> str:
        """The candidate record a release run's model build writes."""
        return f"{run_dir(self.training, run_id)}candidate.json"

    def build(self, key: str) -> str:
        """The candidate record of the model build with these inputs (``model_release_tasks.build_key``)."""
        return f"{self.training}builds/{key}.json"

    @property
    def models(self) -> str:
        """The model registry (``<version>/`` per model, ``live.json``)."""
        return f"s3://{self.bucket}/models/bank/"

    @property
    def live_model(self) -> str:
        """The bank_live_model Asset: the registry's record of what is live."""
        return f"{self.models}live.json"

    @property
    def code(self) -> str:
        """Job code staged by content hash, and the nodes' wheelhouse (bank_pipeline.wheelhouse)."""
        return f"s3://{self.bucket}/code/"

    def wheelhouse(self, arch: str) -> str:
        from bank_pipeline.wheelhouse import wheelhouse_uri

        return wheelhouse_uri(self.code, arch)

    @property
    def emr_logs(self) -> str:
        return f"s3://{self.bucket}/emr-logs/"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``; anything else is a BadInputError."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise BadInputError(f"expected an s3://bucket/key URI, got {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


def read_manifest(
    hook: S3Hook, output_uri: str, error: type[Exception] = FeaturesInvalidError
) -> tuple[str, dict[str, Any]]:
    """The committed manifest of ``output_uri`` and its URI; ``error`` if there is none or it is not JSON."""
    bucket, prefix = split_s3_uri(output_uri)
    manifest_uri = f"s3://{bucket}/{posixpath.join(prefix, MANIFEST_NAME)}"
    return manifest_uri, read_json(hook, manifest_uri, error, missing="no committed output")


def read_json(hook: S3Hook, uri: str, error: type[Exception], *, missing: str | None) -> Any:
    """The JSON document at ``uri``; ``error`` if it is not JSON, or saying "<missing>: <uri> does not exist".

    With ``missing=None`` an absent object is None rather than an error.
    """
    bucket, key = split_s3_uri(uri)
    if not hook.check_for_key(key, bucket_name=bucket):
        if missing is None:
            return None
        raise error(f"{missing}: {uri} does not exist")
    try:
        return json.loads(hook.read_key(key, bucket_name=bucket))
    except json.JSONDecodeError as err:
        raise error(f"{uri} is not JSON: {err}") from err


def parquet_rows(hook: S3Hook, bucket: str, key: str) -> int:
    """A parquet object's row count from its footer: two ranged GETs (the tail, then the metadata)."""
    from bank_pipeline.utils.parquet_footer import TAIL, footer_length, num_rows

    s3 = hook.get_conn()
    tail = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{TAIL}")["Body"].read()
    length = footer_length(tail)
    metadata = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{length + TAIL}")["Body"].read()
    return num_rows(metadata[:length])


def parquet_problems(hook: S3Hook, bucket: str, prefix: str, manifest: Mapping[str, Any]) -> list[str]:
    """Every listed parquet file that cannot be read, else a mismatch of their rows with ``rows.out``.

    Counts rows from the footers (ranged reads per file), so a commit whose
    manifest outran its data is caught without scanning it.
    """
    from botocore.exceptions import ClientError

    from bank_pipeline.utils.parquet_footer import ParquetFooterError

    problems: list[str] = []
    total = 0
    for rel in manifest["files"]:
        key = posixpath.join(prefix, rel)
        try:
            total += parquet_rows(hook, bucket, key)
        except (ClientError, ParquetFooterError) as err:
            problems.append(f"listed file s3://{bucket}/{key} unreadable: {err}")
    if not problems and total != manifest["rows"]["out"]:
        problems.append(f"parquet holds {total} rows but the manifest says rows.out={manifest['rows']['out']}")
    return problems
