"""Drift of a scoring run, counted in Spark: the scored rows counted into the bins of the model's training
profile (``profile.json``, bank_ml.drift.reference_profile) in one aggregation, and the report written
beside the scores. bank_ml.drift does the arithmetic on the counts; bank_spark.batch_score_job calls this."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from bank_ml import drift
from bank_spark.storage import HadoopFs


def _numeric_counts(
    column: Any, reference: dict[str, Any], add: Callable[[tuple[Any, ...], Any], None], key: str
) -> None:
    """Conditional sums counting ``column`` into the profile's bins, and outside its training range."""
    edges = reference["edges"]
    index = sum((column >= edge).cast("int") for edge in edges) if edges else F.lit(0)
    for i in range(len(edges) + 1):
        add((key, "counts", i), F.sum(F.when(column.isNotNull() & (index == i), 1).otherwise(0)))
    if reference.get("min") is not None:
        add((key, "below_min"), F.sum(F.when(column < reference["min"], 1).otherwise(0)))
        add((key, "above_max"), F.sum(F.when(column > reference["max"], 1).otherwise(0)))


def observe(df: DataFrame, profile: dict[str, Any], score_column: str) -> dict[str, Any]:
    """``df`` (scored rows) counted into the training profile's bins: one aggregation, one pass over the data.

    ``score_column`` holds the probabilities. The counts bank_ml.drift.report takes: per feature, per bin (a categorical one's last bin: categories
    training never saw, up to ten of which are listed), nulls, and values outside training's range.
    """
    keys: list[tuple[Any, ...]] = []
    exprs: list[Any] = []

    def add(key: tuple[Any, ...], expr: Any) -> None:
        keys.append(key)
        exprs.append(expr.alias(f"c{len(exprs)}"))

    for name, reference in profile["features"].items():
        column = F.col(name)
        add((name, "nulls"), F.sum(F.when(column.isNull(), 1).otherwise(0)))
        if reference["kind"] == "categorical":
            known = list(reference["categories"])
            for i, category in enumerate(known):
                add((name, "counts", i), F.sum(F.when(column == category, 1).otherwise(0)))
            unseen = column.isNotNull() & ~column.isin(known)
            add((name, "counts", len(known)), F.sum(F.when(unseen, 1).otherwise(0)))
            add((name, "new"), F.slice(F.array_sort(F.collect_set(F.when(unseen, column))), 1, 10))
        else:
            _numeric_counts(column.cast("double"), reference, add, name)
    _numeric_counts(F.col(score_column), profile["score"], add, "score")
    row = df.agg(*exprs).first()
    assert row is not None  # an aggregate always has one row
    observed: dict[str, Any] = {
        "features": {name: {"counts": []} for name in profile["features"]},
        "score": {"counts": []},
    }
    for i, key in enumerate(keys):
        target = observed["score"] if key[0] == "score" else observed["features"][key[0]]
        value = row[f"c{i}"]
        if key[1] == "counts":
            target["counts"].append(int(value or 0))
        elif key[1] == "new":
            target["new"] = list(value or [])
        else:
            target[key[1]] = int(value or 0)
    return observed


def write_report(
    out: HadoopFs,
    attempt: str,
    scored: DataFrame,
    profile: dict[str, Any],
    score_column: str,
    rows: int,
    threshold: float,
    title: str,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Measure ``scored`` against ``profile``; write drift.json and drift.html into ``attempt`` under ``out``.

    Returns their paths (relative to ``out``, for the manifest's ``paths``) and the manifest's ``drift``.
    """
    measured = drift.report(profile, observe(scored, profile, score_column), rows, threshold)
    paths = {"drift": f"{attempt}/drift.json", "drift_html": f"{attempt}/drift.html"}
    out.write_bytes(paths["drift"], json.dumps(measured, indent=2).encode())
    out.write_bytes(paths["drift_html"], drift.html_report(measured, title).encode())
    return paths, {"status": "measured", **drift.summary(measured)}
