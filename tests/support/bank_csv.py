"""Lines of a bank CSV for tests: the header and a good row with changes, in bank-full's own style."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bank_spark.csv_rows import EXPECTED_COLUMNS, INT_COLUMNS

HEADER = ";".join(f'"{c}"' for c in EXPECTED_COLUMNS)
GOOD: dict[str, Any] = {
    "age": 58, "job": "management", "marital": "married", "education": "tertiary",
    "default": "no", "balance": 2143, "housing": "yes", "loan": "no", "contact": "unknown",
    "day": 5, "month": "may", "duration": 261, "campaign": 1, "pdays": -1, "previous": 0,
    "poutcome": "unknown", "y": "no",
}  # fmt: skip


def csv_line(**changes: Any) -> str:
    """A data line (ints bare, strings quoted, None empty): GOOD with `changes`."""
    values = {**GOOD, **changes}
    return ";".join("" if v is None else str(v) if c in INT_COLUMNS else f'"{v}"' for c, v in values.items())


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path
