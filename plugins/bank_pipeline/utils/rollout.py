"""What a Kubernetes rollout means, as pure functions over the API's JSON (no client, no Airflow).

- ``rollout_status``: done / failed / waiting, as ``kubectl rollout status`` judges a Deployment;
- ``image_patch``: the compare-and-swap JSON patch that changes one container's image;
- ``load_manifests`` / ``prepare_manifests``: the manifests the operator applies;
- ``arch_mismatch``: an image's architecture against the Deployment's ``kubernetes.io/arch`` node selector;
- ``describe_*``: a failed rollout's conditions, pods and events, and an API refusal, in words.

Shared by ``bank_pipeline.operators.kubernetes_rollout`` and ``bank_pipeline.triggers.rollout_status``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from bank_pipeline.errors import BadInputError, RolloutFailedError

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


ARCH_LABEL = "kubernetes.io/arch"


def arch_mismatch(deployment: Mapping[str, Any], image: str, platform: str) -> str | None:
    """Why ``image`` (``os/arch`` ``platform``, as its config says) cannot run where ``deployment``'s pods
    are scheduled (its pod template's ``nodeSelector`` ``kubernetes.io/arch``), or None.

    A Deployment without that selector is refused too: its pods may land on nodes of any
    architecture, so nothing says the image can run there.
    """
    os_name, _, arch = platform.partition("/")
    arch = arch.split("/", 1)[0]  # a variant (arm64/v8) does not matter to the scheduler
    meta = deployment["metadata"]
    name = f"Deployment {meta['namespace']}/{meta['name']}" if meta.get("namespace") else f"Deployment {meta['name']}"
    pod_spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    wanted = (pod_spec.get("nodeSelector") or {}).get(ARCH_LABEL)
    if os_name != "linux":
        return f"image {image} is built for {platform or 'no platform'}, not linux; {name} runs linux pods"
    if not wanted:
        return (
            f"{name} has no nodeSelector {ARCH_LABEL}, so its pods may land on nodes of any architecture; "
            f"image {image} is {platform}: add `{ARCH_LABEL}: {arch}` to the pod template's nodeSelector"
        )
    if wanted != arch:
        return (
            f"image {image} is built for {platform} but {name} runs its pods on {ARCH_LABEL}={wanted} nodes: "
            f"build the image with `docker buildx build --platform linux/{wanted} --provenance=false`"
        )
    return None


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


def status_reason(exc: BaseException | None) -> tuple[int | None, str | None]:
    """The HTTP status and the API Status's ``reason`` of an ApiException (sync or asyncio client); (None, None) otherwise."""
    code = getattr(exc, "status", None)
    if not code:
        return None, None
    try:
        body = json.loads(getattr(exc, "body", None) or "{}")
    except (TypeError, ValueError):
        body = {}
    return code, body.get("reason") if isinstance(body, dict) else None


def is_transient(exc: BaseException) -> bool:
    """Whether a failed API call may well succeed if tried again: no answer at all, 409, 429 or a 5xx."""
    code = getattr(exc, "status", None)
    return not code or code in TRANSIENT_STATUS


def api_error(what: str, exc: BaseException) -> Exception:
    """The error to raise for a failed API call: retryable (RuntimeError) or final (RolloutFailedError)."""
    text = f"Kubernetes API call failed: {what}: {describe_api_error(exc)}"
    return RuntimeError(text) if is_transient(exc) else RolloutFailedError(text)


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


def newest_replicaset(
    deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]], container: str, image: str
) -> dict[str, Any] | None:
    """The newest of ``deployment``'s ReplicaSets whose ``container`` runs ``image``, or None.

    Ownership decides, not the label selector the list was narrowed by (a selector can match
    another Deployment's ReplicaSets).
    """
    owner = {**deployment, "kind": "Deployment"}
    candidates = []
    for rs in replicasets:
        if not owned_by(rs, owner):
            continue
        try:
            _, found = container_image({**rs, "kind": "ReplicaSet"}, container)
        except (BadInputError, KeyError):
            continue
        if found == image:
            candidates.append(dict(rs))
    return max(candidates, key=revision, default=None)


def rollback_step(
    *, created: bool, patched: bool, previous: str | None, image: str, now: str | None
) -> tuple[str | None, str]:
    """After a failed rollout of ``image``: the image to put back (None: nothing to do) and why.

    A Deployment this run created has nothing to go back to; one that already ran ``image``
    was not changed by this run; one whose container runs something else ``now`` was changed
    by someone else since, and is theirs.
    """
    if created:
        return None, (
            "Nothing to roll back to: this run created the Deployment. It is left in place for inspection "
            "(unready pods get no Service traffic); delete it or release a working image"
        )
    if not patched or previous is None or previous == image:
        return None, f"Nothing rolled back: the Deployment already ran {image} before this run"
    if now != image:
        return None, f"Not rolled back: the image is now {now}, no longer this run's (changed by someone else)"
    return previous, f"roll back to {previous}"
