"""The Kubernetes API calls of a rollout: the cncf-kubernetes provider's KubernetesHook, with the reads
and writes the rollout makes named for what they do, as raw JSON (what kubectl sees). The decisions
over their answers are in bank_pipeline.utils.rollout.

Imported lazily: the provider's hook module (kubernetes + kubernetes_asyncio) costs ~0.5 s, and
DAG files import the operator at parse time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

from bank_pipeline.errors import BadInputError, RolloutFailedError
from bank_pipeline.utils.rollout import (
    KINDS,
    MAX_PODS_EXPLAINED,
    api_error,
    container_image,
    describe_conditions,
    describe_events,
    describe_pod,
    image_patch,
    label_selector,
    newest_replicaset,
    owned_by,
    rollback_step,
    rollout_event,
    rollout_status,
    status_reason,
)

CLUSTER_FIELDS = ("in_cluster", "kube_config_path", "kube_config")
# The kinds a rollout lists, and where: what explains a failed rollout.
LISTS = {
    "Pod": ("CoreV1Api", "list_namespaced_pod"),
    "Event": ("CoreV1Api", "list_namespaced_event"),
    "ReplicaSet": ("AppsV1Api", "list_namespaced_replica_set"),
}


def cluster_not_configured(conn_id: str | None) -> str | None:
    """Why connection ``conn_id`` does not say where the cluster is, or None if it does.

    The provider's hook, given none of in_cluster, kube_config_path and kube_config, loads
    the worker's ``$KUBECONFIG`` or ``~/.kube/config``: whatever cluster that names, silently.
    """
    from bank_pipeline.utils.compat import AirflowNotFoundException, BaseHook

    if not conn_id:
        return "no Kubernetes connection is set (kubernetes_conn_id is empty)"
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return f"no Kubernetes connection {conn_id!r} is configured"
    extra = conn.extra_dejson or {}
    if not any(extra.get(f) or extra.get(f"extra__kubernetes__{f}") for f in CLUSTER_FIELDS):
        return (
            f"Kubernetes connection {conn_id!r} holds no cluster configuration "
            f"(none of {', '.join(CLUSTER_FIELDS)} in its extra), and the worker's ~/.kube/config is never used instead"
        )
    return None


def require_cluster(conn_id: str | None, *, skip: bool) -> None:
    """Raise unless ``conn_id`` says where the cluster is: AirflowSkipException with ``skip``
    (a bundle may release to Lambda only), else BadInputError; both say why."""
    problem = cluster_not_configured(conn_id)
    if problem is None:
        return
    if skip:
        from bank_pipeline.utils.compat import AirflowSkipException

        raise AirflowSkipException(
            f"{problem}: the rollout is skipped (configure the connection, or leave kubernetes out of BANK_RELEASE_TARGETS)"
        )
    raise BadInputError(f"{problem}: nothing rolled out")


class KubernetesRolloutHook(KubernetesHook):
    """Objects of the kinds a rollout touches (utils.rollout.KINDS), read, created, listed and patched."""

    def _api(self, class_name: str) -> Any:
        from kubernetes import client

        return getattr(client, class_name)(api_client=self.api_client)

    @staticmethod
    def _call(what: str, method: Callable[..., Any], *args: Any, missing_ok: bool = False, **kwargs: Any) -> Any:
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

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as JSON, or None if it does not exist."""
        _, api_class, suffix = KINDS[kind]
        method = getattr(self._api(api_class), f"read_namespaced_{suffix}")
        return self._json(f"read {kind} {namespace}/{name}", method, name, namespace, missing_ok=True)

    def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create the object; False if it exists already (409 AlreadyExists: created meanwhile by someone else)."""
        kind, meta = manifest["kind"], manifest["metadata"]
        _, api_class, suffix = KINDS[kind]
        method = getattr(self._api(api_class), f"create_namespaced_{suffix}")
        try:
            self._call(f"create {kind} {meta['namespace']}/{meta['name']}", method, meta["namespace"], manifest)
        except RuntimeError as exc:
            if status_reason(exc.__cause__) == (409, "AlreadyExists"):
                return False
            raise
        return True

    def list(self, kind: str, namespace: str, **selector: str) -> list[dict[str, Any]]:
        """Items of a Pod, ReplicaSet or Event list, narrowed by ``label_selector`` / ``field_selector``."""
        api_class, method = LISTS[kind]
        what = f"list {kind}s in {namespace} ({', '.join(selector.values())})"
        listed = self._json(what, getattr(self._api(api_class), method), namespace, **selector) or {}
        return listed.get("items") or []

    def patch_image(self, deployment: Mapping[str, Any], container: str, current: str, new: str) -> None:
        """Set ``container``'s image to ``new`` if it still is ``current`` (a compare-and-swap, see ``image_patch``).

        The API answers a failed ``test`` op with a bare 422 that names nothing: read the
        Deployment again and, if the container changed meanwhile, say so; never overwrite it.
        """
        meta = deployment["metadata"]
        where = f"Deployment {meta['namespace']}/{meta['name']}"
        index, _ = container_image(deployment, container)
        try:
            self._call(
                f"patch {where} image {current} -> {new}",
                self._api("AppsV1Api").patch_namespaced_deployment,
                meta["name"],
                meta["namespace"],
                image_patch(index, container, current, new),
            )
        except RolloutFailedError as exc:
            if status_reason(exc.__cause__)[0] != 422:
                raise
            now = self.read("Deployment", meta["namespace"], meta["name"])
            if now is None:
                raise RolloutFailedError(f"{exc}; {where} is gone") from exc
            found = container_image(now, container)
            if found == (index, current):
                raise
            raise RolloutFailedError(
                f"{where} changed while this run patched it: container {container} now runs {found[1]} "
                f"(it ran {current} when read), changed by someone else; not overwritten with {new}"
            ) from exc

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete the object (its dependents in the background, as kubectl does); False if it was not there."""
        _, api_class, suffix = KINDS[kind]
        method = getattr(self._api(api_class), f"delete_namespaced_{suffix}")
        body = {"propagationPolicy": "Background"}
        return (
            self._call(f"delete {kind} {namespace}/{name}", method, name, namespace, body=body, missing_ok=True)
            is not None
        )

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set a Deployment's replicas (a merge patch of spec.replicas)."""
        method = self._api("AppsV1Api").patch_namespaced_deployment
        self._call(
            f"scale Deployment {namespace}/{name} to {replicas}",
            method,
            name,
            namespace,
            {"spec": {"replicas": replicas}},
        )

    # -- a rollout's steps, over the calls above ---------------------------------------

    def apply(
        self,
        manifests: Sequence[Mapping[str, Any]],
        namespace: str,
        container: str,
        image: str,
        read: Mapping[tuple[str, str], dict[str, Any] | None],
    ) -> dict[str, Any]:
        """Create what is missing, patch the Deployment's ``container`` to ``image`` if it differs;
        return the rollout's state (what the verdict and a rollback need).

        ``read``: objects already read, by (kind, name). The image patch compares with what
        was read then, so a change by someone else since that read is refused, not overwritten.
        """
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
            current = read[kind, name] if (kind, name) in read else self.read(kind, namespace, name)
            if current is None:
                self.log.info("Creating %s %s/%s", kind, namespace, name)
                if self.create(manifest):
                    state["changed"] = True
                    state["created"] = state["created"] or kind == "Deployment"
                    continue
                # Someone else created it between the read and the create: take theirs as the existing one.
                self.log.warning("%s %s/%s was created meanwhile by someone else: using it", kind, namespace, name)
                current = self.read(kind, namespace, name)
                if current is None:
                    raise RuntimeError(f"{kind} {namespace}/{name}: the API said it exists, then that it does not")
            if kind == "Deployment":
                _, previous = container_image(current, container)
                state["previous_image"] = previous
                if previous == image:
                    self.log.info("Deployment %s/%s already runs %s: verifying it", namespace, name, image)
                    continue
                self.log.info("Deployment %s/%s: %s -> %s", namespace, name, previous, image)
                self.patch_image(current, container, previous, image)
                state["patched"] = state["changed"] = True
        return state

    def rollout_event(self, namespace: str, name: str, deadline: float) -> dict[str, str] | None:
        """One status read, as the trigger does it: an event, or None while the rollout goes on."""
        try:
            deployment = self.read("Deployment", namespace, name)
        except RolloutFailedError as exc:  # refused for good (403, 404...): no verdict will come
            return {"status": "error", "message": str(exc)}
        except RuntimeError as exc:  # 429, 5xx, no answer: poll on until the deadline
            if time.time() >= deadline:
                return {"status": "error", "message": f"{exc} (still failing at the deadline)"}
            self.log.warning("%s; polling on", exc)
            return None
        if deployment is None:
            return {"status": "error", "message": f"Deployment {namespace}/{name} is gone"}
        event = rollout_event(deployment, deadline=deadline, now=time.time())
        if event is None:
            self.log.info(rollout_status(deployment).message)
        return event

    def roll_back(
        self,
        deployment: Mapping[str, Any],
        container: str,
        image: str,
        previous: str | None,
        *,
        created: bool,
        patched: bool,
    ) -> str:
        """Put ``previous`` back in ``container`` if this run replaced it with ``image``; say what was done."""
        now = None if created else container_image(deployment, container)[1]
        back_to, said = rollback_step(created=created, patched=patched, previous=previous, image=image, now=now)
        if back_to is None:
            return said
        try:
            self.patch_image(deployment, container, image, back_to)
        except RuntimeError as exc:
            return f"Rollback to {back_to} failed too: {exc}"
        self.log.warning("Rolled back container %s to %s", container, back_to)
        return f"Rolled back: container {container} set back to {back_to}"

    def explain(self, deployment: Mapping[str, Any], container: str, image: str) -> Sequence[str]:
        """The Deployment's conditions and what the pods running ``image`` say; never raises."""
        lines = [f"conditions: {describe_conditions(deployment)}"]
        try:
            lines += self._explain_pods(deployment, container, image)
        except RuntimeError as exc:  # RolloutFailedError included; the rollout's own failure matters more
            lines.append(f"(its pods could not be read: {exc})")
        return lines

    def _explain_pods(self, deployment: Mapping[str, Any], container: str, image: str) -> Sequence[str]:
        namespace = deployment["metadata"]["namespace"]
        selector = label_selector(deployment["spec"].get("selector") or {})
        replicaset = newest_replicaset(
            deployment, self.list("ReplicaSet", namespace, label_selector=selector), container, image
        )
        if replicaset is None:
            return [f"no ReplicaSet of the Deployment runs {image} yet"]
        rs_status = replicaset.get("status") or {}
        lines = [
            f"ReplicaSet {replicaset['metadata']['name']}: {rs_status.get('readyReplicas') or 0} of "
            f"{(replicaset.get('spec') or {}).get('replicas')} pods ready"
        ]
        selector = label_selector((replicaset.get("spec") or {}).get("selector") or {})
        # Filtered here too: a selector narrows the list, ownership decides (and mocks may ignore selectors).
        pods = [
            p
            for p in self.list("Pod", namespace, label_selector=selector)
            if owned_by(p, {**replicaset, "kind": "ReplicaSet"})
        ]
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"])[:MAX_PODS_EXPLAINED]:
            pod_name = pod["metadata"]["name"]
            events = self.list(
                "Event", namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod_name}"
            )
            events = [e for e in events if (e.get("involvedObject") or {}).get("name") == pod_name]
            lines.append(" | ".join([describe_pod(pod), *describe_events(events)]))
        if not pods:
            lines.append("no pods")
        return lines
