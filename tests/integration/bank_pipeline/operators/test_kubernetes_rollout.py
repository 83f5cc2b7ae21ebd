"""KubernetesRolloutOperator and KubernetesRolloutTrigger against a real control plane (devstack.kube).

The session's cluster: the real kube-apiserver validates and defaults what the operator
creates and authorizes every call against the package's RBAC (the operator runs as its
ServiceAccount, through the cncf provider's hooks and a connection from a kubeconfig); the
real deployment controller makes the ReplicaSets and judges progress; the scheduler binds
the pods to kwok's Nodes, and kwok makes them Ready, or keeps the pods of ``BAD`` in
ImagePullBackOff (a kwok stage). Each test has a namespace of its own (``release``).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

import kubernetes_validate
import pytest
from airflow.sdk.exceptions import TaskDeferred

from bank_pipeline.errors import BadInputError, RolloutFailedError
from bank_pipeline.hooks.kubernetes_api import KubernetesRolloutHook
from bank_pipeline.operators.kubernetes_rollout import KubernetesRolloutOperator
from bank_pipeline.triggers.rollout_status import KubernetesRolloutTrigger
from bank_pipeline.utils.rollout import prepare_manifests
from devstack import kube
from tests.support.deferral import first_event
from tests.support.release_ns import BAD, CONN_ID, NAME, V1, V2, V3, ReleaseNamespace, manifests, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEADLINE = 2  # progressDeadlineSeconds of a rollout meant to fail: the controller's verdict in ~3 s
ROLLED_OUT = 'deployment "bank-model" successfully rolled out'


@pytest.fixture(scope="module", autouse=True)
def unpullable(kube_cluster: kube.KubeCluster) -> None:
    """Pods of BAD never pull (for every namespace of the session's cluster)."""
    kube_cluster.add_stage(kube.image_pull_backoff_stage(BAD))


def operator(image: str, **kwargs: Any) -> KubernetesRolloutOperator:
    options = {
        "manifests": manifests(),
        "kubernetes_conn_id": CONN_ID,
        "deferrable": False,
        "poll_interval": 0.1,
        "timeout": 60,
        "image_platform": "linux/amd64",  # the images are made up: no registry to read it from
    }
    return KubernetesRolloutOperator(task_id="rollout", image=image, **{**options, **kwargs})


def deploy(image: str, **kwargs: Any) -> dict[str, Any]:
    return operator(image, **kwargs).execute(context={})


def defer(image: str, **kwargs: Any) -> tuple[KubernetesRolloutOperator, TaskDeferred]:
    op = operator(image, deferrable=True, **kwargs)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context={})
    return op, deferred.value


def shorten_deadline(release: ReleaseNamespace) -> None:
    """What the test changes in the cluster so that a stuck rollout fails in seconds, not minutes."""
    release.patch("Deployment", {"spec": {"progressDeadlineSeconds": DEADLINE}})


class RacingHook(KubernetesRolloutHook):
    """The rollout's hook, with someone else's write landing right after one of its reads of a kind.

    The race is its operator's ``race``: ``meddle`` (as the cluster's admin: another person,
    another Airflow run) runs once, after the first read of ``kind`` for which ``when(what was
    read)`` holds. The writes are real; only their moment is chosen, so that the race happens
    every time. A test may set a new race between the operator's calls.
    """

    owner: RacingOperator

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = super().read(kind, namespace, name)
        race = self.owner.race
        if race is not None and kind == race[0] and race[1](found):
            self.owner.race = None
            race[2]()
        return found


