"""Roll a model image out to a Kubernetes Deployment, wait as ``kubectl rollout status`` does, roll back on failure.

The cncf-kubernetes provider has a hook but no rollout operator. This one, in the
style of lambda_deploy.py (thin API calls through KubernetesHook, validation in
``execute``, the long wait deferred to a trigger):

1. create what is missing from the manifests (k8s/: Service, PodDisruptionBudget,
   Deployment, HorizontalPodAutoscaler), the Deployment with the released image;
2. if the Deployment exists, change only its container's image, by a JSON patch that
   first tests the container's name and current image (see ``image_patch``);
3. wait until the rollout is complete as ``kubectl rollout status`` judges it
   (``rollout_status``), failed (ProgressDeadlineExceeded) or timed out; deferred to
   ``KubernetesRolloutTrigger``;
4. on failure, explain it (the Deployment's conditions; the new ReplicaSet's pods'
   conditions, waiting or crashing containers and recent events), put the previous
   image back, and fail saying both.

A rerun with the image already deployed patches nothing and still verifies the
rollout. A failed first deploy is left in place (nothing to roll back to; its
unready pods get no Service traffic, and its events say why). The rollback is a
patch, not a wait: with maxUnavailable 0 the old pods never stopped serving.

The previous image is carried through the deferral only. If the task dies
between its patch and the verdict, a retry finds its own image already there,
verifies it, and on failure can only report it (``kubectl rollout undo`` then).

Kubernetes client imports are lazy: DAG files import this module at parse time,
and the provider's hook module (kubernetes + kubernetes_asyncio) costs ~0.5 s.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from bank_pipeline.errors import BadInputError, RolloutFailedError
from bank_pipeline.links import KubernetesDeploymentLink

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from airflow.sdk import Context

DIGEST_IMAGE = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
# What the operator creates when missing, in creation order (the disruption budget before
# the pods it guards, the autoscaler after its target): apiVersion, the kubernetes client's
# API class, and the suffix of its read_namespaced_* / create_namespaced_* methods.
KINDS: dict[str, tuple[str, str, str]] = {
    "Service": ("v1", "CoreV1Api", "service"),
    "PodDisruptionBudget": ("policy/v1", "PolicyV1Api", "pod_disruption_budget"),
    "Deployment": ("apps/v1", "AppsV1Api", "deployment"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "AutoscalingV2Api", "horizontal_pod_autoscaler"),
}
# Worth a task retry (as the provider's generic_api_retry judges); any other refusal is final.
TRANSIENT_STATUS = frozenset({409, 429, 500, 502, 503, 504})
MAX_PODS_EXPLAINED = 3
MAX_EVENTS_PER_POD = 3


# -- pure functions -------------------------------------------------------------------


class RolloutStatus(NamedTuple):
    """kubectl's verdict: done, failed (never both), and its message."""

    done: bool
    failed: bool
    message: str


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The status condition of type ``kind``, or None."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def rollout_status(deployment: Mapping[str, Any]) -> RolloutStatus:
    """Whether a Deployment's rollout is done or failed, as ``kubectl rollout status`` says.

    kubectl's DeploymentStatusViewer: nothing counts until the controller has observed
    the current generation; then a Progressing condition with reason
    ProgressDeadlineExceeded is a failure; the rollout is done when all desired replicas
    are updated, no old ones remain and every updated one is available (available pods
    are ready ones that stayed ready minReadySeconds, so readiness is implied).
    """
    name = (deployment.get("metadata") or {}).get("name", "?")
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    if generation > (status.get("observedGeneration") or 0):
        return RolloutStatus(False, False, "Waiting for deployment spec update to be observed...")
    progressing = condition(status, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        detail = f": {progressing['message']}" if progressing.get("message") else ""
        return RolloutStatus(False, True, f'deployment "{name}" exceeded its progress deadline{detail}')
    desired = spec.get("replicas")  # None: the API defaults it to 1; kubectl skips the check
    replicas = status.get("replicas") or 0
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas") or 0
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if desired is not None and updated < desired:
        return RolloutStatus(False, False, f"{waiting}{updated} out of {desired} new replicas have been updated...")
    if replicas > updated:
        return RolloutStatus(False, False, f"{waiting}{replicas - updated} old replicas are pending termination...")
    if available < updated:
        return RolloutStatus(False, False, f"{waiting}{available} of {updated} updated replicas are available...")
    return RolloutStatus(True, False, f'deployment "{name}" successfully rolled out')


def rollout_event(deployment: Mapping[str, Any], *, deadline: float, now: float) -> dict[str, str] | None:
    """The trigger event for this state of the Deployment, or None to keep waiting."""
    verdict = rollout_status(deployment)
    if verdict.done:
        return {"status": "success", "message": verdict.message}
    if verdict.failed:
        return {"status": "failed", "message": verdict.message}
    if now >= deadline:
        return {"status": "timeout", "message": f"timed out waiting for the rollout; last: {verdict.message}"}
    return None


def check_image(image: str) -> None:
    """Refuse anything but ``registry/repository@sha256:<64 hex>``: a tag can move under a rollback."""
    if not DIGEST_IMAGE.match(image or ""):
        raise BadInputError(
            f"deploy by digest (registry/repository@sha256:<64 hex>), not by a mutable tag: image={image!r}"
        )


def image_patch(index: int, container: str, current: str, new: str) -> list[dict[str, Any]]:
    """JSON patch (RFC 6902) setting one container's image, provided it still is ``container`` with ``current``.

    Not a strategic merge patch: the API server merges ``containers`` by name, but a plain
    JSON merge (kmock's, and any non-Kubernetes tooling's) replaces the whole list. A JSON
    patch means the same to both, touches one field, and its ``test`` ops make it a
    compare-and-swap: if the containers were reordered or the image changed meanwhile,
    the API refuses it (422) instead of overwriting someone else's change.
    """
    path = f"/spec/template/spec/containers/{index}"
    return [
        {"op": "test", "path": f"{path}/name", "value": container},
        {"op": "test", "path": f"{path}/image", "value": current},
        {"op": "replace", "path": f"{path}/image", "value": new},
    ]


def container_image(deployment: Mapping[str, Any], container: str) -> tuple[int, str]:
    """Index and image of the pod template's container named ``container``."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    for index, item in enumerate(containers):
        if item.get("name") == container:
            return index, item.get("image", "")
    names = ", ".join(item.get("name", "?") for item in containers)
    kind_name = f"{deployment.get('kind', 'Deployment')} {deployment['metadata'].get('name')}"
    raise BadInputError(f"{kind_name} has no container {container!r} (containers: {names})")


def load_manifests(source: str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The manifests in ``source`` (a directory of *.yaml / *.yml, one file, or dicts), in creation order.

    Only the kinds in KINDS, each with its apiVersion, a name, and exactly one Deployment.
    """
    if isinstance(source, (str, os.PathLike)):
        import yaml

        path = Path(source)
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise BadInputError(f"no manifests at {path}")
        docs = [(str(f), doc) for f in files for doc in yaml.safe_load_all(f.read_text()) if doc]
    else:
        docs = [(f"manifests[{i}]", copy.deepcopy(dict(doc))) for i, doc in enumerate(source)]
    for where, doc in docs:
        kind, api_version = doc.get("kind"), doc.get("apiVersion")
        if kind not in KINDS or KINDS[kind][0] != api_version:
            known = ", ".join(f"{v[0]} {k}" for k, v in KINDS.items())
            raise BadInputError(f"{where}: {api_version} {kind} is not one the operator applies ({known})")
        if not (doc.get("metadata") or {}).get("name"):
            raise BadInputError(f"{where}: {kind} has no metadata.name")
    deployments = [where for where, doc in docs if doc["kind"] == "Deployment"]
    if len(deployments) != 1:
        raise BadInputError(f"expected exactly one Deployment in {source}, found {len(deployments)}: {deployments}")
    order = list(KINDS)
    return [doc for _, doc in sorted(docs, key=lambda item: order.index(item[1]["kind"]))]


def prepare_manifests(
    manifests: Iterable[Mapping[str, Any]], *, namespace: str, image: str, container: str
) -> list[dict[str, Any]]:
    """Copies of ``manifests`` in ``namespace``, the Deployment's ``container`` running ``image``."""
    prepared = []
    for manifest in manifests:
        doc = copy.deepcopy(dict(manifest))
        meta = doc.setdefault("metadata", {})
        if meta.get("namespace") not in (None, namespace):
            where = f"{doc['kind']} {meta['name']} names namespace {meta['namespace']!r}"
            raise BadInputError(f"{where}, but the rollout is to {namespace!r}")
        meta["namespace"] = namespace
        if doc["kind"] == "Deployment":
            index, _ = container_image(doc, container)
            doc["spec"]["template"]["spec"]["containers"][index]["image"] = image
        prepared.append(doc)
    return prepared


def describe_api_error(exc: BaseException) -> str:
    """``<code> <HTTP reason>[, reason <Status reason>]: <Status message>`` from an ApiException, else the error."""
    code = getattr(exc, "status", None)
    if not code:
        return f"{type(exc).__name__}: {exc}"
    http_reason = getattr(exc, "reason", None) or ""
    try:
        status = json.loads(getattr(exc, "body", None) or "{}")
    except (TypeError, ValueError):
        status = {}
    if not isinstance(status, dict):
        status = {}
    reason = status.get("reason")
    text = f"{code} {http_reason}".strip()
    if reason and reason != http_reason:
        text += f", reason {reason}"
    message = status.get("message") or str(getattr(exc, "body", "") or "")[:300]
    return f"{text}: {message}" if message else text


def api_error(what: str, exc: BaseException) -> Exception:
    """The error to raise for a failed API call: retryable (RuntimeError) or final (RolloutFailedError)."""
    text = f"Kubernetes API call failed: {what}: {describe_api_error(exc)}"
    code = getattr(exc, "status", None)
    if not code or code in TRANSIENT_STATUS:
        return RuntimeError(text)
    return RolloutFailedError(text)


def describe_conditions(obj: Mapping[str, Any]) -> str:
    """``Type=Status Reason: message`` for each status condition."""
    texts = []
    for cond in (obj.get("status") or {}).get("conditions") or []:
        text = f"{cond.get('type')}={cond.get('status')}"
        if cond.get("reason"):
            text += f" {cond['reason']}"
        if cond.get("message"):
            text += f": {cond['message']}"
        texts.append(text)
    return ", ".join(texts) or "none"


def describe_pod(pod: Mapping[str, Any]) -> str:
    """A pod's phase, failing conditions, and what its containers wait for or died of."""
    status = pod.get("status") or {}
    parts = [f"pod {pod['metadata']['name']} {status.get('phase', 'Unknown')}"]
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            parts.append(f"{cond.get('type')}=False {cond.get('reason') or ''}".rstrip())
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        parts += _container_problems(container)
    return ", ".join(parts)


def _container_problems(container: Mapping[str, Any]) -> list[str]:
    name, state = container.get("name"), container.get("state") or {}
    problems = []
    if waiting := state.get("waiting"):
        detail = f" ({waiting['message']})" if waiting.get("message") else ""
        problems.append(f"container {name} waiting: {waiting.get('reason')}{detail}")
    if ended := (container.get("lastState") or {}).get("terminated") or state.get("terminated"):
        detail = f": {ended['message'].strip()[-300:]}" if ended.get("message") else ""
        problems.append(f"container {name} exited {ended.get('exitCode')} ({ended.get('reason')}){detail}")
    if container.get("restartCount"):
        problems.append(f"restarted {container['restartCount']} times")
    return problems


def describe_events(events: Iterable[Mapping[str, Any]], limit: int = MAX_EVENTS_PER_POD) -> list[str]:
    """The latest ``limit`` events, warnings only if there are any: ``Type Reason: message (xN)``."""

    def when(event: Mapping[str, Any]) -> str:
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or (event.get("metadata") or {}).get("creationTimestamp")
            or ""
        )

    events = sorted(events, key=when)
    warnings = [e for e in events if e.get("type") == "Warning"]
    texts = []
    for event in (warnings or events)[-limit:]:
        count = f" (x{event['count']})" if (event.get("count") or 1) > 1 else ""
        texts.append(f"{event.get('type')} {event.get('reason')}: {event.get('message')}{count}")
    return texts


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    """Whether ``owner`` (kind, name, and uid when both have one) is among ``obj``'s ownerReferences."""
    meta = owner.get("metadata") or {}
    return any(
        ref.get("kind") == owner.get("kind")
        and ref.get("name") == meta.get("name")
        and (not (ref.get("uid") and meta.get("uid")) or ref["uid"] == meta["uid"])
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def label_selector(selector: Mapping[str, Any]) -> str:
    """``k=v,...`` from a selector's matchLabels (matchExpressions are left to the owner filter)."""
    return ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())


