"""`make demo`: the pipeline end to end on this machine, with progress and a summary.

Starts devstack and, alongside, the local Kubernetes control plane (devstack.kube,
a fresh etcd each run), uploads bank-full.csv to the lake bucket, stages the
wheelhouse and the serving base image, runs the preflight as the worker and shows
its table (stopping if a check fails, as a user on AWS would), runs
bank_features_emr with a local SQLite Airflow, then bank_model_release on the
features it made (explicitly, with the manifest its Asset event names: dag.test()
runs one DAG, not the scheduler): after the Lambda release, the same image digest
is rolled out to Deployment bank/bank-model on the local cluster, as the release's
least-privilege ServiceAccount (bank_pipeline/manifests/rbac). Prints task, EMR and
Deployment state changes as they happen, then a summary, also written to
build/demo/summary.json, with the model's ROC and PR curves and model card copied
beside it. Then, as the book's chapter ends with curl against API Gateway, it
POSTs one record to the live alias's function URL (SigV4-signed) and shows the
curl line that does the same. Stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devstack import Devstack, kube
from devstack.aws.infra import provision
from devstack.harness.airflow_env import (
    LAKE_BUCKET,
    REPO,
    DagRunChild,
    airflow_env,
    airflow_settings,
    ensure_db,
    newest_run_id,
    seed_lake,
    seed_release,
    seed_wheelhouse,
    start_child,
    task_states,
)
from devstack.harness.demo_summary import (
    canary_summary,
    kube_canary_summary,
    kubernetes_summary,
    print_summary,
    release_summary,
    url_summary,
)
from devstack.kube.pods import PodRunner
from devstack.kube.service_client import service_client

OUT = REPO / "build" / "demo"
# One customer, as a client of the front door would send it (bank-full.csv's fields without duration and y).
DEMO_RECORD = {"age": 35, "job": "management", "marital": "single", "education": "tertiary", "default": "no",
               "balance": 2143, "housing": "no", "loan": "no", "contact": "cellular", "day": 12, "month": "oct",
               "campaign": 1, "pdays": 91, "previous": 2, "poutcome": "success"}  # fmt: skip
FEATURES_DAG = "bank_features_emr"
RELEASE_DAG = "bank_model_release"
KUBE_NAMESPACE = "bank"  # the kubernetes_default connection's namespace: where the release rolls out
DEPLOYMENT = "bank-model"  # the package's manifests name it so
# The second release: another model (one setting changed, so a new version the gate still accepts),
# released as a canary to half of the alias's traffic, so that a short demo shows both versions serving.
CANARY_CHANGE = "l2_regularization 1.0 -> 0.5"
CANARY_CONF = {
    "release_strategy": "canary",
    "canary_percent": 50,
    "hyperparameters": {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31, "l2_regularization": 0.5},
}
BAKE_SECONDS_ENV = "DEMO_BAKE_SECONDS"  # not BANK_*: the product's settings are those (the preflight checks them)
CLIENT_RATE = 10.0  # the canary's client: calls a second


class Progress:
    """Prints a line per change of a task's or the EMR cluster's state, with elapsed time."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.seen: dict[str, str] = {}
        self.last_change = self.t0

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    def update(self, key: str, state: str) -> None:
        if state != "none" and self.seen.get(key) != state:
            self.seen[key] = state
            self.last_change = time.monotonic()
            self.say(f"{key:<28} {state}")

    def heartbeat(self, every: float = 10.0) -> None:
        """On long quiet stretches, say what is still going on."""
        if time.monotonic() - self.last_change >= every:
            busy = [k for k, v in self.seen.items() if v in ("running", "deferred", "queued", "RUNNING")]
            self.say("still working: " + ", ".join(busy) if busy else "waiting")
            self.last_change = time.monotonic()


