"""Holdout metrics and curves of a binary classifier's probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_DIGITS = 6


@dataclass(frozen=True)
class Curves:
    """ROC and precision-recall curves (for the PNGs), with their areas."""

    fpr: np.ndarray
    tpr: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    roc_auc: float
    pr_auc: float
    positive_rate: float


def binary_metrics(y_true: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC AUC, PR AUC (average precision), Brier score, and precision/recall at `threshold`.

    Needs both labels in y_true (ROC AUC is undefined otherwise).
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y = np.asarray(y_true)
    p = np.asarray(probabilities, dtype=np.float64)
    if len(np.unique(y)) != 2:
        raise ValueError("metrics need both labels in the holdout")
    predicted = p >= threshold
    true_positives = int(np.sum(predicted & (y == 1)))
    precision = true_positives / int(predicted.sum()) if predicted.any() else 0.0
    recall = true_positives / int((y == 1).sum())
    return {
        "roc_auc": round(float(roc_auc_score(y, p)), _DIGITS),
        "pr_auc": round(float(average_precision_score(y, p)), _DIGITS),
        "brier": round(float(brier_score_loss(y, p)), _DIGITS),
        "threshold": threshold,
        "precision_at_threshold": round(precision, _DIGITS),
        "recall_at_threshold": round(recall, _DIGITS),
        "rows": int(len(y)),
        "positives": int((y == 1).sum()),
        "positive_rate": round(float(np.mean(y == 1)), _DIGITS),
    }


def curves(y_true: np.ndarray, probabilities: np.ndarray) -> Curves:
    """The ROC and precision-recall curves of the holdout."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    y = np.asarray(y_true)
    p = np.asarray(probabilities, dtype=np.float64)
    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    return Curves(
        fpr=fpr,
        tpr=tpr,
        precision=precision,
        recall=recall,
        roc_auc=float(roc_auc_score(y, p)),
        pr_auc=float(average_precision_score(y, p)),
        positive_rate=float(np.mean(y == 1)),
    )
