"""What the operator and the trigger do when the API answers 5xx or 429: kmock answers those on demand.

A real API server cannot be made to (tests/support/kmock_api.py says what kmock is not). What kmock serves
besides the faults comes from the real control plane: the objects of a release rolled out there.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from bank_pipeline.errors import RolloutFailedError
from bank_pipeline.operators.kubernetes_rollout import KubernetesRolloutOperator
from bank_pipeline.triggers.rollout_status import KubernetesRolloutTrigger
from tests.support.deferral import first_event
from tests.support.kmock_api import CONN_ID as MOCK_CONN_ID
from tests.support.kmock_api import Fault, MockApi, api_error
from tests.support.release_ns import CONN_ID, NAME, V1, V2, ReleaseNamespace, manifests

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROLLED_OUT = 'deployment "bank-model" successfully rolled out'
DEPLOYMENTS = "apps/v1/deployments"
ETCD = "etcdserver: request timed out"
THROTTLED = "Too many requests, please try again later."
RESOURCES = {
    "Service": "v1/services",
    "PodDisruptionBudget": "policy/v1/poddisruptionbudgets",
    "Deployment": DEPLOYMENTS,
    "HorizontalPodAutoscaler": "autoscaling/v2/horizontalpodautoscalers",
}


def operator(image: str, conn_id: str, **kwargs: Any) -> KubernetesRolloutOperator:
    options = {"manifests": manifests(), "deferrable": False, "poll_interval": 0.05, "timeout": 30,
               "image_platform": "linux/amd64"}  # fmt: skip
    return KubernetesRolloutOperator(
        task_id="rollout", image=image, kubernetes_conn_id=conn_id, **{**options, **kwargs}
    )


def serve_release(release: ReleaseNamespace, api: MockApi) -> None:
    """Put what a rollout of V1 left in the real cluster into kmock, as the API returned it."""
    for kind, resource in RESOURCES.items():
        obj = release.get(kind)
        assert obj is not None
        api.call(lambda a, resource=resource, obj=obj: a.put(resource, obj))


@pytest.mark.parametrize(
    ("status", "reason", "message", "http"),
    [
        (500, "InternalError", ETCD, "500 Internal Server Error"),
        (503, "ServiceUnavailable", "the server is currently unable to handle the request", "503 Service Unavailable"),
        (429, "TooManyRequests", THROTTLED, "429 Too Many Requests"),
    ],
    ids=["500", "503", "429"],
)
def test_a_refused_first_read_fails_for_a_retry_and_writes_nothing(
    api: MockApi, status: int, reason: str, message: str, http: str
) -> None:
    api.call(
        lambda a: a.faults.append(Fault(method="GET", resource="v1/services", error=api_error(status, reason, message)))
    )
    with pytest.raises(RuntimeError) as failure:
        operator(V1, MOCK_CONN_ID).execute(context={})
    assert (
        str(failure.value)
        == f"Kubernetes API call failed: read Service bank/{NAME}: {http}, reason {reason}: {message}"
    )
    assert not isinstance(failure.value, AirflowFailException)  # worth a task retry: nothing was changed
    assert api.requests("POST") == [] and api.requests("PATCH") == []


def test_the_wait_polls_on_through_transient_errors(release: ReleaseNamespace, api: MockApi) -> None:
    """A rerun verifying a rolled-out V1, while the Deployment's reads fail twice: it still says rolled out."""
    operator(V1, CONN_ID).execute(context={})  # the real cluster
    serve_release(release, api)
    errors = [api_error(500, "InternalError", ETCD), api_error(429, "TooManyRequests", THROTTLED)]
    # The operator's first read of the Deployment (is it there?) passes; its first two polls fail.
    faults = [Fault(method="GET", resource=DEPLOYMENTS, error=e, skip=1 - i) for i, e in enumerate(errors)]
    api.call(lambda a: a.faults.extend(faults))
    result = operator(V1, MOCK_CONN_ID).execute(context={})
    assert (result["status"], result["changed"]) == (ROLLED_OUT, False)
    deployment_reads = [r for r in api.requests("GET") if r.resource.plural == "deployments"]
    assert len(deployment_reads) == 4  # is it there, two failed polls, the verdict


def test_the_trigger_polls_on_through_transient_errors(release: ReleaseNamespace, api: MockApi) -> None:
    operator(V1, CONN_ID).execute(context={})
    serve_release(release, api)
    errors = [api_error(503, "ServiceUnavailable", "etcd leader changed"), api_error(429, "TooManyRequests", THROTTLED)]
    api.call(lambda a: a.faults.extend(Fault(method="GET", resource=DEPLOYMENTS, error=e) for e in errors))
    trigger = KubernetesRolloutTrigger(
        deployment=NAME, namespace=release.name, deadline=time.time() + 30, kubernetes_conn_id=MOCK_CONN_ID,
        poll_interval=0.05,
    )  # fmt: skip
    assert first_event(trigger) == {"status": "success", "message": ROLLED_OUT, "state": {}}
    assert len(api.requests("GET")) == 3


def test_a_read_refused_for_good_ends_the_wait_at_once(api: MockApi) -> None:
    forbidden = 'deployments.apps "bank-model" is forbidden: User "x" cannot get resource "deployments"'
    api.call(
        lambda a: a.faults.append(
            Fault(method="GET", resource=DEPLOYMENTS, error=api_error(403, "Forbidden", forbidden))
        )
    )
    trigger = KubernetesRolloutTrigger(
        deployment=NAME,
        namespace="bank",
        deadline=time.time() + 30,
        kubernetes_conn_id=MOCK_CONN_ID,
        poll_interval=0.05,
    )
    started = time.monotonic()
    event = first_event(trigger)
    assert time.monotonic() - started < 5
    assert event == {
        "status": "error",
        "message": f"Kubernetes API call failed: read Deployment bank/{NAME}: 403 Forbidden: {forbidden}",
        "state": {},
    }


def test_reads_still_failing_at_the_deadline_leave_the_state_unknown_and_nothing_rolled_back(
    release: ReleaseNamespace, api: MockApi
) -> None:
    """The rollout to V2 goes on in the real cluster while every read of the trigger fails: no verdict, no rollback."""
    operator(V1, CONN_ID).execute(context={})
    op = operator(V2, CONN_ID, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context={})
    api.call(
        lambda a: a.faults.append(
            Fault(method="GET", resource=DEPLOYMENTS, error=api_error(500, "InternalError", ETCD), times=None)
        )
    )
    kwargs = {**deferred.value.trigger.serialize()[1], "kubernetes_conn_id": MOCK_CONN_ID, "deadline": time.time() + 1}
    event = first_event(KubernetesRolloutTrigger(**kwargs))
    assert event == {
        "status": "error",
        "message": f"Kubernetes API call failed: read Deployment {release.name}/{NAME}: "
        f"500 Internal Server Error, reason InternalError: {ETCD} (still failing at the deadline)",
        "state": deferred.value.kwargs,
    }
    with pytest.raises(RuntimeError) as failure:
        op.execute_complete(context={}, event=event, **deferred.value.kwargs)
    assert not isinstance(failure.value, RolloutFailedError)
    assert str(failure.value).endswith(
        f"its state is unknown, nothing was rolled back (the image before this run: {V1})"
    )
    release.wait_rolled_out(V2)  # the real rollout finished meanwhile, and was left alone
