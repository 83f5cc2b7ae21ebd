"""`make demo`'s summary: summary.json's parts from the DAG runs' XComs and the clients' calls, and the text
that ends the demo (devstack/harness/demo.py runs it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from devstack import kube


def release_summary(release: Any, plots: list[Path]) -> dict[str, Any]:
    """The model, image and Lambda parts of summary.json."""
    trained = release.xcom["read_candidate"]
    image = release.xcom.get("push_image") or {}
    deployed = release.xcom.get("deploy_lambda") or {}
    return {
        "model": {
            "version": trained["version"],
            "roc_auc": trained["metrics"]["roc_auc"],
            "pr_auc": trained["metrics"]["pr_auc"],
            "brier": trained["metrics"]["brier"],
            "spark_baseline_roc_auc": trained["baseline"].get("roc_auc"),
            "spark_baseline_pr_auc": trained["baseline"].get("pr_auc"),
            "build_phase_seconds": trained["phase_seconds"],
            "gate": trained["reason"],
            "registry_uri": trained["registry_uri"],
            "plots": [str(p) for p in plots],
        },
        "image": {
            "digest": image.get("digest"),
            "uri": image.get("image_uri"),
            "layer_bytes": image.get("layer_bytes"),
            "push_seconds": image.get("push_seconds"),
        },
        "lambda": {
            "function": deployed.get("function_name"),
            "version": deployed.get("version"),
            "alias": deployed.get("alias"),
            "image": deployed.get("image_uri"),
        },
    }


def kubernetes_summary(release: Any, cluster: kube.KubeCluster) -> dict[str, Any]:
    """The rollout's outcome, and the Deployment as the local cluster's API server shows it now."""
    rollout = release.xcom.get("rollout_kubernetes")
    state = release.tasks.get("rollout_kubernetes", "not a release target")
    server = {
        "server_version": cluster.version.get("gitVersion"),
        "control_plane_ready_s": cluster.timings.get("ready"),
    }
    if not rollout:
        if state == "skipped":
            return {"status": "skipped: no Kubernetes connection configured (kubernetes_default)", **server}
        return {"status": state, **server}
    path = f"/apis/apps/v1/namespaces/{rollout['namespace']}/deployments/{rollout['deployment']}"
    deployment = cluster.get(path)
    status = deployment.get("status") or {}
    return {
        "status": "rolled out",
        "message": rollout["status"],
        **server,
        "namespace": rollout["namespace"],
        "deployment": rollout["deployment"],
        "image": deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ready_replicas": status.get("readyReplicas") or 0,
        "desired_replicas": deployment["spec"].get("replicas"),
    }


def url_summary(release: Any, front: dict[str, Any] | None) -> dict[str, Any]:
    """The function URL parts of summary.json's lambda: the URL, the release's smoke POST, the image that ran."""
    url = release.xcom.get("lambda_url") or {}
    if not url:
        return {"url": None, "url_smoke": None, "container_image": None}
    smoke = url["smoke"]
    return {
        "url": url["url"],
        "url_auth": url["auth_type"],
        "url_smoke": {
            "status": smoke["status"],
            "seconds": smoke["seconds"],
            "attempts": smoke["attempts"],
            "model_version": (smoke["answer"] or {}).get("model_version"),
        },  # fmt: skip
        "container_image": (front or {}).get("container_image"),
        "url_post": front,
    }


def served(calls: list[tuple[float, str]], start: float = 0.0, end: float = float("inf")) -> dict[str, int]:
    """How many of a client's ``calls`` (time, who answered) each answerer got in [start, end)."""
    return dict(Counter(who for t, who in calls if start <= t < end))


