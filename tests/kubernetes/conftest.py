"""A Kubernetes API mock per test, and an Airflow connection that points KubernetesHook at it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.kubernetes.kmock_cluster import CONN_ID, NAMESPACE, MockApi


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockApi]:
    """kmock on a free port, and connection ``k8s_mock`` for it (kube_config in the extra, namespace bank).

    The hook (sync and async) writes the kube_config extra to a temporary file and loads it
    with the kubernetes client's own loader: a real cluster differs only in that kubeconfig.
    """
    mock = MockApi()
    connection = {
        "conn_type": "kubernetes",
        "extra": {"kube_config": mock.kubeconfig(NAMESPACE), "namespace": NAMESPACE},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    yield mock
    mock.close()
