"""The trigger that waits for a Deployment's rollout verdict in the triggerer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from bank_pipeline.utils.rollout import describe_api_error, is_transient, rollout_event, rollout_status


class KubernetesRolloutTrigger(BaseTrigger):
    """Polls a Deployment until its rollout is done, failed (ProgressDeadlineExceeded) or ``deadline`` passes.

    A read that fails for a while (429, a 5xx, no answer) costs one poll, not the release:
    the rollout goes on in the cluster either way. One refused for good (403, 404) ends the
    wait at once; one still failing at the deadline is an "error" (the state is unknown).

    In the installed package because the triggerer imports triggers by class path and does
    not see the DAG bundle. It reads through AsyncKubernetesHook's connection handling with
    kubernetes_asyncio's AppsV1Api, a fresh client per poll: the hook reloads exec-based
    credentials (EKS tokens last 15 minutes) on every ``get_conn``, and a poll every few
    seconds makes the cost of a new client irrelevant. Nothing blocks the triggerer's loop.

    Yields one event: ``{"status": "success" | "failed" | "timeout" | "error", "message", "state"}``.
    Every outcome is an event (never a raise), so the task can roll back. ``state`` (what the
    task needs to finish: the previous image above all) rides along in the event as well as in
    the deferral's kwargs, because ``dag.test()`` resumes with the event alone.
    """

    def __init__(
        self,
        *,
        deployment: str,
        namespace: str,
        deadline: float,
        kubernetes_conn_id: str | None = "kubernetes_default",
        poll_interval: float = 10.0,
        state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__(**kwargs) has no types
        self.deployment = deployment
        self.namespace = namespace
        self.deadline = deadline
        self.kubernetes_conn_id = kubernetes_conn_id
        self.poll_interval = poll_interval
        self.state = state or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "deployment": self.deployment,
                "namespace": self.namespace,
                "deadline": self.deadline,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "poll_interval": self.poll_interval,
                "state": self.state,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent({**await self.wait(), "state": self.state})

    async def wait(self) -> dict[str, str]:
        """Poll until there is a verdict."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        what = f"read Deployment {self.namespace}/{self.deployment}"
        while True:
            try:
                deployment = await self._read(hook)
            except Exception as exc:  # noqa: BLE001 - any failure is reported as an event, never raised
                message = f"Kubernetes API call failed: {what}: {describe_api_error(exc)}"
                if not is_transient(exc):  # refused for good (403, 404...): no verdict will come
                    return {"status": "error", "message": message}
                if time.time() >= self.deadline:
                    return {"status": "error", "message": f"{message} (still failing at the deadline)"}
                self.log.warning("%s; polling on", message)  # 429, 5xx, no answer: one poll lost
                await asyncio.sleep(max(0.0, min(self.poll_interval, self.deadline - time.time())))
                continue
            event = rollout_event(deployment, deadline=self.deadline, now=time.time())
            if event is not None:
                return event
            self.log.info(rollout_status(deployment).message)
            await asyncio.sleep(max(0.0, min(self.poll_interval, self.deadline - time.time())))

    async def _read(self, hook: Any) -> dict[str, Any]:
        from kubernetes_asyncio import client

        async with hook.get_conn() as api:
            model = await client.AppsV1Api(api).read_namespaced_deployment(self.deployment, self.namespace)
            answer: dict[str, Any] = api.sanitize_for_serialization(
                model
            )  # the API's JSON (camelCase), as the sync path reads it
            return answer
