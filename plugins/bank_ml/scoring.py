"""Score features with an ONNX model through the serving code's own scorer.

Reusing bank_serving (serving/bank_serving) means the live model is scored on
the holdout exactly as Lambda scores requests: same feed conversion, same
input checks. The serving package lives outside plugins/, so it is imported
from the repository's serving/ directory when it is not already importable.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import numpy as np
    from bank_serving.model import OnnxModel

# plugins/bank_ml/scoring.py -> <repo>/serving
SERVING_DIR = Path(__file__).resolve().parents[2] / "serving"


def serving_module(name: str = "bank_serving") -> ModuleType:
    """Import a bank_serving module, putting <repo>/serving on sys.path if needed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != "bank_serving" or not (SERVING_DIR / "bank_serving").is_dir():
            raise
    sys.path.append(str(SERVING_DIR))
    return importlib.import_module(name)


def load_onnx(path: str | os.PathLike[str], *, require_sklearn_version: bool = True) -> OnnxModel:
    """An ONNX model from a model directory (model.onnx + model.json) or a model.onnx file."""
    model = serving_module("bank_serving.model")
    p = Path(path)
    if p.is_dir():
        return model.load_model_dir(p, require_sklearn_version=require_sklearn_version)
    return model.OnnxModel.from_bytes(p.read_bytes(), where=str(p), require_sklearn_version=require_sklearn_version)


def load_onnx_bytes(model_bytes: bytes, *, require_sklearn_version: bool = True) -> OnnxModel:
    """An ONNX model from bytes held in memory (a freshly exported candidate)."""
    model = serving_module("bank_serving.model")
    return model.OnnxModel.from_bytes(
        model_bytes, where="model.onnx (in memory)", require_sklearn_version=require_sklearn_version
    )


def score(model: OnnxModel, features: Mapping[str, Any]) -> np.ndarray:
    """P(subscribes) per row of `features` (a DataFrame or dict of feature columns)."""
    return model.predict_proba(features)
