"""Convert the fitted pipeline to ONNX per docs/interfaces.md ("model.onnx").

The bytes are deterministic for a given fitted pipeline, which skl2onnx alone
does not guarantee: it names the graph with a random UUID unless told
otherwise, and lists opset_import in the iteration order of a set of strings,
which changes with PYTHONHASHSEED from one process to the next. So the name is
fixed and the opsets sorted here; the rest (node names, initialisers,
metadata) is derived from the model. Two trainings on the same data therefore
give the same bytes in any process, hence the same version (first 16 hex of
their sha256).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from bank_ml.scoring import load_onnx_bytes
from bank_serving import schema

if TYPE_CHECKING:
    import onnx
    import pandas as pd
    from sklearn.pipeline import Pipeline

# Pinned so a skl2onnx upgrade cannot silently change the operators (and the bytes).
# skl2onnx may emit a lower version when the graph needs nothing newer.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
GRAPH_NAME = "bank_subscription"
# Largest acceptable |ONNX - scikit-learn| probability on the holdout (measured: ~4e-7).
PARITY_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The pipeline cannot be exported as a model serving accepts."""


def _initial_types() -> list[tuple[str, object]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    return [
        (name, StringTensorType([None, 1]) if schema.FEATURE_TYPES[name] == "string" else FloatTensorType([None, 1]))
        for name in schema.FEATURE_COLUMNS
    ]


def _sort_opsets(onnx_model: onnx.ModelProto) -> None:
    opsets = sorted((entry.domain, entry.version) for entry in onnx_model.opset_import)
    del onnx_model.opset_import[:]
    for domain, version in opsets:
        onnx_model.opset_import.add(domain=domain, version=version)


def to_onnx(pipeline: Pipeline, threshold: float = 0.5) -> bytes:
    """ONNX bytes of a fitted pipeline: one input per feature, zipmap off, bank.* metadata_props.

    Refuses to export with another scikit-learn than the one serving is built for
    (TRAINED_WITH_SKLEARN): serving would refuse the model at init anyway.
    """
    import sklearn
    from skl2onnx import convert_sklearn

    if sklearn.__version__ != schema.TRAINED_WITH_SKLEARN:
        raise ExportError(
            f"training ran scikit-learn {sklearn.__version__} but serving is built for "
            f"{schema.TRAINED_WITH_SKLEARN} (bank_serving.schema.TRAINED_WITH_SKLEARN); align the two"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within 0..1, got {threshold}")
    classifier = pipeline.steps[-1][1]
    onnx_model = convert_sklearn(
        pipeline,
        name=GRAPH_NAME,
        initial_types=_initial_types(),
        options={id(classifier): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    metadata = {
        schema.META_FEATURE_COLUMNS: json.dumps(
            [{"name": name, "type": schema.FEATURE_TYPES[name]} for name in schema.FEATURE_COLUMNS]
        ),
        schema.META_SKLEARN_VERSION: sklearn.__version__,
        schema.META_THRESHOLD: repr(float(threshold)),
    }
    _sort_opsets(onnx_model)
    del onnx_model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    serialized: bytes = onnx_model.SerializeToString()
    return serialized


def parity_max_abs_diff(pipeline: Pipeline, onnx_bytes: bytes, X: pd.DataFrame) -> float:
    """Largest |P_onnx - P_sklearn| over the rows of X, scored through the serving scorer."""
    model = load_onnx_bytes(onnx_bytes)
    expected = pipeline.predict_proba(X)[:, 1]
    return float(np.max(np.abs(model.predict_proba(X).astype(np.float64) - expected)))


def check_parity(pipeline: Pipeline, onnx_bytes: bytes, X: pd.DataFrame, tolerance: float = PARITY_TOLERANCE) -> float:
    """parity_max_abs_diff, raising ExportError beyond `tolerance` (a converter bug, not a model choice)."""
    diff = parity_max_abs_diff(pipeline, onnx_bytes, X)
    if not diff <= tolerance:
        raise ExportError(f"ONNX and scikit-learn disagree by up to {diff:.3g} (tolerance {tolerance:g})")
    return diff
