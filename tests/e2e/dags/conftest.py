"""Fixtures of the DAG runs: EMR as the runs left it, one features run shared by the DAGs' tests, a registered model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from devstack import Devstack
from devstack.harness.airflow_env import (
    LAKE_BUCKET,
    REPO,
    DagRunResult,
    run_dag,
)


@pytest.fixture(scope="session")
def emr(ds: Devstack):
    return ds.client("emr")


@pytest.fixture(scope="session")
def cluster_of(emr) -> Callable[[str], dict]:
    """A lookup of the cluster a DAG run created, by its airflow:run_id tag (emr.job_flow_overrides sets it)."""

    def find(run_id: str) -> dict:
        for summary in emr.list_clusters()["Clusters"]:
            cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            if {"Key": "airflow:run_id", "Value": run_id} in cluster.get("Tags", []):
                return cluster
        raise AssertionError(f"no cluster tagged with run {run_id}")

    return find


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def full_features_run(airflow, tmp_path_factory: pytest.TempPathFactory) -> DagRunResult:
    """One bank_features_emr run on bank-full, shared by the features and the release tests."""
    return run_dag(airflow, "bank_features_emr", {}, tmp_path_factory.mktemp("features_run"))


@pytest.fixture(scope="session")
def registered_model(airflow, s3, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small real model (bank.csv, seconds) in the lake's registry, as a release registers one.

    live.json is left alone (the release tests own it); returns the version.
    """
    import json

    from bank_ml import artifacts, data, drift, release

    table = data.features_from_csv(REPO / "data" / "bank" / "bank.csv")
    candidate = release.train_candidate(table)
    directory = tmp_path_factory.mktemp("registered_model")
    version = artifacts.write_model_files(directory, candidate.onnx_bytes, candidate.threshold)
    (directory / "profile.json").write_text(json.dumps(drift.reference_profile(table, candidate.probabilities)))
    for name in ("model.onnx", "model.json", "profile.json"):
        s3.upload_file(str(directory / name), LAKE_BUCKET, f"models/bank/{version}/{name}")
    return version
