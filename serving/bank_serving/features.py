"""Model features from validated request columns, exactly as spark_jobs/bank_features.py derives them.

    default, housing, loan   "yes" -> 1, "no" -> 0
    month                    "jan".."dec" -> 1..12
    pdays, was_contacted     pdays = -1 ("never contacted") -> was_contacted 0, pdays null (NaN)
    balance_slog             sign(balance) * log1p(|balance|)
    campaign_capped          min(campaign, 10)

Numbers come out as float32 (the ONNX inputs' type; training casts the parquet
columns the same way), strings as object arrays. A test runs the Spark
transforms and this module on the same raw rows and compares them column by column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bank_serving.schema import (
    CAMPAIGN_CAP,
    CATEGORICAL_COLUMNS,
    FEATURE_COLUMNS,
    FEATURE_TYPES,
    MONTH_NUMBER,
    YES_NO_COLUMNS,
)
from bank_serving.validation import Columns

Features = dict[str, np.ndarray]


def _floats(values: list[Any]) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def derive_features(columns: Columns) -> Features:
    """1-D feature arrays (FEATURE_COLUMNS order) from validate_records' columns."""
    # float64 first so the log is computed like Spark's double, then rounded once to float32.
    balance = np.array(columns["balance"], dtype=np.float64)
    campaign = _floats(columns["campaign"])
    pdays = _floats(columns["pdays"])
    contacted = pdays != -1
    derived: Features = {
        "balance": balance.astype(np.float32),
        "balance_slog": (np.sign(balance) * np.log1p(np.abs(balance))).astype(np.float32),
        "month": np.array([MONTH_NUMBER[m] for m in columns["month"]], dtype=np.float32),
        "campaign": campaign,
        "campaign_capped": np.minimum(campaign, np.float32(CAMPAIGN_CAP)),
        "pdays": np.where(contacted, pdays, np.float32(np.nan)).astype(np.float32),
        "was_contacted": contacted.astype(np.float32),
    }
    for name in ("age", "day", "previous"):
        derived[name] = _floats(columns[name])
    for name in YES_NO_COLUMNS:
        derived[name] = np.array([v == "yes" for v in columns[name]], dtype=np.float32)
    for name in CATEGORICAL_COLUMNS:
        derived[name] = np.array(columns[name], dtype=object)
    return {name: derived[name] for name in FEATURE_COLUMNS}


def as_feeds(features: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds: one [N, 1] array per feature, object for strings, float32 otherwise.

    `features` is anything indexable by column name (a dict of arrays, a pandas
    DataFrame); missing numbers must already be NaN.
    """
    feeds: dict[str, np.ndarray] = {}
    for name in FEATURE_COLUMNS:
        dtype = object if FEATURE_TYPES[name] == "string" else np.float32
        feeds[name] = np.asarray(features[name], dtype=dtype).reshape(-1, 1)
    return feeds
