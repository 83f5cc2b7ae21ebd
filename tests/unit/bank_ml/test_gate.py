"""The deploy gate: every branch, with the reason a person reads."""

from __future__ import annotations

import pytest

from bank_ml.gate import GateDecision, decide

pytestmark = pytest.mark.unit


def gate(
    new: float, live: float | None, *, floor: float = 0.80, tolerance: float = 0.005, force: bool = False
) -> GateDecision:
    return decide(
        {"roc_auc": new},
        None if live is None else {"roc_auc": live},
        min_roc_auc=floor,
        tolerance=tolerance,
        force_deploy=force,
    )


def test_below_the_floor_is_not_deployed() -> None:
    assert gate(0.781, None) == GateDecision(False, "not deployed: new ROC AUC 0.7810 is below the floor 0.8")
    # The floor applies even when the live model is worse still.
    assert gate(0.781, 0.70) == GateDecision(False, "not deployed: new ROC AUC 0.7810 is below the floor 0.8")


def test_worse_than_live_beyond_the_tolerance_is_not_deployed() -> None:
    assert gate(0.810, 0.820) == GateDecision(
        False,
        "not deployed: new ROC AUC 0.8100 is 0.0100 below the live model's 0.8200 on the same holdout, "
        "more than the tolerance 0.005",
    )


def test_worse_than_live_within_the_tolerance_is_deployed() -> None:
    assert gate(0.817, 0.820) == GateDecision(
        True,
        "deploy: new ROC AUC 0.8170 reaches the floor 0.8 and is 0.0030 below the live model's 0.8200 "
        "on the same holdout, within the tolerance 0.005",
    )


def test_as_good_as_live_is_deployed() -> None:
    assert gate(0.825, 0.820) == GateDecision(
        True,
        "deploy: new ROC AUC 0.8250 reaches the floor 0.8 and is not below the live model's 0.8200 on the same holdout",
    )


def test_no_live_model_needs_only_the_floor() -> None:
    assert gate(0.80, None) == GateDecision(
        True, "deploy: new ROC AUC 0.8000 reaches the floor 0.8; there is no live model to compare with"
    )


def test_force_deploy_overrides_and_says_what_it_overrode() -> None:
    assert gate(0.781, None, force=True) == GateDecision(
        True, "deploy forced (force_deploy) although new ROC AUC 0.7810 is below the floor 0.8"
    )
    assert gate(0.79, 0.82, floor=0.75, force=True).reason == (
        "deploy forced (force_deploy) although new ROC AUC 0.7900 is 0.0300 below the live model's 0.8200 "
        "on the same holdout, more than the tolerance 0.005"
    )
    # A gate that passes anyway reads as a normal deploy.
    assert gate(0.83, None, force=True).reason.startswith("deploy: new ROC AUC 0.8300 reaches the floor")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_roc_auc": 1.5, "tolerance": 0.0}, "min_roc_auc must be within 0..1, got 1.5"),
        ({"min_roc_auc": 0.8, "tolerance": -0.1}, "tolerance must be within 0..1, got -0.1"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decide({"roc_auc": 0.8}, None, **kwargs)


def test_metrics_without_a_roc_auc_are_refused() -> None:
    with pytest.raises(ValueError, match="new model metrics lack a numeric roc_auc: None"):
        decide({"pr_auc": 0.4}, None, min_roc_auc=0.8, tolerance=0.0)
    with pytest.raises(ValueError, match="live model metrics lack a numeric roc_auc: nan"):
        decide({"roc_auc": 0.8}, {"roc_auc": float("nan")}, min_roc_auc=0.8, tolerance=0.0)
