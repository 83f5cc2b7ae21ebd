"""The model tests' fixtures over the session's features run (``full_run``, tests/integration/conftest.py,
the Spark job on bank-full.csv): its features table, and the default candidate model trained on it."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from bank_ml import data, release
from tests.support.model_build import FeatureRun, TrainRun


@pytest.fixture(scope="session")
def full_table(full_run: FeatureRun) -> pa.Table:
    return data.read_features(full_run.paths)


@pytest.fixture(scope="session")
def candidate(full_table: pa.Table) -> release.Candidate:
    """The default model trained on bank-full's Spark features."""
    return release.train_candidate(full_table)


@pytest.fixture(scope="session")
def full_baseline(train_run: TrainRun) -> dict[str, Any]:
    """The pyspark.ml baseline the model build fitted on bank-full's features."""
    return train_run.record["baseline"]
