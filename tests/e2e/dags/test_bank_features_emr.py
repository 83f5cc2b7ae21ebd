"""bank_features_emr run by Airflow against devstack: real Spark, real EMR state machine."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest

from devstack.harness.airflow_env import LAKE_BUCKET, REPO, run_dag

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DAG_ID = "bank_features_emr"
BANK = REPO / "data" / "bank"


def committed(s3, output_uri: str) -> tuple[dict, int, list[str]]:
    """(manifest, parquet rows of the files it lists, every attempt dir under the output)."""
    prefix = output_uri.removeprefix(f"s3://{LAKE_BUCKET}/")
    manifest = json.loads(s3.get_object(Bucket=LAKE_BUCKET, Key=prefix + "_manifest.json")["Body"].read())
    rows = sum(
        pq.ParquetFile(io.BytesIO(s3.get_object(Bucket=LAKE_BUCKET, Key=prefix + f)["Body"].read())).metadata.num_rows
        for f in manifest["files"]
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=LAKE_BUCKET, Prefix=prefix + "_attempts/").get("Contents", [])]
    attempts = sorted({k[len(prefix) :].split("/")[1] for k in keys})
    return manifest, rows, attempts


def test_bank_full_run_writes_features_and_emits_asset_event(full_features_run, s3, cluster_of):
    run = full_features_run

    assert run.state == "success", run.log[-5000:]
    assert set(run.tasks.values()) == {"success"}, run.tasks
    summary = run.xcom["validate_features"]
    manifest, parquet_rows, attempts = committed(s3, run.xcom["prepare_step"]["output_uri"])
    assert manifest["rows"]["in"] == 45211
    assert summary["rows_in"] == 45211
    assert parquet_rows == manifest["rows"]["out"] == summary["rows_out"]
    assert manifest["rows"]["out"] + manifest["rows"]["quarantined"] == 45211
    assert attempts == [manifest["attempt_id"]]
    assert "baseline" not in manifest  # fitted by the model build (bank_model_release) now
    # The job read s3:// itself (S3A, as EMRFS on EMR): the manifest names the object, not a copy.
    assert manifest["input"]["uri"] == f"s3://{LAKE_BUCKET}/raw/bank/bank-full.csv"
    [event] = run.asset_events
    assert event["name"] == "bank_features"
    assert event["extra"]["manifest_uri"] == summary["manifest_uri"]
    cluster = cluster_of(run.run_id)
    assert cluster["Status"]["State"] == "TERMINATED"
    assert cluster["ReleaseLabel"] == "emr-7.12.0"


def test_missing_column_fails_naming_it_and_still_terminates(airflow, s3, cluster_of, workdir):
    rows = list(csv.reader((BANK / "bank.csv").read_text().splitlines()[:200], delimiter=";"))
    drop = rows[0].index("balance")
    body = "\n".join(";".join(r[:drop] + r[drop + 1 :]) for r in rows) + "\n"
    s3.put_object(Bucket=LAKE_BUCKET, Key="raw/bad/no_balance.csv", Body=body.encode())

    run = run_dag(airflow, DAG_ID, {"source_uri": f"s3://{LAKE_BUCKET}/raw/bad/no_balance.csv"}, workdir)

    assert run.state == "failed"
    assert run.tasks["wait_for_features"] == "failed"
    assert run.tasks["validate_features"] == "upstream_failed"
    assert run.tasks["terminate_cluster"] == "success"
    assert "missing column" in run.log and "balance" in run.log
    assert "stdout tail" in run.log and "stderr tail" in run.log
    assert run.asset_events == []
    assert cluster_of(run.run_id)["Status"]["State"] == "TERMINATED"


def test_missing_source_fails_before_any_cluster(airflow, emr, workdir):
    before = len(emr.list_clusters()["Clusters"])
    run = run_dag(airflow, DAG_ID, {"source_uri": f"s3://{LAKE_BUCKET}/raw/nope.csv"}, workdir)

    assert run.state == "failed"
    assert run.tasks["prepare_step"] == "failed"
    assert f"s3://{LAKE_BUCKET}/raw/nope.csv does not exist" in run.log
    assert len(emr.list_clusters()["Clusters"]) == before


def test_rerun_of_the_same_run_replaces_output(airflow, s3, workdir):
    conf = {"source_uri": f"s3://{LAKE_BUCKET}/raw/sample/bank.csv"}
    s3.upload_file(str(BANK / "bank.csv"), LAKE_BUCKET, "raw/sample/bank.csv")
    first = run_dag(airflow, DAG_ID, conf, workdir / "1", logical_date="2026-01-02T00:00:00+00:00")
    second = run_dag(airflow, DAG_ID, conf, workdir / "2", logical_date="2026-01-02T00:00:00+00:00")

    assert first.state == second.state == "success", second.log[-5000:]
    assert first.run_id == second.run_id
    manifest, parquet_rows, attempts = committed(s3, second.xcom["prepare_step"]["output_uri"])
    assert manifest["rows"]["in"] == 4521
    assert parquet_rows == manifest["rows"]["out"]
    assert attempts == [manifest["attempt_id"]], "the first attempt's files must be gone"
