"""Serving derives the model's features exactly as the Spark job does (docs/interfaces.md)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import SparkSession

from bank_serving import schema
from bank_serving.features import derive_features
from bank_serving.validation import validate_records
from bank_spark import csv_rows as cr
from bank_spark import features_job as bf
from tests.support.paths import BANK_CSV as BANK  # noqa: E402

pytestmark = pytest.mark.integration  # Spark

ROWS = 400


def test_serving_constants_mirror_the_spark_job() -> None:
    assert schema.FEATURE_COLUMNS == tuple(c for c in bf.FEATURE_COLUMNS if c != "label")
    assert schema.CATEGORICAL_COLUMNS == cr.CATEGORICAL_COLUMNS
    assert schema.YES_NO_COLUMNS == bf.YES_NO_COLUMNS
    assert schema.MONTHS == cr.MONTHS
    assert schema.CAMPAIGN_CAP == bf.CAMPAIGN_CAP
    request_fields = [c for c in cr.EXPECTED_COLUMNS if c not in ("duration", "y")]
    assert [name for name, *_ in schema.RECORD_FIELDS] == request_fields


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The header and the first ROWS rows of bank.csv."""
    path = tmp_path_factory.mktemp("parity") / "sample.csv"
    with open(BANK) as f:
        path.write_text("".join(itertools.islice(f, ROWS + 1)))
    return path


def _spark_features(spark: SparkSession, path: Path) -> dict[str, list[Any]]:
    flagged = cr.read_bank_csv(spark, str(path)).transform(cr.flag_rows).cache()
    # One small file is one partition: collect() keeps the file's row order.
    rows = flagged.transform(cr.valid_rows).transform(bf.build_features).collect()
    flagged.unpersist()
    return {c: [row[c] for row in rows] for c in bf.FEATURE_COLUMNS}


def _serving_features(path: Path) -> dict[str, np.ndarray]:
    ints = {name for name, kind, *_ in schema.RECORD_FIELDS if kind == "int"}
    with open(path, newline="") as f:
        records = [
            {k: int(v) if k in ints else v for k, v in row.items() if k in schema.RECORD_FIELD_NAMES}
            for row in csv.DictReader(f, delimiter=";")
        ]
    return derive_features(validate_records(records))


def test_serving_derivation_equals_spark_build_features(spark: SparkSession, sample_csv: Path) -> None:
    expected = _spark_features(spark, sample_csv)
    got = _serving_features(sample_csv)
    assert len(expected["age"]) == ROWS and list(got) == list(schema.FEATURE_COLUMNS)
    # The sample covers every branch of the derivation.
    balance, campaign, pdays = (np.array(expected[c], dtype=float) for c in ("balance", "campaign", "pdays"))
    assert (balance < 0).any() and (balance == 0).any() and (balance > 0).any()
    assert (campaign > bf.CAMPAIGN_CAP).any()
    assert np.isnan(np.array(expected["pdays"], dtype=float)).any() and (pdays > 0).any()

    for column in schema.FEATURE_COLUMNS:
        spark_values, serving_values = expected[column], got[column]
        if column in schema.CATEGORICAL_COLUMNS:
            assert serving_values.tolist() == spark_values, column
            continue
        # Spark's nulls (pdays of the never-contacted) are NaN for the model; values as the model sees them (float32).
        as_model_input = np.array([np.nan if v is None else v for v in spark_values], dtype=np.float64)
        assert serving_values.dtype == np.float32, column
        if column == "balance_slog":
            # Java's log1p and C's may differ in the last bit of a double; float32 hides that.
            np.testing.assert_allclose(serving_values, as_model_input, rtol=1e-6, err_msg=column)
        else:
            np.testing.assert_array_equal(serving_values, as_model_input.astype(np.float32), err_msg=column)
