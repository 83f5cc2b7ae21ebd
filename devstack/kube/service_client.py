"""A client of a Service on devstack's control plane, as kube-proxy would spread it: each request to the next
ready endpoint of the Service's EndpointSlices (pod IPs that devstack.kube.pods makes real). There is no
kube-proxy here (no ClusterIP routing): tests and the demo call the model server's Service this way."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from devstack.kube.api import KubeApi


def ready_endpoints(cluster: KubeApi, namespace: str, service: str) -> list[str]:
    """The ready addresses of the Service's EndpointSlices (the endpointslice controller's, from pod readiness)."""
    path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?labelSelector=kubernetes.io/service-name%3D{service}"
    slices = cluster.get(path)["items"]
    return sorted(
        address
        for s in slices
        for endpoint in s.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint["addresses"]
    )


@contextmanager
def service_client(
    cluster: KubeApi, namespace: str, record: dict[str, Any], service: str = "bank-model", rate: float | None = None
) -> Iterator[list[Any]]:
    """POST ``record`` to /predict of the Service's pods in a thread while the block lasts (about ``rate`` a
    second, else as fast as answered); yields the calls made, each (time, pod IP, HTTP status or the connection
    error's name, model_version or None)."""
    calls: list[Any] = []
    stop = threading.Event()
    body = json.dumps(record)

    def run() -> None:
        endpoints: list[str] = []
        refreshed = 0.0
        for turn in itertools.count():
            if stop.is_set():
                return
            if time.monotonic() - refreshed > 0.2:  # kube-proxy follows the slices about this closely
                endpoints, refreshed = ready_endpoints(cluster, namespace, service), time.monotonic()
            if not endpoints:
                stop.wait(0.05)
                continue
            ip = endpoints[turn % len(endpoints)]
            conn = http.client.HTTPConnection(ip, 8080, timeout=10)
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                answer = json.loads(resp.read() or b"null")
                version = answer.get("model_version") if isinstance(answer, dict) else None
                calls.append((time.time(), ip, resp.status, version))
            except OSError as exc:
                calls.append((time.time(), ip, type(exc).__name__, None))
            finally:
                conn.close()
            if rate:
                stop.wait(1 / rate)  # the client's pace, not a wait for a condition

    thread = threading.Thread(target=run, name="service-client")
    thread.start()
    try:
        yield calls
    finally:
        stop.set()
        thread.join(timeout=30)
