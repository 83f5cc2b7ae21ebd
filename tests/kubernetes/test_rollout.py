"""KubernetesRolloutOperator and KubernetesRolloutTrigger, through the real kubernetes clients, against kmock over HTTP.

The mock (kmock_cluster.FakeCluster) adds the API server's generation bookkeeping and a
deployment controller that completes a rollout, or stalls one in ImagePullBackOff and
then reports ProgressDeadlineExceeded. The operator reaches it through KubernetesHook and
an Airflow connection from the environment (conftest.py).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from bank_pipeline import resources
from bank_pipeline.errors import BadInputError, RolloutFailedError
from bank_pipeline.operators.kubernetes import KubernetesRolloutOperator
from bank_pipeline.triggers.kubernetes import KubernetesRolloutTrigger
from bank_pipeline.utils.rollout import (
    describe_events,
    describe_pod,
    image_patch,
    load_manifests,
    prepare_manifests,
    rollout_event,
    rollout_status,
)
from tests.kubernetes.kmock_cluster import CONN_ID, DEPLOYMENTS, HPAS, NAMESPACE, PDBS, SERVICES, MockApi, api_error

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REPO = "registry.example/bank-model"
V1, V2, BAD = (f"{REPO}@sha256:{c * 64}" for c in "12b")
NAME = "bank-model"

# kmock's access log would bury a failing test's output.
logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def operator(image: str, **kwargs: Any) -> KubernetesRolloutOperator:
    options = {
        "kubernetes_conn_id": CONN_ID,
        "deferrable": False,
        "poll_interval": 0.01,
        "timeout": 10,
        "image_platform": "linux/amd64",  # the images are made up: no registry to read it from
    }
    return KubernetesRolloutOperator(task_id="rollout", image=image, **{**options, **kwargs})


def deploy(image: str, **kwargs: Any) -> dict[str, Any]:
    return operator(image, **kwargs).execute(context={})


def stored(api: MockApi, resource: str = DEPLOYMENTS) -> dict[str, Any]:
    return api.call(lambda c: c.raw(resource, NAMESPACE, NAME))


def image_of(api: MockApi) -> str:
    return stored(api)["spec"]["template"]["spec"]["containers"][0]["image"]


def first_event(trigger: KubernetesRolloutTrigger) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger yielded nothing")

    # A fresh thread: a Playwright sync session earlier in the run can leave an event
    # loop set on the main thread, where asyncio.run() then refuses to start.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, run()).result()


def deployment(generation: int = 2, observed: int = 2, desired: int | None = 2, **status: Any) -> dict[str, Any]:
    """A Deployment as the API returns it: ``desired`` is spec.replicas, ``status`` the status fields."""
    return {
        "metadata": {"name": NAME, "generation": generation},
        "spec": {} if desired is None else {"replicas": desired},
        "status": {"observedGeneration": observed, **status},
    }


TIMED_OUT = 'ReplicaSet "x" has timed out progressing.'
DEADLINE_EXCEEDED = [
    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": TIMED_OUT}
]
UNOBSERVED = "Waiting for deployment spec update to be observed..."
WAITING = 'Waiting for deployment "bank-model" rollout to finish: '
ROLLED_OUT = 'deployment "bank-model" successfully rolled out'


# -- rollout_status: kubectl's logic, case by case --------------------------------------------------


@pytest.mark.parametrize(
    ("dep", "done", "failed", "message"),
    [
        (deployment(3, 2), False, False, UNOBSERVED),
        # A deadline condition left from the previous generation does not count yet.
        (deployment(3, 2, conditions=DEADLINE_EXCEEDED), False, False, UNOBSERVED),
        (
            deployment(conditions=DEADLINE_EXCEEDED, updatedReplicas=1),
            False,
            True,
            f'deployment "bank-model" exceeded its progress deadline: {TIMED_OUT}',
        ),
        (
            deployment(replicas=2, updatedReplicas=1, availableReplicas=2),
            False,
            False,
            f"{WAITING}1 out of 2 new replicas have been updated...",
        ),
        (
            deployment(replicas=3, updatedReplicas=2, availableReplicas=3),
            False,
            False,
            f"{WAITING}1 old replicas are pending termination...",
        ),
        (
            deployment(replicas=2, updatedReplicas=2, availableReplicas=1),
            False,
            False,
            f"{WAITING}1 of 2 updated replicas are available...",
        ),
        (deployment(replicas=2, updatedReplicas=2, readyReplicas=2, availableReplicas=2), True, False, ROLLED_OUT),
        # spec.replicas unset (the API defaults it to 1): kubectl skips the desired-count check.
        (deployment(desired=None), True, False, ROLLED_OUT),
    ],
    ids=["unobserved", "stale-deadline", "deadline", "updating", "old-pending", "unavailable", "done", "no-replicas"],
)
def test_rollout_status(dep: dict[str, Any], done: bool, failed: bool, message: str) -> None:
    assert rollout_status(dep) == (done, failed, message)


def test_rollout_event_times_out_only_while_waiting() -> None:
    waiting = deployment(3, 2)
    assert rollout_event(waiting, deadline=10, now=9) is None
    timeout = {"status": "timeout", "message": f"timed out waiting for the rollout; last: {UNOBSERVED}"}
    assert rollout_event(waiting, deadline=10, now=10) == timeout
    assert rollout_event(deployment(desired=None), deadline=10, now=11) == {"status": "success", "message": ROLLED_OUT}


def test_image_patch_tests_before_it_replaces() -> None:
    assert image_patch(1, "serving", V1, V2) == [
        {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "serving"},
        {"op": "test", "path": "/spec/template/spec/containers/1/image", "value": V1},
        {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": V2},
    ]


def test_a_crash_looping_pod_is_described_with_its_last_exit() -> None:
    pod = {
        "metadata": {"name": "bank-model-abc-1"},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [
                {
                    "name": "serving",
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting"}},
                    "lastState": {
                        "terminated": {"exitCode": 1, "reason": "Error", "message": "model.json: no such file\n"}
                    },
                }
            ],
        },
    }
    assert describe_pod(pod) == (
        "pod bank-model-abc-1 Running, Ready=False ContainersNotReady, "
        "container serving waiting: CrashLoopBackOff (back-off 1m20s restarting), "
        "container serving exited 1 (Error): model.json: no such file, restarted 4 times"
    )


def test_events_keep_the_latest_warnings() -> None:
    events = [
        {"type": "Warning", "reason": "BackOff", "message": "b", "count": 6, "lastTimestamp": "2026-11-24T10:03:00Z"},
        {"type": "Normal", "reason": "Pulling", "message": "p", "lastTimestamp": "2026-11-24T10:04:00Z"},
        {"type": "Warning", "reason": "Failed", "message": "f", "count": 1, "lastTimestamp": "2026-11-24T10:01:00Z"},
    ]
    assert describe_events(events, limit=3) == ["Warning Failed: f", "Warning BackOff: b (x6)"]
    assert describe_events(events[1:2]) == ["Normal Pulling: p"]


def test_manifests_are_refused_when_wrong(tmp_path: Path) -> None:
    docs = load_manifests(resources.kubernetes_manifests())
    assert [d["kind"] for d in docs] == ["Service", "PodDisruptionBudget", "Deployment", "HorizontalPodAutoscaler"]
    with pytest.raises(BadInputError, match=r"manifests\[0\]: v1 ConfigMap is not one the operator applies"):
        load_manifests([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}])
    with pytest.raises(BadInputError, match=r"expected exactly one Deployment.*found 2"):
        load_manifests([d for d in docs if d["kind"] == "Deployment"] * 2)
    with pytest.raises(BadInputError, match=r"Deployment bank-model has no container 'api' \(containers: serving\)"):
        prepare_manifests(docs, namespace=NAMESPACE, image=V1, container="api")
    elsewhere = [{**d, "metadata": {**d["metadata"], "namespace": "other"}} for d in docs]
    with pytest.raises(
        BadInputError, match=r"Service bank-model names namespace 'other', but the rollout is to 'bank'"
    ):
        prepare_manifests(elsewhere, namespace=NAMESPACE, image=V1, container="serving")
    with pytest.raises(BadInputError, match="no manifests at"):
        load_manifests(tmp_path)


def test_parse_time_import_leaves_the_kubernetes_clients_alone() -> None:
    clients = ("kubernetes", "kubernetes_asyncio")
    code = (
        "import sys, bank_pipeline.operators.kubernetes, bank_pipeline.triggers.kubernetes; "
        f"print([m for m in {clients!r} if m in sys.modules])"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


# -- the operator against the mock ------------------------------------------------------------------


def test_first_deploy_creates_everything(api: MockApi) -> None:
    result = deploy(V1)
    assert result == {
        "deployment": NAME,
        "namespace": NAMESPACE,  # the connection's
        "image": V1,
        "previous_image": None,
        "changed": True,
        "status": ROLLED_OUT,
    }
    created = [r.resource.plural for r in api.requests("POST")]
    assert created == ["services", "poddisruptionbudgets", "deployments", "horizontalpodautoscalers"]
    for resource in (SERVICES, PDBS, HPAS):
        assert stored(api, resource)["metadata"]["namespace"] == NAMESPACE
    assert image_of(api) == V1
    assert api.requests("PATCH") == []


def test_update_patches_only_the_image_and_waits_for_the_rollout(api: MockApi) -> None:
    deploy(V1)
    before = stored(api)
    result = deploy(V2)
    assert (result["previous_image"], result["image"], result["changed"], result["status"]) == (
        V1,
        V2,
        True,
        ROLLED_OUT,
    )
    (patch,) = api.requests("PATCH")
    assert patch.headers["Content-Type"].startswith("application/json-patch+json")
    assert patch.data == image_patch(0, "serving", V1, V2)
    after = stored(api)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["status"]["observedGeneration"] == after["metadata"]["generation"]
    # Everything but the image is as it was: probes, security context, volumes.
    container = after["spec"]["template"]["spec"]["containers"][0]
    assert {**container, "image": V1} == before["spec"]["template"]["spec"]["containers"][0]
    assert len(api.requests("POST")) == 4  # all from the first run


def test_rerun_with_the_same_digest_changes_nothing_and_still_verifies(api: MockApi) -> None:
    deploy(V1)
    seen = len(api.requests())
    result = deploy(V1)
    assert (result["changed"], result["previous_image"], result["status"]) == (False, V1, ROLLED_OUT)
    again = api.requests()[seen:]
    assert {r.method.value for r in again} == {"GET"}
    assert any(r.resource.plural == "deployments" for r in again)


def test_stalled_rollout_is_rolled_back_with_the_reason(api: MockApi) -> None:
    deploy(V1)
    api.call(lambda c: c.bad_images.add(BAD))
    with pytest.raises(RolloutFailedError) as failure:
        deploy(BAD)
    message = str(failure.value)
    assert message.startswith(
        f'rollout of {BAD} to Deployment bank/bank-model failed: deployment "bank-model" exceeded its progress deadline'
    )
    assert "Progressing=False ProgressDeadlineExceeded" in message
    assert "Ready=False ContainersNotReady" in message
    assert f'container serving waiting: ImagePullBackOff (Back-off pulling image "{BAD}")' in message
    assert f'Warning Failed: Failed to pull image "{BAD}": rpc error: code = NotFound' in message
    assert "Started container" not in message  # an old ReplicaSet's pod is not one of the new ones
    assert message.endswith(f"Rolled back: container serving set back to {V1}")
    assert image_of(api) == V1
    assert api.requests("PATCH")[-1].data == image_patch(0, "serving", BAD, V1)


def test_failed_first_deploy_is_left_in_place(api: MockApi) -> None:
    api.call(lambda c: c.bad_images.add(BAD))
    with pytest.raises(RolloutFailedError, match="Nothing to roll back to: this run created the Deployment"):
        deploy(BAD)
    assert image_of(api) == BAD
    assert api.requests("PATCH") == [] and api.requests("DELETE") == []


# -- deferred: the trigger polls ---------------------------------------------------------------------


def defer(image: str) -> tuple[KubernetesRolloutOperator, TaskDeferred]:
    op = operator(image, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context={})
    return op, deferred.value


def test_deferred_rollout_completes_through_the_trigger(api: MockApi) -> None:
    deploy(V1)
    op, deferred = defer(V2)
    path, kwargs = deferred.trigger.serialize()
    assert path == "bank_pipeline.triggers.kubernetes.KubernetesRolloutTrigger"
    event = first_event(KubernetesRolloutTrigger(**kwargs))  # as the triggerer rebuilds it
    assert event == {"status": "success", "message": ROLLED_OUT, "state": deferred.kwargs}
    result = getattr(op, deferred.method_name)(context={}, event=event, **deferred.kwargs)
    assert (result["previous_image"], result["image"], result["changed"]) == (V1, V2, True)
    # dag.test() resumes with the event alone: the state it carries is enough.
    assert getattr(op, deferred.method_name)(context={}, event=event) == result


def test_deferred_stall_is_rolled_back(api: MockApi) -> None:
    deploy(V1)
    api.call(lambda c: c.bad_images.add(BAD))
    op, deferred = defer(BAD)
    event = first_event(deferred.trigger)
    assert event["status"] == "failed" and "exceeded its progress deadline" in event["message"]
    with pytest.raises(RolloutFailedError, match=r"(?s)ImagePullBackOff.*Rolled back: container serving set back to"):
        op.execute_complete(context={}, event=event, **deferred.kwargs)
    assert image_of(api) == V1


def test_trigger_timeout_rolls_back_too(api: MockApi) -> None:
    deploy(V1)
    api.call(lambda c: setattr(c, "frozen", True))  # the controller never observes the change
    op, deferred = defer(V2)
    started = time.monotonic()
    kwargs = {**deferred.trigger.serialize()[1], "deadline": time.time() + 0.3}
    event = first_event(KubernetesRolloutTrigger(**kwargs))
    assert time.monotonic() - started < 5
    assert event == {
        "status": "timeout",
        "message": f"timed out waiting for the rollout; last: {UNOBSERVED}",
        "state": deferred.kwargs,
    }
    with pytest.raises(RolloutFailedError, match=rf"(?s)timed out waiting.*Rolled back: .* set back to {V1}"):
        op.execute_complete(context={}, event=event, **deferred.kwargs)


def test_trigger_reports_an_api_error_as_an_event_and_the_task_rolls_nothing_back(api: MockApi) -> None:
    deploy(V1)
    op, deferred = defer(V2)
    timed_out = api_error(500, "InternalError", "etcdserver: request timed out")
    api.call(lambda c: c.faults.append(("GET", DEPLOYMENTS, timed_out)))
    event = first_event(deferred.trigger)
    assert event == {
        "status": "error",
        "message": "Kubernetes API call failed: read Deployment bank/bank-model: "
        "500 Internal Server Error, reason InternalError: etcdserver: request timed out",
        "state": deferred.kwargs,
    }
    with pytest.raises(
        RuntimeError, match=rf"state is unknown, nothing was rolled back \(the image before this run: {V1}\)"
    ):
        op.execute_complete(context={}, event=event, **deferred.kwargs)
    assert image_of(api) == V2


def test_missing_connection_skips_when_asked_and_fails_otherwise(api: MockApi, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CLUSTER", raising=False)
    op = operator(V1, kubernetes_conn_id="no_such_cluster", skip_without_connection=True)
    with pytest.raises(AirflowSkipException, match="no Kubernetes connection 'no_such_cluster' is configured"):
        op.execute(context={})
    op = operator(V1, kubernetes_conn_id="no_such_cluster")
    with pytest.raises(BadInputError, match="no Kubernetes connection 'no_such_cluster' is configured: nothing rolled out"):
        op.execute(context={})


# -- refusals -----------------------------------------------------------------------------------------


FORBIDDEN = (
    'deployments.apps "bank-model" is forbidden: User "system:serviceaccount:airflow:worker" '
    'cannot patch resource "deployments" in API group "apps" in the namespace "bank"'
)
EXISTS = 'deployments.apps "bank-model" already exists'
ETCD = "etcdserver: request timed out"


@pytest.mark.parametrize(
    ("method", "error", "final", "expected"),
    [
        (
            "PATCH",
            api_error(403, "Forbidden", FORBIDDEN),
            True,
            f"patch Deployment bank/bank-model image {V1} -> {V2}: 403 Forbidden: {FORBIDDEN}",
        ),
        (
            "POST",
            api_error(409, "AlreadyExists", EXISTS),
            False,
            f"create Deployment bank/bank-model: 409 Conflict, reason AlreadyExists: {EXISTS}",
        ),
        (
            "GET",
            api_error(500, "InternalError", ETCD),
            False,
            f"read Deployment bank/bank-model: 500 Internal Server Error, reason InternalError: {ETCD}",
        ),
    ],
    ids=["403-patch", "409-create", "500-read"],
)
def test_api_errors_fail_clearly(api: MockApi, method: str, error: Any, final: bool, expected: str) -> None:
    if method == "PATCH":
        deploy(V1)
    api.call(lambda c: c.faults.append((method, DEPLOYMENTS, error)))
    with pytest.raises(RuntimeError) as failure:
        deploy(V2 if method == "PATCH" else V1)
    assert str(failure.value) == f"Kubernetes API call failed: {expected}"
    # A 403 will not change on retry (fail now); a 409 (a concurrent create) or a 500 may.
    assert isinstance(failure.value, AirflowFailException) is final
    if method == "PATCH":
        assert image_of(api) == V1  # refused, so unchanged


def test_a_tag_is_refused_before_any_api_call(api: MockApi) -> None:
    with pytest.raises(BadInputError, match=r"not by a mutable tag: image='registry\.example/bank-model:v2'"):
        deploy(f"{REPO}:v2")
    with pytest.raises(BadInputError, match="not by a mutable tag"):
        deploy(f"{REPO}@sha256:abc")
    assert api.requests() == []


def test_existing_deployment_without_the_container_is_refused(api: MockApi) -> None:
    deploy(V1)
    manifests = load_manifests(resources.kubernetes_manifests())
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["name"] = "api"
    with pytest.raises(BadInputError, match=r"Deployment bank-model has no container 'api' \(containers: serving\)"):
        deploy(V2, manifests=manifests, container_name="api")
    assert api.requests("PATCH") == []
