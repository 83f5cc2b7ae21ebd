"""What decides a rebuild of the local Lambda base and of the serving image (their content hashes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devstack.containers import lambda_image
from tests.support.paths import REPO

pytestmark = pytest.mark.unit


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A copy of what serving/Dockerfile's COPY steps read."""
    shutil.copytree(REPO / "serving", tmp_path / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_serving_hash_follows_the_code_the_requirements_and_the_base(context: Path) -> None:
    before = lambda_image.serving_inputs("base:1", context)
    assert lambda_image.serving_inputs("base:1", context) == before
    assert lambda_image.serving_inputs("base:2", context) != before
    (context / "serving" / "bank_serving" / "__pycache__").mkdir(exist_ok=True)
    (context / "serving" / "bank_serving" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"compiled")
    assert lambda_image.serving_inputs("base:1", context) == before  # bytecode is not an input
    handler = context / "serving" / "bank_serving" / "lambda_handler.py"
    handler.write_text(handler.read_text() + "\n# changed\n")
    assert lambda_image.serving_inputs("base:1", context) != before
    changed = lambda_image.serving_inputs("base:1", context)
    (context / "serving" / "requirements.txt").write_text("numpy==2.0.0\n")
    assert lambda_image.serving_inputs("base:1", context) != changed


def test_the_base_hash_covers_its_files_and_is_in_its_tag() -> None:
    inputs = lambda_image.inputs()
    assert set(inputs) == {"rootfs", "runtime_requirements", "rie", "entrypoint", "containerfile"}
    assert inputs["rie"]["version"] == lambda_image.RIE_VERSION  # type: ignore[index]
    assert lambda_image.base_ref().endswith(":" + lambda_image.inputs_hash()[:12])
    assert lambda_image.inputs_hash() == lambda_image.inputs_hash()
