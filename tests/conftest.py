"""Fixtures shared across test directories, and the rules that every test says what kind it is and sits with its kind.

Markers (pyproject.toml): ``unit`` (in-process or short subprocesses, no servers, no Spark:
``make check`` runs these), ``integration`` (real programs: devstack, Spark, a server, the
control plane), ``e2e`` (Airflow running a DAG on devstack). Each test module sets one
with ``pytestmark``; a test without one is a collection error, and so is a test outside the
directory of its kind: tests/unit, tests/integration or tests/e2e, each mirroring the source
packages (docs/testing.md).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from devstack import Devstack, procs, spark_local
from devstack.aws.infra import Account, provision
from devstack.containers import lambda_containers, podman
from tests.support.handler_import import import_handler
from tests.support.paths import BANK_CSV

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from bank_ml.release import Candidate
    from devstack.kube import KubeCluster

KINDS = ("unit", "integration", "e2e")

# The kind-directory rule has a test of its own (tests/unit/test_conftest.py), which runs pytest in pytest.
pytest_plugins = ("pytester",)

# py4j logs "Closing down clientserver connection" from __del__ at interpreter exit,
# after pytest has closed the captured streams: a spurious "--- Logging error ---".
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """One local[2] session for the whole run: two shuffle partitions, no UI, scratch in a tmp dir."""
    from pyspark.sql import SparkSession  # only the tests that ask for Spark pay for it

    # Python workers run Spark's default "python3" unless told otherwise, which need not
    # have this venv's pandas or onnxruntime; read when the session starts the JVM.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    scratch = tmp_path_factory.mktemp("spark")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Many small jobs: the quick compiler alone took 28 % less CPU for the Spark job tests, as long.
        .config("spark.driver.extraJavaOptions", spark_local.SHORT_JOB_JVM)
        .config("spark.sql.warehouse.dir", str(scratch / "spark-warehouse"))
        .config("spark.local.dir", str(scratch / "local"))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


# Session fixtures too costly to build once per xdist worker, and the test paths that use them:
# under make test's two workers (--dist loadgroup) each group runs on one worker, in file order.
# The e2e Airflow (its metadata DB, the lake seeded, a bank-full features DAG run), the Spark
# job's bank-full run with the model build on it, and `make up`'s whole stack. Every other module
# is a group of its own.
SHARED_GROUPS = {
    "airflow": ("tests/e2e/bank_pipeline/", "tests/e2e/dags/", "tests/e2e/devstack/harness/test_airflow_env.py"),
    "full_run": ("tests/integration/bank_ml/", "tests/integration/bank_spark/test_train_job.py"),
    "stack_up": ("tests/e2e/devstack/harness/test_stack.py", "tests/e2e/devstack/harness/test_ui.py"),
}


def xdist_group(nodeid: str) -> str:
    """The worker group of a test: the ``SHARED_GROUPS`` entry its module is in, else its module."""
    module = nodeid.split("::", 1)[0]
    for group, paths in SHARED_GROUPS.items():
        if any(module == path or (path.endswith("/") and module.startswith(path)) for path in paths):
            return group
    return module


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` by ``xdist_group`` (pytest-xdist 3.8 cannot read xdist_group marks on pytest 9's node ids)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test is marked unit, integration or e2e (exactly one), and lives under tests/<its kind>/.
    A test using a fixture of ``SHARED_GROUPS`` is in its group.
    """
    unmarked = [item.nodeid for item in items if sum(item.get_closest_marker(k) is not None for k in KINDS) != 1]
    if unmarked:
        raise pytest.UsageError(
            "tests need exactly one of the markers "
            + ", ".join(KINDS)
            + " (pytestmark = pytest.mark.<kind>): "
            + ", ".join(unmarked[:10])
        )
    misplaced = misplaced_tests(items, config.rootpath / "tests")
    if misplaced:
        raise pytest.UsageError(
            "tests live in the directory of their kind marker (tests/unit, tests/integration, tests/e2e): "
            + ", ".join(misplaced[:10])
        )
    strays = ungrouped_tests(items)
    if strays:
        raise pytest.UsageError(
            "tests using a shared session fixture must be in its group (tests/conftest.py SHARED_GROUPS), "
            "or make test's workers would each build it: " + ", ".join(strays[:10])
        )


