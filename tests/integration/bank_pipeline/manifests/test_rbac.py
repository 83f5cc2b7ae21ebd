"""The release's RBAC (bank_pipeline/manifests/rbac) on the real API server: enough, and nothing more.

Every rollout test runs the operator as the ServiceAccount bound to that Role, so the Role is
enough. Here: it grants nothing else, and each of its verbs is needed: with one taken away the
operator meets a 403 that names the verb and the resource, and says so. Its writes reach only the
bundle's own objects, asked of the API server as that ServiceAccount itself. The NetworkPolicy of
rbac/ is accepted by the API server (which does not enforce it: no CNI here) and is out of the
release's reach.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bank_pipeline.errors import RolloutFailedError
from devstack import kube
from tests.support.release_ns import BAD, CONN_ID, NAME, V1, V2, ReleaseNamespace, manifests, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROLE = next(m for m in kube.release_rbac() if m["kind"] == "Role")
# (API group, resource, verb) for every verb the Role grants.
GRANTED = sorted(
    {(g, r, v) for rule in ROLE["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
)
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
    from bank_pipeline.operators.kubernetes_rollout import KubernetesRolloutOperator

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
        ("delete", "deployments", "apps", "bank-model-canary", True),  # its canary's, and only that one
        ("get", "pods/proxy", "", "any-pod", True),  # a canary's pods' metrics
        ("patch", "services", "", NAME, False),  # created once, never changed by it
        ("list", "pods", "", "", True),
        ("create", "pods", "", "", False),
        ("get", "secrets", "", "", False),
        ("list", "secrets", "", "", False),
        ("patch", "roles", "rbac.authorization.k8s.io", "bank-model-release", False),  # no way to widen itself
        ("update", "deployments", "apps", "another-app", False),
        ("delete", "deployments", "apps", "another-app", False),
        ("deletecollection", "deployments", "apps", "", False),
        ("delete", "services", "", NAME, False),
        ("delete", "horizontalpodautoscalers", "autoscaling", NAME, False),
        ("delete", "poddisruptionbudgets", "policy", NAME, False),
        ("watch", "pods", "", "", False),  # it polls with get; lists only to explain a failure
        ("get", "pods", "", "another-pod", False),
        # The namespace's network rules are its administrator's (rbac/networkpolicy.yaml).
        ("create", "networkpolicies", "networking.k8s.io", "", False),
        ("patch", "networkpolicies", "networking.k8s.io", NAME, False),
        ("delete", "networkpolicies", "networking.k8s.io", NAME, False),
    ],
    ids=lambda v: str(v) if isinstance(v, bool) else v or "-",
)
def test_the_identity_may_do_what_the_role_says_and_no_more(
    release: ReleaseNamespace, verb: str, resource: str, group: str, name: str, allowed: bool
) -> None:
    assert release.can(verb, resource, group, name) is allowed


@pytest.mark.parametrize(("group", "resource", "verb"), GRANTED, ids=[f"{v}-{r}" for _, r, v in GRANTED])
def test_each_verb_is_needed_and_its_absence_is_named(
    release: ReleaseNamespace, group: str, resource: str, verb: str
) -> None:
    if resource == "pods/proxy":
        # A canary is judged on its pods' metrics, read through the pod proxy: refused, the canary is not
        # judged blind but ended, and the stable Deployment is untouched.
        deploy(V1)
        release.grant_without(verb, resource, group)
        with pytest.raises(RolloutFailedError) as failure:
            deploy(V2, release_strategy="canary", canary_percent=50, bake_seconds=30)
        message = str(failure.value)
        assert "could not be judged: Kubernetes API call failed: read the metrics of pod " in message
        assert '403 Forbidden: pods "bank-model-canary-' in message and 'cannot get resource "pods/proxy"' in message
        assert release.get("Deployment", "bank-model-canary") is None and release.image() == V1
    elif verb == "delete":
        # A canary release first clears what an interrupted one left, and deletes its canary when done.
        deploy(V1)
        release.grant_without(verb, resource, group)
        with pytest.raises(RolloutFailedError) as failure:
            deploy(V2, release_strategy="canary", canary_percent=50, bake_seconds=1)
        assert str(failure.value).startswith(
            f"Kubernetes API call failed: delete Deployment {release.name}/bank-model-canary: 403 Forbidden: "
            f'deployments.apps "bank-model-canary" is forbidden'
        )
        assert release.image() == V1
    elif verb in ("get", "create"):
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


def as_release(release: ReleaseNamespace) -> Any:
    """A Kubernetes API client that authenticates with the release's token, as the operator does."""
    from kubernetes import config

    return config.new_client_from_config_dict(release.kubeconfig)


