"""The model registry in S3: immutable version directories and a live pointer.

    s3://<lake>/models/bank/<version>/{model.onnx, model.json, metrics.json, model_card.md, roc.png, pr.png}
    s3://<lake>/models/bank/live.json

A version is the first 16 hex digits of sha256(model.onnx), so the same model
always gets the same version. Versions are registered by the model build on EMR
(``bank_spark.train_job.register``): ``model.json`` is uploaded last and marks the
version complete, and a version whose model.json exists is never written again,
so a retry or a rerun on identical data registers nothing. Workers only read
versions here, and write ``live.json`` after a deploy passed its smoke test.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bank_pipeline.errors import RegistryInvalidError
from bank_pipeline.lake import read_json, split_s3_uri

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

COMMIT_FILE = "model.json"
LIVE_FILE = "live.json"


class ModelRegistry:
    """Reads the registry under ``prefix_uri`` and moves its live pointer, through an S3Hook."""

    def __init__(self, hook: S3Hook, prefix_uri: str) -> None:
        self.hook = hook
        self.bucket, self.prefix = split_s3_uri(prefix_uri)

    def _key(self, *parts: str) -> str:
        return posixpath.join(self.prefix, *parts)

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self._key(*parts)}"

    def _read_json(self, *parts: str) -> dict[str, Any] | None:
        """The JSON object at ``parts``, None if there is none; anything else is refused, naming the file."""
        uri = self.uri(*parts)
        document = read_json(self.hook, uri, RegistryInvalidError, missing=None)
        if document is not None and not isinstance(document, dict):
            raise RegistryInvalidError(f"{uri}: expected a JSON object, got {type(document).__name__}")
        return document

    def model_info(self, version: str) -> dict[str, Any] | None:
        """The version's model.json, or None if the version is not (completely) registered."""
        return self._read_json(version, COMMIT_FILE)

    def download(self, version: str, name: str, dest: Path) -> Path:
        """One file of a registered version, downloaded to ``dest`` (a directory)."""
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / name
        obj = self.hook.get_key(self._key(version, name), bucket_name=self.bucket)
        target.write_bytes(obj.get()["Body"].read())
        return target

    def live(self) -> dict[str, Any] | None:
        """What live.json says is deployed, or None before the first release."""
        return self._read_json(LIVE_FILE)

    def set_live(self, record: dict[str, Any]) -> None:
        """Point live.json at a deployed version (one PUT: readers see the old or the new)."""
        self.hook.load_string(
            json.dumps(record, indent=2, sort_keys=True), self._key(LIVE_FILE), bucket_name=self.bucket, replace=True
        )
