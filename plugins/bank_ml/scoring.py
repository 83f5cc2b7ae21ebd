"""Score features with an ONNX model through the serving code's own scorer.

Reusing bank_serving means the live model is scored on the holdout exactly as
Lambda scores requests: same feed conversion, same input checks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from bank_serving.model import OnnxModel


def load_onnx(path: str | os.PathLike[str], *, require_sklearn_version: bool = True) -> OnnxModel:
    """An ONNX model from a model directory (model.onnx + model.json) or a model.onnx file."""
    from bank_serving.model import OnnxModel, load_model_dir  # onnxruntime: only when scoring

    p = Path(path)
    if p.is_dir():
        return load_model_dir(p, require_sklearn_version=require_sklearn_version)
    return OnnxModel.from_bytes(p.read_bytes(), where=str(p), require_sklearn_version=require_sklearn_version)


def load_onnx_bytes(model_bytes: bytes, *, require_sklearn_version: bool = True) -> OnnxModel:
    """An ONNX model from bytes held in memory (a freshly exported candidate)."""
    from bank_serving.model import OnnxModel

    return OnnxModel.from_bytes(
        model_bytes, where="model.onnx (in memory)", require_sklearn_version=require_sklearn_version
    )


def score(model: OnnxModel, features: Mapping[str, Any]) -> np.ndarray:
    """P(subscribes) per row of `features` (a DataFrame or dict of feature columns)."""
    return model.predict_proba(features)