def ungrouped_tests(items: list[pytest.Item]) -> list[str]:
    """The tests that use a fixture of ``SHARED_GROUPS`` without being in its group, each with the fixture."""
    strays = []
    for item in items:
        used = [name for name in SHARED_GROUPS if name in getattr(item, "fixturenames", ())]
        if used and xdist_group(item.nodeid) not in used:
            strays.append(f"{item.nodeid} (uses {used[0]})")
    return strays


def misplaced_tests(items: list[pytest.Item], tests: Path) -> list[str]:
    """The tests under ``tests`` whose kind marker is not their top directory there, each with its marker."""
    misplaced = []
    for item in items:
        if not item.path.is_relative_to(tests):
            continue  # not this suite's (a test file named on the command line from elsewhere)
        (kind,) = (k for k in KINDS if item.get_closest_marker(k) is not None)
        if item.path.relative_to(tests).parts[0] != kind:
            misplaced.append(f"{item.nodeid} (marked {kind})")
    return misplaced


@pytest.fixture(scope="session", autouse=True)
def session_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """TMPDIR of this session (of this xdist worker) and of every program it starts.

    Tests that check nothing was left in the temp dir then see only their own session's
    files, not those a test on the other worker has open at that moment.
    """
    path = tmp_path_factory.mktemp("tmpdir")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(path))
        patch.setattr(tempfile, "tempdir", None)  # gettempdir() caches its answer: ask again
        yield path


@pytest.fixture(scope="session")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devstack]:
    """The one devstack server (a subprocess) of a test session: moto, EMR steps, the registry."""
    with Devstack(state_dir=tmp_path_factory.mktemp("devstack"), port=0) as stack:
        pid = stack.pid
        yield stack
    # __exit__ already raises if anything survived; say it plainly here too.
    assert pid is not None and procs.session_pids(pid) == []
    # Its Lambda containers went with it.
    if podman.unavailable_reason() is None:
        assert podman.containers(lambda_containers.label_for(stack.state_dir)) == []


@pytest.fixture(scope="session")
def account(ds: Devstack) -> Account:
    """infra/bank-ml.cfn.yaml deployed on the session's devstack, and the Airflow workers' user (its key)."""
    return provision(ds)


@pytest.fixture(scope="session")
def s3(ds: Devstack) -> Any:
    """An S3 client of the session's devstack."""
    return ds.client("s3")


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """The one local Kubernetes control plane of a test session (devstack.kube: etcd, kube-apiserver,
    controller manager, scheduler, kwok with 2 Nodes, metrics-server; about 7 s to start). Tests share
    it, each in namespaces of its own. Without the binaries it fails, saying ``make kube``."""
    from devstack import kube

    with kube.KubeCluster(tmp_path_factory.mktemp("kube"), nodes=2, metrics=True) as cluster:
        pids = cluster.pids()
        yield cluster
    assert [name for name, pid in pids.items() if procs.alive(pid)] == []


@pytest.fixture(scope="session")
def small_candidate() -> Candidate:
    """A small real model for the serving tests, trained once on bank.csv (about 1 s, no Spark).

    Its features come from serving's own derivation (tests/integration/bank_serving/test_features.py
    holds it equal to the Spark job's).
    """
    from bank_ml import data, release  # only the tests that ask for the model pay for the ML stack

    return release.train_candidate(data.features_from_csv(BANK_CSV))


@pytest.fixture(scope="session")
def model_dir(small_candidate: Candidate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model's directory: model.onnx + model.json, as the image holds them."""
    from bank_ml import artifacts

    directory = tmp_path_factory.mktemp("model")
    artifacts.write_model_files(directory, small_candidate.onnx_bytes, small_candidate.threshold)
    return directory


@pytest.fixture(scope="session")
def handler(model_dir: Path) -> ModuleType:
    """The Lambda handler module over the small model (its init loaded it)."""
    return import_handler(model_dir)
