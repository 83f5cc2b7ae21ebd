"""Write a model version's registry directory locally (the DAG uploads it to models/bank/<version>/).

<root>/<version>/model.onnx      the model; version = first 16 hex of its sha256
                 model.json      what serving and the image need to know about it
                 metrics.json    holdout metrics, Spark baseline, live comparison, gate, lineage
                 model_card.md   for people: intended use, data, metrics, caveats
                 roc.png, pr.png the holdout's curves
                 profile.json    the training data's bins and the holdout's scores (bank_ml.drift)
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bank_ml.evaluate import Curves
from bank_ml.gate import GateDecision
from bank_ml.release import Candidate, model_version
from bank_serving import schema

REQUIRED_LINEAGE = ("features_uri", "manifest_sha256", "code_version")
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas", "pyarrow", "scipy")


def library_versions() -> dict[str, str]:
    """Versions of Python and of every library that shaped the model."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def model_info(onnx_bytes: bytes, threshold: float, created_at: str) -> dict[str, Any]:
    """model.json's content (docs/interfaces.md)."""
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    return {
        "version": digest[:16],
        "sha256": digest,
        "sklearn_version": schema.TRAINED_WITH_SKLEARN,
        "onnxruntime_version": metadata.version("onnxruntime"),
        "feature_columns": [{"name": n, "type": schema.FEATURE_TYPES[n]} for n in schema.FEATURE_COLUMNS],
        "threshold": threshold,
        "created_at": created_at,
    }


def write_model_files(directory: str | Path, onnx_bytes: bytes, threshold: float, created_at: str | None = None) -> str:
    """model.onnx and model.json into `directory` (what the model image layer holds); returns the version."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(onnx_bytes)
    info = model_info(onnx_bytes, threshold, created_at or utc_now())
    _write_json(directory / "model.json", info)
    return str(info["version"])


def _plot_curves(curves: Curves, directory: Path) -> None:
    # The object API with an explicit Agg canvas: no pyplot, no global backend, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def save(fig: Figure, name: str) -> None:
        FigureCanvasAgg(fig)
        fig.savefig(directory / name, dpi=100, metadata={"Software": None})

    roc = Figure(figsize=(5, 5))
    ax = roc.add_subplot()
    ax.plot(curves.fpr, curves.tpr, label=f"model (AUC {curves.roc_auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC 0.5)")
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", title="ROC curve, holdout", xlim=(0, 1), ylim=(0, 1)
    )
    ax.legend(loc="lower right")
    save(roc, "roc.png")

    pr = Figure(figsize=(5, 5))
    ax = pr.add_subplot()
    ax.plot(curves.recall, curves.precision, label=f"model (AP {curves.pr_auc:.3f})")
    ax.axhline(curves.positive_rate, linestyle="--", color="grey", label=f"base rate {curves.positive_rate:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve, holdout", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper right")
    save(pr, "pr.png")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else str(value)


def _metrics_table(metrics: Mapping[str, Any], baseline: Mapping[str, Any], live: Mapping[str, Any] | None) -> str:
    live_metrics = live["metrics"] if live else {}
    header = ["metric", "this model"]
    if live:
        header.append(f"live model {live['version']} (same holdout)")
    header.append("Spark baseline (its own split)")
    rows = [
        ("ROC AUC", "roc_auc"),
        ("PR AUC (average precision)", "pr_auc"),
        ("Brier score (lower is better)", "brier"),
        ("precision at threshold", "precision_at_threshold"),
        ("recall at threshold", "recall_at_threshold"),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, key in rows:
        cells = [label, _fmt(metrics.get(key))]
        if live:
            cells.append(_fmt(live_metrics.get(key)))
        cells.append(_fmt(baseline.get(key)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(report: Mapping[str, Any]) -> str:
    """model_card.md from metrics.json's content."""
    m, holdout, lineage = report["metrics"], report["holdout"], report["lineage"]
    baseline, live, gate = report["baseline"], report["live"], report["gate"]
    hp = ", ".join(f"{k}={v}" for k, v in report["model"]["hyperparameters"].items())
    threshold = report["model"]["threshold"]
    gate_text = gate["reason"] if gate else "not run"
    return f"""# Bank marketing: term-deposit subscription model `{report["version"]}`

Created {report["created_at"]}.

## Intended use

Estimates, before a telemarketing call, the probability that a client of the
bank subscribes a term deposit, so that campaigns can call the likeliest
clients first. It ranks clients for a campaign; it is not meant for decisions
about credit, pricing or anything else that affects a person beyond whether
they get a call.

## Data

UCI Bank Marketing ("bank" variant; Moro, Cortez and Rita, 2014): calls of a
Portuguese bank, May 2008 to November 2010, one row per client contact,
features from `spark_jobs/bank_features.py` read from
`{lineage["features_uri"]}` (manifest sha256 `{lineage["manifest_sha256"]}`).
Holdout: a stratified {holdout["fraction"]:.0%} of the rows (seed {holdout["seed"]}):
{holdout["train_rows"]:,} training rows, {holdout["test_rows"]:,} holdout rows,
{m["positives"]:,} of them positive ({m["positive_rate"]:.1%}).

## Metrics on the holdout

{_metrics_table(m, baseline, live)}

Precision and recall use each model's own threshold (this model: {threshold}).
The Spark baseline ({baseline.get("model", "n/a")}) was evaluated by the feature
job on its own random split; compare it loosely. Curves: `roc.png`, `pr.png`.

Gate: {gate_text}.

## Model

scikit-learn pipeline: one-hot encoding of job, marital, education, contact and
poutcome (unseen categories encode as all zeros) and the numeric features as
they are, into a HistGradientBoostingClassifier ({hp}). Served as ONNX
(`model.onnx`, scikit-learn {report["lineage"]["libraries"]["scikit-learn"]}); largest difference from
scikit-learn's probabilities on the holdout: {report["onnx_parity_max_abs_diff"]:.1e}.

## Caveats

- **`duration` is not used.** The call's length is only known after the call
  and all but decides the outcome; with it the AUC would look far better and
  mean nothing before a call.
- **Class imbalance.** Only {m["positive_rate"]:.1%} of holdout rows are
  positive: ROC AUC flatters; PR AUC ({m["pr_auc"]:.3f} against a base rate of
  {m["positive_rate"]:.3f}) says how useful the top of the ranking is. A Brier
  score of {m["brier"]:.4f} compares with {m["positive_rate"] * (1 - m["positive_rate"]):.4f} for always
  predicting the base rate.
- **Threshold.** `label` is 1 when the probability is at least {threshold}; at
  that threshold precision is {m["precision_at_threshold"]:.3f} and recall
  {m["recall_at_threshold"]:.3f}. Choose the threshold from the cost of a call
  and the value of a subscription, or rank by probability instead.
- **Age of the data.** The calls date from 2008-2010, around the financial
  crisis, in one bank: rates and behaviour have changed since.

## Lineage

- features: `{lineage["features_uri"]}`, manifest sha256 `{lineage["manifest_sha256"]}`
- code version: `{lineage["code_version"]}`
- libraries: {", ".join(f"{k} {v}" for k, v in lineage["libraries"].items())}
"""


