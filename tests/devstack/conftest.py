"""Clients of the session's devstack (tests/conftest.py), and a bucket of the devstack tests' own."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from devstack import Devstack
from devstack.infra import Account


@pytest.fixture(scope="session")
def s3(ds: Devstack) -> Any:
    return ds.client("s3")


@pytest.fixture(scope="session")
def emr(ds: Devstack, account: Account) -> Any:
    """An EMR client; the template made the EMR roles RunJobFlow needs (devstack refuses missing ones)."""
    return ds.client("emr")


@pytest.fixture(scope="session")
def bucket(s3: Any) -> str:
    name = f"devstack-tests-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name
