"""Parsing a DAG file imports no data or ML library and creates no AWS client.

The DAG processor parses every file again and again; a top-level `import pandas`
or `boto3.client(...)` costs each parse seconds or a network round trip. Each
file loads in a process of its own forked after `import airflow.sdk`, as the DAG
processor parses a file (bench/parse_bench.py's driver), which reports only what
the file adds to the SDK. A file that imports pandas and makes a client loads in
the same run, first: the detector sees it, and the files after it see none of it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.paths import REPO  # noqa: E402

pytestmark = pytest.mark.unit

FORBIDDEN = ("pandas", "numpy", "sklearn", "pyspark", "pyarrow", "onnxruntime", "matplotlib")


def _load_parse_bench() -> ModuleType:
    """bench/ is scripts, not a package: load the benchmark module from its file."""
    spec = importlib.util.spec_from_file_location("parse_bench", REPO / "bench" / "parse_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


parse_bench = _load_parse_bench()
assert set(FORBIDDEN) <= set(parse_bench.HEAVY)  # the driver only reports modules it is asked about


@pytest.fixture(scope="module")
def bad_dag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bad = tmp_path_factory.mktemp("bad_dag") / "bad_dag.py"
    bad.write_text('import boto3\nimport pandas\n\nCLIENT = boto3.client("s3", region_name="us-east-1")\n')
    return bad


@pytest.fixture(scope="module")
def loads(bad_dag: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Any]:
    # No pycache prefix: the venv's compiled bytecode, nothing written under build/.
    env = parse_bench.parse_env(tmp_path_factory.mktemp("airflow_home"), pycache_prefix=None)
    return parse_bench.load_forked([bad_dag, *parse_bench.DAG_FILES], env)


@pytest.mark.parametrize("dag_file", parse_bench.DAG_FILES, ids=lambda p: p.name)
def test_parse_imports_nothing_heavy_and_creates_no_client(dag_file: Path, loads: dict[Path, Any]):
    load = loads[dag_file]
    assert not set(load.heavy_added) & set(FORBIDDEN), load.heavy_added
    assert load.clients == ()


def test_detector_sees_a_heavy_import_and_a_client(bad_dag: Path, loads: dict[Path, Any]):
    load = loads[bad_dag]
    assert "pandas" in load.heavy_added
    assert "pandas" not in load.heavy_after_sdk
    assert load.clients == ("s3",)
    assert list(loads) == [bad_dag, *parse_bench.DAG_FILES]  # every file reported, after the bad one too
