"""bank_batch_score run by Airflow against devstack: real Spark with the ONNX scorer, real EMR state machine."""

from __future__ import annotations

import io
import json
import os

import pyarrow.parquet as pq
import pytest

from devstack.harness.airflow_env import LAKE_BUCKET, run_dag

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DAG_ID = "bank_batch_score"
ACTIVE = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING"]


def read_json(s3, uri: str) -> dict:
    return json.loads(s3.get_object(Bucket=LAKE_BUCKET, Key=uri.removeprefix(f"s3://{LAKE_BUCKET}/"))["Body"].read())


def step_processes(cluster_id: str) -> list[str]:
    """Live processes of the cluster's steps: devstack runs each in a work dir named after the cluster,
    which is in the command line (spark-submit, its JVM) or the environment (TMPDIR: Python workers)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if f"/{cluster_id}-".encode() in cmdline + b"\0" + environ:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def nothing_left_running(emr, cluster: dict) -> None:
    assert cluster["Status"]["State"] == "TERMINATED"
    active = emr.list_clusters(ClusterStates=ACTIVE)["Clusters"]
    assert [c["Name"] for c in active if c["Name"].startswith("bank-batch-score-")] == []
    assert step_processes(cluster["Id"]) == []


def test_scores_every_feature_row_and_emits_the_asset_event(
    airflow, full_features_run, registered_model, s3, emr, cluster_of, workdir
):
    assert full_features_run.state == "success", full_features_run.log[-3000:]
    # features_manifest_uri left empty: the newest bank_features event picks the features.
    run = run_dag(airflow, DAG_ID, {"model_version": registered_model}, workdir)

    assert run.state == "success", run.log[-6000:]
    assert run.tasks.pop("flag_drift") == "skipped", run.tasks  # bank-full scored with a model of its sample
    assert set(run.tasks.values()) == {"success"}, run.tasks
    assert "no drift: every feature's and the score's PSI at or below 0.2" in run.log
    prepared = run.xcom["prepare_score"]
    features = read_json(s3, prepared["features_manifest_uri"])
    manifest = read_json(s3, prepared["output_uri"] + "_manifest.json")
    prefix = prepared["output_uri"].removeprefix(f"s3://{LAKE_BUCKET}/")
    tables = [
        pq.read_table(io.BytesIO(s3.get_object(Bucket=LAKE_BUCKET, Key=prefix + f)["Body"].read()))
        for f in manifest["files"]
    ]
    rows = sum(t.num_rows for t in tables)
    assert rows == manifest["rows"]["in"] == manifest["rows"]["out"] == features["rows"]["out"] > 0
    assert tables[0].column_names == [*(f["name"] for f in features["schema"]), "probability", "predicted"]
    assert manifest["model"]["version"] == registered_model
    assert 0 < manifest["summary"]["mean_probability"] < 1
    assert manifest["drift"]["status"] == "measured" and manifest["drift"]["crossed"] == []

    [event] = run.asset_events
    assert event["name"] == "bank_scores"
    assert event["extra"]["rows"] == rows and event["extra"]["model_version"] == registered_model
    cluster = cluster_of(run.run_id)
    [action] = emr.list_bootstrap_actions(ClusterId=cluster["Id"])["BootstrapActions"]
    assert action["ScriptPath"] == prepared["bootstrap_uri"]
    nothing_left_running(emr, cluster)


def shifted_features(s3, manifest_uri: str) -> str:
    """The committed features again, every client fifteen years older and every tenth one's job one training
    never saw, committed beside them (one parquet file, then its manifest); the new manifest's URI."""
    import pyarrow as pa
    import pyarrow.compute as pc

    manifest = read_json(s3, manifest_uri)
    prefix = manifest_uri.removeprefix(f"s3://{LAKE_BUCKET}/").removesuffix("_manifest.json")
    table = pa.concat_tables(
        pq.read_table(io.BytesIO(s3.get_object(Bucket=LAKE_BUCKET, Key=prefix + f)["Body"].read()))
        for f in manifest["files"]
    )
    tenth = pa.array([i % 10 == 0 for i in range(table.num_rows)])
    job = pc.if_else(tenth, pa.scalar("astronaut"), table.column("job"))
    age = pc.add(table.column("age"), pa.scalar(15).cast(table.schema.field("age").type))
    shifted = table.set_column(table.schema.get_field_index("job"), "job", job)
    shifted = shifted.set_column(shifted.schema.get_field_index("age"), "age", age)
    buffer = io.BytesIO()
    pq.write_table(shifted, buffer)
    target = "features/bank/run=shifted/"
    s3.put_object(Bucket=LAKE_BUCKET, Key=target + "part-00000.parquet", Body=buffer.getvalue())
    body = {**manifest, "run_id": "shifted", "files": ["part-00000.parquet"]}
    s3.put_object(Bucket=LAKE_BUCKET, Key=target + "_manifest.json", Body=json.dumps(body).encode())
    return f"s3://{LAKE_BUCKET}/{target}_manifest.json"


