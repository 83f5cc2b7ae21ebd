"""What bank_features_emr asks of EMR, checked without running it."""

from __future__ import annotations

import importlib.util

import pyspark
import pytest

from tests.support.paths import REPO  # noqa: E402

pytestmark = pytest.mark.unit

# Spark of each EMR 7.x release label (EMR release guide, "Spark release history").
EMR_SPARK = {"emr-7.10.0": "3.5.5", "emr-7.11.0": "3.5.6", "emr-7.12.0": "3.5.6"}


@pytest.fixture(scope="module")
def dag_module():
    spec = importlib.util.spec_from_file_location("bank_features_emr", REPO / "dags" / "bank_features_emr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_release_label_runs_the_pinned_spark(dag_module):
    label = dag_module.dag.task_dict["create_cluster"].job_flow_overrides["ReleaseLabel"]
    assert EMR_SPARK[label] == pyspark.__version__


def test_cluster_guards_against_being_forgotten(dag_module):
    overrides = dag_module.dag.task_dict["create_cluster"].job_flow_overrides
    assert overrides["AutoTerminationPolicy"]["IdleTimeout"] >= 60
    assert {t["Key"] for t in overrides["Tags"]} == {
        "airflow:dag_id",
        "airflow:run_id",
        "for-use-with-amazon-emr-managed-policies",
    }
    terminate = dag_module.dag.task_dict["terminate_cluster"]
    assert terminate.is_teardown
    assert dag_module.dag.task_dict["create_cluster"].is_setup


def test_step_runs_the_job_in_client_mode():
    from bank_pipeline.lake import run_key
    from bank_pipeline.spark_steps import spark_step

    step = spark_step("s", "s3://b/job.py", ["--x", "1"], action_on_failure="CANCEL_AND_WAIT")
    assert step["HadoopJarStep"]["Args"] == ["spark-submit", "--deploy-mode", "client", "s3://b/job.py", "--x", "1"]
    assert run_key("manual__2026-01-02T00:00:00+00:00") == "manual__2026-01-02T00_00_00_00_00"
