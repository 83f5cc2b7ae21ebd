"""The training steps chained for the release DAG: features -> candidate model -> live comparison.

    table = data.read_features(paths, filesystem)
    candidate = train_candidate(table, HyperParams(...), threshold=0.5)
    live = score_live(live_model_dir, candidate)          # None when nothing is live
    decision = gate.decide(candidate.metrics, live and live["metrics"], min_roc_auc=..., tolerance=...)
    version = artifacts.write_version(out_dir, candidate, lineage=..., baseline=..., live=live, gate=decision)

Metrics are computed on the ONNX model's probabilities (what serving returns),
for the candidate and the live model alike, on the candidate's holdout.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bank_ml import evaluate, export, scoring
from bank_ml.data import Split, split_holdout
from bank_ml.train import HyperParams, fit

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from sklearn.pipeline import Pipeline


def model_version(onnx_bytes: bytes) -> str:
    """The registry version of a model: the first 16 hex digits of sha256(model.onnx)."""
    return hashlib.sha256(onnx_bytes).hexdigest()[:16]


@dataclass(frozen=True)
class Candidate:
    """A trained, exported and evaluated model, not yet registered."""

    pipeline: Pipeline
    onnx_bytes: bytes
    hyperparameters: HyperParams
    threshold: float
    split: Split
    probabilities: np.ndarray  # ONNX P(subscribes) on the holdout
    metrics: dict[str, Any]
    curves: evaluate.Curves
    parity_max_abs_diff: float

    @property
    def version(self) -> str:
        return model_version(self.onnx_bytes)

    def holdout_summary(self) -> dict[str, Any]:
        return {
            "fraction": self.split.holdout_fraction,
            "seed": self.split.seed,
            "stratified_on": "label",
            "train_rows": int(len(self.split.y_train)),
            "test_rows": int(len(self.split.y_test)),
        }


def train_candidate(
    table: pa.Table,
    hp: HyperParams | None = None,
    *,
    threshold: float = 0.5,
    holdout_fraction: float = 0.2,
    seed: int = 42,
) -> Candidate:
    """Split, fit, export to ONNX, check ONNX/scikit-learn parity on the holdout, evaluate."""
    hp = hp or HyperParams()
    split = split_holdout(table, holdout_fraction, seed)
    pipeline = fit(split.X_train, split.y_train, hp)
    onnx_bytes = export.to_onnx(pipeline, threshold)
    parity = export.check_parity(pipeline, onnx_bytes, split.X_test)
    model = scoring.load_onnx_bytes(onnx_bytes)
    probabilities = scoring.score(model, split.X_test)
    return Candidate(
        pipeline=pipeline,
        onnx_bytes=onnx_bytes,
        hyperparameters=hp,
        threshold=threshold,
        split=split,
        probabilities=probabilities,
        metrics=evaluate.binary_metrics(split.y_test, probabilities, threshold),
        curves=evaluate.curves(split.y_test, probabilities),
        parity_max_abs_diff=parity,
    )


def score_live(live_model: str | os.PathLike[str] | None, candidate: Candidate) -> dict[str, Any] | None:
    """The live model's version and metrics on the candidate's holdout; None when nothing is live.

    live_model: a model directory (model.onnx + model.json) or a model.onnx file.
    The live model may predate a scikit-learn upgrade: its ONNX scores do not
    depend on scikit-learn, so that check is skipped here (serving keeps it).
    Its own threshold applies to its precision/recall.
    """
    if live_model is None:
        return None
    model = scoring.load_onnx(live_model, require_sklearn_version=False)
    probabilities = scoring.score(model, candidate.split.X_test)
    return {
        "version": model.version,
        "sklearn_version": model.sklearn_version,
        "metrics": evaluate.binary_metrics(candidate.split.y_test, probabilities, model.threshold),
    }
