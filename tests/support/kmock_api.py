"""kmock over HTTP, for the one thing a real API server cannot be made to do on demand: answer 5xx or 429.

Everything else the rollout tests need comes from the real control plane (``kube_cluster``,
tests/conftest.py). kmock 0.8's KubernetesEmulator stores objects and serves read/list/
create/patch over real HTTP, so the operator and the trigger run through the real kubernetes
clients. ``FaultyApi`` adds only faults: a queued fault refuses a matching request before
anything changes, as an API server does (a kmock reaction that answers an error would still
apply a write). What it serves otherwise is what a test stored in it, typically objects read
from the real cluster. Unlike the real server it keeps no generation, uid or resourceVersion,
runs no controller, ignores label and field selectors, and answers a failed JSON-patch ``test``
with a 500 (JsonPatchTestFailed) where the API server answers 422 Invalid.

The synchronous kubernetes client blocks, so the server runs on its own event loop in a
thread (``MockApi``); test code reaches its state through ``MockApi.call``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import kmock

CONN_ID = "k8s_mock"  # the Airflow connection the fixture points at the mock
T = TypeVar("T")


def api_error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    """An error kmock renders as the API's Status body."""
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


@attrs.define(kw_only=True)
class Fault:
    """Refuse the ``skip``+1-th request of ``method`` to ``resource`` (e.g. "apps/v1/deployments") with ``error``;
    ``times`` matching requests in a row (None: every one from then on)."""

    method: str
    resource: str
    error: kmock.KubernetesError
    skip: int = 0
    times: int | None = 1


@attrs.define(kw_only=True)
class FaultyApi(kmock.KubernetesEmulator):
    faults: list[Fault] = attrs.field(factory=list)

    async def _handle(self, request: kmock.Request) -> Any:
        if (error := self._take_fault(request)) is not None:
            raise error  # rendered as a Status body; nothing stored
        return await super()._handle(request)

    def _take_fault(self, request: kmock.Request) -> kmock.KubernetesError | None:
        for fault in self.faults:
            if request.method.value != fault.method or request.resource != kmock.resource(fault.resource):
                continue
            if fault.skip:
                fault.skip -= 1
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
            return fault.error
        return None

    def put(self, resource: str, obj: dict[str, Any]) -> None:
        """Store ``obj`` (as the API returned it) under its namespace and name."""
        meta = obj["metadata"]
        self.resources[resource] = self.resources.get(resource) or {}
        self.objects[resource, meta["namespace"], meta["name"]] = copy.deepcopy(obj)


class MockApi:
    """A FaultyApi served over HTTP on 127.0.0.1 by a thread of its own."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._thread.start()
        if not self._started.wait(10) or self._failure is not None:
            raise RuntimeError(f"kmock did not start: {self._failure}")

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported by __init__
            self._failure = exc
            self._started.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        # strict=False: a request the test made fail is the point, not a test error.
        async with FaultyApi(strict=False) as api, kmock.Server(api) as server:
            self.api = api
            self.url = str(server.url).rstrip("/")
            self._started.set()
            await self._stop.wait()

    def call(self, fn: Callable[[FaultyApi], T]) -> T:
        """``fn(api)`` on the server's loop, between requests."""
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn(self.api))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout=10)

    def requests(self, method: str | None = None) -> list[kmock.Request]:
        return self.call(lambda api: [r for r in api if method is None or r.method.value == method])

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()

    def kubeconfig(self, namespace: str) -> dict[str, Any]:
        """A kubeconfig for the mock: plain HTTP, no credentials."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock-user", "user": {}}],
            "contexts": [
                {"name": "kmock", "context": {"cluster": "kmock", "user": "kmock-user", "namespace": namespace}}
            ],
            "current-context": "kmock",
        }
