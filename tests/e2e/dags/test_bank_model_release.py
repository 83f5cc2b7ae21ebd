"""bank_model_release run by Airflow against devstack: the model built on EMR, gate, image, Lambda.

The tests run in file order and share one Lambda function, as releases do.
"""

from __future__ import annotations

import json

import pytest

from bank_pipeline.model_release_tasks import SMOKE_RECORD
from devstack.harness.airflow_env import IMAGE_REPOSITORY, LAKE_BUCKET, run_dag
from tests.support.devstack_image_helpers import stand_in_image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DAG_ID = "bank_model_release"
FUNCTION = "bank-model"
REGISTRY = "models/bank/"


@pytest.fixture(scope="module")
def conf(full_features_run) -> dict:
    assert full_features_run.state == "success", full_features_run.log[-3000:]
    return {"features_manifest_uri": full_features_run.xcom["validate_features"]["manifest_uri"]}


@pytest.fixture(scope="module")
def lam(ds):
    return ds.client("lambda")


def live_json(s3) -> dict | None:
    try:
        return json.loads(s3.get_object(Bucket=LAKE_BUCKET, Key=REGISTRY + "live.json")["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def alias_version(lam) -> str:
    return lam.get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"]


def published_versions(lam) -> list[str]:
    return [
        v["Version"]
        for v in lam.list_versions_by_function(FunctionName=FUNCTION)["Versions"]
        if v["Version"] != "$LATEST"
    ]


def invoke_live(lam, record: dict) -> dict:
    response = lam.invoke(FunctionName=FUNCTION, Qualifier="live", Payload=json.dumps(record).encode())
    assert "FunctionError" not in response, response["Payload"].read()
    return json.loads(response["Payload"].read())


def test_release_reaches_the_alias_and_passes_the_smoke_test(release_ready, conf, s3, lam, workdir, cluster_of):
    run = run_dag(release_ready, DAG_ID, conf, workdir)

    assert run.state == "success", run.log[-6000:]
    # No cluster here: the rollout skips, saying so, and the release is still recorded (nothing to revert).
    assert run.tasks.pop("rollout_kubernetes") == run.tasks.pop("revert_lambda") == "skipped"
    assert "no Kubernetes connection 'kubernetes_default' is configured: the rollout is skipped" in run.log
    assert set(run.tasks.values()) == {"success"}, run.tasks
    trained = run.xcom["read_candidate"]
    version = trained["version"]
    # Built on EMR by the step, from the nodes' locked environment: the same model as the worker once made.
    assert version == "fd3d5a1110e5390e"
    assert run.tasks["run_train"] == run.tasks["wait_for_train"] == run.tasks["terminate_cluster"] == "success"
    cluster = cluster_of(run.run_id)
    assert cluster["Status"]["State"] == "TERMINATED" and cluster["Name"] == f"bank-train-{run.run_id}"
    assert set(trained["phase_seconds"]) == {"read", "train", "live", "baseline", "baseline_wait", "register"}
    assert trained["baseline"]["model"] == "pyspark.ml LogisticRegression"
    assert trained["metrics"]["roc_auc"] >= 0.80
    assert {"roc_auc", "pr_auc", "brier"} <= set(trained["metrics"])
    listed = {
        o["Key"].rsplit("/", 1)[1]
        for o in s3.list_objects_v2(Bucket=LAKE_BUCKET, Prefix=f"{REGISTRY}{version}/")["Contents"]
    }
    assert listed == {"model.onnx", "model.json", "metrics.json", "model_card.md", "roc.png", "pr.png", "profile.json"}
    metrics = json.loads(s3.get_object(Bucket=LAKE_BUCKET, Key=f"{REGISTRY}{version}/metrics.json")["Body"].read())
    assert metrics["lineage"]["features_manifest_uri"] == conf["features_manifest_uri"]
    assert metrics["lineage"]["manifest_sha256"] and metrics["lineage"]["code_version"]

    deployed = run.xcom["deploy_lambda"]
    assert alias_version(lam) == deployed["version"]
    assert run.xcom["push_image"]["image_uri"].endswith(run.xcom["push_image"]["digest"])
    # The alias's function URL (AWS_IAM by default) answered the release's signed smoke POST.
    url = run.xcom["lambda_url"]
    assert (url["auth_type"], url["alias"], url["smoke"]["status"]) == ("AWS_IAM", "live", 200)
    assert url["smoke"]["answer"]["model_version"] == trained["version"]
    assert lam.get_function_url_config(FunctionName=FUNCTION, Qualifier="live")["FunctionUrl"] == url["url"]
    answer = invoke_live(lam, {"age": 30, "job": "student", "marital": "single", "education": "tertiary",
                               "default": "no", "balance": 500, "housing": "no", "loan": "no", "contact": "cellular",
                               "day": 3, "month": "oct", "campaign": 1, "pdays": 90, "previous": 2, "poutcome": "success"})  # fmt: skip
    assert answer["statusCode"] == 200 and answer["body"]["model_version"] == version
    assert live_json(s3)["version"] == version
    assert live_json(s3)["lambda_version"] == deployed["version"]


def test_identical_rerun_gives_the_same_digest_and_no_new_version(release_ready, conf, lam, workdir):
    before = published_versions(lam)
    first_live = alias_version(lam)
    run = run_dag(release_ready, DAG_ID, conf, workdir)

    assert run.state == "success", run.log[-6000:]
    # Built again, not reused: the first release's build compared with no live model, this one with it.
    assert run.xcom["prepare_training"]["reused"] is False and run.tasks["run_train"] == "success"
    assert run.xcom["read_candidate"]["registered"] is False  # the version existed: nothing rewritten
    assert run.xcom["deploy_lambda"]["changed"] is False
    assert published_versions(lam) == before
    assert alias_version(lam) == first_live
    image_uri = lam.get_function(FunctionName=FUNCTION, Qualifier=first_live)["Code"]["ImageUri"]
    assert image_uri == run.xcom["push_image"]["image_uri"]


def test_model_below_the_floor_is_not_deployed(release_ready, conf, s3, lam, workdir):
    live_before, alias_before = live_json(s3), alias_version(lam)
    run = run_dag(release_ready, DAG_ID, {**conf, "min_roc_auc": 0.99}, workdir)

    assert run.state == "success", run.log[-6000:]
    assert run.tasks["deploy_gate"] == "success"
    assert {
        run.tasks[t] for t in ("push_image", "deploy_lambda", "lambda_url", "rollout_kubernetes", "record_live")
    } == {"skipped"}
    assert "not deployed: new ROC AUC" in run.log and "below the floor 0.99" in run.log
    assert alias_version(lam) == alias_before
    assert live_json(s3) == live_before


def test_image_failing_its_smoke_test_never_gets_the_alias(release_ready, ds, conf, s3, lam, workdir):
    # The serving image with a handler that raises: its container fails the smoke test.
    broken = "def handler(event, context):\n    raise RuntimeError('broken build')\n"
    stand_in_image(ds.registry_url, IMAGE_REPOSITORY, "broken-base", broken)
    live_before, versions_before = live_json(s3), published_versions(lam)
    alias_before = lam.get_alias(FunctionName=FUNCTION, Name="live")

    env = {**release_ready, "BANK_SERVING_BASE_TAG": "broken-base"}
    run = run_dag(env, DAG_ID, conf, workdir)

    assert run.state == "failed"
    assert run.tasks["deploy_lambda"] == "failed"
    assert run.tasks["lambda_url"] == run.tasks["rollout_kubernetes"] == run.tasks["record_live"] == "upstream_failed"
    assert run.tasks["revert_lambda"] == "skipped"  # the alias never moved: nothing to undo
    new_version = str(int(versions_before[-1]) + 1)
    assert f"version {new_version} of {FUNCTION}" in run.log and "failed its smoke test" in run.log
    assert "broken build" in run.log
    assert f"alias live not moved (still on version {alias_before['FunctionVersion']})" in run.log
    assert published_versions(lam) == [*versions_before, new_version]  # published and tested, never served
    after = lam.get_alias(FunctionName=FUNCTION, Name="live")
    assert (after["FunctionVersion"], after["RevisionId"]) == (
        alias_before["FunctionVersion"],
        alias_before["RevisionId"],
    )
    assert live_json(s3) == live_before


def test_a_rerun_after_a_failed_deploy_reuses_the_build_and_starts_no_cluster(release_ready, conf, lam, emr, workdir):
    # After the broken image above: the same features, code, Params and live model as the release before it.
    clusters_before = len(emr.list_clusters()["Clusters"])
    run = run_dag(release_ready, DAG_ID, conf, workdir)

    assert run.state == "success", run.log[-6000:]
    prepared = run.xcom["prepare_training"]
    assert prepared["reused"] is True and prepared["built_by"] != run.run_id
    assert f"is on record (run {prepared['built_by']}): no cluster" in run.log
    assert {run.tasks[t] for t in ("create_cluster", "run_train", "wait_for_train", "terminate_cluster")} == {"skipped"}
    assert run.tasks["read_candidate"] == run.tasks["record_live"] == "success"
    assert len(emr.list_clusters()["Clusters"]) == clusters_before
    trained = run.xcom["read_candidate"]
    assert (trained["version"], trained["registered"]) == ("fd3d5a1110e5390e", False)
    assert invoke_live(lam, SMOKE_RECORD)["body"]["model_version"] == trained["version"]


def test_manual_retraining_with_other_hyperparameters_builds_another_version(release_ready, conf, s3, lam, workdir):
    live_before, alias_before = live_json(s3), alias_version(lam)
    hyperparameters = {"learning_rate": 0.05, "max_iter": 20, "max_leaf_nodes": 15, "l2_regularization": 0.0}
    run = run_dag(release_ready, DAG_ID, {**conf, "hyperparameters": hyperparameters, "min_roc_auc": 0.99}, workdir)

    assert run.state == "success", run.log[-6000:]
    trained = run.xcom["read_candidate"]
    assert trained["version"] != live_before["version"] and trained["registered"] is True
    report = json.loads(
        s3.get_object(Bucket=LAKE_BUCKET, Key=f"{REGISTRY}{trained['version']}/metrics.json")["Body"].read()
    )
    assert report["model"]["hyperparameters"] == {**hyperparameters, "min_samples_leaf": 20, "random_state": 42}
    assert trained["live"]["version"] == live_before["version"]  # compared with the live model on the same holdout
    assert run.tasks["push_image"] == "skipped"  # below the floor: the gate stopped it
    assert alias_version(lam) == alias_before and live_json(s3) == live_before


def test_a_release_without_the_nodes_wheelhouse_fails_before_any_cluster_naming_the_command(
    release_ready, conf, s3, emr, workdir
):
    from bank_pipeline.wheelhouse import wheelhouse_uri

    marker = (
        wheelhouse_uri(f"s3://{LAKE_BUCKET}/code/", "x86_64").removeprefix(f"s3://{LAKE_BUCKET}/") + "requirements.txt"
    )
    saved = s3.get_object(Bucket=LAKE_BUCKET, Key=marker)["Body"].read()
    clusters_before = len(emr.list_clusters()["Clusters"])
    s3.delete_object(Bucket=LAKE_BUCKET, Key=marker)
    try:
        run = run_dag(release_ready, DAG_ID, conf, workdir)
    finally:
        s3.put_object(Bucket=LAKE_BUCKET, Key=marker, Body=saved)

    assert run.state == "failed"
    assert run.tasks["prepare_training"] == "failed"
    assert "`python -m bank_pipeline.wheelhouse --bucket bank-lake --arch x86_64`" in run.log
    assert len(emr.list_clusters()["Clusters"]) == clusters_before
