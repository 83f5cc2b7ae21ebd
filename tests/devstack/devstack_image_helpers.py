"""Images for the registry and Lambda tests (a uniquely named module, see devstack_helpers).

Two kinds, both pushed to the session devstack's registry:

- ``code_image``: a one-layer OCI image of a few files, built with
  bank_pipeline.utils.oci alone, for tests of the registry API and the image
  push that never run the image;
- ``stand_in_image``: the real serving image (serving/Dockerfile on the local
  Lambda base, ``devstack.lambda_image.push_serving``) with one more layer that
  replaces ``bank_serving/lambda_handler.py`` by a stand-in, for Lambda tests
  that need a handler of their own (one that raises, sleeps, echoes its
  environment). It runs in devstack's containers exactly as the release's image
  does: the base's Python, awslambdaric and the RIE.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from bank_pipeline.utils import oci
from devstack import lambda_image

HANDLER_PATH = "var/task/bank_serving/lambda_handler.py"
SERVING_TAG = "serving-base"

# A stand-in for bank_serving/lambda_handler.py: the tests must not depend on the real one.
HANDLER = '''\
import json, os, pathlib, time

INIT_PID = os.getpid()


def handler(event, context):
    if "fail" in event:
        raise ValueError(event["fail"])
    if "sleep" in event:
        time.sleep(event["sleep"])
    if "allocate_mb" in event:
        hog = bytearray(event["allocate_mb"] * 1024 * 1024)
        hog[::4096] = b"x" * len(hog[::4096])
    if "write" in event:
        pathlib.Path(event["write"]).write_text("x")
    print("handling", json.dumps(event))
    model_dir = pathlib.Path(os.environ["BANK_MODEL_DIR"])
    return {
        "model": json.loads((model_dir / "model.json").read_text()),
        "model_dir": str(model_dir),
        "extra_dir_listing": sorted(os.listdir(os.environ.get("EXTRA_DIR", "/nonexistent")))
        if os.path.isdir(os.environ.get("EXTRA_DIR", "/nonexistent")) else None,
        "plain": os.environ.get("PLAIN"),
        "aws_endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "memory_size": os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
        "function_version": os.environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
        "cwd": os.getcwd(),
        "uid": os.getuid(),
        "init_pid": INIT_PID,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "event": event,
    }
'''

RAISING_HANDLER = "def handler(event, context):\n    raise RuntimeError('boom at smoke')\n"


def code_image(registry: str, repo: str, tag: str, files: dict[str, bytes]) -> str:
    """A one-layer image of ``files`` (image paths) with Lambda's layout in its config; its digest."""
    config = {
        "created": oci.EPOCH,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["LAMBDA_TASK_ROOT=/var/task"], "Cmd": ["bank_serving.lambda_handler.handler"],
                   "WorkingDir": "/var/task"},
        "history": [{"created": oci.EPOCH, "created_by": "tests: a code layer"}],
    }  # fmt: skip
    return oci.push_image(oci.RegistryClient(registry), repo, tag, [oci.layer(files)], config)


def serving_base(registry: str, repo: str, tag: str = SERVING_TAG) -> str:
    """The real serving image in ``registry`` as ``repo:tag`` (built once, then cached); ``host:port/repo@sha256:...``."""
    return lambda_image.push_serving(registry, repo, tag)


def stand_in_image(registry: str, repo: str, tag: str, handler: str = HANDLER) -> oci.PushResult:
    """The serving image with ``handler`` as bank_serving/lambda_handler.py, pushed as ``repo:tag``."""
    serving_base(registry, repo)
    layer = oci.layer({HANDLER_PATH: handler.encode()})
    return oci.append_layer(oci.RegistryClient(registry), repo, SERVING_TAG, layer, tag)


def model_files(version: str, size: int = 1024) -> dict[str, bytes]:
    """model.onnx of ``size`` pseudo-random bytes (fixed by ``version``; incompressible, like
    float weights) and a model.json naming ``version``."""
    onnx = random.Random(version).randbytes(size)
    return {"model.onnx": onnx, "model.json": json.dumps({"version": version}).encode()}


def model_image(registry: str, version: str, repo: str = "bank-serving", handler: str = HANDLER) -> oci.PushResult:
    """A stand-in image (``handler``) + a model layer for ``version``, tagged ``model-<version>``."""
    base_tag = "stand-in-" + hashlib.sha256(handler.encode()).hexdigest()[:12]
    stand_in_image(registry, repo, base_tag, handler)
    client = oci.RegistryClient(registry)
    layer = oci.model_layer(model_files(version))
    return oci.append_layer(client, repo, base_tag, layer, f"model-{version}", {"BANK_MODEL_DIR": "/opt/ml/model"})


def trained_model(directory: Path) -> Path:
    """A small real model (bank.csv, about 1 s) written to ``directory`` as model.onnx + model.json."""
    from bank_ml import artifacts, data, release
    from tests.paths import BANK_CSV

    candidate = release.train_candidate(data.features_from_csv(BANK_CSV))
    directory.mkdir(parents=True, exist_ok=True)
    artifacts.write_model_files(directory, candidate.onnx_bytes, candidate.threshold)
    return directory


def serving_model_image(registry: str, repo: str, model_dir: Path) -> str:
    """The real serving image + ``model_dir``'s model layer, as a release makes it; ``host:port/repo@sha256:...``."""
    serving_base(registry, repo)
    files = {f"{oci.MODEL_DIR}/{name}": (model_dir / name).read_bytes() for name in ("model.onnx", "model.json")}
    pushed = oci.append_layer(oci.RegistryClient(registry), repo, SERVING_TAG, oci.model_layer(files), "model",
                              {"BANK_MODEL_DIR": "/" + oci.MODEL_DIR})  # fmt: skip
    return f"{registry}/{repo}@{pushed.digest}"
