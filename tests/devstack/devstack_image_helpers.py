"""Helpers for the registry and Lambda tests (a uniquely named module, see devstack_helpers)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import requests

from bank_pipeline.utils import oci
from devstack.base_image import build_base_image, image_config, serving_files

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


def model_image(
    registry: str, source: Path, version: str, repo: str = "bank-serving", architecture: str = "amd64"
) -> oci.PushResult:
    """base (from ``source``, built for linux/``architecture``) + a model layer for ``version``,
    tagged ``model-<version>`` (``model-<version>-<architecture>`` unless amd64)."""
    base_tag = "base" if architecture == "amd64" else f"base-{architecture}"
    if architecture == "amd64":
        build_base_image(registry, source, repo, base_tag)
    else:
        config = {**image_config(), "architecture": architecture}
        oci.push_image(oci.RegistryClient(registry), repo, base_tag, [oci.layer(serving_files(source))], config)
    client = oci.RegistryClient(registry)
    layer = oci.model_layer(model_files(version))
    tag = f"model-{version}" if architecture == "amd64" else f"model-{version}-{architecture}"
    return oci.append_layer(client, repo, base_tag, layer, tag, {"BANK_MODEL_DIR": "/opt/ml/model"})


def unpackable_image(registry: str, repo: str, tag: str = "unpackable") -> str:
    """An image whose one layer is not a tar at all (the registry takes any bytes); its ImageUri by digest."""
    junk = b"this is no gzip'd tar " * 64
    layer = oci.Layer(blob=junk, digest=oci.sha256_digest(junk), diff_id=oci.sha256_digest(junk))
    digest = oci.push_image(oci.RegistryClient(registry), repo, tag, [layer], image_config())
    return f"{registry}/{repo}@{digest}"


def index_image(registry: str, repo: str, platform_digest: str, tag: str = "index") -> str:
    """An OCI image index holding ``platform_digest`` (linux/amd64) and an attestation, as buildx makes one
    without --provenance=false; its ImageUri by digest."""
    client = oci.RegistryClient(registry)
    manifest, media_type, _ = client.get_manifest(repo, platform_digest)
    url = f"http://{registry}/v2/{repo}/manifests/{platform_digest}"
    size = len(requests.get(url, headers={"Accept": media_type}, timeout=10).content)
    index = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [
            {"mediaType": media_type, "digest": platform_digest, "size": size,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media_type, "digest": platform_digest, "size": size,
             "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        ],
    }  # fmt: skip
    digest = client.put_manifest(repo, tag, json.dumps(index).encode(), oci.OCI_INDEX)
    return f"{registry}/{repo}@{digest}"