def with_served(steps: list[dict[str, Any]], calls: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """Canary steps, each with what the client got while its share was live (its started_at to ended_at)."""
    return [{**step, "client_served": served(calls, step["started_at"], step["ended_at"])} for step in steps]


def canary_summary(release: Any, calls: list[tuple[float, str]], change: str) -> dict[str, Any]:
    """The second release's parts of summary.json: the new model, each canary step judged with what the client
    got while the step's share was live, and all the client's answers."""
    candidate = release.xcom["read_candidate"]
    deployed = release.xcom.get("deploy_lambda") or {}
    return {
        "run_id": release.run_id,
        "change": change,
        "model_version": candidate["version"],
        "roc_auc": candidate["metrics"]["roc_auc"],
        "gate": candidate["reason"],
        "function": deployed.get("function_name"),
        "alias": deployed.get("alias"),
        "version": deployed.get("version"),
        "previous": deployed.get("previous_version"),
        "image": deployed.get("image_uri"),
        "steps": with_served(deployed.get("traffic") or [], calls),
        "client_served": served(calls),
    }


def kube_canary_summary(release: Any, calls: list[tuple[float, str, Any, str | None]]) -> dict[str, Any]:
    """The Kubernetes canary of the second release: each step with what the Service's client got in its span."""
    rollout = release.xcom.get("rollout_kubernetes") or {}
    answered = [(t, str(version or status)) for t, _, status, version in calls]
    return {"deployment": rollout.get("deployment"), "image": rollout.get("image"),
            "steps": with_served(rollout.get("traffic") or [], answered), "client_served": served(answered)}  # fmt: skip


def print_canary(canary: dict[str, Any], live_model: str) -> None:
    print(f"  canary     second release ({canary['change']}): model {canary['model_version']}, "
          f"ROC AUC {canary['roc_auc']:.3f}; gate: {canary['gate']}")  # fmt: skip
    if not canary["steps"]:
        print("             no canary: the gate kept the live model")
        return
    names = {live_model: "the first model", canary["model_version"]: "the second"}

    def calls(served: dict[str, int]) -> str:
        return f"{sum(served.values())} calls, " + ", ".join(f"{n} by {names.get(k, k)}" for k, n in served.items())

    for number, step in enumerate(canary["steps"], 1):
        m = step.get("metrics") or {}
        p99 = f"{m['p99_ms']:.0f} ms" if m.get("p99_ms") is not None else "no data"
        print(f"             step {number}: {step['share']:.0%} of {canary['function']}:{canary['alias']} to version "
              f"{canary['version']} for {step['ended_at'] - step['started_at']:.0f} s -> {step['status']}: "
              f"{m.get('errors', 0):g} errors in {m.get('invocations', 0):g} invocations, "
              f"{m.get('throttles', 0):g} throttles, p99 {p99}")  # fmt: skip
        print(f"               the client meanwhile: {calls(step['client_served'])}")
    print(f"             promoted: alias {canary['alias']} on version {canary['version']} (was {canary['previous']}) "
          "with all of the traffic")  # fmt: skip
    print(f"             the client over the whole release: {calls(canary['client_served'])}")
    kube_canary = canary.get("kubernetes") or {}
    for number, step in enumerate(kube_canary.get("steps") or [], 1):
        m = step.get("metrics") or {}
        p99 = f"{m['p99_ms']:.1f} ms" if m.get("p99_ms") is not None else "no data"
        print(f"             kubernetes step {number}: {step['pods']} canary pod(s) beside {step['stable_pods']} "
              f"({step['share']:.0%} of the pods) for {step['ended_at'] - step['started_at']:.0f} s -> {step['status']}: "
              f"{m.get('errors', 0):g} 5xx in {m.get('invocations', 0):g} answers, p99 {p99}")  # fmt: skip
        print(f"               the Service's client meanwhile: {calls(step['client_served'])}")
    if kube_canary.get("steps"):
        print(f"             promoted: Deployment {kube_canary['deployment']} rolled out, canary Deployment deleted")
        print(f"             the Service's client over the whole release: {calls(kube_canary['client_served'])}")


def print_summary(summary: dict[str, Any], written: Path) -> None:
    """The summary as text; ``written``: where summary.json is (as the user should read it)."""
    f, emr, t = summary["features"], summary["emr"], summary["timings"]
    print()
    print("Summary")
    print(f"  features   {f['rows_out']:,} rows out of {f['rows_in']:,} in, {f['rows_quarantined']:,} quarantined")
    print(f"             {f['uri']}")
    print(f"  emr        features cluster {emr['cluster_id']} {emr['cluster_state']}")
    if "model" in summary:
        m, img, lam = summary["model"], summary["image"], summary["lambda"]
        print(
            f"  model      {m['version']}: ROC AUC {m['roc_auc']:.3f}, PR AUC {m['pr_auc']:.3f}, Brier {m['brier']:.4f}"
        )
        if m.get("spark_baseline_roc_auc") is not None:
            print(f"             pyspark.ml baseline: ROC AUC {m['spark_baseline_roc_auc']:.3f}, "
                  f"PR AUC {m['spark_baseline_pr_auc']:.3f}")  # fmt: skip
        phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in m["build_phase_seconds"].items())
        print(f"             built on EMR cluster {emr.get('train_cluster_id')} ({phases})")
        print(f"             gate: {m['gate']}")
        print(f"  image      {img['uri']} (layer {img['layer_bytes']:,} B, pushed in {img['push_seconds']:.2f}s)")
        if lam.get("version"):
            print(f"  lambda     {lam['function']}:{lam['alias']} -> version {lam['version']}, smoke test passed")
        if lam.get("url"):
            post = lam["url_post"] or {}
            print(f"             URL {lam['url']} ({lam['url_auth']}): smoke POST {lam['url_smoke']['status']}, "
                  f"demo POST {post.get('status')} in {post.get('seconds', 0) * 1000:.0f} ms")  # fmt: skip
            print(f"             container ran {lam['container_image']}")
        k8s = summary["kubernetes"]
        if k8s["status"] == "rolled out":
            live_image = (summary.get("canary") or {}).get("image") or lam.get("image")
            same = "the same image as the Lambda" if k8s["image"] == live_image else f"image {k8s['image']}"
            print(f"  kubernetes Deployment {k8s['namespace']}/{k8s['deployment']} rolled out: {k8s['ready_replicas']} of "
                  f"{k8s['desired_replicas']} replicas ready, {same}")  # fmt: skip
            print(f"             kube-apiserver {k8s['server_version']}, control plane ready in "
                  f"{k8s['control_plane_ready_s']:.1f}s (started alongside devstack)")  # fmt: skip
        else:
            print(f"  kubernetes {k8s['status']}")
        if summary.get("canary"):
            print_canary(summary["canary"], m["version"])
        print(f"  plots      {', '.join(str(p) for p in m['plots'])}")
    stages = {k: v for k, v in t.items() if "." not in k}  # per-task times are in the JSON
    print("  timings    " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()))
    print(f"  written to {written}")
