"""Fixtures shared across test directories."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# py4j logs "Closing down clientserver connection" from __del__ at interpreter exit,
# after pytest has closed the captured streams: a spurious "--- Logging error ---".
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """One local[2] session for the whole run: two shuffle partitions, no UI, scratch in a tmp dir."""
    from pyspark.sql import SparkSession  # only the tests that ask for Spark pay for it

    # Python workers run Spark's default "python3" unless told otherwise, which need not
    # have this venv's pandas or onnxruntime; read when the session starts the JVM.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    scratch = tmp_path_factory.mktemp("spark")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("tests")
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
