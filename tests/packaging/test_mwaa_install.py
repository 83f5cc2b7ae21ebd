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
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from devstack.cache import cache_dir
from devstack.deploy import mwaa_bundle, runtime_requirements
from tests.paths import REPO

UV = Path(sys.executable).parent / "uv"
MWAA_DATA = REPO / "tests" / "data" / "mwaa"
VERSIONS = ("3.0.6", "3.2.1", "3.3.1")
ESSENTIAL = "mwaa_essential_constraints.txt"
AIRFLOW_CONSTRAINTS = "airflow_constraints.txt"
# MWAA runs Python 3.12 on Amazon Linux 2023 (glibc 2.34), x86_64.
MWAA_PYTHON = "3.12"
MWAA_PLATFORM = "x86_64-manylinux_2_34"
# What bootstrap/02-airflow/001-install-required-pip-packages.sh installs into the image, less
# psycopg2 and pycurl (sdists needing pg_config and libcurl headers, which this machine lacks)
# and boto3-stubs (type stubs): none of them bounds what the bundle needs.
IMAGE_PACKAGES = (
    "apache-airflow-providers-amazon[aiobotocore]",
    "apache-airflow[celery,statsd]=={version}",
    "apache-airflow-providers-postgres",
    "apache-airflow-providers-fab",
    "celery[sqs]",
    "watchtower",
    "fluent-logger",
    "virtualenv",
    "apache-airflow-providers-standard",
)
IMAGE_CORE_FROM = (3, 2)  # 3.2.1 and 3.3.1 also install apache-airflow-core[gunicorn]==<version>
PROVIDERS = ("apache-airflow-providers-amazon", "apache-airflow-providers-cncf-kubernetes")
# user_requirements._requirements_has_constraints: such a line means "no forced Airflow constraints".
MWAA_HAS_CONSTRAINTS = re.compile(r"-c |--constraint ")

PROBE = r"""
import importlib, json, pkgutil, sys, traceback
from importlib.metadata import version
from airflow import plugins_manager
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3.1+
except ImportError:
    from airflow.models.dagbag import DagBag  # Airflow 3.0
if hasattr(plugins_manager, "_get_plugins"):
    plugins, plugin_errors = plugins_manager._get_plugins()
    names = [p.name for p in plugins]
else:
    plugins_manager.ensure_plugins_loaded()
    names = [p.name for p in plugins_manager.plugins or []]
    plugin_errors = plugins_manager.import_errors
bag = DagBag()
module_errors = {}
for sub in ("operators", "sensors", "triggers", "utils"):
    package = importlib.import_module(f"bank_pipeline.{sub}")
    for info in pkgutil.iter_modules(package.__path__, f"bank_pipeline.{sub}."):
        try:
            importlib.import_module(info.name)
        except Exception:
            module_errors[info.name] = traceback.format_exc(limit=-2)
print("PROBE" + json.dumps({
    "versions": {d: version(d) for d in ("apache-airflow", *sys.argv[1:])},
    "plugins": names,
    "plugin_errors": {k: str(v) for k, v in plugin_errors.items()},
    "dags": sorted(bag.dags),
    "dag_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "module_errors": module_errors,
}))
"""


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{[str(a) for a in argv[:4]]}: {result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def constraint_files(version: str) -> tuple[Path, Path]:
    """(essential, Airflow's) constraint files of MWAA's image for ``version``."""
    return MWAA_DATA / version / ESSENTIAL, MWAA_DATA / version / AIRFLOW_CONSTRAINTS


def pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a constraints or lock file, by normalized name."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def image_packages(version: str) -> list[str]:
    packages = [p.format(version=version) for p in IMAGE_PACKAGES]
    if tuple(int(x) for x in version.split(".")[:2]) >= IMAGE_CORE_FROM:
        packages.append(f"apache-airflow-core[gunicorn]=={version}")
    return packages


def mwaa_install_args(requirements: Path, version: str) -> list[str]:
    """The arguments of MWAA's ``pip3 install`` for a requirements.txt (safe-pip-install's and its caller's)."""
    essential, airflow = constraint_files(version)
    argv = ["--constraint", str(essential), "-r", str(requirements)]
    if not any(MWAA_HAS_CONSTRAINTS.search(line) for line in requirements.read_text().splitlines()):
        argv += ["-c", str(airflow)]  # "Forcing local constraints"
    return argv


def local_python() -> str:
    """Python 3.11: this machine's (MWAA's 3.12 is not here)."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if not found:
        pytest.skip("no python3.11 on this machine")
    return found


def image_lock(version: str, python: str) -> Path:
    """The image's packages, resolved for ``python`` under both constraint files: cached by content."""
    essential, airflow = constraint_files(version)
    py_version = run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]).stdout.strip()
    key = hashlib.sha256(
        essential.read_bytes() + airflow.read_bytes() + "\n".join([*image_packages(version), py_version]).encode()
    ).hexdigest()[:16]
    lock = cache_dir() / "mwaa" / f"{version}-py{py_version}-{key}.txt"
    if not lock.exists():
        lock.parent.mkdir(parents=True, exist_ok=True)
        wanted = lock.with_suffix(".in")
        wanted.write_text("\n".join(image_packages(version)) + "\n")
        partial = lock.with_suffix(".part")
        run([UV, "pip", "compile", "--quiet", "--no-header", "--python", python, "-c", essential, "-c", airflow,
             wanted, "-o", partial])  # fmt: skip
        partial.replace(lock)
    return lock


