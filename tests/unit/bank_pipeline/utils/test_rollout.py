"""The rollout's logic without a cluster: kubectl's verdict, the image patch, how a failure is
described, which manifests are accepted, and what the operator refuses before any API call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bank_pipeline import resources
from bank_pipeline.errors import BadInputError
from bank_pipeline.operators.kubernetes_rollout import KubernetesRolloutOperator
from bank_pipeline.utils.rollout import (
    describe_api_error,
    describe_events,
    describe_pod,
    image_patch,
    is_transient,
    load_manifests,
    newest_replicaset,
    prepare_manifests,
    rollback_step,
    rollout_event,
    rollout_status,
    status_reason,
)

pytestmark = pytest.mark.unit

NAME = "bank-model"
NAMESPACE = "bank"
REPO = "registry.example/bank-model"
V1, V2 = (f"{REPO}@sha256:{c * 64}" for c in "12")


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
        "import sys, bank_pipeline.operators.kubernetes_rollout, bank_pipeline.triggers.rollout_status; "
        f"print([m for m in {clients!r} if m in sys.modules])"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


# -- before any API call --------------------------------------------------------------------------


def operator(image: str, **kwargs: Any) -> KubernetesRolloutOperator:
    return KubernetesRolloutOperator(
        task_id="rollout", image=image, deferrable=False, image_platform="linux/amd64", **kwargs
    )


def test_a_tag_is_refused_before_any_api_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # No connection exists at all: any API call would fail with a different error.
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CLUSTER", raising=False)
    with pytest.raises(BadInputError, match=r"not by a mutable tag: image='registry\.example/bank-model:v2'"):
        operator(f"{REPO}:v2", kubernetes_conn_id="no_such_cluster").execute(context={})
    with pytest.raises(BadInputError, match="not by a mutable tag"):
        operator(f"{REPO}@sha256:abc", kubernetes_conn_id="no_such_cluster").execute(context={})


def test_missing_connection_skips_when_asked_and_fails_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CLUSTER", raising=False)
    op = operator(V1, kubernetes_conn_id="no_such_cluster", skip_without_connection=True)
    with pytest.raises(AirflowSkipException, match="no Kubernetes connection 'no_such_cluster' is configured"):
        op.execute(context={})
    op = operator(V1, kubernetes_conn_id="no_such_cluster")
    with pytest.raises(
        BadInputError, match="no Kubernetes connection 'no_such_cluster' is configured: nothing rolled out"
    ):
        op.execute(context={})


class _ApiException(Exception):
    """What both kubernetes clients' ApiException carry: status, reason, body."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"({status}) {reason}")
        self.status, self.reason, self.body = status, reason, body


@pytest.mark.parametrize(
    ("status", "transient"),
    [(409, True), (429, True), (500, True), (503, True), (403, False), (404, False), (422, False)],
)
def test_which_refusals_are_worth_another_try(status: int, transient: bool) -> None:
    assert is_transient(_ApiException(status, "x", "{}")) is transient


def test_an_answerless_failure_is_transient_and_described_by_its_type() -> None:
    error = ConnectionRefusedError("[Errno 111] Connection refused")
    assert is_transient(error) and status_reason(error) == (None, None)
    assert describe_api_error(error) == "ConnectionRefusedError: [Errno 111] Connection refused"


def test_api_status_is_read_from_the_body() -> None:
    body = '{"kind": "Status", "reason": "AlreadyExists", "message": "deployments.apps \\"x\\" already exists"}'
    error = _ApiException(409, "Conflict", body)
    assert status_reason(error) == (409, "AlreadyExists")
    assert describe_api_error(error) == '409 Conflict, reason AlreadyExists: deployments.apps "x" already exists'
    assert status_reason(_ApiException(502, "Bad Gateway", "<html>proxy</html>")) == (502, None)


# -- after a failed rollout: which ReplicaSet to explain, what to put back ---------------------------


def replicaset(name: str, image: str, rev: int, owner: str = NAME, uid: str = "u1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {"deployment.kubernetes.io/revision": str(rev)},
            "ownerReferences": [{"kind": "Deployment", "name": owner, "uid": uid}],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "serving", "image": image}]}}},
    }


def test_newest_replicaset_is_the_deployments_newest_running_the_image() -> None:
    deployment = {"metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "u1"}, "spec": {}}
    sets = [
        replicaset("old", "img:1", 1),
        replicaset("new", "img:2", 3),
        replicaset("older-new", "img:2", 2),
        replicaset("other-owner", "img:2", 9, owner="another"),
        replicaset("same-name-other-uid", "img:2", 8, uid="u2"),
        {**replicaset("no-container", "img:2", 7), "spec": {"template": {"spec": {"containers": []}}}},
    ]
    assert (newest_replicaset(deployment, sets, "serving", "img:2") or {})["metadata"]["name"] == "new"
    assert newest_replicaset(deployment, sets, "serving", "img:3") is None


@pytest.mark.parametrize(
    ("created", "patched", "previous", "now", "back_to", "said"),
    [
        (True, False, None, "img:2", None, "Nothing to roll back to: this run created the Deployment."),
        (False, False, "img:2", "img:2", None, "Nothing rolled back: the Deployment already ran img:2 before this run"),
        (False, True, None, "img:2", None, "Nothing rolled back: the Deployment already ran img:2"),
        (False, True, "img:1", "img:9", None, "Not rolled back: the image is now img:9, no longer this run's"),
        (False, True, "img:1", "img:2", "img:1", "roll back to img:1"),
    ],
)
def test_rollback_step(
    created: bool, patched: bool, previous: str | None, now: str, back_to: str | None, said: str
) -> None:
    found = rollback_step(created=created, patched=patched, previous=previous, image="img:2", now=now)
    assert found[0] == back_to and found[1].startswith(said)