def emr_states(emr: Any) -> dict[str, str]:
    """State of the newest cluster and of its steps, for progress lines."""
    clusters = emr.list_clusters()["Clusters"]
    if not clusters:
        return {}
    newest = max(clusters, key=lambda c: c["Status"]["Timeline"]["CreationDateTime"])
    states = {f"emr cluster {newest['Id']}": newest["Status"]["State"]}
    for step in emr.list_steps(ClusterId=newest["Id"])["Steps"]:
        states[f"emr step {step['Name']}"] = step["Status"]["State"]
    return states


def deployment_states(cluster: kube.KubeCluster | None) -> dict[str, str]:
    """The model server's Deployment on the local cluster: ready of desired replicas, for progress lines."""
    if cluster is None:
        return {}
    status, dep = cluster.request(
        "GET", f"/apis/apps/v1/namespaces/{KUBE_NAMESPACE}/deployments/{DEPLOYMENT}", timeout=5
    )
    if status != 200:
        return {}
    ready, desired = (dep.get("status") or {}).get("readyReplicas") or 0, dep["spec"].get("replicas")
    available = (dep.get("status") or {}).get("availableReplicas") or 0
    return {f"k8s {KUBE_NAMESPACE}/{DEPLOYMENT}": f"{ready}/{desired} ready, {available} available"}


def run_with_progress(
    child: DagRunChild,
    env: dict[str, str],
    emr: Any,
    progress: Progress,
    conf: dict[str, Any] | None = None,
    cluster: kube.KubeCluster | None = None,
    on_task: Callable[[str, str], None] | None = None,
) -> Any:
    """Run one DAG run in ``child`` (started earlier: it has warmed up meanwhile), printing state changes until it
    ends; ``on_task(task_id, state)`` is told each task's state as it is polled."""
    dag_id = child.dag_id
    before = newest_run_id(env, dag_id)
    child.begin(env, conf or {})
    progress.say(f"{dag_id}: started (Airflow log: {child.log.relative_to(REPO)})")

    def show() -> None:
        for key, state in {**emr_states(emr), **deployment_states(cluster)}.items():
            progress.update(key, state)

    while child.proc.poll() is None:
        for task, state in task_states(env, dag_id, after=before).items():
            progress.update(f"task {task}", state)
            if on_task is not None:
                on_task(task, state)
        show()
        progress.heartbeat()
        time.sleep(0.5)  # a display refresh rate, not a wait for a condition
    run = child.finish(timeout=60)
    for task, state in run.tasks.items():
        progress.update(f"task {task}", state)
    show()
    progress.say(f"{dag_id}: {run.state}")
    return run


def bake_seconds() -> int:
    """The canary's bake in the demo: DEMO_BAKE_SECONDS, default 15 (the DAG's own default is 600)."""
    value = os.environ.get(BAKE_SECONDS_ENV, "15")
    if not value.isdigit() or not 1 <= int(value) <= 3600:
        raise SystemExit(f"{BAKE_SECONDS_ENV}={value!r}: expected whole seconds from 1 to 3600")
    return int(value)


class UrlClient:
    """A client of the function URL: from ``start_on``'s cue (deploy_lambda running) until the block ends, it
    POSTs DEMO_RECORD about CLIENT_RATE times a second and counts the answers by the model version that gave them."""

    def __init__(self, env: dict[str, str], url: str, auth_type: str) -> None:
        self.env, self.url, self.auth_type = env, url, auth_type
        self.calls: list[tuple[float, str]] = []  # (epoch seconds, the model version that answered or the failure)
        self._go, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="url-client", daemon=True)

    def start_on(self, task: str, state: str) -> None:
        if task == "deploy_lambda" and state in ("running", "deferred"):
            self._go.set()

    def _run(self) -> None:
        body = json.dumps(DEMO_RECORD, separators=(",", ":"))
        self._go.wait()
        while not self._stop.is_set():
            try:
                resp = signed_post(self.env, self.url, self.auth_type, body)
                answer = resp.json() if resp.status_code == 200 else {}
                self.calls.append((time.time(), answer.get("model_version") or f"HTTP {resp.status_code}"))
            except Exception as exc:  # noqa: BLE001 - counted and shown: the demo's client must not die of one call
                self.calls.append((time.time(), type(exc).__name__))
            self._stop.wait(1 / CLIENT_RATE)  # the client's pace, not a wait for a condition

    def __enter__(self) -> UrlClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._go.set()
        self._thread.join(timeout=90)


