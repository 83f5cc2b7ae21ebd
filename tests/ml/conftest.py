"""Real features for the model tests: the Spark job runs once per session on bank-full.csv.

Fixtures (the SparkSession comes from tests/conftest.py): the committed run (manifest + directory), its
features table, and the default candidate model trained on it.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from bank_ml import data, release
from tests.support.paths import BANK_FULL_CSV as BANK_FULL


@dataclass(frozen=True)
class FeatureRun:
    """A committed run of the features job (bank_spark.features_job)."""

    output: Path
    manifest: dict[str, Any]

    @property
    def paths(self) -> list[str]:
        return data.feature_paths(self.manifest, str(self.output))


@pytest.fixture(scope="session")
def full_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> FeatureRun:
    """The real Spark job on bank-full.csv (about 20 s), committed under a tmp dir."""
    from bank_spark.features_job import main

    output = tmp_path_factory.mktemp("features") / "run=tests-ml"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--input", str(BANK_FULL), "--output", str(output), "--run-id", "tests-ml"])
    assert rc == 0, err.getvalue()[-2000:]
    return FeatureRun(output=output, manifest=json.loads((output / "_manifest.json").read_text()))


@pytest.fixture(scope="session")
def full_table(full_run: FeatureRun) -> pa.Table:
    return data.read_features(full_run.paths)


@pytest.fixture(scope="session")
def candidate(full_table: pa.Table) -> release.Candidate:
    """The default model trained on bank-full's Spark features."""
    return release.train_candidate(full_table)


@dataclass(frozen=True)
class TrainRun:
    """A run of the model build (bank_spark.train_job) on the features run, into a local registry."""

    registry: Path
    record: dict[str, Any]
    exit_code: int
    stderr: str


def run_train(features: Path, registry: Path, output: Path, *extra: str, run_id: str = "tests-train") -> TrainRun:
    """The model build's main() as spark-submit runs it, on local paths (the same code EMR runs)."""
    from bank_spark.train_job import main

    out, err = io.StringIO(), io.StringIO()
    args = ["--features", str(features), "--registry", str(registry), "--output", str(output), "--run-id", run_id,
            "--code-version", "0123456789abcdef", *extra]  # fmt: skip
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    record = json.loads(output.read_text()) if rc == 0 else {}
    return TrainRun(registry=registry, record=record, exit_code=rc, stderr=err.getvalue())


@pytest.fixture(scope="session")
def train_run(full_run: FeatureRun, tmp_path_factory: pytest.TempPathFactory) -> TrainRun:
    """The model build on bank-full's features, with nothing live yet (about 15 s)."""
    root = tmp_path_factory.mktemp("train")
    run = run_train(full_run.output, root / "registry", root / "candidate.json")
    assert run.exit_code == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="session")
def full_baseline(train_run: TrainRun) -> dict[str, Any]:
    """The pyspark.ml baseline the model build fitted on bank-full's features."""
    return train_run.record["baseline"]
