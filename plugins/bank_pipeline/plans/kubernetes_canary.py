"""A Kubernetes canary's decisions: the canary Deployment beside the stable one, its share of the pods, and the
verdict on the canary pods' own Prometheus metrics (serving's ``bank_serving_*``, bank_serving/metrics.py).

The canary is a second Deployment, ``<name>-canary``: the stable one's pod template with the new image and
one more label (``bank-ml/track: canary``, also in its selector), so the Service, which selects the stable
labels only, sends it traffic in proportion to its ready pods. A share is a pod count: ``canary_replicas``
(the nearest the stable Deployment's replicas allow, at least one); the share served is reported as
canary / (canary + stable). The verdict reads each canary pod's ``/metrics`` (the API server's pod proxy) at
the bake's start and at each poll, and judges what was answered in between, summed over the canary pods:
``/predict`` answers, 5xx among them, and p99 from the duration histogram's buckets (the upper bound of
the bucket holding the 99th percentile), against plans.lambda_canary's Thresholds.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from bank_pipeline.plans.lambda_canary import Metrics

TRACK_LABEL = "bank-ml/track"
CANARY_SUFFIX = "-canary"
METRICS_PORT_NAME = "metrics"
ROUTE = "/predict"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def canary_name(deployment: str) -> str:
    return deployment + CANARY_SUFFIX


def canary_replicas(stable: int, share: float) -> int:
    """Canary pods for ``share`` of all pods beside ``stable`` ones: the nearest count, at least 1."""
    if not 0 < share < 1:
        raise ValueError(f"share {share}: expected a fraction between 0 and 1")
    return max(1, round(stable * share / (1 - share)))


def canary_deployment(stable: Mapping[str, Any], image: str, container: str, replicas: int) -> dict[str, Any]:
    """The canary Deployment: ``stable``'s pod template with ``image`` in ``container`` and the canary label."""
    meta, spec = stable["metadata"], stable["spec"]
    template = copy.deepcopy(spec["template"])
    template["metadata"].setdefault("labels", {})[TRACK_LABEL] = "canary"
    for c in template["spec"]["containers"]:
        if c["name"] == container:
            c["image"] = image
    labels = {**(meta.get("labels") or {}), TRACK_LABEL: "canary"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": canary_name(meta["name"]), "namespace": meta["namespace"], "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {**spec["selector"]["matchLabels"], TRACK_LABEL: "canary"}},
            "minReadySeconds": spec.get("minReadySeconds", 0),
            "progressDeadlineSeconds": spec.get("progressDeadlineSeconds", 600),
            "template": template,
        },
    }


def metrics_port(deployment: Mapping[str, Any], container: str) -> int:
    """The container's port named ``metrics`` (ValueError naming the Deployment without one)."""
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == container:
            for port in c.get("ports", []):
                if port.get("name") == METRICS_PORT_NAME:
                    return int(port["containerPort"])
    name = deployment["metadata"]["name"]
    raise ValueError(f"Deployment {name}: container {container} has no port named {METRICS_PORT_NAME!r} to judge by")


def parse(text: str) -> Samples:
    """Prometheus text exposition as {(sample name, labels): value}; comments and malformed lines skipped."""
    samples: Samples = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if not match or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        try:
            samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
        except ValueError:
            continue
    return samples


def all_ready(samples: Mapping[str, Samples], pods: list[str]) -> bool:
    """Whether every one of ``pods`` was read and says it is ready (``bank_serving_ready`` 1)."""
    return bool(pods) and all(samples.get(pod, {}).get(("bank_serving_ready", frozenset())) == 1.0 for pod in pods)


def _predict(samples: Samples) -> tuple[float, float, dict[float, float]]:
    """(answers, 5xx answers, cumulative duration buckets by upper bound in seconds) of /predict."""
    answers = errors = 0.0
    buckets: dict[float, float] = {}
    for (name, labels), value in samples.items():
        tags = dict(labels)
        if tags.get("route") != ROUTE:
            continue
        if name == "bank_serving_requests_total":
            answers += value
            errors += value if tags.get("status", "").startswith("5") else 0.0
        elif name == "bank_serving_request_duration_seconds_bucket":
            bound = math.inf if tags["le"] == "+Inf" else float(tags["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return answers, errors, buckets


def judge(before: Mapping[str, Samples], now: Mapping[str, Samples]) -> Metrics:
    """The canary pods' figures since ``before`` (by pod; a pod new since then counts from zero)."""
    answers = errors = 0.0
    buckets: dict[float, float] = {}
    for pod, samples in now.items():
        a1, e1, b1 = _predict(samples)
        a0, e0, b0 = _predict(before.get(pod, {}))
        answers, errors = answers + a1 - a0, errors + e1 - e0
        for bound, count in b1.items():
            buckets[bound] = buckets.get(bound, 0.0) + count - b0.get(bound, 0.0)
    return Metrics(invocations=answers, errors=errors, throttles=0.0, p99_ms=_p99_ms(buckets))


def _p99_ms(buckets: dict[float, float]) -> float | None:
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= 0.99 * total:
            return bound * 1000  # inf: beyond the largest bucket, slower than any threshold
    return None
