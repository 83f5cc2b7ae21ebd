"""The release's RBAC (bank_pipeline/manifests/rbac) on the real API server: enough, and nothing more.

Every rollout test runs the operator as the ServiceAccount bound to that Role, so the Role is
enough. Here: it grants nothing else, and each of its verbs is needed: with one taken away the
operator meets a 403 that names the verb and the resource, and says so.
"""

from __future__ import annotations

from typing import Any

import pytest

from bank_pipeline.errors import RolloutFailedError
from devstack import kube
from tests.kubernetes.release_ns import BAD, CONN_ID, NAME, V1, V2, ReleaseNamespace, manifests

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROLE = next(m for m in kube.release_rbac() if m["kind"] == "Role")
# (API group, resource, verb) for every verb the Role grants.
GRANTED = sorted({(g, r, v) for rule in ROLE["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]})
KIND = {
    "services": "Service",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "deployments": "Deployment",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
}


@pytest.fixture(scope="module", autouse=True)
def unpullable(kube_cluster: kube.KubeCluster) -> None:
    kube_cluster.add_stage(kube.image_pull_backoff_stage(BAD))


def deploy(image: str, **kwargs: Any) -> dict[str, Any]:
    from bank_pipeline.operators.kubernetes import KubernetesRolloutOperator

    options = {"manifests": manifests(), "kubernetes_conn_id": CONN_ID, "deferrable": False, "poll_interval": 0.1,
               "timeout": 60, "image_platform": "linux/amd64"}  # fmt: skip
    return KubernetesRolloutOperator(task_id="rollout", image=image, **{**options, **kwargs}).execute(context={})


def forbidden(release: ReleaseNamespace, group: str, resource: str, verb: str, named: bool) -> str:
    """The API server's words for the refusal."""
    what = f"{resource}.{group}" if group else resource
    if named:
        what += f' "{NAME}"'
    return (
        f'{what} is forbidden: User "{release.user}" cannot {verb} resource "{resource}" in API group "{group}" '
        f'in the namespace "{release.name}"'
    )


@pytest.mark.parametrize(
    ("verb", "resource", "group", "name", "allowed"),
    [
        ("get", "deployments", "apps", NAME, True),
        ("patch", "deployments", "apps", NAME, True),
        ("patch", "deployments", "apps", "another-app", False),  # only its own Deployment
        ("get", "deployments", "apps", "another-app", False),
        ("update", "deployments", "apps", NAME, False),
        ("delete", "deployments", "apps", NAME, False),
        ("patch", "services", "", NAME, False),  # created once, never changed by it
        ("list", "pods", "", "", True),
        ("create", "pods", "", "", False),
        ("get", "secrets", "", "", False),
        ("list", "secrets", "", "", False),
        ("patch", "roles", "rbac.authorization.k8s.io", "bank-model-release", False),  # no way to widen itself
    ],
    ids=lambda v: str(v) if isinstance(v, bool) else v or "-",
)
def test_the_identity_may_do_what_the_role_says_and_no_more(
    release: ReleaseNamespace, verb: str, resource: str, group: str, name: str, allowed: bool
) -> None:
    assert release.can(verb, resource, group, name) is allowed


@pytest.mark.parametrize(("group", "resource", "verb"), GRANTED, ids=[f"{v}-{r}" for _, r, v in GRANTED])
def test_each_verb_is_needed_and_its_absence_is_named(release: ReleaseNamespace, group: str, resource: str, verb: str) -> None:
    if verb in ("get", "create"):
        # The first release reads each object, then creates it.
        release.grant_without(verb, resource, group)
        call = f"{'read' if verb == 'get' else 'create'} {KIND[resource]} {release.name}/{NAME}"
        with pytest.raises(RolloutFailedError) as failure:
            deploy(V1)
        assert str(failure.value) == (
            f"Kubernetes API call failed: {call}: 403 Forbidden: {forbidden(release, group, resource, verb, verb == 'get')}"
        )
    elif verb == "patch":
        # The next release patches the image.
        deploy(V1)
        release.grant_without(verb, resource, group)
        with pytest.raises(RolloutFailedError) as failure:
            deploy(V2)
        assert str(failure.value) == (
            f"Kubernetes API call failed: patch Deployment {release.name}/{NAME} image {V1} -> {V2}: "
            f"403 Forbidden: {forbidden(release, group, resource, verb, named=True)}"
        )
        assert release.image() == V1
    elif verb == "list":
        # A failed rollout's explanation lists ReplicaSets, pods, events: without one, it says why it
        # cannot tell more, and still rolls back.
        deploy(V1)
        release.patch("Deployment", {"spec": {"progressDeadlineSeconds": 2}})
        release.grant_without(verb, resource, group)
        with pytest.raises(RolloutFailedError) as failure:
            deploy(BAD)
        message = str(failure.value)
        assert "(its pods could not be read: Kubernetes API call failed: list " in message
        assert f"403 Forbidden: {forbidden(release, group, resource, verb, named=False)})" in message
        assert message.endswith(f"Rolled back: container serving set back to {V1}")
    else:
        raise AssertionError(f"no scenario needs {verb} {resource}: is it in the Role for a reason?")
