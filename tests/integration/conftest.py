"""Fixtures of the integration tests under more than one package directory.

Clients of the session's devstack (tests/conftest.py) for the devstack and operator tests, and a bucket
of their own; the features job run once per session on bank-full.csv, and the model build on it, for
the model tests (bank_ml) and the model build's own (bank_spark). The SparkSession is tests/conftest.py's.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from devstack import Devstack
from devstack.aws.infra import Account
from tests.support.devstack_helpers import network_of
from tests.support.model_build import FeatureRun, TrainRun, run_train
from tests.support.paths import BANK_FULL_CSV as BANK_FULL

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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


@pytest.fixture(scope="session")
def bucket(s3: Any) -> str:
    name = f"devstack-tests-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def full_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> FeatureRun:
    """The real Spark job on bank-full.csv (about 20 s), committed under a tmp dir."""
    from bank_spark.features_job import main

    output = tmp_path_factory.mktemp("features") / "run=tests-ml"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--input", str(BANK_FULL), "--output", str(output), "--run-id", "tests-ml"])
    assert rc == 0, err.getvalue()[-2000:]
    return FeatureRun(output=output, manifest=json.loads((output / "_manifest.json").read_text()))


@pytest.fixture(scope="session")
def train_run(full_run: FeatureRun, tmp_path_factory: pytest.TempPathFactory) -> TrainRun:
    """The model build on bank-full's features, with nothing live yet (about 15 s)."""
    root = tmp_path_factory.mktemp("train")
    run = run_train(full_run.output, root / "registry", root / "candidate.json")
    assert run.exit_code == 0, run.stderr[-3000:]
    return run
