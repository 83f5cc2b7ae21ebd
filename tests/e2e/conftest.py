"""Fixtures for end-to-end runs: the session's devstack and account (tests/conftest.py) and one SQLite Airflow.

The Airflow holds the worker user's credentials (exactly the template's worker
policy): every DAG run here is also a check of that policy. The DAG runs' own
fixtures are in dags/conftest.py.
"""

from __future__ import annotations

import pytest

from devstack import Devstack
from devstack.aws.infra import Account
from devstack.harness.airflow_env import (
    REPO,
    airflow_env,
    ensure_db,
    seed_lake,
    seed_release,
    seed_wheelhouse,
)


@pytest.fixture(scope="session")
def airflow(ds: Devstack, account: Account, s3, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a migrated SQLite Airflow pointing at devstack as the worker user, with the raw CSV in the lake."""
    env = airflow_env(tmp_path_factory.mktemp("airflow_home"), ds.env(), account)
    ensure_db(env)
    seed_lake(s3, REPO / "data" / "bank" / "bank-full.csv")
    seed_wheelhouse(ds.env())  # a deploy step: `python -m bank_pipeline.wheelhouse`
    return env


@pytest.fixture(scope="session")
def release_ready(ds: Devstack, airflow) -> dict[str, str]:
    """The serving base image, which CI provides on AWS (the template made the Lambda role)."""
    seed_release(ds.registry_url)
    return airflow
