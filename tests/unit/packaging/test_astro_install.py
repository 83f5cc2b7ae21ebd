"""``make astro``'s project as an Astro Runtime 3 image build reads it, without building or installing anything.

The installs themselves (the image's packages, requirements.txt as ONBUILD installs it, the wheel, a DagBag) are
tested in tests/integration/packaging/test_astro_install.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devstack.deploy import (
    ASTRO_PROJECT_DIR,
    ASTRO_RUNTIME_IMAGE,
    PLUGIN_FILE,
    bank_settings,
    main,
    runtime_requirements,
)
from tests.support.paths import DAGS

# The Runtime's ONBUILD (Runtime 9's, inspected) refuses a requirements.txt pinning Airflow itself.
PINS_AIRFLOW = re.compile(r"apache-airflow\s*[=~>]{1,2}.*")


@pytest.mark.unit
def test_the_astro_project_has_the_shape_the_runtime_image_builds(tmp_path: Path) -> None:
    wheel = tmp_path / "bank_marketing_release-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    assert main(["astro", "--wheel", str(wheel), "--out", str(tmp_path / "out"), "--runtime", "3.0-7"]) == 0
    out = tmp_path / "out"
    lines = [line for line in (out / "Dockerfile").read_text().splitlines() if not line.startswith("#")]
    assert lines == [
        f"FROM {ASTRO_RUNTIME_IMAGE}:3.0-7",
        "USER root",
        f"RUN pip install --no-cache-dir --no-deps {ASTRO_PROJECT_DIR}/include/{wheel.name}",
        "USER astro",
    ]
    assert (out / "include" / wheel.name).read_bytes() == b"wheel"  # ONBUILD copies include/ to ASTRO_PROJECT_DIR
    # ONBUILD installs requirements.txt before it copies the project: no line may name a local path.
    assert (out / "requirements.txt").read_text().splitlines() == runtime_requirements()
    assert (out / "packages.txt").read_text() == ""  # ONBUILD's COPY packages.txt fails without it
    assert sorted(p.name for p in (out / "plugins").iterdir()) == [PLUGIN_FILE.name]
    assert sorted(p.name for p in (out / "dags").glob("*.py")) == sorted(p.name for p in DAGS.glob("*.py"))
    settings = [line.split("=", 1) for line in (out / ".env").read_text().splitlines() if not line.startswith("#")]
    assert [name for name, _ in settings] == [name for name, _, _ in bank_settings()]
    assert not any(value[:1] in ("'", '"') for _, value in settings)  # docker's env-file syntax keeps quotes


@pytest.mark.unit
def test_requirements_do_not_pin_airflow_which_the_runtime_refuses() -> None:
    assert PINS_AIRFLOW.fullmatch("apache-airflow==3.3.1")
    assert [line for line in runtime_requirements() if PINS_AIRFLOW.fullmatch(line)] == []