def task_durations(env: dict[str, str], dag_id: str, run_id: str) -> dict[str, float]:
    """Seconds each task of the run took, from Airflow's own start and end dates."""
    import sqlite3

    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT task_id, (julianday(end_date) - julianday(start_date)) * 86400 FROM task_instance"
            " WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        ).fetchall()
    return {task: round(seconds, 2) for task, seconds in rows if seconds is not None}


def failed(run: Any) -> bool:
    """Say so, with the log's tail, when a run did not succeed."""
    if run.state == "success":
        return False
    print(f"\n{run.dag_id} ended {run.state}: {run.tasks}", file=sys.stderr)
    print("\n".join(run.log.splitlines()[-60:]), file=sys.stderr)
    print(f"full log: {run.log_path}", file=sys.stderr)
    return True


def fetch_model_files(s3: Any, registry_uri: str) -> list[Path]:
    """Copy the version's curves and model card next to the summary, for people to look at."""
    prefix = registry_uri.removeprefix(f"s3://{LAKE_BUCKET}/")
    paths = []
    for name in ("roc.png", "pr.png", "model_card.md"):
        target = OUT / name
        s3.download_file(LAKE_BUCKET, prefix + name, str(target))
        paths.append(target.relative_to(REPO))
    return paths


def signed_post(env: dict[str, str], url: str, auth_type: str, body: str) -> Any:
    """POST ``body`` to a function URL as curl --aws-sigv4 does (signed unless its auth is NONE); the response."""
    import requests
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {"Content-Type": "application/json"}
    if auth_type == "AWS_IAM":
        request = AWSRequest(method="POST", url=url, data=body.encode(), headers=headers)
        credentials = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
        SigV4Auth(credentials, "lambda", env["AWS_DEFAULT_REGION"]).add_auth(request)
        headers = dict(request.headers.items())
    return requests.post(url, data=body.encode(), headers=headers, timeout=60)


def post_through_url(ds: Devstack, url: str, auth_type: str, progress: Progress) -> dict[str, Any]:
    """POST DEMO_RECORD to the function URL as curl --aws-sigv4 would (signed unless auth is NONE); show it."""
    env = ds.env()
    region = env["AWS_DEFAULT_REGION"]
    body = json.dumps(DEMO_RECORD, separators=(",", ":"))
    sign = ""
    if auth_type == "AWS_IAM":
        sign = f"--aws-sigv4 'aws:amz:{region}:lambda' --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" "
    curl = f"curl {sign}-H 'Content-Type: application/json' -d '{body}' {url}"
    started = time.monotonic()
    resp = signed_post(env, url, auth_type, body)
    seconds = time.monotonic() - started
    progress.say(f"POST one record to the function URL, as the book's curl does ({auth_type}):")
    print(f"    {curl}", flush=True)
    print(f"    -> {resp.status_code} {resp.text}  ({seconds * 1000:.0f} ms)", flush=True)
    answer = resp.json() if resp.headers.get("Content-Type") == "application/json" else resp.text
    return {"status": resp.status_code, "answer": answer, "seconds": round(seconds, 3), "curl": curl,
            "container_image": resp.headers.get("x-devstack-container-image")}  # fmt: skip


