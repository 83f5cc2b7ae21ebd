"""The EMR nodes' wheelhouse: built once per deployment from the locked requirements, checked by every run.

    python -m bank_pipeline.wheelhouse --bucket LAKE_BUCKET [--arch x86_64] [--arch aarch64]
        [--endpoint-url URL] [--cache DIR]

downloads the wheels of ``bank_spark/bootstrap/requirements.txt`` (the "emr-node" group of
uv.lock, every one pinned with its hashes) for CPython 3.11 on each node architecture,
checking every hash, and uploads them to

    s3://<lake>/code/wheelhouse/<arch>/<hash of arch + requirements>/

with ``requirements.txt`` uploaded last as the marker that the set is complete. It is a deploy
step (docs/deploy-aws.md, step 3; ``make wheelhouse``), run where PyPI is reachable with the
deployer's AWS credentials. Runs never download: each EMR DAG checks that the wheelhouse of its
instance type's architecture is staged (``spark_steps.require_wheelhouse``) and fails at once
naming this command when it is not; the nodes install it with ``pip install --no-index --require-hashes``.
A new requirements file (a lock change) has a new hash, hence a new prefix to stage.

It needs boto3 and no Airflow (an import contract holds that), so a deploy runs from any
machine with the bundle installed, and the addresses it computes are the ones runs check.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bank_pipeline import resources

ARCHES = ("x86_64", "aarch64")
# EMR 7 runs Amazon Linux 2023; the bootstrap makes its Python 3.11 environment from these wheels.
NODE_PYTHON_VERSION = "3.11"
GRAVITON = re.compile(r"^[a-z]+\d+g[a-z]*\.")  # m6g.xlarge, c7gn.large, r8g.2xlarge: arm64
COMMAND = "python -m bank_pipeline.wheelhouse --bucket {bucket} --arch {arch}"
DOWNLOAD_TIMEOUT = 1800  # seconds for pip download of the whole set


def node_arch(instance_type: str) -> str:
    """The CPU architecture of an EC2 instance type's nodes: aarch64 for Graviton (m6g, c7gn...), else x86_64."""
    return "aarch64" if GRAVITON.match(instance_type) else "x86_64"


def digest(arch: str, requirements: bytes | None = None) -> str:
    """The wheelhouse's content key: the architecture and the exact requirements file."""
    data = resources.node_requirements() if requirements is None else requirements
    return hashlib.sha256(arch.encode() + b"\0" + data).hexdigest()[:16]


def wheelhouse_uri(code_prefix: str, arch: str) -> str:
    """``<code_prefix>wheelhouse/<arch>/<digest>/`` of this install's requirements."""
    if arch not in ARCHES:
        raise ValueError(f"unknown node architecture {arch!r}; known: {', '.join(ARCHES)}")
    return f"{code_prefix.rstrip('/')}/wheelhouse/{arch}/{digest(arch)}/"


# ---------------------------------------------------------------------------------- deploy side


def download(arch: str, cache: Path, *, quiet: bool = True) -> Path:
    """The directory of ``arch``'s wheels and requirements.txt under ``cache``, downloaded once per content.

    pip checks every wheel against the lock's hashes (``--require-hashes``) and takes only
    manylinux wheels for CPython 3.11 (``--only-binary``: nothing is built). The directory
    appears whole or not at all (downloaded beside it, then renamed).
    """
    requirements = resources.node_requirements()
    target = cache / arch / digest(arch, requirements)
    if (target / resources.NODE_REQUIREMENTS).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        req = Path(tmp) / resources.NODE_REQUIREMENTS
        req.write_bytes(requirements)
        platforms = [f"manylinux_2_{minor}_{arch}" for minor in (28, 27, 26, 17)] + [f"manylinux2014_{arch}"]
        command = [
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check", *(["--quiet"] if quiet else []),
            "--only-binary=:all:", "--no-deps", "--require-hashes", "--implementation", "cp",
            "--python-version", NODE_PYTHON_VERSION, *(f"--platform={p}" for p in platforms),
            "--requirement", str(req), "--dest", str(wheels),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=quiet, text=True, timeout=DOWNLOAD_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(
                f"pip download of the {arch} wheels exited {result.returncode}: "
                + " ".join((result.stderr or "").split())[-1500:]
            )
        shutil.copy(req, wheels / resources.NODE_REQUIREMENTS)
        os.replace(wheels, target)
    return target


def upload(s3: Any, directory: Path, bucket: str, prefix: str) -> int:
    """Upload ``directory``'s wheels under ``prefix`` in ``bucket``, then its requirements.txt (the marker);
    returns the files sent.

    The wheels go up side by side, each in one PUT (the largest are tens of MB); the marker
    only once all of them are there.
    """
    from concurrent.futures import ThreadPoolExecutor

    from boto3.s3.transfer import TransferConfig

    whole = TransferConfig(multipart_threshold=512 * 2**20, use_threads=False)
    names = sorted(p.name for p in directory.iterdir() if p.name != resources.NODE_REQUIREMENTS)
    with ThreadPoolExecutor(4) as pool:
        # list(): waits for every upload and re-raises the first failure, before the marker goes up.
        list(pool.map(lambda n: s3.upload_file(str(directory / n), bucket, prefix + n, Config=whole), names))
    s3.upload_file(str(directory / resources.NODE_REQUIREMENTS), bucket, prefix + resources.NODE_REQUIREMENTS)
    return len(names) + 1


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bank-ml" / "wheelhouse"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bank_pipeline.wheelhouse", description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True, help="the lake bucket (the template's LakeBucket)")
    parser.add_argument("--arch", action="append", choices=ARCHES, help="node architecture(s) to stage (default: both)")
    parser.add_argument(
        "--code-prefix", default=None, help="default s3://<bucket>/code/ (BANK_* settings' code prefix)"
    )
    parser.add_argument(
        "--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"), help="an S3 endpoint other than AWS's"
    )
    parser.add_argument("--cache", type=Path, default=default_cache(), help="where downloaded wheels are kept")
    args = parser.parse_args(argv)
    code_prefix = args.code_prefix or f"s3://{args.bucket}/code/"
    parts = urlsplit(code_prefix)
    bucket = parts.netloc
    if parts.scheme != "s3" or not bucket:
        parser.error(f"--code-prefix must be an s3://bucket/prefix/ URI, got {code_prefix!r}")
    import boto3

    s3 = boto3.client("s3", endpoint_url=args.endpoint_url)
    for arch in args.arch or ARCHES:
        uri = wheelhouse_uri(code_prefix, arch)
        prefix = urlsplit(uri).path.lstrip("/")
        if s3.list_objects_v2(Bucket=bucket, Prefix=prefix + resources.NODE_REQUIREMENTS).get("KeyCount", 0):
            print(f"{arch}: already staged at {uri}")
            continue
        directory = download(arch, args.cache)
        size = sum(p.stat().st_size for p in directory.iterdir())
        count = upload(s3, directory, bucket, prefix)
        print(f"{arch}: staged {count} files ({size / 1e6:.0f} MB) at {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
