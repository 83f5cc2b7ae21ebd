"""Canary rollback, Lambda and Kubernetes: from the moment the canary crosses its error threshold to traffic
back on the old version.

    .venv/bin/python -m bench.canary_rollback_bench [--rounds 3] [--poll 1 5] [--out canary_rollback]

Kubernetes (``kubernetes`` in the result): on devstack's control plane with running pods
(devstack.kube.pods), the serving image with a real model as the stable Deployment and the same
image with a model.py failing one prediction in five as a 50 % canary, judged every ``--poll``
seconds by KubernetesRolloutOperator on the canary pods' metrics (pod proxy) while a client
spreads requests over the Service's ready endpoints. crossed: the client's first 500; back: the
client's last answer from a canary pod (its IP), i.e. when the Service stopped sending it traffic;
detected: the operator's abort (its exception).

Starts devstack; per round and poll interval, a fresh function: version 1 (a good stand-in model)
released all at once by LambdaImageDeployOperator, then version 2, a model failing one request in
five (tests.support.alias_traffic's), released as a 50 % canary with a 120 s bake, judged every
``--poll`` seconds (BANK_POLL_SECONDS in the DAG), not deferred (the worker bakes). A client
calls the alias meanwhile and notes each answer's time and version. Figures per round:

- crossed: the client's answer that put version 2's error rate above the 5 % allowed (its first
  error: fewer than 20 calls precede it);
- detected: the step's ``ended_at``, when the bake's verdict reached the operator;
- back: when UpdateAlias with no weights returned (the operator's DeployFailedError);
- last_v2: the last answer version 2 gave the client (a call that began before ``back``).

What this leaves out: on AWS, Lambda's metrics reach CloudWatch about a minute after the
invoke (devstack's at once), and a deferred bake adds the triggerer -> scheduler -> worker
resume (seconds). Writes build/bench/<out>.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bank_pipeline.errors import DeployFailedError
from bank_pipeline.operators.lambda_deploy import LambdaImageDeployOperator
from bench.common import REPO, quiet_check, write_result
from devstack import Devstack
from devstack.aws.infra import provision
from devstack.harness.airflow_env import LAMBDA_ROLE_ARN, seed_release
from tests.support.alias_traffic import FLAKY_HANDLER
from tests.support.devstack_image_helpers import model_image


def operator(name: str, image: str, registry: str, poll: float, **kwargs: Any) -> LambdaImageDeployOperator:
    return LambdaImageDeployOperator(
        task_id="deploy", function_name=name, image_uri=image, alias="live", role_arn=LAMBDA_ROLE_ARN,
        smoke_event={"ping": 1}, smoke_check=lambda answer: None, plain_http_registries=[registry],
        deferrable=False, waiter_delay=1, bake_poll_seconds=poll, aws_conn_id=None, **kwargs,
    )  # fmt: skip


def timed_rollback(op: LambdaImageDeployOperator) -> dict[str, float]:
    """Wrap the operator's hook so that the rollback (route with no weights) records when it began and returned."""
    times: dict[str, float] = {}
    hook, route = op.hook, op.hook.route

    def timed(function: str, alias: str, version: str, weights: dict[str, float]) -> None:
        if not weights:
            times["detected"] = time.time()
        route(function, alias, version, weights)
        if not weights:
            times["back"] = time.time()

    hook.route = timed  # type: ignore[method-assign]
    return times


def one_round(ds: Devstack, images: dict[str, str], poll: float) -> dict[str, Any]:
    name = f"rollback-{uuid.uuid4().hex[:8]}"
    operator(name, images["good"], ds.registry_url, poll).execute(context={})
    lam, calls, stop = ds.client("lambda"), [], threading.Event()

    def client() -> None:
        while not stop.is_set():
            resp = lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
            calls.append((time.time(), resp["ExecutedVersion"], "FunctionError" in resp))

    canary = operator(name, images["flaky"], ds.registry_url, poll, release_strategy="canary", canary_percent=50,
                      bake_seconds=120)  # fmt: skip
    times = timed_rollback(canary)
    thread = threading.Thread(target=client)
    thread.start()
    try:
        canary.execute(context={})
        raise AssertionError("the flaky canary was promoted")
    except DeployFailedError as failed:
        message = str(failed)
    finally:
        stop.set()
        thread.join()
    lam.delete_function(FunctionName=name)
    crossed = next(t for t, version, errored in calls if version == "2" and errored)
    last_v2 = max(t for t, version, _ in calls if version == "2")
    return {
        "crossed_to_detected_s": round(times["detected"] - crossed, 3),
        "detected_to_back_s": round(times["back"] - times["detected"], 3),
        "crossed_to_back_s": round(times["back"] - crossed, 3),
        "last_v2_minus_back_s": round(last_v2 - times["back"], 3),
        "message": message,
    }


