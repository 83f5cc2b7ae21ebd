"""bank_model_release to Lambda *and* Kubernetes (the local control plane) by Airflow on devstack:
a release is all-or-nothing.

The first release reaches both targets and is recorded live. The second (the same model on a
new serving base image) moves the Lambda alias, then its Kubernetes rollout fails (a kwok stage
keeps the new image's pods in ImagePullBackOff; progressDeadlineSeconds 5): the rollout rolls
its Deployment back, ``revert_lambda`` moves the alias back, the run fails saying both, and
neither live.json nor the bank_live_model Asset event is written. The third moves the alias,
then its function URL step fails (the worker may not add the public permissions the Param asks
for): the alias goes back the same way, and the rollout never starts. The fourth, to Kubernetes
only with pods that serve and a client calling them, has its canary rolled back on the canary
pods' own metrics.

Its own lake bucket, Lambda function and namespace (on the session's control plane): the other
release tests' state is not touched. The worker's policy is the template's, copied for them.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import pytest

from bank_pipeline.utils import oci, oci_image, oci_layer
from devstack import Devstack, kube
from devstack.aws.infra import Account, worker_credentials
from devstack.harness.airflow_env import (
    IMAGE_REPOSITORY,
    SERVING_BASE_TAG,
    airflow_env,
    ensure_db,
    run_dag,
    seed_wheelhouse,
)
from devstack.kube.pods import PodRunner
from devstack.kube.service_client import service_client
from tests.support.release_ns import wait_for
from tests.support.serving_requests import RECORD

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DAG_ID = "bank_model_release"
BUCKET = "bank-lake-all-or-nothing"
FUNCTION = "bank-model-aon"
NAMESPACE = "bank-aon"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/bank-model"


@pytest.fixture(scope="module")
def cluster(kube_cluster: kube.KubeCluster) -> kube.KubeCluster:
    """The session's control plane; this module's namespace (its stage below selects only it)."""
    return kube_cluster


@pytest.fixture(scope="module")
def worker_user() -> str:
    return f"worker-aon-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def worker(ds: Devstack, account: Account, worker_user: str) -> Account:
    """The worker policy plus a copy of it for this module's bucket and function: the same rights,
    on state of its own (the features it reads stay in the session's lake)."""
    iam = ds.client("iam")
    arn = account.outputs["AirflowWorkerPolicyArn"]
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    text = document if isinstance(document, str) else json.dumps(document)
    copy = text.replace(f"arn:aws:s3:::{account.outputs['LakeBucketName']}", f"arn:aws:s3:::{BUCKET}").replace(
        f":function:{account.outputs['LambdaFunctionName']}", f":function:{FUNCTION}"
    )
    assert copy != text
    copy_arn = iam.create_policy(PolicyName=worker_user, PolicyDocument=copy)["Policy"]["Arn"]
    return Account(outputs=account.outputs, worker_key=worker_credentials(iam, [arn, copy_arn], user=worker_user))


@pytest.fixture(scope="module")
def env(
    ds, worker: Account, release_ready: dict[str, str], s3, cluster: kube.KubeCluster, tmp_path_factory
) -> dict[str, str]:
    """An Airflow of its own (its Assets live in their own bucket), releasing to both targets as the
    release's ServiceAccount (manifests/rbac) in the default Kubernetes connection."""
    s3.create_bucket(Bucket=BUCKET)
    seed_wheelhouse(ds.env(), BUCKET)  # its lake's deploy step: the model build's nodes install from it
    kubernetes = kube.airflow_connection(cluster.release_identity(NAMESPACE), NAMESPACE)
    home = airflow_env(tmp_path_factory.mktemp("airflow_home_aon"), ds.env(), worker, kubernetes)
    ensure_db(home)
    return {
        **home,
        "BANK_LAKE_BUCKET": BUCKET,
        "BANK_LAMBDA_FUNCTION": FUNCTION,
        "BANK_RELEASE_TARGETS": "lambda,kubernetes",
    }


@pytest.fixture(scope="module")
def conf(full_features_run) -> dict:
    assert full_features_run.state == "success", full_features_run.log[-3000:]
    return {"features_manifest_uri": full_features_run.xcom["validate_features"]["manifest_uri"]}


def live_json(s3) -> dict | None:
    try:
        return json.loads(s3.get_object(Bucket=BUCKET, Key="models/bank/live.json")["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def alias_version(lam) -> str:
    return lam.get_alias(FunctionName=FUNCTION, Name="live")["FunctionVersion"]


def certificate_files() -> set[Path]:
    """PEM files in the system temp dir: where the Kubernetes client copies a kubeconfig's CA."""

    def pem(path: Path) -> bool:
        with path.open("rb") as f:
            return f.read(11) == b"-----BEGIN "

    return {p for p in Path(tempfile.gettempdir()).glob("tmp*") if p.is_file() and pem(p)}


def test_a_release_to_both_targets_is_recorded_live(env, conf, s3, ds, cluster, tmp_path):
    certificates = certificate_files()
    run = run_dag(env, DAG_ID, conf, tmp_path)

    # The rollout's Kubernetes client wrote the CA to a temp file; the run's process took it along.
    assert certificate_files() <= certificates

    assert run.state == "success", run.log[-6000:]
    assert run.tasks.pop("revert_lambda") == "skipped"
    assert set(run.tasks.values()) == {"success"}, run.tasks
    image = run.xcom["push_image"]["image_uri"]
    deployment = cluster.get(DEPLOYMENT)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert alias_version(ds.client("lambda")) == run.xcom["deploy_lambda"]["version"] == "1"
    record = live_json(s3)
    assert (record["image_uri"], record["lambda_version"]) == (image, "1")
    assert (record["kubernetes_deployment"], record["kubernetes_namespace"]) == ("bank-model", NAMESPACE)
    assert [(e["name"], e["uri"]) for e in run.asset_events] == [
        ("bank_live_model", f"s3://{BUCKET}/models/bank/live.json")
    ]


def test_a_failed_rollout_moves_the_lambda_alias_back_and_records_nothing(env, conf, s3, ds, cluster, tmp_path):
    lam = ds.client("lambda")
    before = live_json(s3)
    live_image = before["image_uri"]
    # A new serving base image (the same image plus one file): the same model gets a new image.
    rebuilt = oci_layer.layer({"var/task/bank_serving/rebuilt.py": b'"""A rebuild of the serving base image."""\n'})
    oci_image.append_layer(
        oci.RegistryClient(ds.registry_url), IMAGE_REPOSITORY, SERVING_BASE_TAG, rebuilt, "serving-base-rebuilt"
    )
    # The cluster cannot pull any other image than the live one; the controller gives up after 5 s.
    stage = kube.image_pull_backoff_stage(live_image, name="aon-pull-backoff")
    stage["spec"]["selector"]["matchExpressions"][1]["cel"]["expression"] = (
        f"self.metadata.namespace == {json.dumps(NAMESPACE)} && "
        f"self.spec.containers.exists(c, c.image != {json.dumps(live_image)})"
    )
    cluster.add_stage(stage)
    # (the deadline must exceed minReadySeconds)
    status, answer = cluster.request("PATCH", DEPLOYMENT, {"spec": {"progressDeadlineSeconds": 5, "minReadySeconds": 0}},
                                     content_type="application/merge-patch+json")  # fmt: skip
    assert status == 200, answer

    # As a canary (no traffic in its bake: nothing crosses a threshold), so the revert undoes a promotion.
    canary = {"release_strategy": "canary", "canary_percent": 50, "bake_seconds": 2}
    run = run_dag({**env, "BANK_SERVING_BASE_TAG": "serving-base-rebuilt"}, DAG_ID, {**conf, **canary}, tmp_path)

    assert run.state == "failed"
    assert (run.tasks["deploy_lambda"], run.tasks["lambda_url"], run.tasks["rollout_kubernetes"]) == (
        "success", "success", "failed"), run.tasks  # fmt: skip
    assert (run.tasks["revert_lambda"], run.tasks["record_live"]) == ("failed", "upstream_failed"), run.tasks
    new_image = run.xcom["push_image"]["image_uri"]
    assert new_image != live_image and run.xcom["deploy_lambda"]["version"] == "2"
    [step] = run.xcom["deploy_lambda"]["traffic"]  # baked in the triggerer, judged, promoted
    assert (step["share"], step["status"]) == (0.5, "passed") and step["metrics"]["errors"] == 0
    # Kubernetes canaried too: its canary's pods never came up, it said why and deleted the canary, the stable
    # Deployment never changed; Lambda's alias followed.
    assert "ProgressDeadlineExceeded" in run.log and "ImagePullBackOff" in run.log
    assert (f"canary Deployment bank-model-canary deleted, the stable pods ({live_image}) serve all of the "
            "traffic") in run.log  # fmt: skip
    assert cluster.request("GET", DEPLOYMENT + "-canary")[0] == 404
    assert (
        "the release is not live: the Kubernetes rollout failed (task rollout_kubernetes says why and what it "
        f"rolled back); alias live of {FUNCTION} moved back from version 2 to version 1"
    ) in run.log
    assert alias_version(lam) == "1"
    assert not (lam.get_alias(FunctionName=FUNCTION, Name="live").get("RoutingConfig") or {}).get(
        "AdditionalVersionWeights"
    )
    assert cluster.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"] == live_image
    # Not live: no record, no Asset event (so no batch scoring with a half-released model).
    assert live_json(s3) == before
    assert run.asset_events == []


def test_a_failed_function_url_moves_the_lambda_alias_back_and_records_nothing(
    env, conf, s3, ds, cluster, worker_user, tmp_path
):
    """Every step after the alias moves is covered, not only the rollout: here lambda_url fails (the
    Param asks for a public URL and the worker may not add its permissions), the alias goes back exactly
    as for a failed rollout, and the rollout, which comes after the URL, never starts."""
    lam, iam = ds.client("lambda"), ds.client("iam")
    before = live_json(s3)
    served = cluster.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"]
    previous = alias_version(lam)
    # Another serving base image: the same model gets a new image, so the alias moves.
    rebuilt = oci_layer.layer(
        {"var/task/bank_serving/rebuilt_url.py": b'"""Another rebuild of the serving base image."""\n'}
    )
    oci_image.append_layer(
        oci.RegistryClient(ds.registry_url), IMAGE_REPOSITORY, SERVING_BASE_TAG, rebuilt, "serving-base-url"
    )
    deny = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "lambda:AddPermission", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=worker_user, PolicyName="no-public-url", PolicyDocument=json.dumps(deny))
    try:
        run = run_dag({**env, "BANK_SERVING_BASE_TAG": "serving-base-url"}, DAG_ID, {**conf, "function_url_auth": "NONE"},
                      tmp_path)  # fmt: skip
    finally:
        iam.delete_user_policy(UserName=worker_user, PolicyName="no-public-url")

    assert run.state == "failed"
    assert (run.tasks["deploy_lambda"], run.tasks["lambda_url"]) == ("success", "failed"), run.tasks
    assert (run.tasks["rollout_kubernetes"], run.tasks["revert_lambda"], run.tasks["record_live"]) == (
        "upstream_failed", "failed", "upstream_failed"), run.tasks  # fmt: skip
    release = run.xcom["deploy_lambda"]
    assert release["changed"] and release["previous_version"] == previous and release["version"] != previous
    assert "AddPermission operation" in run.log  # lambda_url says why
    assert (
        "the release is not live: the function URL failed (task lambda_url says why); "
        f"alias live of {FUNCTION} moved back from version {release['version']} to version {previous}"
    ) in run.log
    assert alias_version(lam) == previous
    assert cluster.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"] == served  # never rolled out
    assert live_json(s3) == before
    assert run.asset_events == []


def test_a_canary_judged_on_its_pods_metrics_is_rolled_back_by_the_dag_run(env, conf, s3, ds, cluster, tmp_path):
    """Kubernetes only, with pods that serve (devstack.kube.pods) and a client calling the Service during the run:
    the canary pods answer, their p99 is above the limit this run sets (0.001 ms, which no server meets), so the
    run's canary step, baked in the triggerer, is breached on its metrics: the canary Deployment is deleted, the
    stable pods never changed and answered throughout, the run fails naming the metric, and nothing is recorded."""
    before = live_json(s3)
    served = cluster.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"]
    # The stage of the failed-rollout test above would keep the canary's image from starting.
    cluster.request("DELETE", "/apis/kwok.x-k8s.io/v1alpha1/stages/aon-pull-backoff")
    rebuilt = oci_layer.layer({"var/task/bank_serving/rebuilt_canary.py": b'"""A rebuild for the canary."""\n'})
    oci_image.append_layer(
        oci.RegistryClient(ds.registry_url), IMAGE_REPOSITORY, SERVING_BASE_TAG, rebuilt, "serving-base-canary"
    )
    run_env = {**env, "BANK_SERVING_BASE_TAG": "serving-base-canary", "BANK_RELEASE_TARGETS": "kubernetes",
               "BANK_CANARY_MAX_P99_MS": "0.001"}  # fmt: skip
    canary = {"release_strategy": "canary", "canary_percent": 50, "bake_seconds": 60}
    with PodRunner(cluster.request, NAMESPACE, "app.kubernetes.io/name=bank-model") as runner:
        wait_for("the stable pods serving", lambda: len([p for p in runner.running().values() if p.ready]) == 2, 120)
        with service_client(cluster, NAMESPACE, RECORD) as calls:
            run = run_dag(run_env, DAG_ID, {**conf, **canary}, tmp_path)
        assert runner.errors == []

    assert run.state == "failed"
    assert (run.tasks["rollout_kubernetes"], run.tasks["record_live"]) == ("failed", "upstream_failed"), run.tasks
    new_image = run.xcom["push_image"]["image_uri"]
    assert new_image != served
    assert (f"canary of {new_image} on Deployment {NAMESPACE}/bank-model aborted at 50% of the pods (2 beside 2): "
            "Duration p99 ") in run.log and "above the 0.001 ms allowed" in run.log  # fmt: skip
    assert (f"canary Deployment bank-model-canary deleted, the stable pods ({served}) serve all of the "
            "traffic") in run.log  # fmt: skip
    assert cluster.request("GET", DEPLOYMENT + "-canary")[0] == 404
    assert cluster.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"] == served
    assert calls and {status for *_, status, _ in calls} == {200}  # the canary's answers were slow, not wrong
    assert live_json(s3) == before
    assert run.asset_events == []
