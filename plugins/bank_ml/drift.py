"""Drift of scored data against the data a model was trained on: the training profile stored with each
model version (``profile.json``) and the report a scoring run writes beside its scores.

The profile holds, per feature, the training data's bins and the share of rows in each, and the
holdout's score distribution the same way:

- a numeric feature with more than ``MAX_DISCRETE`` distinct values gets decile bins: its interior
  edges are the training deciles (duplicates dropped), bin ``i`` holding ``edges[i-1] <= v < edges[i]``;
- one with fewer gets a bin per value (the edges are its values but the smallest), so a 0/1 flag or a
  month is compared value by value rather than squeezed into deciles it cannot fill;
- a categorical feature gets its categories' shares; a category training never saw counts in a
  bin of its own, ``(new)``, whose expected share is 0.

Population stability: ``PSI = sum((a - e) * ln(a / e))`` over the bins, with each share floored at
``EPSILON`` so that an empty bin is finite. Below 0.1 is the usual "no shift", above 0.2 "shifted"
(the default threshold, ``BANK_DRIFT_PSI_THRESHOLD``). The scoring job (bank_spark.batch_score_job)
counts a batch into these bins in Spark; this module only does arithmetic on the counts, so it is
the same on the driver, in a test and in the DAG.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from bank_serving.schema import CATEGORICAL_COLUMNS, FEATURE_COLUMNS

FORMAT_VERSION = 1
DECILES = 10
MAX_DISCRETE = 20  # a numeric feature with at most this many distinct values is binned by value
EPSILON = 1e-4
NEW = "(new)"
DEFAULT_THRESHOLD = 0.2


def numeric_bins(values: np.ndarray) -> dict[str, Any]:
    """The bins of one numeric training column (NaN: missing): edges, shares, min, max, null rate."""
    valid = values[~np.isnan(values)]
    if valid.size == 0:
        return {"kind": "numeric", "edges": [], "proportions": [1.0], "min": None, "max": None, "null_rate": 1.0}
    distinct = np.unique(valid)
    if distinct.size <= MAX_DISCRETE:
        edges = distinct[1:]
    else:
        edges = np.unique(np.quantile(valid, np.linspace(0, 1, DECILES + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, valid, side="right"), minlength=edges.size + 1)
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "proportions": [round(float(c) / valid.size, 8) for c in counts],
        "min": float(valid.min()),
        "max": float(valid.max()),
        "null_rate": round(1 - valid.size / values.size, 8),
    }


def categorical_bins(values: Sequence[str | None]) -> dict[str, Any]:
    """The categories of one categorical training column and their shares (of the non-null rows)."""
    present = [v for v in values if v is not None]
    counts = Counter(present)
    total = max(1, len(present))
    return {
        "kind": "categorical",
        "categories": {k: round(n / total, 8) for k, n in sorted(counts.items())},
        "null_rate": round(1 - len(present) / max(1, len(values)), 8),
    }


def reference_profile(table: pa.Table, probabilities: np.ndarray) -> dict[str, Any]:
    """The training profile: every model feature of ``table`` binned, and the holdout ``probabilities``."""
    features: dict[str, Any] = {}
    for name in FEATURE_COLUMNS:
        column = table.column(name)
        if name in CATEGORICAL_COLUMNS:
            features[name] = categorical_bins(column.to_pylist())
        else:
            features[name] = numeric_bins(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    return {
        "format_version": FORMAT_VERSION,
        "rows": table.num_rows,
        "features": features,
        "score": numeric_bins(np.asarray(probabilities, dtype=float)),
    }


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability of ``actual`` shares against ``expected`` ones (same bins), each floored at EPSILON."""
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} expected bins but {len(actual)} actual ones")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, EPSILON), max(a, EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def labels(reference: Mapping[str, Any]) -> list[str]:
    """A readable name for each bin of a profiled feature (its categories, or its ranges)."""
    if reference["kind"] == "categorical":
        return [*reference["categories"], NEW]
    edges = reference["edges"]
    if not edges:
        return ["all"]
    return (
        [f"< {edges[0]:g}"] + [f"{a:g} – {b:g}" for a, b in zip(edges, edges[1:], strict=False)] + [f"≥ {edges[-1]:g}"]
    )


def feature_drift(reference: Mapping[str, Any], observed: Mapping[str, Any], rows: int) -> dict[str, Any]:
    """One feature's figures: PSI, null rate, values outside training's range, categories training never saw.

    ``observed``: ``counts`` (per bin, the profile's order; a categorical one ends with the (new) bin),
    ``nulls``, and for a numeric feature ``below_min`` / ``above_max``, for a categorical ``new``
    (up to a few of the unseen values).
    """
    counts = list(observed["counts"])
    if reference["kind"] == "categorical":
        expected = [*reference["categories"].values(), 0.0]
    else:
        expected = list(reference["proportions"])
    if len(counts) != len(expected):
        raise ValueError(f"{len(counts)} counted bins for a profile of {len(expected)}")
    actual = _shares(counts)
    figures = {
        "psi": round(psi(expected, actual), 6) if sum(counts) else None,
        "null_rate": round(observed.get("nulls", 0) / rows, 6) if rows else None,
        "expected": [round(e, 6) for e in expected],
        "actual": [round(a, 6) for a in actual],
        "bins": labels(reference),
    }
    if reference["kind"] == "categorical":
        figures["new_categories"] = sorted(observed.get("new") or [])
        figures["new_rows"] = counts[-1]
    else:
        figures["out_of_range"] = int(observed.get("below_min", 0)) + int(observed.get("above_max", 0))
    return figures


