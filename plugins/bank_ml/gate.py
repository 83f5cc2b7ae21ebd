"""Decide whether a new model is deployed: pure, no I/O.

Deploy when the new model's holdout ROC AUC reaches the floor (Param
min_roc_auc) and is not worse than the live model's ROC AUC *on the same
holdout* by more than the tolerance. force_deploy overrides a failed gate and
says what it overrode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    """deploy, and a sentence saying why, for the task log and metrics.json."""

    deploy: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _auc(metrics: Mapping[str, Any], whose: str) -> float:
    value = metrics.get("roc_auc")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"{whose} metrics lack a numeric roc_auc: {value!r}")
    return float(value)


def _failure(new_auc: float, live_auc: float | None, min_roc_auc: float, tolerance: float) -> str | None:
    """Why the gate fails, or None when it passes."""
    if new_auc < min_roc_auc:
        return f"new ROC AUC {new_auc:.4f} is below the floor {min_roc_auc:g}"
    if live_auc is not None and new_auc < live_auc - tolerance:
        return (
            f"new ROC AUC {new_auc:.4f} is {live_auc - new_auc:.4f} below the live model's {live_auc:.4f} "
            f"on the same holdout, more than the tolerance {tolerance:g}"
        )
    return None


def _success(new_auc: float, live_auc: float | None, min_roc_auc: float, tolerance: float) -> str:
    floor = f"new ROC AUC {new_auc:.4f} reaches the floor {min_roc_auc:g}"
    if live_auc is None:
        return f"{floor}; there is no live model to compare with"
    if new_auc >= live_auc:
        return f"{floor} and is not below the live model's {live_auc:.4f} on the same holdout"
    return (
        f"{floor} and is {live_auc - new_auc:.4f} below the live model's {live_auc:.4f} on the same holdout, "
        f"within the tolerance {tolerance:g}"
    )


def decide(
    new_metrics: Mapping[str, Any],
    live_metrics: Mapping[str, Any] | None,
    *,
    min_roc_auc: float,
    tolerance: float,
    force_deploy: bool = False,
) -> GateDecision:
    """The gate. live_metrics: the live model scored on the new model's holdout, or None if none is live."""
    if not 0.0 <= min_roc_auc <= 1.0:
        raise ValueError(f"min_roc_auc must be within 0..1, got {min_roc_auc}")
    if not 0.0 <= tolerance <= 1.0:
        raise ValueError(f"tolerance must be within 0..1, got {tolerance}")
    new_auc = _auc(new_metrics, "new model")
    live_auc = None if live_metrics is None else _auc(live_metrics, "live model")
    failure = _failure(new_auc, live_auc, min_roc_auc, tolerance)
    if failure is None:
        return GateDecision(True, f"deploy: {_success(new_auc, live_auc, min_roc_auc, tolerance)}")
    if force_deploy:
        return GateDecision(True, f"deploy forced (force_deploy) although {failure}")
    return GateDecision(False, f"not deployed: {failure}")
