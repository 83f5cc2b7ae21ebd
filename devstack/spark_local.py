"""How devstack runs an EMR step's spark-submit on this machine, for devstack and the benchmarks alike.

local[2] in client mode with the project's PySpark, no UI, and every scratch file
(Spark's local dir, the JVM's and Python's temp files) under the step's work
directory, so removing it removes them. The Python interpreter is the caller's
choice: devstack's steps take it from the cluster's Spark configuration (a
SPARK_CONF_DIR as EMR writes it, see devstack.emr_node), the benchmarks use this one.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# The venv's PySpark, next to the interpreter that runs devstack.
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
# Its Spark home: spark-submit's scripts find conf/, jars/ and python/lib/ there.
SPARK_HOME = Path((importlib.util.find_spec("pyspark").submodule_search_locations or [""])[0])  # type: ignore[union-attr]


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


def environment(work: Path, *, python: str | None = None, conf_dir: Path | None = None) -> dict[str, str]:
    """This process's environment with the step's temp dir (`work`/tmp, which must exist).

    ``python``: the driver's and the workers' interpreter (PYSPARK_PYTHON, PYSPARK_DRIVER_PYTHON);
    None leaves the choice to ``conf_dir``'s spark-env.sh and spark-defaults.conf (SPARK_CONF_DIR).
    """
    tmp = work / "tmp"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_CONF_DIR"))}
    env.update(
        TMPDIR=str(tmp),
        SPARK_SUBMIT_OPTS=f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} -Djava.io.tmpdir={tmp}".strip(),
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOCAL_IP="127.0.0.1",
    )
    if python is not None:
        env.update(PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    if conf_dir is not None:
        env["SPARK_CONF_DIR"] = str(conf_dir)
    return env
