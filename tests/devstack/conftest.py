"""Clients of the session's devstack (tests/conftest.py), and a bucket of the devstack tests' own."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from devstack import Devstack


@pytest.fixture(scope="session")
def s3(ds: Devstack) -> Any:
    return ds.client("s3")


@pytest.fixture(scope="session")
def emr(ds: Devstack) -> Any:
    """An EMR client; the account has the EMR roles RunJobFlow needs (devstack refuses missing ones)."""
    from devstack.airflow_env import seed_emr_roles

    seed_emr_roles(ds.client("iam"))
    return ds.client("emr")


@pytest.fixture(scope="session")
def bucket(s3: Any) -> str:
    name = f"devstack-tests-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name
