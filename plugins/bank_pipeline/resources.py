"""Files that travel with a run, read from the installed packages with importlib.resources.

- the Spark jobs' entry points (``bank_spark/entrypoints/*.py``) and one
  deterministic ``--py-files`` zip of ``bank_spark``, ``bank_ml`` and ``bank_serving``;
- the EMR nodes' bootstrap script and the hash-locked requirements of their Python
  (``bank_spark/bootstrap/``);
- the Kubernetes manifests of the model server (``bank_pipeline/manifests/*.yaml``; the RBAC
  the release needs is in ``manifests/rbac/``, applied by a namespace's administrator, not by a run);
- ``code_version()``: a hash of the sources a model depends on.

They come from the package, wherever it is installed (a wheel in site-packages,
MWAA's plugins.zip, an editable checkout), never from paths next to a DAG file.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

JOBS = ("bank_features", "batch_score", "bank_train")
PY_FILES_NAME = "bank_jobs.zip"
# The nodes' bootstrap action (both jobs) and the requirements of the Python it makes (bank_spark/bootstrap/).
BOOTSTRAP_SCRIPT = "python_env.sh"
NODE_REQUIREMENTS = "requirements.txt"
# What the --py-files zip holds: the jobs, the model build they call and the serving code both import.
PY_FILES_PACKAGES = ("bank_spark", "bank_ml", "bank_serving")
# The code a model depends on: training, the serving contract and scorer, the Spark features.
MODEL_CODE_PACKAGES = ("bank_ml", "bank_serving", "bank_spark")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same sources give the same zip, hence the same code hash


class ResourceMissingError(RuntimeError):
    """A file the package should ship is not there: a broken install, not bad input."""


def _file(package: str, *parts: str) -> Traversable:
    path = resources.files(package).joinpath(*parts)
    if not path.is_file():
        raise ResourceMissingError(f"{package} ships no {'/'.join(parts)} (installed at {resources.files(package)})")
    return path


def entrypoint_name(job: str) -> str:
    """The file name spark-submit runs for ``job``."""
    if job not in JOBS:
        raise ValueError(f"unknown Spark job {job!r}; known: {', '.join(JOBS)}")
    return f"{job}.py"


def entrypoint(job: str) -> bytes:
    """The spark-submit entry point of ``job`` (a few lines calling ``bank_spark.<job>.main``)."""
    return _file("bank_spark", "entrypoints", entrypoint_name(job)).read_bytes()


def bootstrap_script() -> bytes:
    """The EMR bootstrap action every node runs: the jobs' Python from the staged wheels."""
    return _file("bank_spark", "bootstrap", BOOTSTRAP_SCRIPT).read_bytes()


def node_requirements() -> bytes:
    """The nodes' requirements: every dependency pinned with its hashes (installed without resolving)."""
    return _file("bank_spark", "bootstrap", NODE_REQUIREMENTS).read_bytes()


def py_files_zip() -> bytes:
    """The --py-files zip: bank_spark, bank_ml and bank_serving, byte-for-byte reproducible.

    Fixed times and modes, members sorted; only Python sources (the entry points
    and bootstrap scripts travel separately).
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in sorted(_sources(PY_FILES_PACKAGES).items()):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def job_files(job: str) -> dict[str, bytes]:
    """Everything ``job`` ships to EMR, by file name: entry point, py-files zip, bootstrap script."""
    return {entrypoint_name(job): entrypoint(job), PY_FILES_NAME: py_files_zip(), BOOTSTRAP_SCRIPT: bootstrap_script()}


def _sources(packages: tuple[str, ...], *, entrypoints: bool = False) -> dict[str, bytes]:
    """The Python sources of ``packages`` by path (``bank_spark/features_job.py``); entry points only if asked."""
    from bank_pipeline.utils.oci_layer import package_files  # requests: only when a task reads files

    files: dict[str, bytes] = {}
    for package in packages:
        found = {
            name: data
            for name, data in package_files(package).items()
            if name.endswith(".py") and (entrypoints or "/entrypoints/" not in name)
        }
        if not found:
            raise ResourceMissingError(f"package {package} has no Python sources at {resources.files(package)}")
        files.update(found)
    return files


def code_version() -> str:
    """A content hash of the Python sources a model depends on (stable across installs and hosts).

    Raises ResourceMissingError when a package has no sources: hashing nothing would
    record a version that says nothing.
    """
    digest = hashlib.sha256()
    for name, data in sorted(_sources(MODEL_CODE_PACKAGES, entrypoints=True).items()):
        digest.update(name.encode() + b"\0" + data)
    return digest.hexdigest()[:16]


def kubernetes_manifests() -> list[dict[str, Any]]:
    """The model server's manifests (Deployment, Service, HPA, PDB; not rbac/) as dicts, in file order."""
    import yaml

    directory = resources.files("bank_pipeline").joinpath("manifests")
    files = sorted((f for f in directory.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    if not files:
        raise ResourceMissingError(f"bank_pipeline ships no manifests at {directory}")
    return [doc for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]
