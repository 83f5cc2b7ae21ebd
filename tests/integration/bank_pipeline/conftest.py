"""Per test: a namespace of the session's control plane with the release identity in it (``release``), with
an Airflow connection to it. The kmock API (``api``) is in operators/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack import kube
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
