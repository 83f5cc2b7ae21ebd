"""The trigger that bakes one step of a Kubernetes canary in the triggerer: no worker slot is held meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from bank_pipeline.errors import RolloutFailedError
from bank_pipeline.plans import kubernetes_canary as kcanary
from bank_pipeline.plans import lambda_canary as canary
from bank_pipeline.utils.rollout import api_error, label_selector, rollout_event, rollout_status


class KubernetesCanaryTrigger(BaseTrigger):
    """Bakes the canary Deployment ``deployment``: waits until its pods are available and every one reports
    ``bank_serving_ready 1`` on its metrics port, then judges their metrics (read through the API server's pod
    proxy, plans.kubernetes_canary.judge) every ``poll_interval`` until ``bake_seconds`` have passed.

    Yields one event: ``{"status", "message", "metrics", "started_at", "state"}``, the status ``passed``;
    ``breached`` as soon as a threshold is crossed (plans.lambda_canary.breach); ``unavailable`` when the
    pods never became available or ready by ``deadline`` (the task explains them); ``error`` when the
    metrics or the Deployment could not be read (refused for good, or still failing at the deadline: the
    verdict is unknown). A read that fails for a while (429, 5xx, no answer, a pod starting or stopping)
    costs one poll. Every outcome is an event, never a raise, so the task can remove the canary. The
    operator runs ``bake`` in the worker too when not deferrable: one implementation of the bake.
    """

    def __init__(
        self,
        *,
        deployment: str,
        namespace: str,
        port: int,
        bake_seconds: float,
        deadline: float,
        thresholds: dict[str, Any] | None = None,
        kubernetes_conn_id: str | None = "kubernetes_default",
        poll_interval: float = 10.0,
        state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__(**kwargs) has no types
        self.deployment, self.namespace, self.port = deployment, namespace, port
        self.bake_seconds, self.deadline, self.poll_interval = bake_seconds, deadline, poll_interval
        self.thresholds = dict(thresholds or {})
        self.kubernetes_conn_id = kubernetes_conn_id
        self.state = state or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        names = (
            "deployment", "namespace", "port", "bake_seconds", "deadline", "thresholds", "kubernetes_conn_id",
            "poll_interval", "state",
        )  # fmt: skip
        return f"{type(self).__module__}.{type(self).__qualname__}", {name: getattr(self, name) for name in names}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent({**await self.bake(), "state": self.state})

    async def bake(self) -> dict[str, Any]:
        """Wait for the pods, then judge them until a verdict (see the class)."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        started = time.time()
        try:
            while (event := rollout_event(deployment := await self._deployment(hook), deadline=self.deadline,
                                          now=time.time())) is None:  # fmt: skip
                self.log.info("Canary %s/%s: %s", self.namespace, self.deployment, rollout_status(deployment).message)
                await self._pause()
            if event["status"] != "success":
                message = f"the canary pods did not become available: {event['message']}"
                return {"status": "unavailable", "message": message, "metrics": {}, "started_at": started}
            # Judged from when every canary pod says it is ready (bank_serving_ready): what a pod answered while
            # it loaded its model (503) is the readiness probe's business, not the model's.
            pods = await self._pods(hook)
            before = await self._samples(hook, pods)
            while not kcanary.all_ready(before, pods):
                if time.time() >= self.deadline:
                    message = "the canary pods did not report ready in their metrics before the deadline"
                    return {"status": "unavailable", "message": message, "metrics": {}, "started_at": started}
                await self._pause()
                pods = await self._pods(hook)
                before = await self._samples(hook, pods)
            started, thresholds = time.time(), canary.Thresholds(**self.thresholds)
            while True:
                await asyncio.sleep(max(0.0, min(self.poll_interval, started + self.bake_seconds - time.time())))
                metrics = kcanary.judge(before, await self._samples(hook, await self._pods(hook)))
                if problem := canary.breach(metrics, thresholds, {}):
                    return {
                        "status": "breached",
                        "message": problem,
                        "metrics": metrics.as_dict(),
                        "started_at": started,
                    }
                if time.time() >= started + self.bake_seconds:
                    message = f"{self.bake_seconds:g} s baked: {metrics.invocations:g} answers, none over a threshold"
                    return {"status": "passed", "message": message, "metrics": metrics.as_dict(), "started_at": started}
                self.log.info("Baking canary %s/%s: %s", self.namespace, self.deployment, metrics.as_dict())
        except (RolloutFailedError, RuntimeError) as exc:
            return {"status": "error", "message": str(exc), "metrics": None, "started_at": started}

    async def _pause(self) -> None:
        await asyncio.sleep(max(0.0, min(self.poll_interval, self.deadline - time.time())))

    async def _call(self, what: str, call: Any) -> Any:
        """Await ``call()`` until it answers; RolloutFailedError if refused for good, RuntimeError at the deadline."""
        while True:
            try:
                return await call()
            except Exception as exc:  # noqa: BLE001 - classified below: final, or one poll lost
                error = api_error(what, exc)
                if isinstance(error, RolloutFailedError):
                    raise error from exc
                if time.time() >= self.deadline:
                    raise RuntimeError(f"{error} (still failing at the deadline)") from exc
                self.log.warning("%s; polling on", error)
                await self._pause()

    async def _deployment(self, hook: Any) -> dict[str, Any]:
        from kubernetes_asyncio import client

        async def read() -> dict[str, Any]:
            async with hook.get_conn() as api:
                model = await client.AppsV1Api(api).read_namespaced_deployment(self.deployment, self.namespace)
                answer: dict[str, Any] = api.sanitize_for_serialization(model)
                return answer

        answer: dict[str, Any] = await self._call(f"read Deployment {self.namespace}/{self.deployment}", read)
        return answer

    async def _pods(self, hook: Any) -> list[str]:
        """The canary Deployment's pods that run and are not going away (the Deployment read for its selector)."""
        from kubernetes_asyncio import client

        selector = label_selector((await self._deployment(hook))["spec"]["selector"])

        async def listed() -> list[dict[str, Any]]:
            async with hook.get_conn() as api:
                pods = await client.CoreV1Api(api).list_namespaced_pod(self.namespace, label_selector=selector)
                items: list[dict[str, Any]] = api.sanitize_for_serialization(pods).get("items") or []
                return items

        return [
            pod["metadata"]["name"]
            for pod in await self._call(f"list Pods in {self.namespace} ({selector})", listed)
            if (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
        ]

    async def _samples(self, hook: Any, pods: list[str]) -> dict[str, kcanary.Samples]:
        """Each of ``pods``' metrics; a pod that cannot be read now (starting, stopping) is left out of this poll."""
        from kubernetes_asyncio import client

        samples: dict[str, kcanary.Samples] = {}
        async with hook.get_conn() as api:
            core = client.CoreV1Api(api)
            for pod in pods:
                what = f"read the metrics of pod {self.namespace}/{pod}:{self.port}"
                try:
                    # Decoded as text (Prometheus' format is no JSON); a status other than 2xx raises ApiException.
                    text = str(
                        await core.connect_get_namespaced_pod_proxy_with_path(
                            f"{pod}:{self.port}", self.namespace, "metrics"
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - classified: refused for good ends the bake
                    error = api_error(what, exc)
                    # 403 (no pods/proxy): no verdict will come. 404: the pod went after it was listed.
                    if isinstance(error, RolloutFailedError) and getattr(exc, "status", None) != 404:
                        raise error from exc
                    self.log.warning("metrics of canary pod %s not read this time: %s", pod, error)
                    continue
                samples[pod] = kcanary.parse(text)
        return samples
