"""Clients of the session's devstack (tests/conftest.py), and a bucket of the devstack tests' own."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from devstack import Devstack
from devstack.aws.infra import Account, cluster_network


@pytest.fixture(scope="session")
def s3(ds: Devstack) -> Any:
    return ds.client("s3")


@pytest.fixture(scope="session")
def emr(ds: Devstack, account: Account) -> Any:
    """An EMR client; the template made the EMR roles RunJobFlow needs (devstack refuses missing ones).

    Its RunJobFlow gets the template's subnet and security groups where the test gives none, as
    the DAGs get them from settings (emr.account_defaults): the service role's AmazonEMRServicePolicy_v2
    launches only into that tagged network. ``ds.client("emr")`` is a client without them.
    """
    client = ds.client("emr")
    network = network_of(account)

    def add_network(params: dict[str, Any], **_: Any) -> None:
        instances = params.setdefault("Instances", {})
        for key, value in network.items():
            instances.setdefault(key, value)

    client.meta.events.register("provide-client-params.emr.RunJobFlow", add_network)
    return client


def network_of(account: Account) -> dict[str, str]:
    """RunJobFlow's Instances keys of the template's network (its outputs)."""
    return cluster_network(account.outputs)


@pytest.fixture(scope="session")
def bucket(s3: Any) -> str:
    name = f"devstack-tests-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name
