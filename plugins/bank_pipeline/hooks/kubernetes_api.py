"""The Kubernetes API calls of a rollout: the cncf-kubernetes provider's KubernetesHook, with the reads
and writes the rollout makes named for what they do, as raw JSON (what kubectl sees). The decisions
over their answers are in bank_pipeline.utils.rollout.

Imported lazily: the provider's hook module (kubernetes + kubernetes_asyncio) costs ~0.5 s, and
DAG files import the operator at parse time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

from bank_pipeline.errors import RolloutFailedError
from bank_pipeline.utils.rollout import KINDS, api_error, container_image, image_patch, status_reason

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
