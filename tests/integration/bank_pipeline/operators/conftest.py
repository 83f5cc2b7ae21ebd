"""Per test: a kmock API that answers errors on demand (``api``), with an Airflow connection to it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.kmock_api import CONN_ID as MOCK_CONN_ID
from tests.support.kmock_api import MockApi


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