def kube_rounds(ds: Devstack, rounds: int, poll: float) -> list[dict[str, Any]]:
    """``rounds`` Kubernetes canaries of the flaky image, each in a fresh namespace; their figures."""
    from bank_ml import artifacts, data, release
    from bank_pipeline.errors import RolloutFailedError
    from bank_pipeline.operators.kubernetes_rollout import KubernetesRolloutOperator
    from devstack import kube
    from devstack.containers import lambda_image
    from devstack.kube.pods import PodRunner
    from devstack.kube.service_client import service_client
    from tests.support.flaky_model import flaky_image
    from tests.support.release_ns import CONN_ID, ReleaseNamespace, manifests
    from tests.support.serving_requests import RECORD

    model_dir = Path(tempfile.mkdtemp(prefix="rollback-model-"))
    candidate = release.train_candidate(data.features_from_csv(REPO / "data" / "bank" / "bank-full.csv"))
    artifacts.write_model_files(model_dir, candidate.onnx_bytes, candidate.threshold)
    good = lambda_image.model_image(lambda_image.serving_image(), model_dir, ds.registry_url, repo="rollback-k8s",
                                    tag="good")  # fmt: skip
    flaky = flaky_image(ds.registry_url, "rollback-k8s", "good")
    results = []
    with kube.KubeCluster(nodes=2) as cluster:
        for _ in range(rounds):
            ns = ReleaseNamespace.for_test(cluster, "rollback")
            os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = ns.connection()

            def rollout(image: str, **kwargs: Any) -> Any:
                return KubernetesRolloutOperator(
                    task_id="rollout", image=image, manifests=manifests(), kubernetes_conn_id=CONN_ID,
                    deferrable=False, poll_interval=poll, timeout=180, image_platform="linux/amd64", **kwargs,
                ).execute(context={})  # fmt: skip

            with PodRunner(cluster.request, ns.name, "app.kubernetes.io/name=bank-model") as runner:
                rollout(good)
                while sum(1 for p in runner.running().values() if p.ready) < 2:
                    time.sleep(0.1)
                with service_client(cluster, ns.name, RECORD) as calls:
                    try:
                        rollout(flaky, release_strategy="canary", canary_percent=50, bake_seconds=120)
                        raise AssertionError("the flaky canary was promoted")
                    except RolloutFailedError as failed:
                        detected, message = time.time(), str(failed)
                    stable_ips = {p.ip for p in runner.running().values() if not p.name.startswith("bank-model-canary")}
                    time.sleep(3)  # calls after the abort, to see the last one a canary pod answered
            ns.delete()
            crossed = next(t for t, _, status, _ in calls if status == 500)
            last_canary = max(t for t, ip, status, _ in calls if ip not in stable_ips and isinstance(status, int))
            results.append({
                "crossed_to_detected_s": round(detected - crossed, 3),
                "detected_to_back_s": round(last_canary - detected, 3),
                "crossed_to_back_s": round(last_canary - crossed, 3),
                "message": message,
            })  # fmt: skip
    shutil.rmtree(model_dir, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--poll", type=float, nargs="+", default=[1.0, 5.0], help="bake poll intervals, seconds")
    parser.add_argument("--out", default="canary_rollback")
    args = parser.parse_args(argv)
    busy = quiet_check()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, Devstack(state_dir=Path(tmp), port=0) as ds:
        provision(ds)
        for key, value in ds.env().items():
            os.environ[key] = value
        seed_release(ds.registry_url)
        images = {
            name: f"{ds.registry_url}/rollback@{model_image(ds.registry_url, version, repo='rollback', **kw).digest}"
            for name, version, kw in (("good", "v1", {}), ("flaky", "v2", {"handler": FLAKY_HANDLER}))
        }
        for poll in args.poll:
            rounds = [one_round(ds, images, poll) for _ in range(args.rounds)]
            figures = {k: [r[k] for r in rounds] for k in rounds[0] if k != "message"}
            results[f"poll_{poll:g}s"] = {
                "rounds": rounds,
                "median": {k: round(statistics.median(v), 3) for k, v in figures.items()},
            }
            m = results[f"poll_{poll:g}s"]["median"]
            print(f"lambda, poll {poll:g} s: threshold crossed -> traffic back {m['crossed_to_back_s']} s median "
                  f"(detected {m['crossed_to_detected_s']} s, alias reset {m['detected_to_back_s']} s; "
                  f"{args.rounds} rounds)")  # fmt: skip
        kube_results: dict[str, Any] = {}
        for poll in args.poll:
            rounds = kube_rounds(ds, args.rounds, poll)
            figures = {k: [r[k] for r in rounds] for k in rounds[0] if k != "message"}
            m = {k: round(statistics.median(v), 3) for k, v in figures.items()}
            kube_results[f"poll_{poll:g}s"] = {"rounds": rounds, "median": m}
            print(f"kubernetes, poll {poll:g} s: threshold crossed -> traffic back {m['crossed_to_back_s']} s median "
                  f"(detected {m['crossed_to_detected_s']} s, Service off the canary {m['detected_to_back_s']} s; "
                  f"{args.rounds} rounds)")  # fmt: skip
        results["kubernetes"] = kube_results
    write_result(args.out, {"machine_busy_percent_before": busy, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
