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
from tests.paths import BANK_FULL_CSV as BANK_FULL


@dataclass(frozen=True)
class FeatureRun:
    """A committed run of the features job (bank_spark.features)."""

    output: Path
    manifest: dict[str, Any]

    @property
    def paths(self) -> list[str]:
        return data.feature_paths(self.manifest, str(self.output))


@pytest.fixture(scope="session")
def full_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> FeatureRun:
    """The real Spark job on bank-full.csv (about 20 s), committed under a tmp dir."""
    from bank_spark.features import main

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
