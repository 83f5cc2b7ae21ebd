"""The registry's version directory: every file, their content, and the live-model comparison."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from bank_ml import artifacts, release
from bank_ml.gate import decide
from bank_serving.model import load_model_dir

pytestmark = pytest.mark.integration  # the features job runs once on bank-full (tests/integration/conftest.py)

LINEAGE = {
    "features_uri": "s3://bank-lake/features/bank/run=tests/_attempts/a/features",
    "manifest_sha256": "ab" * 32,
    "code_version": "0123456789abcdef0123456789abcdef01234567",
    "run_id": "tests",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def registered(
    candidate: release.Candidate, full_baseline: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("registry")
    live = release.score_live(None, candidate)
    decision = decide(candidate.metrics, live, min_roc_auc=0.8, tolerance=0.005)
    version = artifacts.write_version(
        root, candidate, lineage=LINEAGE, baseline=full_baseline, live=live, gate=decision,
        created_at="2026-01-02T03:04:05Z",
    )  # fmt: skip
    return root / version, version


def test_every_file_is_written(registered: tuple[Path, str], candidate: release.Candidate) -> None:
    directory, version = registered
    assert sorted(p.name for p in directory.iterdir()) == [
        "metrics.json", "model.json", "model.onnx", "model_card.md", "pr.png", "roc.png",
    ]  # fmt: skip
    onnx_bytes = (directory / "model.onnx").read_bytes()
    assert onnx_bytes == candidate.onnx_bytes
    assert version == hashlib.sha256(onnx_bytes).hexdigest()[:16] == candidate.version
    for png in ("roc.png", "pr.png"):
        data = (directory / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png


def test_model_json_follows_the_contract(registered: tuple[Path, str]) -> None:
    directory, version = registered
    info = json.loads((directory / "model.json").read_text())
    assert set(info) == {
        "version", "sha256", "sklearn_version", "onnxruntime_version", "feature_columns", "threshold", "created_at",
    }  # fmt: skip
    assert info["version"] == version and info["sha256"].startswith(version)
    assert info["sklearn_version"] == "1.9.1" and info["threshold"] == 0.5
    assert info["created_at"] == "2026-01-02T03:04:05Z"
    assert info["feature_columns"][1] == {"name": "job", "type": "string"}
    # The directory is exactly what serving loads.
    assert load_model_dir(directory).version == version


def test_metrics_json_holds_metrics_baseline_and_lineage(
    registered: tuple[Path, str], full_baseline: dict[str, Any]
) -> None:
    report = json.loads((registered[0] / "metrics.json").read_text())
    assert report["metrics"]["roc_auc"] >= 0.80 and {"pr_auc", "brier"} <= set(report["metrics"])
    assert report["baseline"] == full_baseline
    lineage = report["lineage"]
    assert {k: lineage[k] for k in LINEAGE} == LINEAGE
    assert {"python", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pyarrow"} <= set(
        lineage["libraries"]
    )
    assert lineage["libraries"]["scikit-learn"] == "1.9.1"
    assert report["holdout"] == {
        "fraction": 0.2,
        "seed": 42,
        "stratified_on": "label",
        "train_rows": 36168,
        "test_rows": 9043,
    }
    assert report["gate"]["deploy"] is True and "no live model" in report["gate"]["reason"]
    assert report["model"]["hyperparameters"]["max_iter"] == 100
    assert report["onnx_parity_max_abs_diff"] <= 1e-5


def test_model_card_reports_the_metrics(
    registered: tuple[Path, str], candidate: release.Candidate, full_baseline: dict[str, Any]
) -> None:
    card = (registered[0] / "model_card.md").read_text()
    m, baseline = candidate.metrics, full_baseline
    assert f"| ROC AUC | {m['roc_auc']:.4f} | {baseline['roc_auc']:.4f} |" in card
    assert f"| PR AUC (average precision) | {m['pr_auc']:.4f} | {baseline['pr_auc']:.4f} |" in card
    assert f"| Brier score (lower is better) | {m['brier']:.4f} | n/a |" in card
    for phrase in (
        "## Intended use",
        "`duration` is not used",
        "Class imbalance",
        "Threshold",
        LINEAGE["features_uri"],
    ):
        assert phrase in card


def test_live_model_is_scored_on_the_same_holdout(
    registered: tuple[Path, str], candidate: release.Candidate, tmp_path: Path
) -> None:
    directory, version = registered
    live = release.score_live(directory, candidate)
    assert live == {"version": version, "sklearn_version": "1.9.1", "metrics": candidate.metrics}
    # A bare model.onnx works too, and the card gains a live column.
    assert release.score_live(directory / "model.onnx", candidate)["metrics"] == candidate.metrics
    root = tmp_path / "registry"
    artifacts.write_version(root, candidate, lineage=LINEAGE, baseline={"roc_auc": 0.77}, live=live)
    card = (root / version / "model_card.md").read_text()
    assert f"| metric | this model | live model {version} (same holdout) | Spark baseline (its own split) |" in card


def test_lineage_is_required(candidate: release.Candidate, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lineage lacks manifest_sha256, code_version"):
        artifacts.write_version(tmp_path, candidate, lineage={"features_uri": "s3://x"}, baseline={})
    assert not any(tmp_path.iterdir())
