"""The serving contract in constants: request fields, model features, limits (docs/interfaces.md).

Everything here mirrors spark_jobs/bank_features.py, which serving must not
import (it needs pyspark); tests hold the two equal.
"""

from __future__ import annotations

# The scikit-learn release this serving code was built and tested for (the parity
# tests ran with it). A model whose `bank.sklearn_version` differs is refused at load.
# A test keeps it equal to the scikit-learn pin in requirements.lock.
TRAINED_WITH_SKLEARN = "1.9.1"

MAX_RECORDS = 1000

# The Spark job reads every int column as a 32-bit IntegerType; larger values never
# reach training, so serving refuses them too.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

CATEGORICAL_COLUMNS: tuple[str, ...] = ("job", "marital", "education", "contact", "poutcome")
YES_NO_COLUMNS: tuple[str, ...] = ("default", "housing", "loan")
MONTHS: tuple[str, ...] = (
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
)  # fmt: skip
MONTH_NUMBER: dict[str, int] = {name: i for i, name in enumerate(MONTHS, start=1)}
CAMPAIGN_CAP = 10

# Request fields: (name, kind, low, high) with kind "int", "category", "yes_no" or "month";
# low/high bound ints (inclusive). Order = the order errors are looked for.
RECORD_FIELDS: tuple[tuple[str, str, int, int], ...] = (
    ("age", "int", 1, 120),
    ("job", "category", 0, 0),
    ("marital", "category", 0, 0),
    ("education", "category", 0, 0),
    ("default", "yes_no", 0, 0),
    ("balance", "int", INT32_MIN, INT32_MAX),
    ("housing", "yes_no", 0, 0),
    ("loan", "yes_no", 0, 0),
    ("contact", "category", 0, 0),
    ("day", "int", 1, 31),
    ("month", "month", 0, 0),
    ("campaign", "int", 1, INT32_MAX),
    ("pdays", "int", -1, INT32_MAX),
    ("previous", "int", 0, INT32_MAX),
    ("poutcome", "category", 0, 0),
)
RECORD_FIELD_NAMES: frozenset[str] = frozenset(name for name, *_ in RECORD_FIELDS)

# The model's inputs: spark_jobs/bank_features.FEATURE_COLUMNS without `label`, same order.
FEATURE_COLUMNS: tuple[str, ...] = (
    "age", "job", "marital", "education", "default", "balance", "balance_slog",
    "housing", "loan", "contact", "day", "month", "campaign", "campaign_capped",
    "pdays", "was_contacted", "previous", "poutcome",
)  # fmt: skip
# ONNX element type of each input: strings for the categories, float for the rest.
FEATURE_TYPES: dict[str, str] = {c: "string" if c in CATEGORICAL_COLUMNS else "float" for c in FEATURE_COLUMNS}

# metadata_props keys of model.onnx.
META_FEATURE_COLUMNS = "bank.feature_columns"
META_SKLEARN_VERSION = "bank.sklearn_version"
META_THRESHOLD = "bank.threshold"
PROBABILITIES_OUTPUT = "probabilities"
