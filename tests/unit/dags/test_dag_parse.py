"""Parsing a DAG file imports no data or ML library and creates no AWS client.

The DAG processor parses every file again and again; a top-level `import pandas`
or `boto3.client(...)` costs each parse seconds or a network round trip. Each
file loads in a fresh interpreter through bench/parse_bench.py's driver, which
reports only what the file adds to a bare `import airflow.sdk`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # No pycache prefix: the venv's compiled bytecode, nothing written under build/.
    return parse_bench.parse_env(tmp_path, pycache_prefix=None)


@pytest.mark.parametrize("dag_file", parse_bench.DAG_FILES, ids=lambda p: p.name)
def test_parse_imports_nothing_heavy_and_creates_no_client(dag_file: Path, env: dict[str, str]):
    load = parse_bench.load_fresh(dag_file, env)
    assert not set(load.heavy_added) & set(FORBIDDEN), load.heavy_added
    assert load.clients == ()


def test_detector_sees_a_heavy_import_and_a_client(tmp_path: Path, env: dict[str, str]):
    bad = tmp_path / "bad_dag.py"
    bad.write_text('import boto3\nimport pandas\n\nCLIENT = boto3.client("s3", region_name="us-east-1")\n')
    load = parse_bench.load_fresh(bad, env)
    assert "pandas" in load.heavy_added
    assert "pandas" not in load.heavy_after_sdk
    assert load.clients == ("s3",)
