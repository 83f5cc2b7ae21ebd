"""``python -m devstack.base_image --registry HOST:PORT [--source DIR] [--repo bank-model] [--tag serving-base]``.

Builds the local serving base image without Docker and pushes it to a registry
(devstack's): one deterministic layer (``bank_pipeline.utils.oci.layer``) holding
``/var/task/bank_serving/**``, the installed bank_serving package (or the
``bank_serving`` package under ``--source``), an OCI config whose Cmd is
``bank_serving.lambda_handler.handler``, WorkingDir ``/var/task`` and Env that of
the AWS Lambda Python base image, and an OCI manifest tagged ``serving-base``.
Prints the manifest digest. Same source files, same digest.

Not the production image: that one is ``serving/Dockerfile``, FROM the AWS
Lambda Python base image (runtime, runtime interface client, the serving
dependencies) plus the same code. This one holds only the serving code; it is
what the release appends the model layer to under devstack, where
``devstack.awslambda`` runs it with the project's interpreter and packages.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bank_pipeline.utils import oci

DEFAULT_REPO = "bank-model"  # base and model images share a repository: no cross-repo blob mounts
DEFAULT_TAG = "serving-base"
TASK_ROOT = "var/task"
HANDLER = "bank_serving.lambda_handler.handler"
# As in public.ecr.aws/lambda/python:3.11 (the production base image's FROM), plus serving/Dockerfile's ENV.
ENV = [
    "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LANG=en_US.UTF-8",
    "TZ=:/etc/localtime",
    "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "LAMBDA_TASK_ROOT=/var/task",
    "LAMBDA_RUNTIME_DIR=/var/runtime",
    "BANK_MODEL_DIR=/opt/ml/model",  # as serving/Dockerfile sets it
]
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}


def serving_files(source_dir: Path | None = None) -> dict[str, bytes]:
    """The ``bank_serving`` package (installed, or under ``source_dir``), keyed by its image path."""
    if source_dir is None:
        return {f"{TASK_ROOT}/{name}": data for name, data in oci.package_files("bank_serving").items()}
    package = Path(source_dir) / "bank_serving"
    if not (package / "lambda_handler.py").is_file():
        raise FileNotFoundError(f"no bank_serving/lambda_handler.py in {source_dir} (the serving code)")
    files = {}
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(source_dir)
        if path.is_file() and not (_SKIP_DIRS & set(rel.parts)) and path.suffix not in (".pyc", ".pyo"):
            files[f"{TASK_ROOT}/{rel.as_posix()}"] = path.read_bytes()
    return files


def image_config() -> dict[str, object]:
    """The image config of the one-layer image (without rootfs, which ``oci.push_image`` adds)."""
    return {
        "created": oci.EPOCH,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": list(ENV), "Cmd": [HANDLER], "WorkingDir": "/var/task"},
        "history": [{"created": oci.EPOCH, "created_by": "devstack.base_image: serving code in /var/task"}],
    }


def build_base_image(
    registry_url: str, source_dir: Path | None = None, repo: str = DEFAULT_REPO, tag: str = DEFAULT_TAG
) -> str:
    """Build and push the local base image to ``registry_url`` (``host:port``); return its digest."""
    code = oci.layer(serving_files(source_dir))
    client = oci.RegistryClient(registry_url)
    return oci.push_image(client, repo, tag, [code], image_config())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.base_image", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True, help="HOST:PORT, e.g. devstack's registry_url")
    parser.add_argument("--source", type=Path, default=None, help="holds bank_serving/ (default: the installed package)")
    parser.add_argument("--repo", default=DEFAULT_REPO)
    parser.add_argument("--tag", default=DEFAULT_TAG)
    args = parser.parse_args(argv)
    try:
        digest = build_base_image(args.registry, args.source, args.repo, args.tag)
    except (FileNotFoundError, oci.RegistryError) as exc:
        print(f"devstack.base_image: error: {exc}", file=sys.stderr)
        return 1
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
