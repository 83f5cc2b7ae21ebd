"""bank_ml.drift's arithmetic: the training profile's bins, population stability, the report and its page,
and the bank_drift event a validated scoring run gives (bank_pipeline.batch_score_tasks.drift_event)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from bank_ml import drift
from bank_pipeline.batch_score_tasks import drift_event

pytestmark = pytest.mark.unit


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    assert drift.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    # An empty bin is floored, not infinite.
    assert math.isfinite(drift.psi([0.0, 1.0], [0.5, 0.5])) and drift.psi([0.0, 1.0], [0.5, 0.5]) > 2


def test_psi_refuses_bins_that_do_not_match() -> None:
    with pytest.raises(ValueError, match="3 expected bins but 2 actual ones"):
        drift.psi([0.2, 0.3, 0.5], [0.5, 0.5])


def test_a_continuous_feature_gets_deciles_and_a_flag_a_bin_per_value() -> None:
    ages = np.arange(1000, dtype=float)
    bins = drift.numeric_bins(ages)
    assert len(bins["edges"]) == 9 and bins["proportions"] == [0.1] * 10
    assert (bins["min"], bins["max"], bins["null_rate"]) == (0.0, 999.0, 0)
    flag = drift.numeric_bins(np.array([0, 0, 0, 1, np.nan]))
    assert flag["edges"] == [1.0] and flag["proportions"] == [0.75, 0.25] and flag["null_rate"] == 0.2
    assert drift.labels(flag) == ["< 1", "≥ 1"]
    empty = drift.numeric_bins(np.array([np.nan, np.nan]))
    assert empty["null_rate"] == 1.0 and drift.labels(empty) == ["all"]


def test_categories_get_their_shares_of_the_rows_that_have_one() -> None:
    bins = drift.categorical_bins(["a", "b", "a", None])
    assert bins["categories"] == {"a": round(2 / 3, 8), "b": round(1 / 3, 8)} and bins["null_rate"] == 0.25
    assert drift.labels(bins) == ["a", "b", "(new)"]


PROFILE: dict[str, Any] = {
    "format_version": 1,
    "rows": 100,
    "features": {
        "age": {"kind": "numeric", "edges": [30.0, 50.0], "proportions": [0.3, 0.4, 0.3], "min": 18.0, "max": 90.0,
                "null_rate": 0.0},
        "job": {"kind": "categorical", "categories": {"admin.": 0.5, "<b>": 0.5}, "null_rate": 0.0},
    },
    "score": {"kind": "numeric", "edges": [0.5], "proportions": [0.9, 0.1], "min": 0.0, "max": 1.0, "null_rate": 0.0},
}  # fmt: skip


def observed(
    ages: list[int],
    jobs: list[int],
    scores: list[int],
    age: dict[str, Any] | None = None,
    job: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Counts per bin as the scoring job's aggregation gives them, with ``age``'s / ``job``'s other figures."""
    return {
        "features": {
            "age": {"counts": ages, "nulls": 0, **(age or {})},
            "job": {"counts": jobs, "nulls": 0, **(job or {})},
        },
        "score": {"counts": scores, "nulls": 0},
    }


def test_a_batch_like_training_crosses_nothing() -> None:
    report = drift.report(PROFILE, observed([30, 40, 30], [50, 50, 0], [90, 10]), rows=100)
    assert report["crossed"] == [] and report["max_psi"] == 0 and report["score_psi"] == 0
    assert (
        report["features"]["job"]["bins"] == ["admin.", "<b>", "(new)"] and report["features"]["job"]["new_rows"] == 0
    )


def test_a_shifted_batch_names_what_crossed_its_new_categories_and_its_values_out_of_range() -> None:
    batch = observed([0, 10, 90], [40, 30, 30], [50, 50], age={"above_max": 7, "below_min": 1},
                     job={"new": ["astronaut"]})  # fmt: skip
    report = drift.report(PROFILE, batch, rows=100, threshold=0.2)
    assert report["crossed"] == ["age", "job", "score"] and report["max_psi_feature"] in ("age", "job")
    assert report["out_of_range"] == {"age": 8} and report["new_categories"] == {"job": ["astronaut"]}
    assert drift.summary(report)["crossed"] == ["age", "job", "score"]
    page = drift.html_report(report, "Drift <test>")
    assert "Shifted beyond PSI 0.2: age, job, score" in page and page.count("<svg") == 3
    assert "<b>" not in page.replace("<body>", "") and "&lt;b&gt;" in page and "Drift &lt;test&gt;" in page


@pytest.mark.parametrize(
    ("case", "message"),
    [("threshold", "PSI threshold 0: expected a positive number"), ("bins", "2 counted bins for a profile of 3")],
)
def test_a_report_refuses_what_cannot_be_judged(case: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        if case == "threshold":
            drift.report(PROFILE, observed([30, 40, 30], [50, 50, 0], [90, 10]), rows=100, threshold=0)
        else:
            drift.report(PROFILE, observed([30, 70], [50, 50, 0], [90, 10]), rows=100)


COMMITTED = {"manifest_uri": "s3://lake/scores/bank/run=r/_manifest.json", "model_version": "0123456789abcdef",
             "rows": 100}  # fmt: skip


def test_the_drift_event_carries_what_crossed_and_where_the_report_is() -> None:
    drifted = {"status": "measured", "threshold": 0.2, "max_psi": 1.3, "max_psi_feature": "age", "score_psi": 0.4,
               "crossed": ["age", "score"], "new_categories": {}, "drift_uri": "s3://lake/x/drift.json",
               "drift_html_uri": "s3://lake/x/drift.html"}  # fmt: skip
    extra, why = drift_event({**COMMITTED, "drift": drifted})
    assert why == "drifted beyond PSI 0.2: age, score"
    assert (
        extra is not None and extra["crossed"] == ["age", "score"] and extra["report_uri"] == "s3://lake/x/drift.json"
    )
    assert extra["scores_manifest_uri"] == COMMITTED["manifest_uri"] and extra["model_version"] == "0123456789abcdef"


def test_no_drift_event_without_drift_or_without_a_measure() -> None:
    calm = {"status": "measured", "threshold": 0.2, "max_psi": 0.01, "crossed": []}
    assert drift_event({**COMMITTED, "drift": calm}) == (
        None, "no drift: every feature's and the score's PSI at or below 0.2 (max 0.01)")  # fmt: skip
    unmeasured = {"status": "unmeasured", "reason": "model x has no profile.json"}
    assert drift_event({**COMMITTED, "drift": unmeasured}) == (None, "drift not measured: model x has no profile.json")
    assert drift_event(COMMITTED)[0] is None
