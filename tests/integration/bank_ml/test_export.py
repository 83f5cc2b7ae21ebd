"""model.onnx against the contract of docs/interfaces.md, and its parity with scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest
import sklearn

from bank_ml import export, release
from bank_ml.train import fit
from bank_serving.model import OnnxModel
from bank_serving.schema import CATEGORICAL_COLUMNS, FEATURE_COLUMNS

pytestmark = pytest.mark.integration  # the features job runs once on bank-full (tests/integration/conftest.py)

TOLERANCE = 1e-5


def _with_unseen_categories(X: pd.DataFrame) -> pd.DataFrame:
    """200 holdout rows again, each with one or all categories replaced by values never seen in training."""
    rows = X.iloc[:200].copy()
    for i, column in enumerate(CATEGORICAL_COLUMNS):
        rows.loc[rows.index % 6 == i, column] = f"never-seen-{column}"
    rows.loc[rows.index % 6 == 5, list(CATEGORICAL_COLUMNS)] = "unheard-of"
    return rows


def test_onnx_matches_sklearn_on_the_holdout(candidate: release.Candidate) -> None:
    X = candidate.split.X_test
    assert X["pdays"].isna().sum() > 1000  # never-contacted rows are part of the comparison
    X = pd.concat([X, _with_unseen_categories(X)], ignore_index=True)
    expected = candidate.pipeline.predict_proba(X)[:, 1]
    got = OnnxModel.from_bytes(candidate.onnx_bytes).predict_proba(X)
    diff = np.abs(got.astype(np.float64) - expected)
    print(f"\nONNX vs scikit-learn: max |diff| {diff.max():.2e} over {len(X)} rows (200 with unseen categories)")
    assert diff.max() <= TOLERANCE
    assert candidate.parity_max_abs_diff <= TOLERANCE
    # Unseen categories really change the scores (they are not silently mapped onto a seen one).
    assert not np.allclose(expected[-200:], candidate.pipeline.predict_proba(X.iloc[:200])[:, 1])


def test_onnx_follows_the_contract(candidate: release.Candidate) -> None:
    model = onnx.load_from_string(candidate.onnx_bytes)

    def described(value_info: onnx.ValueInfoProto) -> tuple[str, str, list[object]]:
        tensor = value_info.type.tensor_type
        # A dimension with neither a value nor a name is ONNX's "None" (any size).
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in tensor.shape.dim]
        return value_info.name, onnx.TensorProto.DataType.Name(tensor.elem_type), shape

    assert [described(i) for i in model.graph.input] == [
        (c, "STRING" if c in CATEGORICAL_COLUMNS else "FLOAT", [None, 1]) for c in FEATURE_COLUMNS
    ]
    assert [described(o) for o in model.graph.output] == [
        ("label", "INT64", [None]),
        ("probabilities", "FLOAT", [None, 2]),
    ]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["bank.sklearn_version"] == sklearn.__version__
    assert float(meta["bank.threshold"]) == candidate.threshold == 0.5
    assert json.loads(meta["bank.feature_columns"]) == [
        {"name": c, "type": "string" if c in CATEGORICAL_COLUMNS else "float"} for c in FEATURE_COLUMNS
    ]
    assert model.graph.name == export.GRAPH_NAME
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[""] <= export.TARGET_OPSET[""] and opsets["ai.onnx.ml"] <= export.TARGET_OPSET["ai.onnx.ml"]


def test_onnx_outputs_have_the_contract_shapes(candidate: release.Candidate) -> None:
    from bank_serving.features import as_feeds

    model = OnnxModel.from_bytes(candidate.onnx_bytes)
    label, probabilities = model.session.run(["label", "probabilities"], as_feeds(candidate.split.X_test.iloc[:7]))
    assert label.dtype == np.int64 and label.shape == (7,)
    assert probabilities.dtype == np.float32 and probabilities.shape == (7, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_threshold_is_recorded_and_applied(candidate: release.Candidate) -> None:
    model = OnnxModel.from_bytes(export.to_onnx(candidate.pipeline, threshold=0.2))
    assert model.threshold == 0.2
    p = np.array([0.1, 0.2, 0.5], dtype=np.float32)
    assert model.labels(p).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="threshold must be within 0..1"):
        export.to_onnx(candidate.pipeline, threshold=1.5)


def test_export_refuses_another_sklearn(candidate: release.Candidate, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sklearn, "__version__", "1.0.2")
    with pytest.raises(export.ExportError, match=r"scikit-learn 1\.0\.2 but serving is built for 1\.9\.1"):
        export.to_onnx(candidate.pipeline)


def test_parity_check_raises_beyond_tolerance(candidate: release.Candidate) -> None:
    other = fit(candidate.split.X_train.iloc[:3000], candidate.split.y_train[:3000])
    with pytest.raises(export.ExportError, match="ONNX and scikit-learn disagree by up to"):
        export.check_parity(other, candidate.onnx_bytes, candidate.split.X_test.iloc[:500])
