"""Stage a step's s3:// arguments to local paths and mirror them back.

Local Spark cannot read s3a:// here (the hadoop-aws jars come from Maven, which
is unreachable), so devstack swaps every ``s3://bucket/key`` argument for a
local copy before the step and publishes the changes after it:

- an existing object becomes a local file (same base name, so ``job.py`` stays
  a ``.py``);
- anything else is a prefix: every object under ``key/`` is downloaded into a
  local directory, which exists even when the prefix is empty (unlike S3, where
  an empty prefix does not exist: Spark's default ``errorifexists`` save mode
  fails on it, so write below the staged directory or use ``overwrite``);
- after the step, new or changed files (by MD5 of the bytes) are uploaded,
  deepest paths first so that a top-level ``_manifest.json`` lands last, then
  the objects whose local files were deleted are deleted.

Not faithful: uploads happen after the step, not while it runs; objects put by
others under a staged prefix during the step are left alone; Hadoop's local
checksum files (``.name.crc``) are never uploaded since S3 has none.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

S3_URI = re.compile(r"^s3://([^/]+)(?:/(.*))?$", re.DOTALL)
# "--input=s3://..." as well as a bare "s3://..." argument.
_OPTION_URI = re.compile(r"^(--[^=\s]+=)(s3://.*)$", re.DOTALL)


class StagingError(Exception):
    """An s3:// argument could not be staged or mirrored back."""


@dataclass
class Staged:
    """One staged s3:// location and what was downloaded for it."""

    uri: str
    bucket: str
    key: str  # the object key, or the prefix ("" or ending with "/")
    local: Path
    is_dir: bool
    hashes: dict[str, str] = field(default_factory=dict)  # key -> md5 as downloaded


@dataclass
class MirrorReport:
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_checksum_file(name: str) -> bool:
    return name.startswith(".") and name.endswith(".crc")


def _safe_rel(rel: str, uri: str) -> str:
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StagingError(f"cannot stage {uri}: object key part {rel!r} has no local equivalent")
    return rel


class Stager:
    """Stages the s3:// arguments of one step under ``root``."""

    def __init__(self, s3: Any, root: Path) -> None:
        self._s3 = s3
        self._root = root
        self._items: dict[str, Staged] = {}

    @property
    def items(self) -> list[Staged]:
        return list(self._items.values())

    def stage_args(self, args: list[str]) -> list[str]:
        """Return ``args`` with each s3:// URI replaced by its staged local path."""
        out = []
        for arg in args:
            option = _OPTION_URI.match(arg)
            if option:
                out.append(option.group(1) + self.stage(option.group(2)))
            elif S3_URI.match(arg):
                out.append(self.stage(arg))
            else:
                out.append(arg)
        return out

    def stage(self, uri: str) -> str:
        """Download one s3:// URI; return the local path that replaces it."""
        match = S3_URI.match(uri)
        if not match:
            raise StagingError(f"not an s3:// URI: {uri}")
        bucket, key = match.group(1), match.group(2) or ""
        trailing = uri.endswith("/") or not key
        if uri not in self._items:
            try:
                self._items[uri] = self._download(uri, bucket, key, trailing)
            except StagingError:
                raise
            except Exception as exc:  # botocore errors: name the URI, keep the cause
                raise StagingError(f"cannot stage {uri}: {exc}") from exc
        local = str(self._items[uri].local)
        return local + "/" if trailing else local

    def _download(self, uri: str, bucket: str, key: str, trailing: bool) -> Staged:
        base = self._root / bucket / key if key else self._root / bucket
        if not trailing and self._object_exists(bucket, key):
            _safe_rel(key, uri)
            base.parent.mkdir(parents=True, exist_ok=True)
            self._s3.download_file(bucket, key, str(base))
            return Staged(uri, bucket, key, base, False, {key: _md5(base)})
        prefix = key.rstrip("/") + "/" if key else ""
        staged = Staged(uri, bucket, prefix, base, True)
        base.mkdir(parents=True, exist_ok=True)
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if not rel or rel.endswith("/"):  # "folder" marker objects
                    continue
                path = base / _safe_rel(rel, uri)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._s3.download_file(bucket, obj["Key"], str(path))
                staged.hashes[obj["Key"]] = _md5(path)
        return staged

    def _object_exists(self, bucket: str, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def mirror_back(self) -> MirrorReport:
        """Upload new/changed files (deepest first), then delete removed objects."""
        report = MirrorReport()
        for item in self._items.values():
            try:
                self._mirror(item, report)
            except Exception as exc:
                raise StagingError(f"cannot mirror {item.local} back to {item.uri}: {exc}") from exc
        return report

    def _local_files(self, item: Staged) -> dict[str, Path]:
        if not item.is_dir:
            return {item.key: item.local} if item.local.is_file() else {}
        files = {}
        for dirpath, _dirs, names in os.walk(item.local):
            for name in names:
                path = Path(dirpath, name)
                if _is_checksum_file(name) or not path.is_file():
                    continue
                files[item.key + path.relative_to(item.local).as_posix()] = path
        return files

    def _mirror(self, item: Staged, report: MirrorReport) -> None:
        current = self._local_files(item)
        changed = [k for k, p in current.items() if item.hashes.get(k) != _md5(p)]
        # Deepest first: the commit point (a top-level manifest) is the last PUT.
        for key in sorted(changed, key=lambda k: (-k.count("/"), k)):
            self._s3.upload_file(str(current[key]), item.bucket, key)
            report.uploaded.append(f"s3://{item.bucket}/{key}")
        gone = sorted(k for k in item.hashes if k not in current)
        for start in range(0, len(gone), 1000):
            batch = gone[start : start + 1000]
            self._s3.delete_objects(
                Bucket=item.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            report.deleted.extend(f"s3://{item.bucket}/{k}" for k in batch)
