"""The layers hold: serving <- ml | jobs <- pipeline <- dags; devstack uses only the image library;
nothing edits sys.path; no two project modules share a name."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from devstack.deploy import runtime_requirements
from tests.support.paths import DAGS, REPO

pytestmark = pytest.mark.unit

# Everything with Python the project owns (the venv, tools and build output excluded).
SOURCE_ROOTS = ("serving", "plugins", "spark_jobs", "dags", "devstack", "bench", "tests")
DAG_IMPORTS_ALLOWED = ("__future__", "datetime", "airflow", "bank_pipeline")


def python_files(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (REPO / root).rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_the_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "added", "contract", "chain"),
    [
        # Through a package of ours whose module imports pandas only inside a function.
        ("settings.py", "from bank_ml.data import to_xy", "workers only orchestrate", "bank_pipeline.settings -> bank_ml.data"),
        # An ML library imported lazily, inside a task body.
        ("settings.py", "def rows():\n    import pyarrow.parquet\n", "workers only orchestrate", "bank_pipeline.settings -> pyarrow (l."),
        # A plan reaching for a hook: the calls belong to the operator.
        ("plans/lambda_release.py", "def calls():\n    from bank_pipeline.hooks import aws_lambda\n", "plans are pure",
         "bank_pipeline.plans.lambda_release -> bank_pipeline.hooks.aws_lambda"),
        # The deploy command reaching Airflow through our error types.
        ("wheelhouse.py", "def fail():\n    from bank_pipeline.errors import BadInputError\n", "the wheelhouse deploy command",
         "bank_pipeline.wheelhouse -> bank_pipeline.errors"),
    ],
)  # fmt: skip
def test_the_contracts_see_every_way_around_them(
    tmp_path: Path, module: str, added: str, contract: str, chain: str
) -> None:
    """A module reaching what its contract forbids breaks it (the contracts are not decorative)."""
    import shutil

    for root in ("plugins", "serving", "spark_jobs", "devstack"):
        shutil.copytree(REPO / root, tmp_path / root, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "plugins" / "bank_pipeline" / module).open("a") as f:
        f.write("\n" + added + "\n")
    env = {"PYTHONPATH": os.pathsep.join(str(tmp_path / r) for r in ("plugins", "serving", "spark_jobs", "."))}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:]
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 1 and broken[0].startswith(contract), result.stdout[-3000:]
    assert chain in result.stdout


@pytest.mark.parametrize("dag_file", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dags_only_wire(dag_file: Path) -> None:
    """A DAG file imports Airflow and bank_pipeline, nothing else of the project or the ML stack."""
    outside = {m for m in imported_modules(dag_file) if m.split(".")[0] not in DAG_IMPORTS_ALLOWED}
    assert outside == set(), f"{dag_file.name} imports {sorted(outside)}"


def edits_sys_path(path: Path) -> list[int]:
    """Lines of ``path`` that change sys.path (assign, augment, or call a mutating method on it)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        target = None
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                target = t.value if isinstance(t, ast.Subscript) else t
                if ast.unparse(target) == "sys.path":
                    lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if ast.unparse(node.func.value) == "sys.path" and node.func.attr in (
                "insert",
                "append",
                "extend",
                "remove",
            ):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_code_edits_sys_path() -> None:
    offenders = {str(p.relative_to(REPO)): lines for p in python_files(*SOURCE_ROOTS) if (lines := edits_sys_path(p))}
    assert offenders == {}


def test_the_sys_path_check_sees_every_kind_of_edit(tmp_path: Path) -> None:
    # The four kinds of edit live in a text file, so that no code of the repository holds one.
    bad = tmp_path / "bad.py"
    bad.write_text((REPO / "tests" / "data" / "sys_path_edits.txt").read_text())
    assert edits_sys_path(bad) == [2, 3, 4, 5]


def test_no_two_package_modules_share_a_name() -> None:
    """Each installed package's modules have distinct qualified names, and no top-level name is taken twice."""
    tops: dict[str, Path] = {}
    for root in ("serving", "plugins", "spark_jobs"):
        for child in sorted((REPO / root).iterdir()):
            if child.name.startswith((".", "__")):
                continue
            name = child.stem if child.suffix == ".py" else child.name
            if child.is_dir() or child.suffix == ".py":
                assert name not in tops, f"{name} is both {tops[name]} and {child}"
                tops[name] = child
    assert set(tops) == {"bank_serving", "bank_ml", "bank_pipeline", "bank_pipeline_plugin", "bank_spark"}


def test_no_two_product_modules_share_a_file_name() -> None:
    """A file name says which module it is: operators/emr.py beside sensors/emr.py sends a reader (and a
    traceback) to the wrong file. Package markers and the DAG files' own names are the exceptions."""
    seen: dict[str, list[str]] = {}
    for path in python_files("serving", "plugins", "spark_jobs", "dags"):
        if path.name not in ("__init__.py", "__main__.py"):
            seen.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_runtime_requirements_are_pyprojects_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert runtime_requirements() == project["dependencies"]
    assert not any(r.startswith(("apache-airflow==", "apache-airflow>", "moto", "pyspark", "pytest")) for r in
                   runtime_requirements())  # fmt: skip
