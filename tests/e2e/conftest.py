"""Fixtures for end-to-end runs: one devstack and one SQLite Airflow per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import Devstack
from devstack.airflow_env import REPO, airflow_env, ensure_db, seed_lake


@pytest.fixture(scope="session")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devstack]:
    with Devstack(state_dir=tmp_path_factory.mktemp("devstack"), port=0) as ds:
        yield ds


@pytest.fixture(scope="session")
def s3(devstack: Devstack):
    return devstack.client("s3")


@pytest.fixture(scope="session")
def emr(devstack: Devstack):
    return devstack.client("emr")


@pytest.fixture(scope="session")
def airflow(devstack: Devstack, s3, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a migrated SQLite Airflow pointing at devstack, with the raw CSV in the lake."""
    env = airflow_env(tmp_path_factory.mktemp("airflow_home"), devstack.env())
    ensure_db(env)
    seed_lake(s3, REPO / "data" / "bank" / "bank-full.csv")
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "runs"
