"""Helpers for the registry and Lambda tests (a uniquely named module, see devstack_helpers)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from bank_pipeline.utils import oci
from devstack.base_image import build_base_image

# A stand-in for bank_serving/lambda_handler.py: the tests must not depend on the real one.
HANDLER = '''\
import json, os, pathlib, time

def handler(event, context):
    if "fail" in event:
        raise ValueError(event["fail"])
    if "sleep" in event:
        time.sleep(event["sleep"])
    print("handling", json.dumps(event))
    model_dir = pathlib.Path(os.environ["BANK_MODEL_DIR"])
    return {
        "model": json.loads((model_dir / "model.json").read_text()),
        "model_dir": str(model_dir),
        "extra_dir_listing": sorted(os.listdir(os.environ.get("EXTRA_DIR", "/nonexistent")))
        if os.path.isdir(os.environ.get("EXTRA_DIR", "/nonexistent")) else None,
        "plain": os.environ.get("PLAIN"),
        "aws_endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "cwd": os.getcwd(),
        "request_id": context.aws_request_id,
        "event": event,
    }
'''


def write_serving(root: Path) -> Path:
    """A tiny serving tree: a stand-in bank_serving package whose lambda_handler is HANDLER."""
    (root / "bank_serving").mkdir(parents=True, exist_ok=True)
    (root / "bank_serving" / "lambda_handler.py").write_text(HANDLER)
    (root / "bank_serving" / "__init__.py").write_text('"""stand-in"""\n')
    (root / "bank_serving" / "__pycache__").mkdir(exist_ok=True)
    (root / "bank_serving" / "__pycache__" / "junk.pyc").write_bytes(b"not in the image")
    return root


def model_files(version: str, size: int = 1024) -> dict[str, bytes]:
    """model.onnx of ``size`` pseudo-random bytes (fixed by ``version``; incompressible, like
    float weights) and a model.json naming ``version``."""
    onnx = random.Random(version).randbytes(size)
    return {"model.onnx": onnx, "model.json": json.dumps({"version": version}).encode()}


def model_image(registry: str, source: Path, version: str, repo: str = "bank-serving") -> oci.PushResult:
    """base (from ``source``) + a model layer for ``version``, tagged ``model-<version>``."""
    build_base_image(registry, source, repo, "base")
    client = oci.RegistryClient(registry)
    layer = oci.model_layer(model_files(version))
    return oci.append_layer(client, repo, "base", layer, f"model-{version}", {"BANK_MODEL_DIR": "/opt/ml/model"})
