"""devstack.harness.airflow_env's DagRunChild as `make demo` uses it: warmed up before its run is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.harness.airflow_env import LAKE_BUCKET, airflow_python, airflow_settings, airflow_version, start_child

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DAG_ID = "bank_features_emr"


def test_a_child_warmed_up_without_the_runs_settings_runs_with_those_begin_sends(airflow, tmp_path):
    # Started with Airflow's settings only: no connections, no AWS_* or BANK_* yet.
    child = start_child(airflow_settings(Path(airflow["AIRFLOW_HOME"])), DAG_ID, tmp_path)
    try:
        child.begin(airflow, {"source_uri": f"s3://{LAKE_BUCKET}/raw/nope.csv"})
        run = child.finish(timeout=240)
    finally:
        child.stop()

    assert not child.tmp.exists(), "the child's temp files are removed with it"
    assert run.tasks["prepare_step"] == "failed"
    # The worker's connection from begin() reached S3 and found no object (without it: no credentials).
    assert f"s3://{LAKE_BUCKET}/raw/nope.csv does not exist" in run.log
    assert child.proc.returncode == 0
    # The child ran on $BANK_AIRFLOW_PYTHON's Airflow when it is set (make test-airflow-3.0), else on this one's.
    assert run.airflow_version == airflow_version(airflow_python())


def test_a_run_whose_airflow_settings_differ_from_the_childs_is_refused_naming_them(airflow, tmp_path):
    child = start_child(airflow, DAG_ID, tmp_path)
    try:
        child.begin({**airflow, "AIRFLOW__CORE__LOAD_EXAMPLES": "True"}, {})
        with pytest.raises(
            RuntimeError, match="differ from those the child started with: AIRFLOW__CORE__LOAD_EXAMPLES"
        ):
            child.finish(timeout=120)
    finally:
        child.stop()

    assert child.proc.returncode == 1
    assert not child.result.exists()


def test_a_child_that_gets_no_run_exits_cleanly(airflow, tmp_path):
    child = start_child(airflow, DAG_ID, tmp_path)
    assert child.tmp.is_dir()
    child.stop()

    assert child.proc.returncode == 0
    assert not child.result.exists()
    assert not child.tmp.exists()
