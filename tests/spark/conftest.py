"""A local SparkSession shared by the tests of tests/spark, writing only under pytest's tmp dirs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from pyspark.sql import SparkSession

# pyspark.testing imports pyspark.pandas, whose 3.5 code still uses np.NaN, removed
# in NumPy 2 (the lock pins 2.x): without the alias `from pyspark.testing import
# assertDataFrameEqual` fails at import. The job itself never imports pyspark.pandas.
if not hasattr(np, "NaN"):
    np.NaN = np.nan  # type: ignore[attr-defined]
# pyspark.pandas warns at import unless this is set (it only matters for its own API).
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")

# py4j logs "Closing down clientserver connection" from __del__ at interpreter exit,
# after pytest has closed the captured streams: a spurious "--- Logging error ---".
logging.getLogger("py4j").setLevel(logging.WARNING)

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` (not `python -m pytest`) does not put the repo on the path
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """local[2] with two shuffle partitions, no UI; warehouse and scratch dirs in a tmp dir."""
    scratch = tmp_path_factory.mktemp("spark")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("tests-spark")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.warehouse.dir", str(scratch / "spark-warehouse"))
        .config("spark.local.dir", str(scratch / "local"))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
