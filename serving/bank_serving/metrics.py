"""The HTTP server's own Prometheus metrics, served on a port of their own (``--metrics-port``, default 9090).

A port the probes and clients do not use: a scrape never queues behind predictions, the Service
need not expose it, and it keeps answering while the server drains (Prometheus, or a canary's
analysis, reads the last figures of a pod being replaced). prometheus_client's own HTTP server
runs it in a thread, outside the event loop. What it exposes (text format, ``GET /metrics``):

- ``bank_serving_requests_total{route, status}``: answers by route (``/predict``, ``/healthz``,
  ``/readyz``, ``/openapi.json``, else ``other``) and HTTP status; errors are the 5xx ones;
- ``bank_serving_request_duration_seconds{route}``: a histogram of the time from the request
  reaching the application to its answer written (p99 from its buckets);
- ``bank_serving_records_total``: records scored by ``/predict``;
- ``bank_serving_model_info{version}``: 1 once the model is loaded;
- ``bank_serving_ready``: 1 while /readyz answers 200 (0 while loading and draining).
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

ROUTES = ("/predict", "/healthz", "/readyz", "/openapi.json")
# Scoring one record takes about 0.06 ms and 1,000 about 5 ms; a slow pod's answers take tens of ms.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    """One server's metrics, in a registry of its own (two servers in one process do not share figures)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bank_serving_requests", "Answers by route and HTTP status.", ["route", "status"], registry=self.registry
        )
        self.duration = Histogram(
            "bank_serving_request_duration_seconds", "Time from request to answer written.", ["route"],
            buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.records = Counter("bank_serving_records", "Records scored by /predict.", registry=self.registry)
        self.model = Gauge("bank_serving_model_info", "The loaded model.", ["version"], registry=self.registry)
        self.ready = Gauge("bank_serving_ready", "1 while /readyz answers 200.", registry=self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def observe(self, path: str, status: int, seconds: float) -> None:
        """One answer: its route (paths outside ROUTES count as ``other``), status and time."""
        route = path if path in ROUTES else "other"
        self.requests.labels(route=route, status=str(status)).inc()
        self.duration.labels(route=route).observe(seconds)

    def loaded(self, version: str) -> None:
        self.model.labels(version=version).set(1)
        self.ready.set(1)

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics on ``host:port`` from a thread; port 0 picks a free one (see ``port``)."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        """Stop the metrics server (the process is exiting)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