def revision(obj: Mapping[str, Any]) -> int:
    """The deployment controller's revision number of a ReplicaSet (0 if it has none)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return int(annotations.get("deployment.kubernetes.io/revision") or 0)


# -- trigger --------------------------------------------------------------------------


class KubernetesRolloutTrigger(BaseTrigger):
    """Polls a Deployment until its rollout is done, failed (ProgressDeadlineExceeded) or ``deadline`` passes.

    In plugins/ because the triggerer imports triggers by class path and does not see the
    DAG bundle. It reads through AsyncKubernetesHook's connection handling with
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
        super().__init__()
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
            except Exception as exc:  # any failure is reported as an event, never raised
                return {"status": "error", "message": f"Kubernetes API call failed: {what}: {describe_api_error(exc)}"}
            event = rollout_event(deployment, deadline=self.deadline, now=time.time())
            if event is not None:
                return event
            self.log.info(rollout_status(deployment).message)
            await asyncio.sleep(max(0.0, min(self.poll_interval, self.deadline - time.time())))

    async def _read(self, hook: Any) -> dict[str, Any]:
        from kubernetes_asyncio import client

        async with hook.get_conn() as api:
            model = await client.AppsV1Api(api).read_namespaced_deployment(self.deployment, self.namespace)
            return api.sanitize_for_serialization(model)  # the API's JSON (camelCase), as the sync path reads it


