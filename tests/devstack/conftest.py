"""One real devstack server (a subprocess) for the whole devstack test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devstack import Devstack, procs


@pytest.fixture(scope="session")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devstack]:
    with Devstack(state_dir=tmp_path_factory.mktemp("devstack"), port=0) as stack:
        pid = stack.pid
        yield stack
    # __exit__ already raises if anything survived; say it plainly here too.
    assert pid is not None and procs.session_pids(pid) == []


@pytest.fixture(scope="session")
def s3(ds: Devstack) -> Any:
    return ds.client("s3")


@pytest.fixture(scope="session")
def emr(ds: Devstack) -> Any:
    return ds.client("emr")


@pytest.fixture(scope="session")
def bucket(s3: Any) -> str:
    name = f"devstack-tests-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name
