"""A namespace of the session's control plane per test, with the release's identity in it.

The operator under test runs as the ServiceAccount of bank_pipeline/manifests/rbac, through
an Airflow connection holding a kubeconfig with that ServiceAccount's token: it has exactly
the Role's permissions. The test itself looks and meddles as the cluster's admin, the way a
person with kubectl would.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from typing import Any

from bank_pipeline import resources
from bank_pipeline.utils.rollout import load_manifests
from devstack import kube

CONN_ID = "k8s_release"
NAME = "bank-model"  # the objects' name in the package's manifests
REPO = "registry.example/bank-model"
V1, V2, V3, BAD = (f"{REPO}@sha256:{c * 64}" for c in "123b")
# kind -> API path of its collection, with {ns} for the namespace
COLLECTIONS = {
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Event": "/api/v1/namespaces/{ns}/events",
    "Service": "/api/v1/namespaces/{ns}/services",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def manifests(**deployment_spec: Any) -> list[dict[str, Any]]:
    """The package's manifests, the Deployment's spec changed by ``deployment_spec``; minReadySeconds 0
    unless given (the 10 s of the real file would only make each rollout 10 s longer)."""
    docs = load_manifests(resources.kubernetes_manifests())
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"].update({"minReadySeconds": 0, **deployment_spec})
    return docs


class ReleaseNamespace:
    """One test's namespace: the release identity's connection, and an admin's view of what is in it."""

    def __init__(self, cluster: kube.KubeCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.rbac = kube.release_rbac()
        self.kubeconfig = cluster.release_identity(name, self.rbac)
        self.user = f"system:serviceaccount:{name}:{kube.RELEASE_IDENTITY}"

    @classmethod
    def for_test(cls, cluster: kube.KubeCluster, test_name: str) -> ReleaseNamespace:
        slug = "".join(c if c.isalnum() else "-" for c in test_name.lower().removeprefix("test_"))[:40].strip("-")
        return cls(cluster, f"t-{slug}-{uuid.uuid4().hex[:5]}")

    def connection(self) -> str:
        return kube.airflow_connection(self.kubeconfig, self.name)

    def delete(self) -> None:
        self.cluster.request("DELETE", f"/api/v1/namespaces/{self.name}")

    # -- as the admin ---------------------------------------------------------------------

    def get(self, kind: str, name: str = NAME) -> dict[str, Any] | None:
        status, body = self.cluster.request("GET", f"{COLLECTIONS[kind].format(ns=self.name)}/{name}")
        if status == 404:
            return None
        assert status == 200, (kind, name, status, body)
        return body

    def list(self, kind: str, selector: str = "") -> list[dict[str, Any]]:
        query = f"?labelSelector={selector}" if selector else ""
        return self.cluster.get(f"{COLLECTIONS[kind].format(ns=self.name)}{query}")["items"]

    def deployment(self, name: str = NAME) -> dict[str, Any]:
        deployment = self.get("Deployment", name)
        assert deployment is not None, f"no Deployment {self.name}/{name}"
        return deployment

    def image(self) -> str:
        return self.deployment()["spec"]["template"]["spec"]["containers"][0]["image"]

    def pods(self) -> list[dict[str, Any]]:
        """The model server's pods that are not going away."""
        pods = self.list("Pod", "app.kubernetes.io/name=bank-model")
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def running(self) -> dict[str, str]:
        """Ready pods by name -> their image."""
        return {
            p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
            for p in self.pods()
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        }

    def patch(self, kind: str, body: Any, name: str = NAME, content_type: str = "application/merge-patch+json") -> Any:
        """Change an object as someone else would (as admin, bypassing the operator)."""
        status, answer = self.cluster.request(
            "PATCH", f"{COLLECTIONS[kind].format(ns=self.name)}/{name}", body, content_type=content_type
        )
        assert status == 200, (status, answer)
        return answer

    def create(self, manifest: dict[str, Any]) -> Any:
        return self.cluster.create(COLLECTIONS[manifest["kind"]].format(ns=self.name), manifest)

    def set_image(self, image: str) -> None:
        self.patch("Deployment", {"spec": {"template": {"spec": {"containers": [{"name": "serving", "image": image}]}}}},
                   content_type="application/strategic-merge-patch+json")  # fmt: skip

    def wait_rolled_out(self, image: str, replicas: int = 2) -> dict[str, Any]:
        """Wait until the Deployment is complete on ``image``: every ready pod runs it, no other pod is left."""

        def done() -> dict[str, Any] | None:
            dep = self.deployment()
            status = dep.get("status") or {}
            complete = (
                status.get("observedGeneration") == dep["metadata"]["generation"]
                and status.get("updatedReplicas") == status.get("availableReplicas") == replicas
                and status.get("replicas") == replicas
            )
            pods = self.pods()
            same = len(pods) == replicas and all(p["spec"]["containers"][0]["image"] == image for p in pods)
            return (
                dep
                if complete and same and dep["spec"]["template"]["spec"]["containers"][0]["image"] == image
                else None
            )

        return wait_for(f"Deployment {self.name}/{NAME} rolled out on {image}", done)

    # -- RBAC --------------------------------------------------------------------------

    def can(self, verb: str, resource: str, group: str = "", name: str = "") -> bool:
        """Whether the release identity may ``verb`` ``resource`` here (a SubjectAccessReview, as admin)."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": self.user,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{self.name}", "system:authenticated"],
                "resourceAttributes": {"namespace": self.name, "verb": verb, "resource": resource.partition("/")[0],
                                       "subresource": resource.partition("/")[2], "group": group, "name": name},
            },
        }  # fmt: skip
        return bool(
            self.cluster.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)["status"]["allowed"]
        )

    def grant_without(self, verb: str, resource: str, group: str) -> dict[str, Any]:
        """Apply the Role without ``verb`` on ``resource``; return once the authorizer denies it."""
        role = copy.deepcopy(next(m for m in self.rbac if m["kind"] == "Role"))
        rules = []
        for rule in role["rules"]:
            if resource in rule["resources"] and group in rule["apiGroups"] and verb in rule["verbs"]:
                # Only this resource loses the verb; others the rule names keep it.
                if others := [r for r in rule["resources"] if r != resource]:
                    rules.append({**rule, "resources": others})
                rule = {**rule, "resources": [resource], "verbs": [v for v in rule["verbs"] if v != verb]}
            if rule["verbs"]:
                rules.append(rule)
        assert rules != role["rules"], f"the Role grants no {verb} on {resource}"
        role["rules"] = rules
        self.cluster.apply(role, self.name)
        wait_for(f"{verb} {resource} denied", lambda: not self.can(verb, resource, group, NAME))
        return role
