"""bank_batch_score without running it: the graph, the cluster, the shipped code, input choice, output checks."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from bank_pipeline import assets, settings
from bank_pipeline import batch_score as bs
from bank_pipeline.errors import BadInputError

REPO = Path(__file__).resolve().parents[1]


def load_dag_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "dags" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dag_module():
    return load_dag_module("bank_batch_score")


# --------------------------------------------------------------------------- graph


def test_the_live_model_schedules_it_and_the_cluster_is_always_terminated(dag_module):
    dag = dag_module.dag
    assert dag.schedule == [assets.LIVE_MODEL]
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream == {
        "prepare_score": set(),
        "create_cluster": {"prepare_score"},
        "run_score": {"prepare_score", "create_cluster"},
        "wait_for_score": {"create_cluster", "run_score"},
        "validate_scores": {"prepare_score", "wait_for_score"},
        "terminate_cluster": {"create_cluster", "wait_for_score"},
    }
    assert dag.task_dict["create_cluster"].is_setup and dag.task_dict["terminate_cluster"].is_teardown
    assert dag.task_dict["run_score"].retries == 0
    assert dag.task_dict["wait_for_score"].deferrable
    assert dag.task_dict["prepare_score"].inlets == [assets.FEATURES]
    assert dag.task_dict["validate_scores"].outlets == [assets.SCORES]


def test_a_release_emits_the_live_model_event():
    release = load_dag_module("bank_model_release").dag
    assert release.task_dict["record_live"].outlets == [assets.LIVE_MODEL]


def test_cluster_runs_python_311_with_the_scorers_libraries(dag_module):
    overrides = dag_module.JOB_FLOW_OVERRIDES
    assert overrides["ReleaseLabel"] == settings.load().emr_release_label
    assert overrides["AutoTerminationPolicy"]["IdleTimeout"] >= 60
    assert {t["Key"] for t in overrides["Tags"]} == {"airflow:dag_id", "airflow:run_id"}
    [action] = overrides["BootstrapActions"]
    assert "xcom_pull(task_ids='prepare_score', key='bootstrap_uri')" in action["ScriptBootstrapAction"]["Path"]
    [spark_env] = overrides["Configurations"]
    assert spark_env["Classification"] == "spark-env"
    assert spark_env["Configurations"][0]["Properties"] == {"PYSPARK_PYTHON": bs.EMR_PYTHON}
    assert bs.EMR_PYTHON.rsplit("/", 1)[1] in (REPO / "spark_jobs" / bs.BOOTSTRAP_NAME).read_text()


def test_bootstrap_pins_the_locked_versions():
    lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", (REPO / "requirements.lock").read_text(), re.M))
    lock = {name.lower(): version for name, version in lock.items()}
    script = (REPO / "spark_jobs" / bs.BOOTSTRAP_NAME).read_text()
    pins = dict(re.findall(r"^\s+([A-Za-z0-9_.-]+)==(\S+)", script, re.M))
    assert {"numpy", "pandas", "pyarrow", "onnxruntime"} <= set(pins)
    assert {name: lock.get(name) for name in pins} == pins


def test_step_ships_the_zip_before_the_script():
    code = bs.StagedCode("s3://b/c/batch_score.py", "s3://b/c/bank_batch_score.zip", "s3://b/c/boot.sh")
    step = bs.score_step(code, ["--run-id", "r"])
    assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"
    assert step["HadoopJarStep"]["Args"] == [
        "spark-submit", "--deploy-mode", "client", "--py-files", code.py_files_uri, code.script_uri, "--run-id", "r",
    ]  # fmt: skip


# --------------------------------------------------------------------------- shipped code


def test_py_files_zip_is_reproducible_and_holds_only_sources():
    first, second = bs.build_py_files(), bs.build_py_files()
    assert first == second
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert {"spark_jobs/__init__.py", "spark_jobs/bank_features.py", "spark_jobs/batch_score.py"} <= set(names)
    assert {"bank_serving/__init__.py", "bank_serving/model.py", "bank_serving/features.py"} <= set(names)
    assert all(n.endswith(".py") for n in names)


def test_the_job_imports_from_the_zip_alone(tmp_path: Path):
    zip_path = tmp_path / bs.PY_FILES_NAME
    zip_path.write_bytes(bs.build_py_files())
    code = (
        "import spark_jobs.batch_score as j, bank_serving.model as m; "
        "print(j.__file__); print(m.__file__); print(list(j.feature_types())[:2])"
    )
    env = {"PYTHONPATH": str(zip_path), "PATH": os.environ.get("PATH", "")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith(str(zip_path)) for line in lines[:2]), lines
    assert lines[2] == "['age', 'job']"


def test_code_is_staged_by_content_hash():
    class FakeS3:
        def __init__(self):
            self.objects: dict[tuple[str, str], bytes] = {}

        def check_for_key(self, key, bucket_name):
            return (bucket_name, key) in self.objects

        def load_bytes(self, data, key, bucket_name):
            self.objects[(bucket_name, key)] = data

    s3 = FakeS3()
    first = bs.stage_code(s3, "s3://lake/code/")
    uploaded = dict(s3.objects)
    second = bs.stage_code(s3, "s3://lake/code/")
    assert first == second and s3.objects == uploaded  # nothing rewritten
    assert re.fullmatch(r"s3://lake/code/bank_batch_score/[0-9a-f]{16}/batch_score\.py", first.script_uri)
    assert {k.rsplit("/", 1)[1] for _, k in uploaded} == {"batch_score.py", bs.PY_FILES_NAME, bs.BOOTSTRAP_NAME}


# --------------------------------------------------------------------------- which features, which model

MANIFEST = "s3://bank-lake/features/bank/run=r1/_manifest.json"


def event(**extra) -> SimpleNamespace:
    return SimpleNamespace(extra=extra)


def test_features_param_wins_else_newest_event():
    older = "s3://bank-lake/features/bank/run=r0/_manifest.json"
    events = [event(manifest_uri=older), event(manifest_uri=MANIFEST), event()]
    assert bs.resolve_features_manifest(older, events) == older
    assert bs.resolve_features_manifest("", events) == MANIFEST
    with pytest.raises(BadInputError, match="run bank_features_emr first, or give features_manifest_uri"):
        bs.resolve_features_manifest("", [])


def test_model_param_wins_then_the_triggering_event_then_live_json():
    def never():
        raise AssertionError("live.json read although not needed")

    assert bs.resolve_model_version("aaaaaaaaaaaaaaaa", [event(version="b" * 16)], never) == "a" * 16
    assert bs.resolve_model_version("", [event(version="b" * 16), event(version="c" * 16)], never) == "c" * 16
    assert bs.resolve_model_version("", [], lambda: {"version": "d" * 16}) == "d" * 16
    with pytest.raises(BadInputError, match="nothing is live yet; run bank_model_release first, or give model_version"):
        bs.resolve_model_version("", [], lambda: None)


def test_output_is_the_runs_own_directory():
    cfg = settings.load()
    assert bs.output_uri(cfg, "manual__2026-01-02T00:00:00+00:00") == (
        f"s3://{cfg.lake_bucket}/scores/bank/run=manual__2026-01-02T00_00_00_00_00/"
    )
    assert bs.output_uri(cfg, "r").startswith(assets.SCORES.uri)


# --------------------------------------------------------------------------- output checks


def scores_manifest(**over):
    base = {
        "run_id": "r1",
        "rows": {"in": 100, "out": 100},
        "files": ["_attempts/a/scores/part-0.parquet"],
        "paths": {"scores": "_attempts/a/scores"},
        "model": {"version": "m" * 16, "sha256": "msha"},
        "features": {"manifest_sha256": "fsha"},
    }
    return base | over


def check(manifest, **kw):
    args = {"run_id": "r1", "model_sha256": "msha", "features_manifest_sha256": "fsha", "features_rows": 100} | kw
    return bs.check_scores_manifest(manifest, **args)


def test_consistent_scores_manifest_passes():
    assert check(scores_manifest()) == []


@pytest.mark.parametrize(
    ("manifest", "kw", "needle"),
    [
        (scores_manifest(run_id="other"), {}, "manifest is for run 'other'"),
        (scores_manifest(rows={"in": 100, "out": 99}), {}, "rows in (100) != rows out (99)"),
        (scores_manifest(), {"features_rows": 101}, "scored 100 rows but the features manifest has rows.out=101"),
        (scores_manifest(), {"model_sha256": "other"}, "scored with model sha256 msha, not other"),
        (scores_manifest(), {"features_manifest_sha256": "new"}, "the features were recommitted during the run"),
        (scores_manifest(files=[]), {}, "lists no parquet files"),
        ({"run_id": "r1"}, {}, "manifest lacks rows, files, paths, model, features"),
        (scores_manifest(rows=[100], model="m"), {}, "manifest's rows, model must be JSON objects"),
    ],
)
def test_each_contradiction_is_named(manifest, kw, needle):
    assert any(needle in p for p in check(manifest, **kw)), check(manifest, **kw)
