"""The bundle installs on Astro Runtime 3 as an Astro project's image build installs it, and its DAGs load there.

``make astro`` writes the project (devstack/deploy.py). Building it, the Runtime image's ONBUILD
triggers install requirements.txt with /usr/local/bin/install-python-dependencies (uv, on
Astronomer's index) before they copy the project in; the Dockerfile's own RUN then installs
include/<wheel> with ``--no-deps``. tests/data/astro/README.md says what is known of the image and
from where. Here, per Airflow version (the oldest and the newest Runtime 3 line):

- image: a fresh venv on the Runtime's default Python 3.12 (3.11, its other distribution, if
  3.12 is missing) receives Airflow and the providers the Runtime image ships, resolved under
  Airflow's constraints for that version (the image's own freeze is on Astronomer's CDN, not
  reachable here), cached under the project's cache dir (devstack.cache) like the MWAA test's;
- ONBUILD: requirements.txt installed as astro-cli's standalone mode reproduces the Runtime,
  ``uv pip install -r requirements.txt apache-airflow==<v> apache-airflow-task-sdk==<v>``: no
  constraints file beyond the two pins (so uv may upgrade an image package the newest providers
  need, e.g. common-compat); and, for the case the image's script does pass a constraints file
  freezing the image (not confirmed), the same requirements must resolve with nothing moved;
- Dockerfile: the wheel with ``--no-deps``; then a DagBag over the project's dags/ and plugins/.

The project's own shape, without installing anything, is tested in tests/unit/packaging/test_astro_install.py.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack.cache import cache_dir
from devstack.deploy import astro_project
from devstack.harness.mwaa_env import normalize, pins, python_version, run
from tests.support.dag_probe import assert_the_bundle_loads, probe
from tests.support.paths import REPO

UV = Path(sys.executable).parent / "uv"
# Airflow's own constraints-<version>/constraints-3.12.txt, as MWAA copied them unchanged.
AIRFLOW_CONSTRAINTS = REPO / "tests" / "data" / "mwaa" / "{version}" / "airflow_constraints.txt"
# The oldest Runtime 3 line (3.0-N) ends on Airflow 3.0.6; the newest (3.3-N) is on 3.3.x,
# of which 3.3.1's constraints are here (3.3.2's are not).
VERSIONS = ("3.0.6", "3.3.1")
# The providers every Runtime 3 image ships (Astro's provider reference), on public PyPI; the
# image also has astronomer-providers-logging, which only Astronomer's index serves.
IMAGE_PROVIDERS = (
    "celery",
    "common-compat",
    "common-io",
    "common-sql",
    "elasticsearch",
    "openlineage",
    "smtp",
    "standard",
)
PROVIDERS = ("apache-airflow-providers-amazon", "apache-airflow-providers-cncf-kubernetes")


def image_packages(version: str) -> list[str]:
    return [f"apache-airflow=={version}", *(f"apache-airflow-providers-{p}" for p in IMAGE_PROVIDERS)]


def runtime_python() -> str:
    """The Runtime's default Python 3.12, else 3.11 (the ``-python-3.11`` distribution)."""
    for candidate in ("python3.12", "/root/.pyenv/versions/3.12.1/bin/python3.12", "python3.11"):
        found = shutil.which(candidate)  # pyenv's shims exist even where they cannot run
        if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
            return found
    pytest.skip("neither python3.12 nor python3.11 on this machine")


def image_lock(version: str, python: str) -> Path:
    """The image's packages resolved for ``python`` under Airflow's constraints: cached by content."""
    constraints = Path(str(AIRFLOW_CONSTRAINTS).format(version=version))
    py_version = python_version(python)
    wanted = "\n".join(image_packages(version)) + "\n"
    key = hashlib.sha256(constraints.read_bytes() + (wanted + py_version).encode()).hexdigest()[:16]
    lock = cache_dir() / "astro" / f"{version}-py{py_version}-{key}.txt"
    if not lock.exists():
        lock.parent.mkdir(parents=True, exist_ok=True)
        source = lock.with_suffix(".in")
        source.write_text(wanted)
        partial = lock.with_suffix(".part")
        run(
            [
                UV,
                "pip",
                "compile",
                "--quiet",
                "--no-header",
                "--python",
                python,
                "-c",
                constraints,
                source,
                "-o",
                partial,
            ]
        )
        partial.replace(lock)
    return lock


