"""Benchmark the release's image step: model files → model layer → image pushed to devstack's registry.

    .venv/bin/python bench/release_bench.py [--runs 7]

Needs the model bench/serving_bench.py writes to build/bench/model (run it first).
Starts devstack, pushes the serving base image (serving/Dockerfile built with podman
on the local Lambda base, cached) to each repository, then per run pushes the
model image to a fresh repository (so the layer and config really travel) and
once more to the same one (the idempotent re-push: no blob bytes). Prints
median/min/max and writes build/bench/release.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bank_pipeline.utils import oci, oci_image, oci_layer  # noqa: E402
from bench.common import OUT, summary, write_result
from devstack import Devstack  # noqa: E402
from devstack.containers.lambda_image import push_serving  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    model_dir = OUT / "model"
    if not (model_dir / "model.onnx").exists():
        print("no build/bench/model: run bench/serving_bench.py first", file=sys.stderr)
        return 2
    files = {f"opt/ml/model/{n}": (model_dir / n).read_bytes() for n in ("model.onnx", "model.json")}
    first, again = [], []
    with tempfile.TemporaryDirectory() as tmp, Devstack(state_dir=Path(tmp), port=0) as ds:
        client = oci.RegistryClient(ds.registry_url)
        for i in range(args.runs):
            repo = f"bench-{i}"
            push_serving(ds.registry_url, repo, "serving-base")
            t = time.perf_counter()
            layer = oci_layer.model_layer(files)
            pushed = oci_image.append_layer(
                client, repo, "serving-base", layer, "m", {"BANK_MODEL_DIR": "/opt/ml/model"}
            )
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            repushed = oci_image.append_layer(
                client, repo, "serving-base", oci_layer.model_layer(files), "m", {"BANK_MODEL_DIR": "/opt/ml/model"}
            )
            again.append(time.perf_counter() - t)
            assert repushed.digest == pushed.digest and repushed.pushed_bytes == 0
    result = {
        "model_onnx_bytes": len(files["opt/ml/model/model.onnx"]),
        "layer_bytes": layer.size,
        "pushed_bytes_first": pushed.pushed_bytes,
        "build_and_push_layer_s": summary(first),
        "repush_same_model_s": summary(again),
        "how": "devstack registry on loopback; build the deterministic layer + push layer, config, manifest",
    }
    print(f"model.onnx {result['model_onnx_bytes']:,} B → layer {result['layer_bytes']:,} B (gzip)")
    print(f"build + push model layer: median {result['build_and_push_layer_s']['median'] * 1000:.1f} ms "
          f"(min {min(first) * 1000:.1f}, max {max(first) * 1000:.1f}, {args.runs} runs)")  # fmt: skip
    print(f"re-push of the same model: median {result['repush_same_model_s']['median'] * 1000:.1f} ms, 0 bytes")
    write_result("release", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
