"""A Kubernetes canary's decisions: its pod count, its Deployment, and the verdict on its pods' metrics."""

from __future__ import annotations

import math

import pytest

from bank_pipeline.plans import kubernetes_canary as plan
from bank_pipeline.plans.lambda_canary import Metrics, Thresholds, breach
from bank_pipeline.resources import kubernetes_manifests

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("stable", "share", "pods"), [(2, 0.5, 2), (2, 0.1, 1), (9, 0.1, 1), (18, 0.1, 2), (3, 0.25, 1)]
)
def test_a_share_is_the_nearest_pod_count_and_at_least_one(stable: int, share: float, pods: int) -> None:
    assert plan.canary_replicas(stable, share) == pods


def test_a_share_outside_0_and_1_is_refused() -> None:
    with pytest.raises(ValueError, match="share 1.0: expected a fraction between 0 and 1"):
        plan.canary_replicas(2, 1.0)


def stable() -> dict:
    (deployment,) = [m for m in kubernetes_manifests() if m["kind"] == "Deployment"]
    return {**deployment, "metadata": {**deployment["metadata"], "namespace": "bank"}}


def test_the_canary_is_the_stable_template_with_the_new_image_and_its_own_selector() -> None:
    canary = plan.canary_deployment(stable(), "r/bank-model@sha256:" + "a" * 64, "serving", 2)
    assert canary["metadata"] == {
        "name": "bank-model-canary", "namespace": "bank",
        "labels": {**stable()["metadata"]["labels"], "bank-ml/track": "canary"},
    }  # fmt: skip
    spec = canary["spec"]
    assert spec["replicas"] == 2 and spec["selector"]["matchLabels"]["bank-ml/track"] == "canary"
    labels = spec["template"]["metadata"]["labels"]
    # The Service selects the stable labels, which the canary's pods carry too: they get traffic.
    assert stable()["spec"]["selector"]["matchLabels"].items() <= labels.items() and labels["bank-ml/track"] == "canary"
    assert spec["template"]["spec"]["containers"][0]["image"].endswith("a" * 64)
    assert (
        stable()["spec"]["template"]["spec"]["containers"][0]["image"]
        != spec["template"]["spec"]["containers"][0]["image"]
    )
    assert plan.metrics_port(canary, "serving") == 9090


def test_a_container_without_a_metrics_port_cannot_be_judged() -> None:
    deployment = stable()
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"] = []
    with pytest.raises(ValueError, match="container serving has no port named 'metrics'"):
        plan.metrics_port(deployment, "serving")


def text(ok: int, errors: int, fast: int, slow: int) -> str:
    """A pod's /metrics as bank_serving exposes it: `fast` answers in 5 ms, `slow` ones in 250 ms."""
    total = fast + slow
    return "\n".join([
        "# HELP bank_serving_requests_total Answers by route and HTTP status.",
        "# TYPE bank_serving_requests_total counter",
        f'bank_serving_requests_total{{route="/predict",status="200"}} {ok}.0',
        f'bank_serving_requests_total{{route="/predict",status="500"}} {errors}.0',
        'bank_serving_requests_total{route="/readyz",status="503"} 7.0',
        f'bank_serving_request_duration_seconds_bucket{{le="0.005",route="/predict"}} {fast}.0',
        f'bank_serving_request_duration_seconds_bucket{{le="0.25",route="/predict"}} {total}.0',
        f'bank_serving_request_duration_seconds_bucket{{le="+Inf",route="/predict"}} {total}.0',
        f'bank_serving_request_duration_seconds_count{{route="/predict"}} {total}.0',
    ])  # fmt: skip


def test_the_verdict_is_on_what_the_canary_pods_answered_since_the_bake_began() -> None:
    before = {"a": plan.parse(text(100, 0, 100, 0))}  # pod b started after the bake began
    now = {"a": plan.parse(text(180, 20, 200, 0)), "b": plan.parse(text(50, 0, 50, 0))}
    metrics = plan.judge(before, now)
    assert metrics == Metrics(invocations=150.0, errors=20.0, throttles=0.0, p99_ms=5.0)
    assert breach(metrics, Thresholds(), {}) == "Errors 20 of 150 invocations (13.3%) above the 5.0% allowed"


def test_p99_is_the_upper_bound_of_the_bucket_holding_it() -> None:
    metrics = plan.judge({}, {"a": plan.parse(text(100, 0, 90, 10))})
    assert metrics.p99_ms == 250.0
    assert breach(metrics, Thresholds(max_p99_ms=100), {}) == "Duration p99 250.0 ms above the 100 ms allowed"
    assert plan.judge({}, {}).p99_ms is None and plan.judge({}, {}).invocations == 0


def test_beyond_the_largest_bucket_is_slower_than_any_limit() -> None:
    samples = plan.parse('bank_serving_request_duration_seconds_bucket{le="10.0",route="/predict"} 0\n'
                         'bank_serving_request_duration_seconds_bucket{le="+Inf",route="/predict"} 3')  # fmt: skip
    assert plan.judge({}, {"a": samples}).p99_ms == math.inf


def test_the_parser_skips_comments_and_reads_escaped_labels() -> None:
    samples = plan.parse('# TYPE x counter\nx_total{a="q\\"uote",b="2"} 3 1700000000\nbroken line\ny 1e3\n')
    assert samples == {("x_total", frozenset({("a", 'q\\"uote'), ("b", "2")})): 3.0, ("y", frozenset()): 1000.0}


def test_the_bake_begins_once_every_canary_pod_says_it_is_ready() -> None:
    ready, loading = plan.parse("bank_serving_ready 1.0"), plan.parse("bank_serving_ready 0.0")
    assert plan.all_ready({"a": ready, "b": ready}, ["a", "b"])
    assert not plan.all_ready({"a": ready, "b": loading}, ["a", "b"])
    assert not plan.all_ready({"a": ready}, ["a", "b"])  # b's metrics could not be read
    assert not plan.all_ready({}, [])  # no pod yet
