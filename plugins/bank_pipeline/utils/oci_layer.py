"""A deterministic image layer: a gzip'd tar whose bytes depend only on its files.

- ``layer(files)`` / ``model_layer(files)``: a gzip'd tar whose bytes depend
  only on the files' paths and bytes (mtime 0, uid/gid 0, no user names, modes
  0644/0755, sorted, gzip header without time or name), so the same model
  gives the same digest. The ``diff_id`` (sha256 of the tar) is stable
  everywhere; the gzip ``digest`` is stable for a given zlib (the one this
  process links), which is what idempotent re-pushes need.
- ``package_files(package)``: the files of an importable package, what a code
  layer (or a zip of the package) holds.

The layer is pushed by ``bank_pipeline.utils.oci_image`` (``append_layer``,
``push_image``). Not supported: zstd layers.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass

from bank_pipeline.utils.oci import sha256_digest

MODEL_DIR = "opt/ml/model"  # in the image: /opt/ml/model (BANK_MODEL_DIR)

__all__ = [
    "Layer",
    "deterministic_tar",
    "layer",
    "model_layer",
    "package_files",
]


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer: ``digest`` names the blob, ``diff_id`` the uncompressed tar."""

    blob: bytes
    digest: str
    diff_id: str

    @property
    def size(self) -> int:
        return len(self.blob)


def _clean_path(path: str) -> tuple[str, ...]:
    parts = tuple(p for p in path.strip("/").split("/") if p not in ("", "."))
    if not parts or ".." in parts or path.startswith("/"):
        raise ValueError(f"layer path must be relative, without '..': {path!r}")
    return parts


def deterministic_tar(files: Mapping[str, bytes]) -> bytes:
    """A tar of ``files`` (relative path -> bytes) and every parent directory.

    Entries sorted by path; mtime 0, uid/gid 0, empty uname/gname, 0755
    directories, 0644 files: the bytes depend on nothing but the input.
    """
    entries: dict[str, bytes | None] = {}  # None: a directory
    for path, data in files.items():
        parts = _clean_path(path)
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if entries.get(parent) is not None:
                raise ValueError(f"layer path {parent!r} is both a file and a directory")
            entries[parent] = None
        name = "/".join(parts)
        if name in entries:
            raise ValueError(f"layer path {name!r} given twice or is also a directory")
        entries[name] = bytes(data)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            content = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


_SKIP_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache"}


def package_files(package: str) -> dict[str, bytes]:
    """The files of an importable package by path under its parent (``bank_serving/model.py``).

    What an image layer or a zip of the package holds: read with importlib.resources, so
    it works for a wheel, an editable checkout or a zip; caches and bytecode are skipped.
    """
    from importlib import resources

    root = resources.files(package)
    files: dict[str, bytes] = {}
    pending = [(root, package)]
    while pending:
        node, rel = pending.pop()
        for child in node.iterdir():
            name = f"{rel}/{child.name}"
            if child.is_dir():
                if child.name not in _SKIP_PARTS:
                    pending.append((child, name))
            elif not child.name.endswith((".pyc", ".pyo")):
                files[name] = child.read_bytes()
    return dict(sorted(files.items()))


def layer(files: Mapping[str, bytes]) -> Layer:
    """A deterministic gzip'd tar layer of ``files`` (paths relative to the image's /)."""
    tar = deterministic_tar(files)
    out = io.BytesIO()
    # filename="" and mtime=0: the gzip header carries neither name nor time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(tar)
    blob = out.getvalue()
    return Layer(blob=blob, digest=sha256_digest(blob), diff_id=sha256_digest(tar))


def model_layer(files: Mapping[str, bytes]) -> Layer:
    """The model layer: ``files`` under /opt/ml/model/.

    Keys are file names (``model.onnx``), placed under /opt/ml/model/, or paths
    already there (``opt/ml/model/model.onnx``, with or without the leading /):
    both give the same layer.
    """

    def path(name: str) -> str:
        rel = name.lstrip("/")
        return rel if rel.startswith(f"{MODEL_DIR}/") else f"{MODEL_DIR}/{rel}"

    return layer({path(name): data for name, data in files.items()})