class RacingOperator(KubernetesRolloutOperator):
    """The operator with a RacingHook."""

    def __init__(self, *, race: tuple[str, Callable[[Any], bool], Callable[[], Any]] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.race = race

    @cached_property
    def hook(self) -> KubernetesRolloutHook:
        hook = RacingHook(conn_id=self.kubernetes_conn_id)
        hook.owner = self
        return hook


def racing(image: str, race: tuple[str, Callable[[Any], bool], Callable[[], Any]], **kwargs: Any) -> RacingOperator:
    options = {"manifests": manifests(), "kubernetes_conn_id": CONN_ID, "deferrable": False, "poll_interval": 0.1,
               "timeout": 60, "image_platform": "linux/amd64"}  # fmt: skip
    return RacingOperator(task_id="rollout", image=image, race=race, **{**options, **kwargs})


# -- create, patch, verify ------------------------------------------------------------------------


def test_first_deploy_creates_everything_and_the_server_fills_in_its_defaults(release: ReleaseNamespace) -> None:
    result = deploy(V1)
    assert result == {
        "deployment": NAME,
        "namespace": release.name,  # the connection's
        "image": V1,
        "previous_image": None,
        "changed": True,
        "status": ROLLED_OUT,
    }
    # Two pods run V1 on kwok's Nodes, as soon as the operator says so.
    assert sorted(release.running().values()) == [V1, V1]
    assert {p["spec"]["nodeName"] for p in release.pods()} <= {"kwok-node-0", "kwok-node-1"}
    # The API server filled in what the manifests leave out.
    service = release.get("Service")
    assert service is not None
    assert ipaddress.ip_address(service["spec"]["clusterIP"]) in ipaddress.ip_network(kube.SERVICE_CIDR)
    assert (service["spec"]["sessionAffinity"], service["spec"]["internalTrafficPolicy"]) == ("None", "Cluster")
    pod_spec = release.deployment()["spec"]["template"]["spec"]
    assert (pod_spec["dnsPolicy"], pod_spec["schedulerName"], pod_spec["restartPolicy"]) == (
        "ClusterFirst",
        "default-scheduler",
        "Always",
    )
    assert pod_spec["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    hpa = release.get("HorizontalPodAutoscaler")
    assert hpa is not None and hpa["spec"]["behavior"]["scaleUp"]["selectPolicy"] == "Max"  # defaulted
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300  # as in hpa.yaml
    # The disruption controller counts the new pods against the budget: one may go, not two.
    pdb = wait_for(
        "the PodDisruptionBudget to count 2 healthy pods",
        lambda: (b := release.get("PodDisruptionBudget")) and (b.get("status") or {}).get("currentHealthy") == 2 and b,
    )
    assert pdb["status"]["disruptionsAllowed"] == 1


def test_a_manifest_only_the_server_refuses_fails_at_once_naming_the_field(release: ReleaseNamespace) -> None:
    docs = manifests(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}})
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert kubernetes_validate.validate(deployment, "1.36", strict=True) == "1.36"  # the schema cannot tell
    with pytest.raises(RolloutFailedError) as failure:
        deploy(V1, manifests=docs)
    assert str(failure.value) == (
        f"Kubernetes API call failed: create Deployment {release.name}/{NAME}: 422 Unprocessable Entity, "
        f'reason Invalid: Deployment.apps "{NAME}" is invalid: spec.strategy.rollingUpdate.maxUnavailable: '
        "Invalid value: 0: may not be 0 when `maxSurge` is 0"
    )
    # Created in order up to the refusal; with the manifest fixed, a rerun creates the rest.
    assert [
        k for k in ("Service", "PodDisruptionBudget", "Deployment", "HorizontalPodAutoscaler") if release.get(k)
    ] == [
        "Service",
        "PodDisruptionBudget",
    ]
    assert deploy(V1)["status"] == ROLLED_OUT
    assert release.get("HorizontalPodAutoscaler") is not None


def test_update_patches_only_the_image_and_waits_for_the_new_pods(release: ReleaseNamespace) -> None:
    deploy(V1)
    before, old_pods = release.deployment(), release.running()
    result = deploy(V2)
    assert (result["previous_image"], result["image"], result["changed"], result["status"]) == (
        V1,
        V2,
        True,
        ROLLED_OUT,
    )
    # When the operator says so, two new pods run V2 and the old ones are gone or going.
    running = release.running()
    assert sorted(running.values()) == [V2, V2] and not set(running) & set(old_pods)
    after = release.deployment()
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    # Everything but the image is as it was: probes, security context, volumes.
    container = after["spec"]["template"]["spec"]["containers"][0]
    assert {**container, "image": V1} == before["spec"]["template"]["spec"]["containers"][0]
    revisions = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: (
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            rs["spec"]["replicas"],
        )
        for rs in release.list("ReplicaSet")
    }
    assert revisions == {V1: ("1", 0), V2: ("2", 2)}  # the old one kept at 0: `kubectl rollout undo` works