def installed(venv: Path) -> dict[str, str]:
    """Every distribution in ``venv`` and its version, by normalized name."""
    listed = json.loads(run([UV, "pip", "list", "--format", "json", "--python", venv / "bin" / "python"]).stdout)
    return {re.sub(r"[-_.]+", "-", d["name"]).lower(): d["version"] for d in listed}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``make mwaa``'s output, with plugins.zip unpacked where requirements.txt says the wheel is."""
    root = tmp_path_factory.mktemp("mwaa")
    run([UV, "build", "--wheel", "--out-dir", root / "dist", REPO], cwd=root)
    (wheel,) = (root / "dist").glob("*.whl")
    plugins = root / "plugins"  # stands for /usr/local/airflow/plugins
    out = mwaa_bundle(wheel, root / "bundle", plugins_dir=str(plugins))
    plugins.mkdir()
    with zipfile.ZipFile(out / "plugins.zip") as archive:
        archive.extractall(plugins)
    return {"root": root, "bundle": out, "plugins": plugins, "wheel": wheel}


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
    timings = {}
    started = time.monotonic()
    lock = image_lock(version, python)
    venv = tmp_path / "venv"
    run([UV, "venv", "--quiet", "--python", python, venv])
    run([UV, "pip", "sync", "--quiet", "--python", venv / "bin" / "python", lock])
    timings["image"] = time.monotonic() - started
    image = installed(venv)
    assert image["apache-airflow"] == version

    started = time.monotonic()
    args = mwaa_install_args(bundle["bundle"] / "requirements.txt", version)
    if os.environ.get("BANK_MWAA_INSTALLER") == "pip":
        run([UV, "pip", "install", "--quiet", "--python", venv / "bin" / "python", "pip"])
        run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", *args])
    else:
        run([UV, "pip", "install", "--python", venv / "bin" / "python", *args])
    timings["bundle"] = time.monotonic() - started
    after = installed(venv)
    assert {n: (v, after.get(n)) for n, v in image.items() if after.get(n) != v} == {}  # the image is untouched
    assert "bank-marketing-release" in after

    started = time.monotonic()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(bundle["bundle"] / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(bundle["plugins"]),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = run([venv / "bin" / "python", "-c", PROBE, *PROVIDERS], env=env, cwd=tmp_path)
    timings["dags"] = time.monotonic() - started
    out = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("PROBE"))[len("PROBE") :])
    print(f"MWAA {version}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), out["versions"])
    forced = pins(constraint_files(version)[1].read_text())
    assert out["versions"] == {"apache-airflow": version, **{p: forced[p] for p in PROVIDERS}}
    assert out["dag_errors"] == {} and out["plugin_errors"] == {} and out["module_errors"] == {}, json.dumps(
        {k: out[k] for k in ("dag_errors", "plugin_errors", "module_errors")}, indent=1
    )
    assert out["dags"] == ["bank_batch_score", "bank_features_emr", "bank_model_release"]
    assert "bank_pipeline" in out["plugins"]
