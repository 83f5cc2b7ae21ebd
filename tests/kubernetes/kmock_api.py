"""A Kubernetes API for the rollout tests: kmock over HTTP, plus what the API server and
the deployment controller would do.

kmock 0.8's KubernetesEmulator stores objects and serves create/read/list/patch/delete
over real HTTP, so the operator runs through the real kubernetes clients. What it does
not do, and ``FakeCluster`` adds or works around:

- no metadata.generation, uid or resourceVersion: set on Deployment writes, with
  generation bumped only when the spec changes (as the API server does);
- no controllers: a small deployment controller advances the status one step per read
  of the Deployment (observe the generation and create the ReplicaSet and its pods,
  then complete, or for an image in ``bad_images`` stall in ImagePullBackOff and, after
  ``stall_reads`` reads, say ProgressDeadlineExceeded), so tests are deterministic;
- label and field selectors are ignored on lists (the operator filters by owner too);
- a list of a resource that has no objects yet is a 404 unless the resource is declared;
- a reaction that answers an error to a write still applies the write to the store:
  ``faults`` refuse a request before anything changes, as a real API server does;
- merge patches are plain JSON merges (a list is replaced whole); JSON patches
  (a list body) are applied by the jsonpatch library, ``test`` ops included.

The synchronous kubernetes client blocks, so the server runs on its own event loop in a
thread (``MockApi``); test code reaches its state through ``MockApi.call``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import hashlib
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import kmock

CONN_ID = "k8s_mock"  # the Airflow connection conftest.py points at the mock
NAMESPACE = "bank"  # the connection's namespace

DEPLOYMENTS = "apps/v1/deployments"
REPLICASETS = "apps/v1/replicasets"
PODS = "v1/pods"
EVENTS = "v1/events"
SERVICES = "v1/services"
PDBS = "policy/v1/poddisruptionbudgets"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
RESOURCES = (DEPLOYMENTS, REPLICASETS, PODS, EVENTS, SERVICES, PDBS, HPAS)
T = TypeVar("T")


def api_error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    """An error kmock renders as the API's Status body."""
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


