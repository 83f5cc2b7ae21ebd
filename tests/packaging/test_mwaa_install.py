"""The bundle installs on every MWAA Airflow 3 as MWAA installs it, and its DAGs load there.

MWAA (tests/data/mwaa/README.md, from aws/amazon-mwaa-docker-images) installs a
requirements.txt without a ``-c`` line with::

    pip3 install --constraint mwaa_essential_constraints.txt -r requirements.txt -c airflow_constraints.txt

into an image that already holds Airflow and MWAA's own packages, installed under the same
constraints. Per MWAA version, here:

- resolve: requirements.txt with both constraint files for Python 3.12, MWAA's Python
  (``uv pip compile --python-version 3.12``; needs the package index);
- install: a fresh venv on this machine's Python 3.11 (there is no 3.12 here) receives the
  image's packages, then the bundle (``make mwaa``'s requirements.txt naming the wheel inside
  the unpacked plugins.zip) exactly as MWAA installs it; a DagBag then loads the DAG files,
  the plugin loads, and every operator, sensor, trigger and util module imports.

The image's packages are resolved once per constraint files and Python, into a lock under
the project's cache dir (devstack.cache); each run installs that lock (seconds, from uv's cache)
and then the bundle afresh. uv stands in for pip (same constraint semantics: constraints only
bound versions, installed packages that satisfy them stay); BANK_MWAA_INSTALLER=pip runs
MWAA's pip command itself.
"""

from __future__ import annotations

import ast
import os
import re
import time
from pathlib import Path

import pytest

from devstack.deploy import mwaa_bundle, runtime_requirements
from devstack.harness.mwaa_env import (
    MWAA_HAS_CONSTRAINTS,
    UV,
    VERSIONS,
    build_bundle,
    constraint_files,
    image_packages,
    install_bundle,
    installed,
    local_python,
    make_image,
    mwaa_install_args,
    pins,
)
from devstack.harness.mwaa_env import run as run_checked
from tests.support.dag_probe import assert_the_bundle_loads, probe
from tests.support.paths import REPO

# MWAA runs Python 3.12 on Amazon Linux 2023 (glibc 2.34), x86_64.
MWAA_PYTHON = "3.12"
MWAA_PLATFORM = "x86_64-manylinux_2_34"
PROVIDERS = ("apache-airflow-providers-amazon", "apache-airflow-providers-cncf-kubernetes")


def run(argv: list[str | Path], **kwargs: object) -> None:
    """Run a command; its failure fails the test with its output."""
    try:
        run_checked(argv, **kwargs)
    except RuntimeError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``make mwaa``'s output, with plugins.zip unpacked where requirements.txt says the wheel is."""
    return build_bundle(tmp_path_factory.mktemp("mwaa") / "build")


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


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", VERSIONS)
def test_requirements_resolve_for_mwaas_python_against_its_constraints(version: str, tmp_path: Path) -> None:
    essential, airflow = constraint_files(version)
    image = tmp_path / "image.in"
    image.write_text("\n".join(image_packages(version)) + "\n")
    out = tmp_path / "resolved.txt"
    run([UV, "pip", "compile", "--quiet", "--no-header", "--python-version", MWAA_PYTHON, "--python-platform",
         MWAA_PLATFORM, "-c", essential, "-c", airflow, REPO / "requirements.txt", image, "-o", out])  # fmt: skip
    resolved, forced = pins(out.read_text()), pins(airflow.read_text())
    assert resolved["apache-airflow"] == version
    assert {p: resolved[p] for p in PROVIDERS} == {p: forced[p] for p in PROVIDERS}
    for requirement in runtime_requirements():
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]).lower()
        assert name in resolved, requirement


@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", VERSIONS)
def test_the_bundle_installs_as_mwaa_installs_it_and_every_dag_loads(
    version: str, bundle: dict[str, Path], tmp_path: Path
) -> None:
    python = local_python()
    if python is None:
        pytest.skip("no python3.11 on this machine")
    timings = {}
    started = time.monotonic()
    venv = tmp_path / "venv"
    image = make_image(venv, version, python)
    timings["image"] = time.monotonic() - started
    assert image["apache-airflow"] == version

    started = time.monotonic()
    args = mwaa_install_args(bundle["bundle"] / "requirements.txt", version)
    if os.environ.get("BANK_MWAA_INSTALLER") == "pip":
        run([UV, "pip", "install", "--quiet", "--python", venv / "bin" / "python", "pip"])
        run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", *args])
    else:
        install_bundle(venv, bundle["bundle"] / "requirements.txt", version)
    timings["bundle"] = time.monotonic() - started
    after = installed(venv)
    assert {n: (v, after.get(n)) for n, v in image.items() if after.get(n) != v} == {}  # the image is untouched
    assert "bank-marketing-release" in after

    started = time.monotonic()
    out = probe(venv, bundle["bundle"] / "dags", bundle["plugins"], tmp_path, PROVIDERS)
    timings["dags"] = time.monotonic() - started
    print(f"MWAA {version}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), out["versions"])
    forced = pins(constraint_files(version)[1].read_text())
    assert out["versions"] == {"apache-airflow": version, **{p: forced[p] for p in PROVIDERS}}
    assert_the_bundle_loads(out)
