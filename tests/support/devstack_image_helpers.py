"""Images for the registry and Lambda tests.

Two kinds, both pushed to the session devstack's registry:

- ``code_image`` / ``source_image``: a one-layer OCI image of a few files (a
  stand-in ``bank_serving`` tree for ``source_image``), built with
  bank_pipeline.utils's oci modules alone, for tests of the registry API and the image
  push that never run the image;
- ``stand_in_image``: the real serving image (serving/Dockerfile on the local
  Lambda base, ``devstack.containers.lambda_image.push_serving``) with one more layer that
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

import requests

from bank_pipeline.utils import oci, oci_image, oci_layer
from devstack.containers import lambda_image

HANDLER_PATH = "var/task/bank_serving/lambda_handler.py"
SERVING_TAG = "serving-base"

# A stand-in for bank_serving/lambda_handler.py: the tests must not depend on the real one.
HANDLER = """\
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
"""

RAISING_HANDLER = "def handler(event, context):\n    raise RuntimeError('boom at smoke')\n"


def image_config(architecture: str = "amd64") -> dict[str, object]:
    """The config of a one-layer code image: Lambda's layout, linux/``architecture``."""
    return {
        "created": oci_image.EPOCH,
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": ["LAMBDA_TASK_ROOT=/var/task"], "Cmd": ["bank_serving.lambda_handler.handler"],
                   "WorkingDir": "/var/task"},
        "history": [{"created": oci_image.EPOCH, "created_by": "tests: a code layer"}],
    }  # fmt: skip


def code_image(registry: str, repo: str, tag: str, files: dict[str, bytes], architecture: str = "amd64") -> str:
    """A one-layer image of ``files`` (image paths) with Lambda's layout in its config; its digest."""
    return oci_image.push_image(
        oci.RegistryClient(registry), repo, tag, [oci_layer.layer(files)], image_config(architecture)
    )


def write_serving(root: Path) -> Path:
    """A tiny serving tree: a stand-in bank_serving package whose lambda_handler is HANDLER."""
    (root / "bank_serving").mkdir(parents=True, exist_ok=True)
    (root / "bank_serving" / "lambda_handler.py").write_text(HANDLER)
    (root / "bank_serving" / "__init__.py").write_text('"""stand-in"""\n')
    (root / "bank_serving" / "__pycache__").mkdir(exist_ok=True)
    (root / "bank_serving" / "__pycache__" / "junk.pyc").write_bytes(b"not in the image")
    return root


def source_image(registry: str, source: Path, repo: str, tag: str) -> str:
    """A one-layer image of ``source``'s bank_serving tree under /var/task (no __pycache__); its digest.

    Same files, same digest: what the registry tests (immutable tags, moved tags) push and push again.
    """
    files = {
        f"var/task/{path.relative_to(source).as_posix()}": path.read_bytes()
        for path in sorted((source / "bank_serving").rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }
    return code_image(registry, repo, tag, files)


def serving_base(registry: str, repo: str, tag: str = SERVING_TAG) -> str:
    """The real serving image in ``registry`` as ``repo:tag`` (built once, then cached); ``host:port/repo@sha256:...``."""
    return lambda_image.push_serving(registry, repo, tag)


def stand_in_image(registry: str, repo: str, tag: str, handler: str = HANDLER) -> oci_image.PushResult:
    """The serving image with ``handler`` as bank_serving/lambda_handler.py, pushed as ``repo:tag``."""
    serving_base(registry, repo)
    layer = oci_layer.layer({HANDLER_PATH: handler.encode()})
    return oci_image.append_layer(oci.RegistryClient(registry), repo, SERVING_TAG, layer, tag)


def model_files(version: str, size: int = 1024) -> dict[str, bytes]:
    """model.onnx of ``size`` pseudo-random bytes (fixed by ``version``; incompressible, like
    float weights) and a model.json naming ``version``."""
    onnx = random.Random(version).randbytes(size)
    return {"model.onnx": onnx, "model.json": json.dumps({"version": version}).encode()}


def model_image(
    registry: str, version: str, repo: str = "bank-serving", handler: str = HANDLER, architecture: str = "amd64"
) -> oci_image.PushResult:
    """A stand-in image (``handler``) + a model layer for ``version``, tagged ``model-<version>``
    (``model-<version>-<architecture>`` unless amd64: the same files, its config naming that architecture)."""
    base_tag = "stand-in-" + hashlib.sha256(handler.encode()).hexdigest()[:12]
    stand_in_image(registry, repo, base_tag, handler)
    client = oci.RegistryClient(registry)
    if architecture != "amd64":
        base_tag = relabel(client, repo, base_tag, architecture)
    layer = oci_layer.model_layer(model_files(version))
    tag = f"model-{version}" if architecture == "amd64" else f"model-{version}-{architecture}"
    return oci_image.append_layer(client, repo, base_tag, layer, tag, {"BANK_MODEL_DIR": "/opt/ml/model"})


def relabel(client: oci.RegistryClient, repo: str, tag: str, architecture: str) -> str:
    """``repo:tag`` again, its config claiming ``architecture`` (what a build for another platform pushes); the new tag."""
    manifest, media_type, _ = client.get_manifest(repo, tag)
    config = json.loads(client.get_blob(repo, manifest["config"]["digest"]))
    config["architecture"] = architecture
    blob = json.dumps(config).encode()
    manifest["config"] = {**manifest["config"], "digest": client.push_blob(repo, blob), "size": len(blob)}
    new_tag = f"{tag}-{architecture}"
    client.put_manifest(repo, new_tag, json.dumps(manifest).encode(), media_type)
    return new_tag


def unpackable_image(registry: str, repo: str, tag: str = "unpackable") -> str:
    """An image whose one layer is not a tar at all (the registry takes any bytes); its ImageUri by digest."""
    junk = b"this is no gzip'd tar " * 64
    layer = oci_layer.Layer(blob=junk, digest=oci.sha256_digest(junk), diff_id=oci.sha256_digest(junk))
    digest = oci_image.push_image(oci.RegistryClient(registry), repo, tag, [layer], image_config())
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


def trained_model(directory: Path) -> Path:
    """A small real model (bank.csv, about 1 s) written to ``directory`` as model.onnx + model.json."""
    from bank_ml import artifacts, data, release
    from tests.support.paths import BANK_CSV

    candidate = release.train_candidate(data.features_from_csv(BANK_CSV))
    directory.mkdir(parents=True, exist_ok=True)
    artifacts.write_model_files(directory, candidate.onnx_bytes, candidate.threshold)
    return directory


def serving_model_image(registry: str, repo: str, model_dir: Path) -> str:
    """The real serving image + ``model_dir``'s model layer, as a release makes it; ``host:port/repo@sha256:...``."""
    serving_base(registry, repo)
    files = {f"{oci_layer.MODEL_DIR}/{name}": (model_dir / name).read_bytes() for name in ("model.onnx", "model.json")}
    pushed = oci_image.append_layer(oci.RegistryClient(registry), repo, SERVING_TAG, oci_layer.model_layer(files),
                                    "model", {"BANK_MODEL_DIR": "/" + oci_layer.MODEL_DIR})  # fmt: skip
    return f"{registry}/{repo}@{pushed.digest}"