def test_rerun_with_the_same_digest_changes_nothing_and_still_verifies(release: ReleaseNamespace) -> None:
    deploy(V1)
    before = release.deployment()
    result = deploy(V1)
    assert (result["changed"], result["previous_image"], result["status"]) == (False, V1, ROLLED_OUT)
    assert release.deployment()["metadata"]["generation"] == before["metadata"]["generation"]
    assert len(release.list("ReplicaSet")) == 1


def test_stalled_rollout_is_rolled_back_saying_why(release: ReleaseNamespace) -> None:
    deploy(V1)
    serving = release.running()
    shorten_deadline(release)
    with pytest.raises(RolloutFailedError) as failure:
        deploy(BAD)
    message = str(failure.value)
    assert message.startswith(
        f'rollout of {BAD} to Deployment {release.name}/{NAME} failed: deployment "{NAME}" exceeded its progress '
        f'deadline: ReplicaSet "{NAME}-'
    )
    assert "Available=True MinimumReplicasAvailable" in message  # the old pods kept serving
    assert "Progressing=False ProgressDeadlineExceeded" in message
    assert re.search(rf"ReplicaSet {NAME}-\w+: 0 of 1 pods ready", message)  # maxSurge 1: one new pod tried
    assert "Ready=False ContainersNotReady" in message
    assert f'container serving waiting: ImagePullBackOff (Back-off pulling image "{BAD}")' in message
    assert f'Warning Failed: Failed to pull image "{BAD}"' in message
    assert message.endswith(f"Rolled back: container serving set back to {V1}")
    # What a user notices: V1 again, served by the same two pods all along (maxUnavailable 0).
    release.wait_rolled_out(V1)
    assert release.running() == serving


def test_failed_first_deploy_is_left_in_place(release: ReleaseNamespace) -> None:
    with pytest.raises(RolloutFailedError) as failure:
        deploy(BAD, manifests=manifests(progressDeadlineSeconds=DEADLINE))
    assert str(failure.value).endswith(
        "Nothing to roll back to: this run created the Deployment. It is left in place for inspection "
        "(unready pods get no Service traffic); delete it or release a working image"
    )
    assert release.image() == BAD and release.running() == {}
    waiting = {s["state"]["waiting"]["reason"] for p in release.pods() for s in p["status"]["containerStatuses"]}
    assert len(release.pods()) == 2 and waiting == {"ImagePullBackOff"}


def test_an_existing_deployment_without_the_container_is_refused(release: ReleaseNamespace) -> None:
    deploy(V1)
    docs = manifests()
    next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["name"] = "api"
    with pytest.raises(BadInputError, match=r"Deployment bank-model has no container 'api' \(containers: serving\)"):
        deploy(V2, manifests=docs, container_name="api")
    assert release.image() == V1


# -- deferred: the trigger polls through the provider's AsyncKubernetesHook ------------------------


def test_deferred_rollout_completes_through_the_trigger(release: ReleaseNamespace) -> None:
    deploy(V1)
    op, deferred = defer(V2)
    path, kwargs = deferred.trigger.serialize()
    assert path == "bank_pipeline.triggers.rollout_status.KubernetesRolloutTrigger"
    event = first_event(KubernetesRolloutTrigger(**kwargs))  # as the triggerer rebuilds it
    assert event == {"status": "success", "message": ROLLED_OUT, "state": deferred.kwargs}
    result = getattr(op, deferred.method_name)(context={}, event=event, **deferred.kwargs)
    assert (result["previous_image"], result["image"], result["changed"]) == (V1, V2, True)
    # dag.test() resumes with the event alone: the state it carries is enough.
    assert getattr(op, deferred.method_name)(context={}, event=event) == result
    assert sorted(release.running().values()) == [V2, V2]


def test_deferred_stall_is_rolled_back(release: ReleaseNamespace) -> None:
    deploy(V1)
    shorten_deadline(release)
    op, deferred = defer(BAD)
    event = first_event(deferred.trigger)
    assert event["status"] == "failed" and "exceeded its progress deadline" in event["message"]
    with pytest.raises(RolloutFailedError, match=r"(?s)ImagePullBackOff.*Rolled back: container serving set back to"):
        op.execute_complete(context={}, event=event, **deferred.kwargs)
    release.wait_rolled_out(V1)


