"""How devstack runs an EMR step's spark-submit on this machine, for devstack and the benchmarks alike.

local[2] in client mode with the project's PySpark and interpreter, no UI, and
every scratch file (Spark's local dir, the JVM's and Python's temp files) under
the step's work directory, so removing it removes them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

# The venv's PySpark, next to the interpreter that runs devstack.
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def command(work: Path, args: Sequence[str]) -> list[str]:
    """spark-submit with devstack's settings, then `args` (more options, the script, its arguments)."""
    return [
        str(SPARK_SUBMIT),
        "--master", "local[2]",
        "--deploy-mode", "client",
        "--conf", "spark.ui.enabled=false",
        "--conf", f"spark.local.dir={work / 'spark-local'}",
        *args,
    ]  # fmt: skip


def environment(work: Path) -> dict[str, str]:
    """This process's environment with the step's temp dir (`work`/tmp, which must exist) and interpreter."""
    tmp = work / "tmp"
    return dict(
        os.environ,
        TMPDIR=str(tmp),
        SPARK_SUBMIT_OPTS=f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} -Djava.io.tmpdir={tmp}".strip(),
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_LOCAL_IP="127.0.0.1",
    )
