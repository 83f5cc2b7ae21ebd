"""The files that travel with a run come from the package, are reproducible, and are staged by content hash."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bank_pipeline import resources
from bank_pipeline import spark_steps as emr
from tests.support.paths import locked_versions

pytestmark = pytest.mark.unit


def test_the_nodes_requirements_are_the_locks_emr_node_group_with_hashes():
    """`make lock` writes the file from uv.lock; an edit to either without the other fails here."""
    from tests.support.paths import REPO

    exported = subprocess.run(
        [str(Path(sys.executable).parent / "uv"), "export", "--frozen", "--only-group", "emr-node",
         "--no-emit-project", "--no-header", "--no-annotate", "--format", "requirements-txt"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    shipped = resources.node_requirements().decode()
    assert [line for line in shipped.splitlines() if not line.startswith("#")] == exported.splitlines()
    pins = dict(line.split(" ", 1)[0].split("==", 1) for line in shipped.splitlines() if "==" in line)
    assert {"numpy", "pandas", "pyarrow", "onnxruntime", "scikit-learn", "skl2onnx", "matplotlib", "pip"} <= set(pins)
    lock = locked_versions()
    assert {name: lock.get(name.lower()) for name in pins} == pins
    requirements = [line for line in shipped.splitlines() if "==" in line]
    assert all(line.rstrip().endswith("\\") for line in requirements)  # each pin is followed by its hashes
    assert shipped.count("--hash=sha256:") >= 2 * len(requirements)


def test_the_bootstrap_installs_from_the_staged_wheels_only():
    script = resources.bootstrap_script().decode()
    assert "--no-index" in script and "--find-links" in script and "--require-hashes" in script
    assert '"$pip_wheel/pip" install' in script and "https://" not in script and "PIP_INDEX_URL" not in script


def test_each_job_ships_its_entry_point_the_zip_and_its_bootstrap():
    assert set(resources.job_files("bank_features")) == {"bank_features.py", resources.PY_FILES_NAME, "python_env.sh"}
    assert set(resources.job_files("batch_score")) == {"batch_score.py", resources.PY_FILES_NAME, "python_env.sh"}
    assert set(resources.job_files("bank_train")) == {"bank_train.py", resources.PY_FILES_NAME, "python_env.sh"}
    assert b"from bank_spark.features_job import main" in resources.entrypoint("bank_features")
    assert b"from bank_spark.train_job import main" in resources.entrypoint("bank_train")
    with pytest.raises(ValueError, match="unknown Spark job 'nope'; known: bank_features, batch_score, bank_train"):
        resources.job_files("nope")


def test_py_files_zip_is_reproducible_and_holds_only_sources():
    first, second = resources.py_files_zip(), resources.py_files_zip()
    assert first == second
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert {"bank_spark/__init__.py", "bank_spark/features_job.py", "bank_spark/batch_score_job.py"} <= set(names)
    assert {"bank_spark/csv_rows.py", "bank_spark/storage.py", "bank_spark/commit.py", "bank_spark/cli.py"} <= set(
        names
    )
    assert {"bank_serving/__init__.py", "bank_serving/model.py", "bank_serving/schema.py"} <= set(names)
    assert {"bank_spark/train_job.py", "bank_spark/baseline.py", "bank_ml/train.py", "bank_ml/artifacts.py"} <= set(
        names
    )
    assert all(n.endswith(".py") and "/entrypoints/" not in n for n in names)


@pytest.mark.parametrize("job", ["bank_spark.batch_score_job", "bank_spark.features_job", "bank_spark.train_job"])
def test_the_jobs_import_from_the_zip_alone(tmp_path: Path, job: str):
    zip_path = tmp_path / resources.PY_FILES_NAME
    zip_path.write_bytes(resources.py_files_zip())
    code = f"import {job} as j, bank_serving.schema as s; print(j.__file__); print(s.__file__)"
    env = {"PYTHONPATH": str(zip_path), "PATH": os.environ.get("PATH", "")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert all(line.startswith(str(zip_path)) for line in result.stdout.splitlines()), result.stdout


def test_neither_job_imports_the_other():  # the model build reads features with batch_score's reader
    archive = zipfile.ZipFile(io.BytesIO(resources.py_files_zip()))
    for job, other in (("features_job", "batch_score_job"), ("batch_score_job", "features_job")):
        text = archive.read(f"bank_spark/{job}.py").decode()
        assert f"bank_spark.{other}" not in text and f"from bank_spark import {other}" not in text


def test_code_is_staged_by_content_hash():
    class FakeS3:
        def __init__(self):
            self.objects: dict[tuple[str, str], bytes] = {}

        def check_for_key(self, key, bucket_name):
            return (bucket_name, key) in self.objects

        def load_bytes(self, data, key, bucket_name):
            self.objects[(bucket_name, key)] = data

    s3 = FakeS3()
    first = emr.stage_job(s3, "s3://lake/code/", "batch_score")
    uploaded = dict(s3.objects)
    second = emr.stage_job(s3, "s3://lake/code/", "batch_score")
    assert first == second and s3.objects == uploaded  # nothing rewritten
    assert re.fullmatch(r"s3://lake/code/batch_score/[0-9a-f]{16}/batch_score\.py", first.script_uri)
    assert first.bootstrap_uri == first.script_uri.replace("batch_score.py", "python_env.sh")
    assert {k.rsplit("/", 1)[1] for _, k in uploaded} == {"batch_score.py", resources.PY_FILES_NAME, "python_env.sh"}
    features = emr.stage_job(s3, "s3://lake/code/", "bank_features")
    assert features.bootstrap_uri.endswith("/python_env.sh") and features.py_files_uri.endswith(resources.PY_FILES_NAME)


def test_step_ships_the_zip_before_the_script():
    staged = emr.StagedJob("s3://b/c/batch_score.py", "s3://b/c/bank_jobs.zip", "s3://b/c/boot.sh")
    step = emr.job_step("bank_batch_score", staged, ["--run-id", "r"])
    assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"
    assert step["HadoopJarStep"]["Args"] == [
        "spark-submit", "--deploy-mode", "client", "--py-files", staged.py_files_uri, staged.script_uri, "--run-id", "r",
    ]  # fmt: skip


def test_code_version_hashes_the_model_code_and_fails_loudly_without_it(monkeypatch: pytest.MonkeyPatch):
    version = resources.code_version()
    assert re.fullmatch(r"[0-9a-f]{16}", version) and resources.code_version() == version
    monkeypatch.setattr(resources, "MODEL_CODE_PACKAGES", ("bank_ml", "bank_pipeline.manifests_missing"))
    with pytest.raises(ModuleNotFoundError):
        resources.code_version()
    from bank_pipeline.utils import oci_layer

    monkeypatch.setattr(resources, "MODEL_CODE_PACKAGES", ("bank_ml",))
    monkeypatch.setattr(oci_layer, "package_files", lambda package: {})
    with pytest.raises(resources.ResourceMissingError, match="package bank_ml has no Python sources"):
        resources.code_version()


def test_kubernetes_manifests_come_from_the_package():
    kinds = sorted(doc["kind"] for doc in resources.kubernetes_manifests())
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
