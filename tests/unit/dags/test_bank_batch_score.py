"""bank_batch_score without running it: the graph, the cluster, input choice, output checks."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from bank_pipeline import assets, settings
from bank_pipeline import batch_score_tasks as bs
from bank_pipeline import spark_steps as emr
from bank_pipeline.errors import BadInputError
from bank_pipeline.features_emr_tasks import resolve_features_manifest
from tests.support.paths import REPO  # noqa: E402

pytestmark = pytest.mark.unit


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
        "flag_drift": {"validate_scores"},
        "terminate_cluster": {"create_cluster", "wait_for_score"},
    }
    assert dag.task_dict["create_cluster"].is_setup and dag.task_dict["terminate_cluster"].is_teardown
    assert dag.task_dict["run_score"].retries == 0
    assert dag.task_dict["wait_for_score"].deferrable
    assert dag.task_dict["prepare_score"].inlets == [assets.FEATURES]
    assert dag.task_dict["validate_scores"].outlets == [assets.SCORES]
    assert dag.task_dict["flag_drift"].outlets == [assets.DRIFT]


def test_a_release_emits_the_live_model_event():
    release = load_dag_module("bank_model_release").dag
    assert release.task_dict["record_live"].outlets == [assets.LIVE_MODEL]


@pytest.mark.parametrize("dag_name", ["bank_batch_score", "bank_features_emr"])
def test_every_node_runs_the_jobs_python_and_spark_points_driver_and_executors_at_it(dag_name):
    dag = load_dag_module(dag_name).dag
    overrides = dag.task_dict["create_cluster"].job_flow_overrides
    prepare = {"bank_batch_score": "prepare_score", "bank_features_emr": "prepare_step"}[dag_name]
    assert overrides["ReleaseLabel"] == settings.load().emr_release_label
    assert overrides["AutoTerminationPolicy"]["IdleTimeout"] >= 60
    assert {t["Key"] for t in overrides["Tags"]} == {
        "airflow:dag_id",
        "airflow:run_id",
        "for-use-with-amazon-emr-managed-policies",
    }
    [action] = overrides["BootstrapActions"]
    script = action["ScriptBootstrapAction"]
    # The staged bootstrap and wheelhouse, as the prepare task's XComArgs (it is upstream of the cluster).
    assert (script["Path"].operator.task_id, script["Path"].key) == (prepare, "bootstrap_uri")
    assert (script["Args"][0].operator.task_id, script["Args"][0].key) == (prepare, "wheelhouse_uri")
    assert prepare in dag.task_dict["create_cluster"].upstream_task_ids
    assert script["Args"][1] == emr.PYTHON_ENV
    [defaults] = overrides["Configurations"]
    # Not an exported PYSPARK_PYTHON: EMR's spark-env keeps the client-mode driver on the system Python.
    assert defaults == {
        "Classification": "spark-defaults",
        "Properties": {"spark.pyspark.python": emr.PYTHON, "spark.pyspark.driver.python": emr.PYTHON},
    }
    # The account's role names come from settings and the emr connection, not from the DAG.
    assert "ServiceRole" not in overrides and "JobFlowRole" not in overrides


# --------------------------------------------------------------------------- which features, which model

MANIFEST = "s3://bank-lake/features/bank/run=r1/_manifest.json"


def event(**extra) -> SimpleNamespace:
    return SimpleNamespace(extra=extra)


def test_features_param_wins_else_the_triggering_event_else_the_newest_event():
    older = "s3://bank-lake/features/bank/run=r0/_manifest.json"
    events = [event(manifest_uri=older), event(manifest_uri=MANIFEST), event()]
    assert resolve_features_manifest(older, [], events, purpose="score") == older
    assert resolve_features_manifest("", [], events, purpose="score") == MANIFEST
    assert resolve_features_manifest("", [event(manifest_uri=older)], events, purpose="score") == older
    with pytest.raises(
        BadInputError, match="no features to score: run bank_features_emr first, or give features_manifest_uri"
    ):
        resolve_features_manifest("", [], [], purpose="score")


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
