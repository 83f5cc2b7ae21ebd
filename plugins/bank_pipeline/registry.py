"""The model registry in S3: immutable version directories and a live pointer.

    s3://<lake>/models/bank/<version>/{model.onnx, model.json, metrics.json, model_card.md, roc.png, pr.png}
    s3://<lake>/models/bank/live.json

A version is the first 16 hex digits of sha256(model.onnx), so the same model
always gets the same version. ``model.json`` is uploaded last and marks the
version complete: a version whose model.json exists is never written again, so
a retry or a rerun on identical data registers nothing. ``live.json`` is written
only after a deploy passed its smoke test.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bank_pipeline.errors import BadInputError
from bank_pipeline.lake import split_s3_uri

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

COMMIT_FILE = "model.json"
LIVE_FILE = "live.json"
class ModelRegistry:
    """Reads and writes the registry under ``prefix_uri`` through an S3Hook."""

    def __init__(self, hook: S3Hook, prefix_uri: str) -> None:
        self.hook = hook
        self.bucket, self.prefix = split_s3_uri(prefix_uri)

    def _key(self, *parts: str) -> str:
        return posixpath.join(self.prefix, *parts)

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self._key(*parts)}"

    def _read_json(self, key: str) -> dict[str, Any] | None:
        if not self.hook.check_for_key(key, bucket_name=self.bucket):
            return None
        return json.loads(self.hook.read_key(key, bucket_name=self.bucket))

    def model_info(self, version: str) -> dict[str, Any] | None:
        """The version's model.json, or None if the version is not (completely) registered."""
        return self._read_json(self._key(version, COMMIT_FILE))

    def register(self, version_dir: Path, version: str) -> bool:
        """Upload a version directory; False (and nothing written) if the version exists already."""
        local = json.loads((version_dir / COMMIT_FILE).read_text())
        existing = self.model_info(version)
        if existing is not None:
            if existing.get("sha256") != local.get("sha256"):
                raise BadInputError(
                    f"version {version} exists with sha256 {existing.get('sha256')}, "
                    f"not {local.get('sha256')}: versions are immutable"
                )
            return False
        files = sorted(p for p in version_dir.iterdir() if p.is_file() and p.name != COMMIT_FILE)
        for path in [*files, version_dir / COMMIT_FILE]:  # the commit marker last
            self.hook.load_file(str(path), self._key(version, path.name), bucket_name=self.bucket, replace=True)
        return True

    def download(self, version: str, name: str, dest: Path) -> Path:
        """One file of a registered version, downloaded to ``dest`` (a directory)."""
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / name
        obj = self.hook.get_key(self._key(version, name), bucket_name=self.bucket)
        target.write_bytes(obj.get()["Body"].read())
        return target

    def live(self) -> dict[str, Any] | None:
        """What live.json says is deployed, or None before the first release."""
        return self._read_json(self._key(LIVE_FILE))

    def set_live(self, record: dict[str, Any]) -> None:
        """Point live.json at a deployed version (one PUT: readers see the old or the new)."""
        self.hook.load_string(
            json.dumps(record, indent=2, sort_keys=True), self._key(LIVE_FILE), bucket_name=self.bucket, replace=True
        )