def report(
    profile: Mapping[str, Any], observed: Mapping[str, Any], rows: int, threshold: float = DEFAULT_THRESHOLD
) -> dict[str, Any]:
    """The drift report of a batch of ``rows``: every feature's figures and the score's, and which crossed."""
    if not 0 < threshold:
        raise ValueError(f"PSI threshold {threshold!r}: expected a positive number")
    features = {name: feature_drift(ref, observed["features"][name], rows) for name, ref in profile["features"].items()}
    score = feature_drift(profile["score"], observed["score"], rows)
    psis = {name: f["psi"] for name, f in features.items() if f["psi"] is not None}
    crossed = sorted(name for name, value in psis.items() if value > threshold)
    if score["psi"] is not None and score["psi"] > threshold:
        crossed.append("score")
    top = max(psis.items(), key=lambda item: item[1], default=(None, None))
    return {
        "format_version": FORMAT_VERSION,
        "rows": rows,
        "threshold": threshold,
        "max_psi": top[1],
        "max_psi_feature": top[0],
        "score_psi": score["psi"],
        "crossed": crossed,
        "null_rates": {name: f["null_rate"] for name, f in features.items() if f["null_rate"]},
        "out_of_range": {name: f["out_of_range"] for name, f in features.items() if f.get("out_of_range")},
        "new_categories": {name: f["new_categories"] for name, f in features.items() if f.get("new_categories")},
        "features": features,
        "score": score,
    }


def summary(drift: Mapping[str, Any]) -> dict[str, Any]:
    """What a scoring manifest and the Asset event carry of a report (not the bins)."""
    keys = ("threshold", "max_psi", "max_psi_feature", "score_psi", "crossed", "out_of_range", "new_categories")
    return {key: drift[key] for key in keys}


def _bars(figures: Mapping[str, Any], width: int = 360) -> str:
    """An inline SVG of a feature's bins: training's share (grey) beside this batch's (blue)."""
    bins, expected, actual = figures["bins"], figures["expected"], figures["actual"]
    top = max([*expected, *actual, 1e-9])
    step = width / max(1, len(bins))
    bar = max(1.0, step / 2 - 1)
    parts = []
    for i, (label, e, a) in enumerate(zip(bins, expected, actual, strict=True)):
        x = i * step
        for offset, share, colour in ((0.0, e, "#999"), (bar, a, "#2b6cb0")):
            height = 60 * share / top
            parts.append(
                f"<rect x='{x + offset:.1f}' y='{60 - height:.1f}' width='{bar:.1f}' height='{height:.1f}' "
                f"fill='{colour}'><title>{html.escape(label)}: {share:.1%}</title></rect>"
            )
    return f"<svg width='{width}' height='62' role='img'>{''.join(parts)}</svg>"


def html_report(drift: Mapping[str, Any], title: str) -> str:
    """The report as a page: features by PSI, the crossed ones first, each with its bins drawn."""
    threshold = drift["threshold"]
    rows = []
    ordered = sorted(drift["features"].items(), key=lambda item: -(item[1]["psi"] or 0))
    for name, figures in [("score", drift["score"]), *ordered]:
        value = figures["psi"]
        flag = "bad" if value is not None and value > threshold else "ok"
        notes = []
        if figures.get("new_categories"):
            notes.append(f"new: {', '.join(figures['new_categories'])} ({figures['new_rows']} rows)")
        if figures.get("out_of_range"):
            notes.append(f"{figures['out_of_range']} outside training's range")
        if figures.get("null_rate"):
            notes.append(f"{figures['null_rate']:.2%} missing")
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td class='{flag}'>{'' if value is None else f'{value:.4f}'}</td>"
            f"<td>{_bars(figures)}</td><td>{html.escape('; '.join(notes))}</td></tr>"
        )
    verdict = (
        f"<p class='bad'>Shifted beyond PSI {threshold:g}: {html.escape(', '.join(drift['crossed']))}</p>"
        if drift["crossed"]
        else f"<p class='ok'>No feature or score beyond PSI {threshold:g}.</p>"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:.25em .6em;vertical-align:middle}.bad{color:#b00;font-weight:bold}.ok{color:#070}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{drift['rows']} rows; grey: training's share of each bin, blue: "
        f"this batch's.</p>{verdict}<table><tr><th>feature</th><th>PSI</th><th>bins</th><th>notes</th></tr>"
        f"{''.join(rows)}</table></body></html>"
    )
