"""Per test: a namespace of the session's control plane with the release identity in it (``release``),
and a kmock API that answers errors on demand (``api``), each with an Airflow connection."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devstack import kube
from tests.support.kmock_api import CONN_ID as MOCK_CONN_ID
from tests.support.kmock_api import MockApi
from tests.support.release_ns import CONN_ID, ReleaseNamespace


@pytest.fixture
def release(
    kube_cluster: kube.KubeCluster, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ReleaseNamespace]:
    """A fresh namespace with the package's RBAC applied, and connection ``k8s_release`` holding a
    kubeconfig with its ServiceAccount's token (the cncf provider's hooks load it like any other)."""
    ns = ReleaseNamespace.for_test(kube_cluster, request.node.name)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", ns.connection())
    yield ns
    ns.delete()


@pytest.fixture
def api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[MockApi]:
    """kmock on a free port, and connection ``k8s_mock`` for it (kube_config in the extra; the namespace
    of the test's ``release`` namespace if it has one, else "bank")."""
    namespace = request.getfixturevalue("release").name if "release" in request.fixturenames else "bank"
    mock = MockApi()
    connection = {
        "conn_type": "kubernetes",
        "extra": {"kube_config": mock.kubeconfig(namespace), "namespace": namespace},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{MOCK_CONN_ID.upper()}", json.dumps(connection))
    yield mock
    mock.close()