def test_a_shifted_batch_emits_the_drift_event_with_its_report(
    airflow, full_features_run, registered_model, s3, workdir
):
    manifest_uri = shifted_features(s3, full_features_run.xcom["validate_features"]["manifest_uri"])
    run = run_dag(airflow, DAG_ID, {"model_version": registered_model, "features_manifest_uri": manifest_uri}, workdir)

    assert run.state == "success", run.log[-6000:]
    assert set(run.tasks.values()) == {"success"}, run.tasks
    scores, drifted = sorted(run.asset_events, key=lambda e: e["name"], reverse=True)
    assert (scores["name"], drifted["name"]) == ("bank_scores", "bank_drift")
    extra = drifted["extra"]
    assert {"age", "job"} <= set(extra["crossed"]) and extra["new_categories"] == {"job": ["astronaut"]}
    assert extra["model_version"] == registered_model and extra["threshold"] == 0.2
    report = read_json(s3, extra["report_uri"])
    assert report["features"]["age"]["psi"] > 0.2 and report["features"]["age"]["out_of_range"] > 0
    key = extra["report_html_uri"].removeprefix(f"s3://{LAKE_BUCKET}/")
    page = s3.get_object(Bucket=LAKE_BUCKET, Key=key)["Body"].read().decode()
    assert "Shifted beyond PSI 0.2: " in page and "new: astronaut" in page
    assert "drifted beyond PSI 0.2: " in run.log


def test_an_unregistered_model_fails_before_any_cluster(airflow, full_features_run, emr, workdir):
    before = len(emr.list_clusters()["Clusters"])
    manifest_uri = full_features_run.xcom["validate_features"]["manifest_uri"]
    run = run_dag(airflow, DAG_ID, {"model_version": "0" * 16, "features_manifest_uri": manifest_uri}, workdir)

    assert run.state == "failed"
    assert run.tasks["prepare_score"] == "failed"
    assert f"model version {'0' * 16} is not registered" in run.log
    assert len(emr.list_clusters()["Clusters"]) == before


def test_a_corrupt_model_fails_the_step_naming_it_and_still_terminates(
    airflow, full_features_run, registered_model, s3, emr, cluster_of, workdir
):
    corrupt = "badc0ffee0ddf00d"
    source = f"models/bank/{registered_model}/"
    s3.put_object(Bucket=LAKE_BUCKET, Key=f"models/bank/{corrupt}/model.onnx", Body=b"not the registered model")
    s3.copy_object(
        Bucket=LAKE_BUCKET, Key=f"models/bank/{corrupt}/model.json", CopySource=f"{LAKE_BUCKET}/{source}model.json"
    )
    manifest_uri = full_features_run.xcom["validate_features"]["manifest_uri"]

    run = run_dag(airflow, DAG_ID, {"model_version": corrupt, "features_manifest_uri": manifest_uri}, workdir)

    assert run.state == "failed"
    assert run.tasks["wait_for_score"] == "failed"
    assert run.tasks["validate_scores"] == "upstream_failed"
    assert run.tasks["terminate_cluster"] == "success"
    assert "batch_score: error: " in run.log and "corrupt or replaced: sha256" in run.log
    assert run.asset_events == []
    nothing_left_running(emr, cluster_of(run.run_id))