@attrs.define(kw_only=True)
class FakeCluster(kmock.KubernetesEmulator):
    bad_images: set[str] = attrs.field(factory=set)  # their pods never pull
    stall_reads: int = 2  # reads of a stuck rollout before ProgressDeadlineExceeded
    frozen: bool = False  # the controller never acts: only a timeout ends the wait
    faults: list[tuple[str, str, kmock.KubernetesError]] = attrs.field(factory=list)  # (method, resource, error)
    reads: dict[tuple[str, str], int] = attrs.field(factory=dict)
    clock: itertools.count = attrs.field(factory=lambda: itertools.count(1))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for resource in RESOURCES:
            self.resources[resource] = {}

    async def _handle(self, request: kmock.Request) -> Any:
        if (fault := self._take_fault(request)) is not None:
            raise fault  # rendered as a Status body; nothing stored
        key = self._deployment_key(request)
        if key is not None and request.action == kmock.action.FETCH and self._exists(DEPLOYMENTS, *key):
            self._controller_step(*key)
        before = self.raw(DEPLOYMENTS, *key).get("spec") if key and self._exists(DEPLOYMENTS, *key) else None
        response = await super()._handle(request)
        if key is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            self._api_server_bookkeeping(*key, spec_before=before)
        return response

    # -- helpers ------------------------------------------------------------------------

    def _take_fault(self, request: kmock.Request) -> kmock.KubernetesError | None:
        for fault in self.faults:
            method, resource, error = fault
            if request.method.value == method and request.resource == kmock.resource(resource):
                self.faults.remove(fault)
                return error
        return None

    @staticmethod
    def _deployment_key(request: kmock.Request) -> tuple[str, str] | None:
        if request.resource != kmock.resource(DEPLOYMENTS) or request.namespace is None:
            return None
        name = request.name or ((request.data or {}).get("metadata") or {}).get("name")
        return (request.namespace, name) if name else None

    def _exists(self, resource: str, namespace: str, name: str) -> bool:
        key = (kmock.resource(resource), namespace, name)
        return key in self.objects and not self.objects[resource, namespace, name].deleted

    def raw(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[resource, namespace, name].raw)

    def items(self, resource: str, namespace: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj.raw)
            for (res, ns, _), obj in self.objects.items()
            if res == kmock.resource(resource) and ns == namespace and not obj.deleted
        ]

    def _now(self) -> str:
        return f"2026-11-24T10:{next(self.clock) % 60:02d}:00Z"

    # -- the API server -----------------------------------------------------------------

    def _api_server_bookkeeping(self, namespace: str, name: str, spec_before: Any) -> None:
        obj = self.objects[DEPLOYMENTS, namespace, name]
        meta = obj.raw["metadata"]
        changes: dict[str, Any] = {"resourceVersion": str(next(self.clock) + 1000)}
        if spec_before is None:
            changes.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=self._now())
        elif obj.raw.get("spec") != spec_before:
            changes["generation"] = meta.get("generation", 1) + 1
        obj.patch({"metadata": changes})

    # -- the deployment controller ------------------------------------------------------

    def _controller_step(self, namespace: str, name: str) -> None:
        if self.frozen:
            return
        deployment = self.raw(DEPLOYMENTS, namespace, name)
        generation = deployment["metadata"].get("generation", 1)
        status = deployment.get("status") or {}
        desired = deployment["spec"].get("replicas", 1)
        rs_name, stuck = self._replicaset_for(deployment)
        if status.get("observedGeneration") != generation:
            # Observed: the new ReplicaSet's first (surge) pod is starting, the old ones serve.
            self.reads[namespace, name] = 0
            old = status.get("availableReplicas") or 0
            counts = {"replicas": old + 1, "updatedReplicas": 1, "readyReplicas": old, "availableReplicas": old}
            available = self._available(old >= desired)
            progressing = self._condition(
                "Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.'
            )
            new_status = {"observedGeneration": generation, **counts, "conditions": [available, progressing]}
        else:
            self.reads[namespace, name] = self.reads.get((namespace, name), 0) + 1
            if stuck and self.reads[namespace, name] < self.stall_reads:
                return
            if stuck:
                message = f'ReplicaSet "{rs_name}" has timed out progressing.'
                progressing = self._condition("Progressing", False, "ProgressDeadlineExceeded", message)
                new_status = {"conditions": [status["conditions"][0], progressing]}
            else:
                message = f'ReplicaSet "{rs_name}" has successfully progressed.'
                progressing = self._condition("Progressing", True, "NewReplicaSetAvailable", message)
                counts = dict.fromkeys(("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"), desired)
                new_status = {**counts, "conditions": [self._available(True), progressing]}
        self.objects[DEPLOYMENTS, namespace, name].patch({"status": new_status})

    def _available(self, ok: bool) -> dict[str, str]:
        reason = "MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable"
        message = "Deployment has minimum availability." if ok else "Deployment does not have minimum availability."
        return self._condition("Available", ok, reason, message)

    def _condition(self, kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
        now = self._now()
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }

    def _replicaset_for(self, deployment: dict[str, Any]) -> tuple[str, bool]:
        """Name of the ReplicaSet of the current template (created with its pod on first sight); stuck or not."""
        meta, spec = deployment["metadata"], deployment["spec"]
        namespace, template = meta["namespace"], spec["template"]
        pod_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{meta['name']}-{pod_hash}"
        stuck = template["spec"]["containers"][0]["image"] in self.bad_images
        if self._exists(REPLICASETS, namespace, name):
            return name, stuck
        revisions = [int(revision(rs)) for rs in self.items(REPLICASETS, namespace)]
        labels = {**template["metadata"]["labels"], "pod-template-hash": pod_hash}
        replicaset = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "labels": labels,
                "ownerReferences": [owner_reference("apps/v1", "Deployment", meta)],
                "annotations": {"deployment.kubernetes.io/revision": str(1 + max(revisions, default=0))},
            },
            "spec": {
                "replicas": spec.get("replicas", 1),
                "selector": {"matchLabels": {**spec["selector"]["matchLabels"], "pod-template-hash": pod_hash}},
                "template": {**template, "metadata": {"labels": labels}},
            },
            "status": {"replicas": 1, "readyReplicas": 0},
        }
        self.objects[REPLICASETS, namespace, name] = replicaset
        self._pod_for(replicaset, stuck)
        return name, stuck

    def _pod_for(self, replicaset: dict[str, Any], stuck: bool) -> None:
        """The ReplicaSet's surge pod, with its events: pulling forever if ``stuck``, else running."""
        meta = replicaset["metadata"]
        namespace, pod = meta["namespace"], f"{meta['name']}-x7k2p"
        container = replicaset["spec"]["template"]["spec"]["containers"][0]
        image = container["image"]
        if stuck:
            state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
            unready = f"containers with unready status: [{container['name']}]"
            ready = {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": unready}
            phase, pull_error = "Pending", f'failed to pull and unpack image "{image}": not found'
            events = [
                ("Normal", "Pulling", f'Pulling image "{image}"', 4),
                (
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": rpc error: code = NotFound desc = {pull_error}',
                    4,
                ),
                ("Warning", "BackOff", f'Back-off pulling image "{image}"', 6),
            ]
        else:
            state = {"running": {"startedAt": self._now()}}
            phase, ready = "Running", {"type": "Ready", "status": "True"}
            events = [("Normal", "Started", f"Started container {container['name']}", 1)]
        statuses = [{"name": container["name"], "image": image, "ready": not stuck, "restartCount": 0, "state": state}]
        self.objects[PODS, namespace, pod] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": namespace,
                "labels": meta["labels"],
                "ownerReferences": [owner_reference("apps/v1", "ReplicaSet", meta)],
            },
            "spec": replicaset["spec"]["template"]["spec"],
            "status": {
                "phase": phase,
                "conditions": [{"type": "PodScheduled", "status": "True"}, ready],
                "containerStatuses": statuses,
            },
        }
        for n, (kind, reason, message, count) in enumerate(events):
            self.objects[EVENTS, namespace, f"{pod}.{n}"] = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{pod}.{n}", "namespace": namespace},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
                "type": kind,
                "reason": reason,
                "message": message,
                "count": count,
                "lastTimestamp": self._now(),
            }


def owner_reference(api_version: str, kind: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": meta["uid"], "controller": True}


def revision(obj: dict[str, Any]) -> str:
    return obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"]


class MockApi:
    """A FakeCluster served over HTTP on 127.0.0.1 by a thread of its own."""

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
        async with FakeCluster(strict=False) as cluster, kmock.Server(cluster) as server:
            self.cluster = cluster
            self.url = str(server.url).rstrip("/")
            self._started.set()
            await self._stop.wait()

    def call(self, fn: Callable[[FakeCluster], T]) -> T:
        """``fn(cluster)`` on the server's loop, between requests."""
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(fn(self.cluster))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout=10)

    def requests(self, method: str | None = None) -> list[kmock.Request]:
        return self.call(lambda c: [r for r in c if method is None or r.method.value == method])

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
