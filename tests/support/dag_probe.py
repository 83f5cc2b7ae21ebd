"""Load the bundle's DAGs and plugin in another environment's Python: shared by the platform install tests.

A platform install test (test_mwaa_install.py, test_astro_install.py) builds a venv the way the
platform builds its image, then asks that venv's Python, in a child process, what a DAG processor
there would see: the DagBag's DAGs and import errors, the plugins and their errors, and whether
every operator, sensor, trigger and util module imports (a module no DAG uses yet still runs on workers).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

PROBE = r"""
import importlib, json, pkgutil, sys, traceback
from importlib.metadata import version
from airflow import plugins_manager
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3.1+
except ImportError:
    from airflow.models.dagbag import DagBag  # Airflow 3.0
if hasattr(plugins_manager, "_get_plugins"):
    plugins, plugin_errors = plugins_manager._get_plugins()
    names = [p.name for p in plugins]
else:
    plugins_manager.ensure_plugins_loaded()
    names = [p.name for p in plugins_manager.plugins or []]
    plugin_errors = plugins_manager.import_errors
bag = DagBag()
module_errors = {}
for sub in ("operators", "sensors", "triggers", "utils"):
    package = importlib.import_module(f"bank_pipeline.{sub}")
    for info in pkgutil.iter_modules(package.__path__, f"bank_pipeline.{sub}."):
        try:
            importlib.import_module(info.name)
        except Exception:
            module_errors[info.name] = traceback.format_exc(limit=-2)
print("PROBE" + json.dumps({
    "versions": {d: version(d) for d in ("apache-airflow", *sys.argv[1:])},
    "plugins": names,
    "plugin_errors": {k: str(v) for k, v in plugin_errors.items()},
    "dags": sorted(bag.dags),
    "dag_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "module_errors": module_errors,
}))
"""
DAG_IDS = ["bank_batch_score", "bank_features_emr", "bank_model_release", "bank_preflight"]
ERRORS = ("dag_errors", "plugin_errors", "module_errors")


def probe(venv: Path, dags: Path, plugins: Path, home: Path, distributions: tuple[str, ...] = ()) -> dict:
    """What ``venv``'s Airflow sees with ``dags`` and ``plugins`` as its folders (and the versions of ``distributions``).

    Only the venv's bin on PATH and a fresh AIRFLOW_HOME under ``home``: nothing of this checkout leaks in.
    """
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    argv = [str(venv / "bin" / "python"), "-c", PROBE, *distributions]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=home)
    assert result.returncode == 0, f"probe failed: {result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    line = next(x for x in result.stdout.splitlines() if x.startswith("PROBE"))
    return json.loads(line[len("PROBE") :])


def assert_the_bundle_loads(out: dict) -> None:
    """No import error anywhere, the three DAGs, and the plugin registered."""
    assert all(out[k] == {} for k in ERRORS), json.dumps({k: out[k] for k in ERRORS}, indent=1)
    assert out["dags"] == DAG_IDS
    assert "bank_pipeline" in out["plugins"]
