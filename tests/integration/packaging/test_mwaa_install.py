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

What needs no install (the constraint files, requirements.txt, the imports Airflow 3.0.6 lacks) is tested in
tests/unit/packaging/test_mwaa_install.py.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from devstack.deploy import runtime_requirements
from devstack.harness.mwaa_env import (
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
