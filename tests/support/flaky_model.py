"""A serving image whose model fails one prediction in five (in each process), as a broken release might: the
HTTP server answers 500 to those, which a canary's metrics show."""

from __future__ import annotations

from bank_pipeline.utils import oci, oci_image, oci_layer
from tests.support.paths import REPO

# Appended to bank_serving/model.py in a layer of its own (the compiled copy is stale then, so Python reads it).
FLAKY_MODEL_PY = b"""

import itertools as _itertools

_calls = _itertools.count(1)
_predict_proba = OnnxModel.predict_proba


def _flaky(self, features):
    if next(_calls) % 5 == 0:
        raise RuntimeError("bad model: every fifth prediction fails")
    return _predict_proba(self, features)


OnnxModel.predict_proba = _flaky
"""


def flaky_image(registry: str, repo: str, base_tag: str, tag: str = "flaky") -> str:
    """``repo:base_tag`` (a serving image with its model) plus the flaky model.py; ``registry/repo@digest``."""
    model_py = (REPO / "serving" / "bank_serving" / "model.py").read_bytes()
    layer = oci_layer.layer({"var/task/bank_serving/model.py": model_py + FLAKY_MODEL_PY})
    pushed = oci_image.append_layer(oci.RegistryClient(f"http://{registry}"), repo, base_tag, layer, tag)
    return f"{registry}/{repo}@{pushed.digest}"