def installed(venv: Path) -> dict[str, str]:
    """Every distribution in ``venv`` and its version, by normalized name."""
    frozen = run([UV, "pip", "freeze", "--python", venv / "bin" / "python"]).stdout
    return pins(frozen) | {normalize(m[1]): "local" for m in re.finditer(r"^(\S+) @ ", frozen, re.M)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make astro``'s project, from a freshly built wheel."""
    root = tmp_path_factory.mktemp("astro")
    run([UV, "build", "--wheel", "--out-dir", root / "dist", REPO], cwd=root)
    (wheel,) = (root / "dist").glob("*.whl")
    return astro_project(wheel, root / "project")


@pytest.mark.integration
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("version", VERSIONS)
def test_the_project_installs_as_the_runtime_image_builds_it_and_every_dag_loads(
    version: str, project: Path, tmp_path: Path
) -> None:
    python = runtime_python()
    timings = {}
    started = time.monotonic()
    lock = image_lock(version, python)
    venv = tmp_path / "venv"
    run([UV, "venv", "--quiet", "--python", python, venv])
    run([UV, "pip", "sync", "--quiet", "--python", venv / "bin" / "python", lock])
    image = installed(venv)
    assert image["apache-airflow"] == version
    timings["image"] = time.monotonic() - started

    started = time.monotonic()  # ONBUILD: /usr/local/bin/install-python-dependencies
    airflow_pins = [f"apache-airflow=={version}", f"apache-airflow-task-sdk=={image['apache-airflow-task-sdk']}"]
    run([UV, "pip", "install", "--python", venv / "bin" / "python", "-r", project / "requirements.txt", *airflow_pins])
    after_requirements = installed(venv)
    timings["requirements"] = time.monotonic() - started
    moved = {n: f"{v} -> {after_requirements.get(n)}" for n, v in image.items() if after_requirements.get(n) != v}
    assert after_requirements["apache-airflow"] == version and "apache-airflow-providers-amazon" in after_requirements
    # The other reading of install-python-dependencies: a constraints file freezing the image's
    # packages. Then the requirements must resolve without moving any of them.
    pinned = tmp_path / "airflow-pins.in"
    pinned.write_text("\n".join(airflow_pins) + "\n")
    frozen = run([UV, "pip", "compile", "--quiet", "--no-header", "--python", venv / "bin" / "python",
                  "-c", lock, project / "requirements.txt", pinned]).stdout  # fmt: skip
    assert {n: v for n, v in pins(frozen).items() if image.get(n, v) != v} == {}

    started = time.monotonic()  # the Dockerfile's RUN
    run([UV, "pip", "install", "--python", venv / "bin" / "python", "--no-deps", *(project / "include").glob("*.whl")])
    after_wheel = installed(venv)
    timings["wheel"] = time.monotonic() - started
    assert set(after_wheel) - set(after_requirements) == {"bank-marketing-release"}
    assert {n: v for n, v in after_requirements.items() if after_wheel[n] != v} == {}
    run([UV, "pip", "check", "--python", venv / "bin" / "python"])  # the wheel's dependencies are all there

    started = time.monotonic()
    out = probe(venv, project / "dags", project / "plugins", tmp_path, PROVIDERS)
    timings["dags"] = time.monotonic() - started
    print(f"Astro Runtime (Airflow {version}, Python {python_version(python)}): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), out["versions"], "image moved:", moved)  # fmt: skip
    assert out["versions"]["apache-airflow"] == version
    assert_the_bundle_loads(out)
