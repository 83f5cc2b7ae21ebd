"""The fast half of the MWAA install test: MWAA's constraint files, what it reads in requirements.txt, and the
imports Airflow 3.0.6 lacks. The installs themselves are tested in tests/integration/packaging/test_mwaa_install.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from devstack.deploy import mwaa_bundle
from devstack.harness.mwaa_env import MWAA_HAS_CONSTRAINTS, VERSIONS, constraint_files, mwaa_install_args, pins
from tests.support.paths import REPO

PROVIDERS = ("apache-airflow-providers-amazon", "apache-airflow-providers-cncf-kubernetes")


@pytest.mark.unit
@pytest.mark.parametrize("version", VERSIONS)
def test_the_constraint_files_are_mwaas_for_the_version(version: str) -> None:
    essential, airflow = (pins(path.read_text()) for path in constraint_files(version))
    assert essential["apache-airflow"] == version  # MWAA never lets requirements move Airflow
    assert set(PROVIDERS) <= set(airflow)  # ...and forces the providers' versions through Airflow's file
    assert all(airflow.get(name, pin) == pin for name, pin in essential.items())


@pytest.mark.unit
def test_mwaa_forces_airflows_constraints_on_our_requirements(tmp_path: Path) -> None:
    """requirements.txt has no line MWAA reads as "has constraints": MWAA adds Airflow's file."""
    wheel = tmp_path / "bank_marketing_release-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    requirements = mwaa_bundle(wheel, tmp_path / "out") / "requirements.txt"
    argv = mwaa_install_args(requirements, "3.3.1")
    essential, airflow = constraint_files("3.3.1")
    assert argv == ["--constraint", str(essential), "-r", str(requirements), "-c", str(airflow)]
    assert not any(MWAA_HAS_CONSTRAINTS.search(line) for line in (REPO / "requirements.txt").read_text().splitlines())


# What Airflow 3.0.6's task SDK (1.0.6) exports, and modules it and common-compat 1.7.3 lack:
# the fast half of the 3.0.6 install test. bank_pipeline/utils/compat.py has the moved names.
SDK_3_0 = {
    "airflow.sdk": {
        "__version__", "Asset", "AssetAlias", "AssetAll", "AssetAny", "AssetWatcher", "BaseNotifier", "BaseOperator",
        "BaseOperatorLink", "BaseSensorOperator", "Connection", "Context", "DAG", "EdgeModifier", "Label", "Metadata",
        "ObjectStoragePath", "Param", "PokeReturnValue", "TaskGroup", "Variable", "XComArg", "asset", "chain",
        "chain_linear", "cross_downstream", "dag", "get_current_context", "get_parsing_context", "literal", "setup",
        "task", "task_group", "teardown",
    },
    "airflow.sdk.exceptions": {"AirflowRuntimeError", "ErrorType", "XComForMappingNotPushed", "UnmappableXComTypePushed"},
    "airflow.sdk.types": {"DagRunProtocol", "RuntimeTaskInstanceProtocol", "OutletEventAccessorProtocol",
                          "OutletEventAccessorsProtocol"},
}  # fmt: skip
ABSENT_IN_3_0 = ("airflow.providers.common.compat.sdk", "airflow.sdk.configuration", "airflow.sdk.timezone")
COMPAT = REPO / "plugins" / "bank_pipeline" / "utils" / "compat.py"


def runtime_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every ``from X import name`` that runs (``if TYPE_CHECKING:`` blocks skipped)."""
    found: list[tuple[int, str, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) == "TYPE_CHECKING":
                for stmt in child.orelse:
                    visit(stmt)
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.extend((child.lineno, child.module, alias.name) for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


@pytest.mark.unit
def test_no_runtime_import_is_missing_on_airflow_3_0() -> None:
    files = [p for root in ("plugins", "dags") for p in sorted((REPO / root).rglob("*.py")) if p != COMPAT]
    missing = [
        f"{path.relative_to(REPO)}:{line}: from {module} import {name}"
        for path in files
        for line, module, name in runtime_imports(path)
        if module.startswith(ABSENT_IN_3_0) or (module in SDK_3_0 and name not in SDK_3_0[module])
    ]
    assert missing == [], "absent on MWAA's Airflow 3.0.6; import it from bank_pipeline.utils.compat:\n" + "\n".join(
        missing
    )