def test_writes_reach_the_bundles_deployment_and_no_other_one(release: ReleaseNamespace) -> None:
    """As the release's ServiceAccount, against the real API server: its own Deployment may be
    patched; another Deployment of the same namespace may be neither patched, replaced nor
    deleted; nor may its own be deleted. Asked twice, as the preflight asks it
    (SelfSubjectAccessReview) and by the requests themselves."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    (deployment,) = [m for m in manifests(replicas=0) if m["kind"] == "Deployment"]  # no pods needed
    release.create(deployment)
    other = {**deployment, "metadata": {**deployment["metadata"], "name": "another-app"}}
    release.create(other)
    api = as_release(release)
    apps = client.AppsV1Api(api)

    def may(verb: str, name: str) -> bool:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"namespace": release.name, "verb": verb, "group": "apps",
                                                  "resource": "deployments", "name": name}}}  # fmt: skip
        return bool(client.AuthorizationV1Api(api).create_self_subject_access_review(review).status.allowed)

    assert [may(verb, name) for verb in ("patch", "update", "delete") for name in (NAME, "another-app")] == [
        True, False, False, False, False, False,
    ]  # fmt: skip
    note = {"metadata": {"annotations": {"bank-pipeline/checked": "yes"}}}
    patched = apps.patch_namespaced_deployment(NAME, release.name, note)
    assert patched.metadata.annotations["bank-pipeline/checked"] == "yes"

    refusals = {
        "patch": lambda: apps.patch_namespaced_deployment("another-app", release.name, note),
        "update": lambda: apps.replace_namespaced_deployment("another-app", release.name, other),
        "delete": lambda: apps.delete_namespaced_deployment("another-app", release.name),
        "delete own": lambda: apps.delete_namespaced_deployment(NAME, release.name),
    }
    for what, call in refusals.items():
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status == 403, what
        verb, name = what.split(" ")[0], NAME if what.endswith("own") else "another-app"
        assert json.loads(refused.value.body)["message"].startswith(
            f'deployments.apps "{name}" is forbidden: User "{release.user}" cannot {verb} resource "deployments"'
        ), what
    assert release.get("Deployment", "another-app") is not None
    assert "bank-pipeline/checked" not in (release.deployment("another-app")["metadata"].get("annotations") or {})
    assert release.get("Deployment") is not None


def test_create_is_needed_only_while_an_object_is_missing(release: ReleaseNamespace) -> None:
    """The create rules (which RBAC cannot limit by name) may be dropped once the four objects exist:
    a release with the Role without them still rolls out, as role.yaml says."""
    deploy(V1)
    role = {**ROLE, "rules": [r for r in ROLE["rules"] if "create" not in r["verbs"]]}
    release.cluster.apply(role, release.name)
    wait_for("create denied", lambda: not release.can("create", "deployments", "apps"))
    result = deploy(V2)
    assert (result["image"], result["previous_image"], result["changed"]) == (V2, V1, True)
    assert release.image() == V2


def test_the_network_policy_is_accepted_by_the_api_server(release: ReleaseNamespace) -> None:
    """Applied with the rest of rbac/ (as the namespace's administrator would), validated and defaulted
    by the real API server. Not enforced: devstack's control plane has no CNI (docs/kubernetes.md)."""
    (policy,) = [m for m in release.rbac if m["kind"] == "NetworkPolicy"]
    path = f"/apis/networking.k8s.io/v1/namespaces/{release.name}/networkpolicies/{policy['metadata']['name']}"
    live = release.cluster.get(path)
    assert live["spec"]["podSelector"] == policy["spec"]["podSelector"]
    assert live["spec"]["ingress"] == policy["spec"]["ingress"]
    assert live["spec"]["policyTypes"] == ["Ingress"]