def _check_lineage(lineage: Mapping[str, Any]) -> None:
    missing = [key for key in REQUIRED_LINEAGE if not lineage.get(key)]
    if missing:
        raise ValueError(f"lineage lacks {', '.join(missing)}")


def write_version(
    root: str | Path,
    candidate: Candidate,
    *,
    lineage: Mapping[str, Any],
    baseline: Mapping[str, Any],
    live: Mapping[str, Any] | None = None,
    gate: GateDecision | None = None,
    created_at: str | None = None,
    profile: Mapping[str, Any] | None = None,
) -> str:
    """Write <root>/<version>/ with every registry file; return the version.

    lineage: features_uri, manifest_sha256 and code_version (required), plus
    anything else worth keeping (run id, manifest URI); library versions are added.
    baseline: the features manifest's `baseline` (the Spark model's metrics).
    live: release.score_live's result, or None.
    profile: bank_ml.drift.reference_profile's, written as profile.json (what scoring runs measure drift against).
    """
    _check_lineage(lineage)
    created_at = created_at or utc_now()
    version = model_version(candidate.onnx_bytes)
    directory = Path(root) / version
    write_model_files(directory, candidate.onnx_bytes, candidate.threshold, created_at)
    report: dict[str, Any] = {
        "version": version,
        "created_at": created_at,
        "model": {
            "pipeline": "OneHotEncoder(handle_unknown=ignore) + passthrough -> HistGradientBoostingClassifier",
            "hyperparameters": candidate.hyperparameters.as_dict(),
            "threshold": candidate.threshold,
        },
        "holdout": candidate.holdout_summary(),
        "metrics": candidate.metrics,
        "onnx_parity_max_abs_diff": candidate.parity_max_abs_diff,
        "baseline": dict(baseline),
        "live": dict(live) if live else None,
        "gate": gate.as_dict() if gate else None,
        "lineage": {**lineage, "libraries": library_versions()},
    }
    _write_json(directory / "metrics.json", report)
    (directory / "model_card.md").write_text(model_card(report))
    _plot_curves(candidate.curves, directory)
    if profile is not None:
        _write_json(directory / "profile.json", profile)
    return version