# -- operator -------------------------------------------------------------------------


class KubernetesRolloutOperator(BaseOperator):
    """Release ``image`` (by digest) to the Deployment in ``manifests``; roll back if its rollout fails.

    :param image: ``registry/repository@sha256:<digest>``; a mutable tag is refused.
    :param manifests: a directory of YAML manifests (the repo's k8s/), one file, or loaded dicts.
    :param container_name: the Deployment's container that runs ``image``.
    :param namespace: where everything goes; default: the connection's namespace, else "default".
    :param kubernetes_conn_id: a Kubernetes connection (in_cluster, kube_config_path or kube_config).
    :param deferrable: wait in the triggerer rather than in a worker slot.
    :param poll_interval: seconds between status reads while waiting.
    :param timeout: seconds to wait for the verdict; keep it above the Deployment's
        progressDeadlineSeconds so the controller's judgement comes first.
    :param skip_without_connection: skip (saying so) rather than fail when
        ``kubernetes_conn_id`` is not configured: a bundle may release to Lambda only.
    :return: ``{"deployment", "namespace", "image", "previous_image", "changed", "status"}``
    """

    template_fields: Sequence[str] = ("image", "namespace")
    operator_extra_links = (KubernetesDeploymentLink(),)

    def __init__(
        self,
        *,
        image: str,
        manifests: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
        container_name: str = "serving",
        namespace: str | None = None,
        kubernetes_conn_id: str | None = "kubernetes_default",
        deferrable: bool = True,
        poll_interval: float = 10.0,
        timeout: float = 1200.0,
        skip_without_connection: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.skip_without_connection = skip_without_connection
        self.image = image
        self.manifests = manifests
        self.container_name = container_name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout

    # -- the API calls ----------------------------------------------------------------

    @cached_property
    def hook(self) -> KubernetesHook:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.kubernetes_conn_id)

    def _api(self, class_name: str) -> Any:
        from kubernetes import client

        return getattr(client, class_name)(api_client=self.hook.api_client)

    def _call(self, what: str, method: Callable[..., Any], *args: Any, missing_ok: bool = False, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)``; a refusal becomes an error naming ``what`` and the API's Status.

        With ``missing_ok``, a 404 gives None.
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(*args, **kwargs)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise api_error(what, exc) from exc
        except HTTPError as exc:  # no answer at all: refused connection, timeout
            raise api_error(what, exc) from exc

    def _json(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        # The raw JSON, not the client's models: what kubectl sees, and nothing to deserialize.
        response = self._call(what, method, *args, _preload_content=False, **kwargs)
        return None if response is None else json.loads(response.data)

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as JSON, or None if it does not exist."""
        _, api_class, suffix = KINDS[kind]
        read = getattr(self._api(api_class), f"read_namespaced_{suffix}")
        return self._json(f"read {kind} {namespace}/{name}", read, name, namespace, missing_ok=True)

    def _create(self, manifest: Mapping[str, Any]) -> None:
        kind, meta = manifest["kind"], manifest["metadata"]
        _, api_class, suffix = KINDS[kind]
        create = getattr(self._api(api_class), f"create_namespaced_{suffix}")
        self._call(f"create {kind} {meta['namespace']}/{meta['name']}", create, meta["namespace"], manifest)

    def _patch_image(self, deployment: Mapping[str, Any], current: str, new: str) -> None:
        meta = deployment["metadata"]
        index, _ = container_image(deployment, self.container_name)
        self._call(
            f"patch Deployment {meta['namespace']}/{meta['name']} image {current} -> {new}",
            self._api("AppsV1Api").patch_namespaced_deployment,
            meta["name"],
            meta["namespace"],
            image_patch(index, self.container_name, current, new),
        )

    def _list(self, kind: str, namespace: str, **selector: str) -> list[dict[str, Any]]:
        """Items of a Pod, ReplicaSet or Event list, narrowed by ``label_selector`` / ``field_selector``."""
        api_class, method = {
            "Pod": ("CoreV1Api", "list_namespaced_pod"),
            "Event": ("CoreV1Api", "list_namespaced_event"),
            "ReplicaSet": ("AppsV1Api", "list_namespaced_replica_set"),
        }[kind]
        what = f"list {kind}s in {namespace} ({', '.join(selector.values())})"
        listed = self._json(what, getattr(self._api(api_class), method), namespace, **selector) or {}
        return listed.get("items") or []

    # -- the release ------------------------------------------------------------------

    def _connection_missing(self) -> bool:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            BaseHook.get_connection(self.kubernetes_conn_id)
        except AirflowNotFoundException:
            return True
        return False

    def execute(self, context: Context) -> dict[str, Any]:
        if self.skip_without_connection and self.kubernetes_conn_id and self._connection_missing():
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(
                f"no Kubernetes connection {self.kubernetes_conn_id!r} is configured: the rollout is skipped "
                "(configure the connection, or leave kubernetes out of BANK_RELEASE_TARGETS)"
            )
        check_image(self.image)
        namespace = self.namespace or self.hook.get_namespace() or "default"
        manifests = prepare_manifests(
            load_manifests(self.manifests), namespace=namespace, image=self.image, container=self.container_name
        )
        state = self._apply(manifests, namespace)
        KubernetesDeploymentLink.persist(context, self, namespace=namespace, deployment=state["deployment"])
        deadline = time.time() + self.timeout
        event = self._rollout_event(namespace, state["deployment"], deadline)
        if event is None and self.deferrable:
            self.defer(
                trigger=KubernetesRolloutTrigger(
                    deployment=state["deployment"],
                    namespace=namespace,
                    deadline=deadline,
                    kubernetes_conn_id=self.kubernetes_conn_id,
                    poll_interval=self.poll_interval,
                    state=state,
                ),
                method_name="execute_complete",
                kwargs=state,
            )
        while event is None:
            time.sleep(max(0.0, min(self.poll_interval, deadline - time.time())))
            event = self._rollout_event(namespace, state["deployment"], deadline)
        return self.execute_complete(context, event, **state)

    def _apply(self, manifests: Sequence[Mapping[str, Any]], namespace: str) -> dict[str, Any]:
        """Create what is missing, patch the Deployment's image if it differs; the state to finish with."""
        state: dict[str, Any] = {
            "namespace": namespace,
            "previous_image": None,
            "created": False,
            "patched": False,
            "changed": False,
        }
        for manifest in manifests:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            if kind == "Deployment":
                state["deployment"] = name
            current = self._read(kind, namespace, name)
            if current is None:
                self.log.info("Creating %s %s/%s", kind, namespace, name)
                self._create(manifest)
                state["changed"] = True
                state["created"] = state["created"] or kind == "Deployment"
            elif kind == "Deployment":
                _, previous = container_image(current, self.container_name)
                state["previous_image"] = previous
                if previous == self.image:
                    self.log.info("Deployment %s/%s already runs %s: verifying it", namespace, name, self.image)
                    continue
                self.log.info("Deployment %s/%s: %s -> %s", namespace, name, previous, self.image)
                self._patch_image(current, previous, self.image)
                state["patched"] = state["changed"] = True
        return state

    def _rollout_event(self, namespace: str, name: str, deadline: float) -> dict[str, str] | None:
        """One status read, as the trigger does it: an event, or None while the rollout goes on."""
        try:
            deployment = self._read("Deployment", namespace, name)
        except RuntimeError as exc:  # RolloutFailedError included
            return {"status": "error", "message": str(exc)}
        if deployment is None:
            return {"status": "error", "message": f"Deployment {namespace}/{name} is gone"}
        event = rollout_event(deployment, deadline=deadline, now=time.time())
        if event is None:
            self.log.info(rollout_status(deployment).message)
        return event

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        # The deferral's kwargs, or the copy the trigger's event carries (dag.test() keeps only the event).
        state = {**(event or {}).get("state", {}), **kwargs}
        return self._finish(event, **state)

    def _finish(
        self,
        event: dict[str, Any] | None,
        *,
        namespace: str,
        deployment: str,
        previous_image: str | None,
        created: bool,
        patched: bool,
        changed: bool,
    ) -> dict[str, Any]:
        status, message = (event or {}).get("status"), (event or {}).get("message", f"no event: {event!r}")
        where = f"Deployment {namespace}/{deployment}"
        if status == "success":
            self.log.info("%s: %s", where, message)
            return {
                "deployment": deployment,
                "namespace": namespace,
                "image": self.image,
                "previous_image": previous_image,
                "changed": changed,
                "status": message,
            }
        if status not in ("failed", "timeout"):
            # The state is unknown: rolling back blind could undo a good rollout. A retry
            # verifies again (the image is already there, so it patches nothing).
            raise RuntimeError(
                f"rollout of {self.image} to {where}: {message}; its state is unknown, nothing was rolled back "
                f"(the image before this run: {previous_image})"
            )
        current = self._read("Deployment", namespace, deployment)
        if current is None:
            raise RolloutFailedError(f"rollout of {self.image} to {where} failed: {message}; the Deployment is gone")
        why = self._explain(current)
        undone = self._roll_back(current, previous_image, created=created, patched=patched)
        raise RolloutFailedError("\n  ".join([f"rollout of {self.image} to {where} failed: {message}", *why, undone]))

    # -- failure ----------------------------------------------------------------------

    def _roll_back(self, deployment: Mapping[str, Any], previous: str | None, *, created: bool, patched: bool) -> str:
        """Put ``previous`` back if this run replaced it; say what was done."""
        if created:
            return (
                "Nothing to roll back to: this run created the Deployment. It is left in place for inspection "
                "(unready pods get no Service traffic); delete it or release a working image"
            )
        if not patched or previous is None or previous == self.image:
            return f"Nothing rolled back: the Deployment already ran {self.image} before this run"
        _, now = container_image(deployment, self.container_name)
        if now != self.image:
            return f"Not rolled back: the image is now {now}, no longer this run's (changed by someone else)"
        try:
            self._patch_image(deployment, self.image, previous)
        except RuntimeError as exc:
            return f"Rollback to {previous} failed too: {exc}"
        self.log.warning("Rolled back container %s to %s", self.container_name, previous)
        return f"Rolled back: container {self.container_name} set back to {previous}"

    def _explain(self, deployment: Mapping[str, Any]) -> list[str]:
        """The Deployment's conditions and what the pods of the new image say; never raises."""
        lines = [f"conditions: {describe_conditions(deployment)}"]
        try:
            lines += self._explain_pods(deployment)
        except RuntimeError as exc:  # RolloutFailedError included; the rollout's own failure matters more
            lines.append(f"(its pods could not be read: {exc})")
        return lines

    def _explain_pods(self, deployment: Mapping[str, Any]) -> list[str]:
        namespace = deployment["metadata"]["namespace"]
        replicaset = self._new_replicaset(deployment)
        if replicaset is None:
            return [f"no ReplicaSet of the Deployment runs {self.image} yet"]
        rs_name = replicaset["metadata"]["name"]
        rs_status = replicaset.get("status") or {}
        lines = [
            f"ReplicaSet {rs_name}: {rs_status.get('readyReplicas') or 0} of "
            f"{(replicaset.get('spec') or {}).get('replicas')} pods ready"
        ]
        selector = label_selector((replicaset.get("spec") or {}).get("selector") or {})
        # Filtered here too: a selector narrows the list, ownership decides (and mocks may ignore selectors).
        pods = [
            p
            for p in self._list("Pod", namespace, label_selector=selector)
            if owned_by(p, {**replicaset, "kind": "ReplicaSet"})
        ]
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"])[:MAX_PODS_EXPLAINED]:
            pod_name = pod["metadata"]["name"]
            events = self._list(
                "Event", namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod_name}"
            )
            events = [e for e in events if (e.get("involvedObject") or {}).get("name") == pod_name]
            lines.append(" | ".join([describe_pod(pod), *describe_events(events)]))
        if not pods:
            lines.append("no pods")
        return lines

    def _new_replicaset(self, deployment: Mapping[str, Any]) -> dict[str, Any] | None:
        """The Deployment's newest ReplicaSet whose container runs this run's image."""
        namespace = deployment["metadata"]["namespace"]
        selector = label_selector(deployment["spec"].get("selector") or {})
        owner = {**deployment, "kind": "Deployment"}
        candidates = []
        for rs in self._list("ReplicaSet", namespace, label_selector=selector):
            if not owned_by(rs, owner):
                continue
            try:
                _, image = container_image({**rs, "kind": "ReplicaSet"}, self.container_name)
            except (BadInputError, KeyError):
                continue
            if image == self.image:
                candidates.append(rs)
        return max(candidates, key=revision, default=None)
