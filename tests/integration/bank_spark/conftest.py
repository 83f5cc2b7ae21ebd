"""Import-time set-up for the Spark job tests (the SparkSession fixture is in tests/conftest.py)."""

from __future__ import annotations

import os

import numpy as np

# pyspark.testing imports pyspark.pandas, whose 3.5 code still uses np.NaN, removed
# in NumPy 2 (the lock pins 2.x): without the alias `from pyspark.testing import
# assertDataFrameEqual` fails at import. The job itself never imports pyspark.pandas.
if not hasattr(np, "NaN"):
    np.NaN = np.nan  # type: ignore[attr-defined]
# pyspark.pandas warns at import unless this is set (it only matters for its own API).
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