def test_a_rollout_still_going_at_the_trigger_deadline_is_rolled_back(release: ReleaseNamespace) -> None:
    deploy(V1)
    op, deferred = defer(BAD)  # progressDeadlineSeconds 300: the controller will not decide for minutes
    started = time.monotonic()
    event = first_event(KubernetesRolloutTrigger(**{**deferred.trigger.serialize()[1], "deadline": time.time() + 1}))
    assert time.monotonic() - started < 10
    assert event["status"] == "timeout"
    assert event["message"].startswith('timed out waiting for the rollout; last: Waiting for deployment "bank-model"')
    with pytest.raises(
        RolloutFailedError, match=rf"(?s)timed out waiting.*Rolled back: .* set back to {re.escape(V1)}"
    ):
        op.execute_complete(context={}, event=event, **deferred.kwargs)
    release.wait_rolled_out(V1)


# -- concurrent changes: someone else's write lands between the operator's read and its write -------


def test_an_image_changed_meanwhile_by_someone_else_is_not_overwritten(release: ReleaseNamespace) -> None:
    """The image patch is a compare-and-swap: the API refuses it (422), and the operator says what happened."""
    deploy(V1)
    op = racing(V2, ("Deployment", lambda found: found is not None, lambda: release.set_image(V3)))
    with pytest.raises(RolloutFailedError) as failure:
        op.execute(context={})
    assert str(failure.value) == (
        f"Deployment {release.name}/{NAME} changed while this run patched it: container serving now runs {V3} "
        f"(it ran {V1} when read), changed by someone else; not overwritten with {V2}"
    )
    assert release.image() == V3


def test_a_deployment_created_meanwhile_by_someone_else_is_taken_as_the_existing_one(release: ReleaseNamespace) -> None:
    """The create meets 409 AlreadyExists: the operator reads what is there and patches it like any existing one."""
    (theirs,) = prepare_manifests(
        [d for d in manifests() if d["kind"] == "Deployment"], namespace=release.name, image=V1, container="serving"
    )
    op = racing(V2, ("Deployment", lambda found: found is None, lambda: release.create(theirs)))
    result = op.execute(context={})
    assert (result["previous_image"], result["image"], result["changed"], result["status"]) == (
        V1,
        V2,
        True,
        ROLLED_OUT,
    )
    assert sorted(release.running().values()) == [V2, V2]


def test_an_image_changed_during_a_failing_rollout_is_left_alone(release: ReleaseNamespace) -> None:
    """Someone fixed the Deployment (V3) while this run's rollout failed: the rollback leaves their change."""
    deploy(V1)
    shorten_deadline(release)
    op, deferred = defer(BAD)
    event = first_event(deferred.trigger)
    assert event["status"] == "failed"
    release.set_image(V3)
    with pytest.raises(RolloutFailedError) as failure:
        op.execute_complete(context={}, event=event, **deferred.kwargs)
    assert str(failure.value).endswith(
        f"Not rolled back: the image is now {V3}, no longer this run's (changed by someone else)"
    )
    release.wait_rolled_out(V3)


def test_an_image_changed_just_before_the_rollback_is_not_overwritten_either(release: ReleaseNamespace) -> None:
    deploy(V1)
    shorten_deadline(release)
    op = racing(BAD, ("Deployment", lambda found: False, lambda: None), deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context={})
    event = first_event(deferred.value.trigger)
    # The operator reads the failed Deployment, then someone sets V3, then the rollback's patch.
    op.race = ("Deployment", lambda found: found is not None, lambda: release.set_image(V3))
    with pytest.raises(RolloutFailedError) as failure:
        op.execute_complete(context={}, event=event, **deferred.value.kwargs)
    assert str(failure.value).endswith(
        f"Rollback to {V1} failed too: Deployment {release.name}/{NAME} changed while this run patched it: "
        f"container serving now runs {V3} (it ran {BAD} when read), changed by someone else; not overwritten with {V1}"
    )
    assert release.image() == V3
