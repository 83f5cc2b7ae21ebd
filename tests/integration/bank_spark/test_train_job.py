"""The model build as EMR runs it (bank_spark.train_job's main on local Spark): the model, the registry, the record."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bank_serving.schema import FEATURE_COLUMNS
from tests.support.model_build import FeatureRun, TrainRun, run_train

pytestmark = pytest.mark.integration  # the features job and the build run on bank-full (tests/integration/conftest.py)

# The model bank-full's features give with the default hyperparameters: the same bytes as when
# the worker trained it (before the build moved to EMR), so the same version.
BANK_FULL_VERSION = "fd3d5a1110e5390e"
REGISTRY_FILES = {"model.onnx", "model.json", "metrics.json", "model_card.md", "roc.png", "pr.png", "profile.json"}


def test_the_build_registers_the_same_model_as_before(train_run: TrainRun) -> None:
    record = train_run.record
    assert record["version"] == BANK_FULL_VERSION
    assert round(record["metrics"]["roc_auc"], 3) == 0.814
    assert record["registered"] is True
    assert record["run_id"] == "tests-train"
    version_dir = train_run.registry / record["version"]
    assert {p.name for p in version_dir.iterdir()} == REGISTRY_FILES
    info = json.loads((version_dir / "model.json").read_text())
    assert info["sha256"] == hashlib.sha256((version_dir / "model.onnx").read_bytes()).hexdigest()
    report = json.loads((version_dir / "metrics.json").read_text())
    assert report["lineage"]["code_version"] == "0123456789abcdef"
    assert report["lineage"]["manifest_sha256"]
    assert report["baseline"] == record["baseline"]
    assert "Gate: deploy" in (version_dir / "model_card.md").read_text()
    # What scoring runs measure drift against: every feature of bank-full binned, and the holdout's scores.
    profile = json.loads((version_dir / "profile.json").read_text())
    assert profile["rows"] == record["rows"] and set(profile["features"]) == set(FEATURE_COLUMNS)
    assert profile["features"]["job"]["kind"] == "categorical" and len(profile["features"]["age"]["edges"]) == 9
    assert sum(profile["score"]["proportions"]) == pytest.approx(1.0)


def test_the_record_says_where_the_time_went(train_run: TrainRun) -> None:
    record = train_run.record
    assert set(record["phase_seconds"]) == {"read", "train", "live", "baseline", "baseline_wait", "register"}
    assert all(seconds >= 0 for seconds in record["phase_seconds"].values())
    assert record["driver_peak_rss_mb"] > 0
    assert record["deploy"] is True and record["live"] is None
    assert "no live model" in record["reason"]


def test_the_pyspark_baseline_is_fitted_in_the_build(train_run: TrainRun, full_run: FeatureRun) -> None:
    baseline = train_run.record["baseline"]
    assert baseline["model"] == "pyspark.ml LogisticRegression"
    assert 0.65 < baseline["roc_auc"] < train_run.record["metrics"]["roc_auc"]
    assert baseline["train_rows"] + baseline["test_rows"] == full_run.manifest["rows"]["out"]
    assert "baseline" not in full_run.manifest  # the features job no longer fits it


@pytest.fixture()
def registry_copy(train_run: TrainRun, tmp_path: Path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(train_run.registry, target)
    return target


def test_a_rebuild_on_the_same_data_registers_nothing_and_compares_with_live(
    full_run: FeatureRun, registry_copy: Path, tmp_path: Path
) -> None:
    (registry_copy / "live.json").write_text(json.dumps({"version": BANK_FULL_VERSION}))
    before = {p: p.stat().st_mtime_ns for p in (registry_copy / BANK_FULL_VERSION).iterdir()}
    build = tmp_path / "builds" / "0123abcd.json"
    args = ("--min-roc-auc", "0.5", "--build-record", str(build))
    run = run_train(full_run.output, registry_copy, tmp_path / "candidate.json", *args)
    assert run.exit_code == 0, run.stderr[-3000:]
    record: dict[str, Any] = run.record
    assert json.loads(build.read_text()) == record  # the copy a release with the same inputs reads instead
    assert record["version"] == BANK_FULL_VERSION and record["registered"] is False
    assert {p: p.stat().st_mtime_ns for p in (registry_copy / BANK_FULL_VERSION).iterdir()} == before
    assert record["live"]["version"] == BANK_FULL_VERSION
    assert record["live"]["metrics"]["roc_auc"] == record["metrics"]["roc_auc"]  # the same model, the same holdout
    assert record["deploy"] is True


def test_other_hyperparameters_make_another_version_that_the_gate_can_refuse(
    full_run: FeatureRun, registry_copy: Path, tmp_path: Path
) -> None:
    (registry_copy / "live.json").write_text(json.dumps({"version": BANK_FULL_VERSION}))
    run = run_train(
        full_run.output, registry_copy, tmp_path / "candidate.json",
        "--hyperparameters", json.dumps({"max_iter": 3, "learning_rate": 0.05}),
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr[-3000:]
    record = run.record
    assert record["version"] != BANK_FULL_VERSION and record["registered"] is True
    assert record["deploy"] is False
    assert "below the floor" in record["reason"] or "worse than the live" in record["reason"]
    assert (registry_copy / record["version"] / "model.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--hyperparameters", '{"trees": 5}'],
            "bank_train: error: --hyperparameters: unknown hyperparameter(s): trees",
        ),
        (["--hyperparameters", "[1]"], "bank_train: error: --hyperparameters must be a JSON object"),
        (["--hyperparameters", '{"max_iter": 0}'], "bank_train: error: --hyperparameters: hyperparameter max_iter=0"),
        (["--min-roc-auc", "1.5"], "bank_train: error: --min-roc-auc must be within 0..1"),
        (["--holdout-fraction", "1"], "bank_train: error: --holdout-fraction must be strictly between 0 and 1"),
        (["--baseline-max-rows", "10"], "bank_train: error: --baseline-max-rows must be at least 100, got 10"),
        (["--seed", "x"], "bank_train: error: argument --seed: invalid int value: 'x'"),
    ],
)
def test_bad_arguments_fail_naming_them(full_run: FeatureRun, tmp_path: Path, args: list[str], message: str) -> None:
    run = run_train(full_run.output, tmp_path / "registry", tmp_path / "candidate.json", *args)
    assert run.exit_code != 0
    assert message in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "candidate.json").exists()
    assert not (tmp_path / "registry").exists()


def test_uncommitted_features_are_refused(tmp_path: Path) -> None:
    (tmp_path / "features").mkdir()
    run = run_train(tmp_path / "features", tmp_path / "registry", tmp_path / "candidate.json")
    assert run.exit_code == 1
    assert "_manifest.json is missing" in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "candidate.json").exists()


def test_a_live_record_naming_an_unregistered_version_is_refused(full_run: FeatureRun, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "live.json").write_text(json.dumps({"version": "00000000000000ff"}))
    run = run_train(full_run.output, registry, tmp_path / "candidate.json")
    assert run.exit_code == 1
    assert "names version '00000000000000ff', which is not registered" in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "candidate.json").exists()


def test_a_version_registered_with_other_bytes_is_not_overwritten(
    full_run: FeatureRun, registry_copy: Path, tmp_path: Path
) -> None:
    info = registry_copy / BANK_FULL_VERSION / "model.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "sha256": "0" * 64}))
    run = run_train(full_run.output, registry_copy, tmp_path / "candidate.json")
    assert run.exit_code == 1
    assert "versions are immutable" in run.stderr.strip().splitlines()[-1]
    assert json.loads(info.read_text())["sha256"] == "0" * 64
