"""The bundle deploys as it is: wheel + plugins.zip (MWAA's shape) into an environment holding only
Airflow and the runtime requirements, DAGs from a folder holding only dags/.

Airflow's published constraints are on GitHub, which this machine cannot reach; the
environment is resolved with the dev lock as constraints instead (the same versions the
suite runs), from uv's cache, so the install takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devstack.deploy import mwaa_bundle, runtime_requirements
from tests.support.paths import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

UV = Path(sys.executable).parent / "uv"
AIRFLOW = "apache-airflow==3.3.2"

PROBE = r"""
import json, sys
from pathlib import Path
from airflow import plugins_manager
from airflow.dag_processing.dagbag import DagBag

plugins, plugin_errors = plugins_manager._get_plugins()
bag = DagBag()
out = {
    "plugins": [p.name for p in plugins],
    "plugin_errors": {k: str(v) for k, v in plugin_errors.items()},
    "dags": sorted(bag.dags),
    "dag_errors": {k: str(v) for k, v in bag.import_errors.items()},
}

# What the tasks read from the package, wherever it is installed.
import bank_pipeline, bank_serving, bank_spark
from bank_pipeline import resources
from bank_pipeline.spark_steps import stage_job

class FakeS3:
    objects = {}
    def check_for_key(self, key, bucket_name): return (bucket_name, key) in self.objects
    def load_bytes(self, data, key, bucket_name): self.objects[(bucket_name, key)] = len(data)

staged = {job: stage_job(FakeS3(), "s3://lake/code/", job).__dict__ for job in resources.JOBS}
out.update(
    package_files={m.__name__: m.__file__ for m in (bank_pipeline, bank_serving, bank_spark)},
    staged=staged,
    uploaded=sorted(k for _, k in FakeS3.objects),
    bootstrap=len(resources.bootstrap_script()) + len(resources.node_requirements()),
    manifests=sorted(d["kind"] for d in resources.kubernetes_manifests()),
    code_version=resources.code_version(),
    dev_modules=[m for m in ("moto", "pyspark", "pytest", "kmock", "playwright", "devstack") if __import__("importlib").util.find_spec(m)],
)
print("PROBE" + json.dumps(out))
"""


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{argv[:3]}: {result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the wheel and the MWAA bundle, unpack it as MWAA does, install it into a fresh venv."""
    root = tmp_path_factory.mktemp("deploy")
    run([str(UV), "build", "--wheel", "--out-dir", str(root / "dist"), str(REPO)], cwd=root)
    (wheel,) = (root / "dist").glob("*.whl")
    plugins = root / "airflow" / "plugins"
    bundle = mwaa_bundle(wheel, root / "mwaa", plugins_dir=str(plugins))
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(bundle / "plugins.zip") as archive:
        archive.extractall(plugins)
    constraints = root / "constraints.txt"
    exported = run([str(UV), "export", "--frozen", "--no-hashes", "--no-emit-project", "--all-extras",
                    "--format", "requirements-txt"], cwd=REPO)  # fmt: skip
    constraints.write_text(exported.stdout)
    venv = root / "venv"
    run([str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)])
    run([str(UV), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-c", str(constraints),
         AIRFLOW, "-r", str(bundle / "requirements.txt")])  # fmt: skip
    return {"root": root, "venv": venv, "bundle": bundle, "plugins": plugins, "wheel": wheel}


def test_the_wheel_holds_the_packages_and_the_files_that_travel_with_a_run(deployed: dict[str, Path]) -> None:
    names = zipfile.ZipFile(deployed["wheel"]).namelist()
    for package in ("bank_serving", "bank_ml", "bank_pipeline", "bank_spark"):
        assert f"{package}/__init__.py" in names
    assert {"bank_spark/entrypoints/bank_features.py", "bank_spark/entrypoints/batch_score.py"} <= set(names)
    assert {"bank_spark/bootstrap/python_env.sh", "bank_spark/bootstrap/requirements.txt"} <= set(names)
    assert {f"bank_pipeline/manifests/{k}.yaml" for k in ("deployment", "service", "hpa", "pdb")} <= set(names)
    rbac = ("role", "rolebinding", "serviceaccount")  # for whoever administers the namespace
    assert {f"bank_pipeline/manifests/rbac/{k}.yaml" for k in rbac} <= set(names)
    assert not [n for n in names if n.startswith(("devstack/", "bench/", "tests/", "dags/"))]


def test_mwaa_bundle_has_the_shape_mwaa_deploys(deployed: dict[str, Path]) -> None:
    bundle = deployed["bundle"]
    assert sorted(p.name for p in bundle.iterdir()) == ["dags", "plugins.zip", "requirements.txt", "startup.sh"]
    assert sorted(zipfile.ZipFile(bundle / "plugins.zip").namelist()) == [
        "bank_marketing_release-1.0.0-py3-none-any.whl",
        "bank_pipeline_plugin.py",
    ]
    lines = (bundle / "requirements.txt").read_text().splitlines()
    assert lines[:-1] == runtime_requirements() and lines[-1].endswith(deployed["wheel"].name)


def test_a_fresh_airflow_with_the_bundle_loads_every_dag_and_finds_what_tasks_ship(
    deployed: dict[str, Path], tmp_path: Path
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    for dag_file in (deployed["bundle"] / "dags").glob("*.py"):
        (dags / dag_file.name).write_bytes(dag_file.read_bytes())
    env = {
        "PATH": f"{deployed['venv'] / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow_home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(deployed["plugins"]),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "JAVA_HOME": os.environ.get("JAVA_HOME", ""),
    }
    result = run([str(deployed["venv"] / "bin" / "python"), "-c", PROBE], env=env, cwd=tmp_path)
    line = next(x for x in result.stdout.splitlines() if x.startswith("PROBE"))
    out = json.loads(line[len("PROBE") :])
    assert out["dag_errors"] == {} and out["plugin_errors"] == {}
    assert out["dags"] == ["bank_batch_score", "bank_features_emr", "bank_model_release", "bank_preflight"]
    assert "bank_pipeline" in out["plugins"]
    site = str(deployed["venv"] / "lib")
    assert all(path.startswith(site) for path in out["package_files"].values()), out["package_files"]
    assert out["staged"]["batch_score"]["bootstrap_uri"].endswith("/python_env.sh")
    assert out["staged"]["bank_features"]["script_uri"].endswith("/bank_features.py")
    assert {key.rsplit("/", 1)[1] for key in out["uploaded"]} == {
        "bank_features.py", "batch_score.py", "bank_train.py", "bank_jobs.zip", "python_env.sh",
    }  # fmt: skip
    assert out["bootstrap"] > 0 and out["manifests"] == sorted(["Deployment", "HorizontalPodAutoscaler",
                                                                  "PodDisruptionBudget", "Service"])  # fmt: skip
    assert len(out["code_version"]) == 16
    assert out["dev_modules"] == []  # nothing the suite or devstack needs came along