def main() -> int:
    if missing := kube.missing_binaries():
        print(f"the local Kubernetes is not built (missing {', '.join(missing)}): run `make kube`", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    progress = Progress()
    # The control plane starts while devstack starts and the features DAG runs; a fresh etcd each run.
    cluster = kube.KubeCluster(OUT / "kube", reset=True)
    started = kube.start_in_background(cluster)
    progress.say("starting the local Kubernetes control plane (devstack.kube) in the background")
    try:
        return run_demo(progress, started)
    finally:
        with contextlib.suppress(kube.KubeError):  # run_demo said so
            started()  # never stopped half-started
        cluster.stop()


def _timed(fn: Callable[..., str], *args: Any) -> tuple[str, float]:
    """fn(*args) and the seconds it took."""
    t = time.monotonic()
    return fn(*args), time.monotonic() - t


def run_preflight(env: dict[str, str]) -> tuple[int, str]:
    """``python -m bank_pipeline.preflight`` in ``env``: its exit status and table."""
    done = subprocess.run(
        [sys.executable, "-m", "bank_pipeline.preflight"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout.rstrip() or done.stderr[-3000:]


def run_demo(progress: Progress, kube_started: Callable[[], kube.KubeCluster]) -> int:
    """Both DAG runs and the summary; the caller owns the control plane."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    home = OUT / "airflow"
    ensure_db(airflow_settings(home))
    timings["airflow_db"] = time.monotonic() - t
    children: list[DagRunChild] = []

    def child(dag_id: str, runs: str = "runs") -> DagRunChild:
        children.append(start_child(airflow_settings(home), dag_id, OUT / runs))
        return children[-1]

    # Each DAG run's child warms up (Airflow's imports and execution API, ~5 s of a core)
    # beforehand: the features run's while devstack starts, the release's during the features run.
    features_child = child(FEATURES_DAG)
    try:
        return run_dags(progress, kube_started, timings, home, features_child, lambda runs: child(RELEASE_DAG, runs))
    finally:
        for started in children:
            started.stop()


def run_dags(
    progress: Progress,
    kube_started: Callable[[], kube.KubeCluster],
    timings: dict[str, float],
    home: Path,
    features_child: DagRunChild,
    release_child: Callable[[str], DagRunChild],
) -> int:
    """Devstack, both DAG runs in their children, and the summary."""
    t = time.monotonic()
    progress.say("starting devstack (moto S3/EMR + local Spark steps)")
    with Devstack(state_dir=OUT / "devstack", port=0) as ds, contextlib.ExitStack() as running:
        timings["devstack_start"] = time.monotonic() - t
        progress.say(f"devstack at {ds.endpoint_url}")
        t = time.monotonic()
        account = provision(ds)
        timings["infra_stack"] = time.monotonic() - t
        progress.say(
            f"deployed infra/bank-ml.cfn.yaml ({account.stack_seconds:.1f}s); Airflow signs as the worker user"
        )
        env = airflow_env(home, ds.env(), account)
        source = seed_lake(ds.client("s3"), REPO / "data" / "bank" / "bank-full.csv")
        progress.say(f"uploaded {source}")
        # Two deploy steps that need nothing of each other: the wheelhouse upload (a subprocess
        # and moto's S3) beside the serving base image's push (podman and the registry).
        with ThreadPoolExecutor(1, thread_name_prefix="wheelhouse") as pool:
            staged = pool.submit(_timed, seed_wheelhouse, ds.env())
            t = time.monotonic()
            seed_release(ds.registry_url)
            timings["serving_base_image"] = time.monotonic() - t
            progress.say(f"serving base image pushed to {ds.registry_url}")
            line, timings["wheelhouse"] = staged.result()  # overlapped the push
        progress.say(f"wheelhouse (the deploy step): {line}")
        try:
            kc = kube_started()
        except kube.KubeError as exc:
            print(f"\nthe local Kubernetes control plane did not start: {exc}", file=sys.stderr)
            return 1
        timings["kube_ready"] = kc.timings["ready"]  # overlapped the stages above
        # The model server's pods run for real (podman, on their pod IPs): the canary is judged on their metrics.
        running.enter_context(PodRunner(kc.request, KUBE_NAMESPACE, f"app.kubernetes.io/name={DEPLOYMENT}"))
        kubeconfig = kc.release_identity(KUBE_NAMESPACE)
        progress.say(f"Kubernetes {kc.version['gitVersion']} at {kc.server} (ready in {kc.timings['ready']:.1f}s); "
                     f"the release rolls out to namespace {KUBE_NAMESPACE} as ServiceAccount {kube.RELEASE_IDENTITY}")  # fmt: skip
        env = airflow_env(home, ds.env(), account, kube.airflow_connection(kubeconfig, KUBE_NAMESPACE))

        # What a user runs first on AWS: the preflight, as the worker, with the workers' settings.
        t = time.monotonic()
        code, table = run_preflight(env)
        timings["preflight"] = time.monotonic() - t
        progress.say("preflight (python -m bank_pipeline.preflight):\n" + table)
        if code != 0:
            print("\nthe preflight failed: see the table above", file=sys.stderr)
            return 1

        t = time.monotonic()
        emr = ds.client("emr")
        releaser = release_child("runs")  # warms up while the features run goes
        run = run_with_progress(features_child, env, emr, progress)
        timings[FEATURES_DAG] = time.monotonic() - t
        cluster = (
            emr.describe_cluster(ClusterId=run.xcom["create_cluster"])["Cluster"]
            if "create_cluster" in run.xcom
            else {}
        )
        timings.update({f"features.{k}": v for k, v in task_durations(env, FEATURES_DAG, run.run_id).items()})
        if failed(run):
            return 1

        manifest_uri = run.asset_events[0]["extra"]["manifest_uri"]
        t = time.monotonic()
        canary_releaser = release_child("runs/canary")  # warms up while the first release goes
        release = run_with_progress(releaser, env, emr, progress, {"features_manifest_uri": manifest_uri}, cluster=kc)
        timings[RELEASE_DAG] = time.monotonic() - t
        timings.update({f"release.{k}": v for k, v in task_durations(env, RELEASE_DAG, release.run_id).items()})
        if failed(release):
            return 1
        plots = fetch_model_files(ds.client("s3"), release.xcom["read_candidate"]["registry_uri"])
        url = release.xcom.get("lambda_url")
        front = post_through_url(ds, url["url"], url["auth_type"], progress) if url else None

        # A second model, released as a canary while a client calls the function URL.
        t = time.monotonic()
        conf = {"features_manifest_uri": manifest_uri, **CANARY_CONF, "bake_seconds": bake_seconds()}
        progress.say(f"second release, as a canary on both targets: {conf['canary_percent']}% of the traffic to the "
                     f"new model for {conf['bake_seconds']} s while clients call the function URL and the Service "
                     f"({CANARY_CHANGE})")  # fmt: skip
        with (
            UrlClient(ds.env(), url["url"], url["auth_type"]) if url else contextlib.nullcontext() as client,
            service_client(kc, KUBE_NAMESPACE, DEMO_RECORD, DEPLOYMENT, rate=CLIENT_RATE) as kube_calls,
        ):
            on_task = client.start_on if client else None
            second = run_with_progress(canary_releaser, env, emr, progress, conf, cluster=kc, on_task=on_task)
        timings["canary_release"] = time.monotonic() - t
        if failed(second):
            return 1

    features = run.xcom["validate_features"]
    summary = {
        "features": {
            "rows_in": features["rows_in"],
            "rows_out": features["rows_out"],
            "rows_quarantined": features["rows_quarantined"],
            "uri": features["features_uri"],
            "manifest_uri": features["manifest_uri"],
        },
        "emr": {
            "cluster_id": cluster.get("Id"),
            "cluster_state": cluster.get("Status", {}).get("State"),
            "train_cluster_id": release.xcom.get("create_cluster"),
        },
        "dag_runs": {
            FEATURES_DAG: {"run_id": run.run_id, "state": run.state},
            RELEASE_DAG: {"run_id": release.run_id, "state": release.state},
        },
        **release_summary(release, plots),
        "kubernetes": kubernetes_summary(second, kc),  # the last release's: the Deployment as it is now
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    summary["lambda"].update(url_summary(release, front))
    summary["canary"] = canary_summary(second, client.calls if client else [], CANARY_CHANGE)
    summary["canary"]["kubernetes"] = kube_canary_summary(second, kube_calls)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary, (OUT / "summary.json").relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
