"""Model loading at init (version check, corrupt or missing model), light imports, and pins."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import onnx
import pytest

from bank_ml import artifacts, release
from bank_serving.model import ModelLoadError, ModelVersionError, OnnxModel, load_model_dir
from bank_serving.schema import TRAINED_WITH_SKLEARN
from tests.support.paths import REPO, locked_versions

pytestmark = pytest.mark.unit

SERVING = REPO / "serving"
HEAVY = ("pandas", "sklearn", "scipy", "matplotlib", "pyarrow", "onnx", "skl2onnx", "pyspark")


def _edited(onnx_bytes: bytes, edit: Callable[[onnx.ModelProto], None]) -> bytes:
    model = onnx.load_from_string(onnx_bytes)
    edit(model)
    return model.SerializeToString()


def _set_meta(key: str, value: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        for prop in model.metadata_props:
            if prop.key == key:
                prop.value = value

    return edit


def _rename_input(old: str, new: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        for value in model.graph.input:
            if value.name == old:
                value.name = new
        for node in model.graph.node:
            node.input[:] = [new if name == old else name for name in node.input]

    return edit


@pytest.fixture
def other_sklearn_dir(small_candidate: release.Candidate, tmp_path: Path) -> Path:
    """A model directory whose model (consistent sha256) says it was built with scikit-learn 1.0.2."""
    artifacts.write_model_files(
        tmp_path, _edited(small_candidate.onnx_bytes, _set_meta("bank.sklearn_version", "1.0.2")), 0.5
    )
    return tmp_path


def _import_handler(
    model_dir: Path | str, code: str = "import bank_serving.lambda_handler as handler"
) -> subprocess.CompletedProcess[str]:
    # A clean environment (only what the image sets), and no __pycache__ left in the sources.
    env = {"BANK_MODEL_DIR": str(model_dir), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=Path(model_dir).parent, capture_output=True, text=True, timeout=60
    )


def test_model_version_mismatch_fails_init_naming_both_versions(
    other_sklearn_dir: Path, load_handler: Callable[[Path], ModuleType]
) -> None:
    expected = (
        rf"model was built with scikit-learn 1\.0\.2, but this serving code is built for scikit-learn "
        rf"{re.escape(TRAINED_WITH_SKLEARN)}"
    )
    with pytest.raises(ModelVersionError, match=expected):
        load_handler(other_sklearn_dir)
    result = _import_handler(other_sklearn_dir)
    assert result.returncode != 0
    assert "bank_serving.model.ModelVersionError" in result.stderr
    assert re.search(expected, result.stderr)


def test_live_model_of_another_sklearn_can_still_be_scored(other_sklearn_dir: Path) -> None:
    """The gate's comparison does not depend on scikit-learn; only serving refuses the model."""
    model = load_model_dir(other_sklearn_dir, require_sklearn_version=False)
    assert model.sklearn_version == "1.0.2"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", r"no model in .*: model\.onnx is missing \(BANK_MODEL_DIR names the model directory\)"),
        ("no-json", r"no model in .*: model\.json is missing"),
        ("truncated", r"model\.onnx: corrupt or replaced: sha256 \w+ != \w+ recorded in model\.json"),
        ("not-onnx", r"model\.onnx: not a valid ONNX model"),
        ("renamed-input", r"model inputs do not match the serving contract: got years:tensor\(float\)"),
        ("bad-threshold", r"metadata bank\.threshold must be within 0\.\.1, got 1\.5"),
    ],
)
def test_broken_model_fails_init_clearly(
    small_candidate: release.Candidate, tmp_path: Path, setup: str, message: str
) -> None:
    good = small_candidate.onnx_bytes
    if setup == "no-json":
        (tmp_path / "model.onnx").write_bytes(good)
    elif setup == "truncated":
        artifacts.write_model_files(tmp_path, good, 0.5)
        (tmp_path / "model.onnx").write_bytes(good[: len(good) // 2])
    elif setup == "not-onnx":
        artifacts.write_model_files(tmp_path, b"\x80\x04not a model at all", 0.5)
    elif setup == "renamed-input":
        artifacts.write_model_files(tmp_path, _edited(good, _rename_input("age", "years")), 0.5)
    elif setup == "bad-threshold":
        artifacts.write_model_files(tmp_path, _edited(good, _set_meta("bank.threshold", "1.5")), 0.5)
    with pytest.raises(ModelLoadError, match=message):
        load_model_dir(tmp_path)


def test_missing_model_dir_fails_the_lambda_init(tmp_path: Path) -> None:
    result = _import_handler(tmp_path / "absent")
    assert result.returncode != 0
    assert "ModelLoadError" in result.stderr and "model.onnx is missing" in result.stderr


def test_handler_imports_nothing_heavy_and_loads_the_model_once(model_dir: Path) -> None:
    record = {
        "age": 41, "job": "admin.", "marital": "married", "education": "secondary", "default": "no",
        "balance": 120, "housing": "yes", "loan": "no", "contact": "cellular", "day": 5, "month": "may",
        "campaign": 1, "pdays": -1, "previous": 0, "poutcome": "unknown",
    }  # fmt: skip
    code = (
        "import json, sys; import bank_serving.lambda_handler as handler; "
        "calls = []; handler.load_model_dir = lambda *a, **k: calls.append(a); "
        f"answers = [handler.handler({record!r}, None)['statusCode'] for _ in range(3)]; "
        "print(json.dumps({'modules': sorted({n.split('.')[0] for n in sys.modules}), 'reloads': len(calls), "
        "'answers': answers, 'version': handler.MODEL.version}))"
    )
    result = _import_handler(model_dir, code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert not set(HEAVY) & set(report["modules"]), set(HEAVY) & set(report["modules"])
    assert {"numpy", "onnxruntime", "bank_serving"} <= set(report["modules"])
    assert report["reloads"] == 0 and report["answers"] == [200, 200, 200]
    assert report["version"] == load_model_dir(model_dir).version


def test_serving_is_built_for_the_locked_sklearn() -> None:
    assert TRAINED_WITH_SKLEARN == locked_versions()["scikit-learn"]


def test_serving_requirements_pin_the_locked_versions() -> None:
    lock = locked_versions()
    lines = [line.strip() for line in (SERVING / "requirements.txt").read_text().splitlines()]
    pins = dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))
    assert {"numpy", "onnxruntime"} <= set(pins)
    assert {name: lock.get(name.lower()) for name in pins} == pins


def test_dockerfile_builds_on_the_lambda_base_image() -> None:
    dockerfile = (SERVING / "Dockerfile").read_text()
    # The AWS base by default; devstack builds it FROM its local base (--build-arg BASE_IMAGE=...).
    assert re.search(r"^ARG BASE_IMAGE=public\.ecr\.aws/lambda/python:3\.12$", dockerfile, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert 'CMD ["bank_serving.lambda_handler.handler"]' in dockerfile
    assert "-r /tmp/serving-requirements.txt" in dockerfile and "${LAMBDA_TASK_ROOT}/bank_serving/" in dockerfile


def test_model_bytes_load_and_score(small_candidate: release.Candidate) -> None:
    model = OnnxModel.from_bytes(small_candidate.onnx_bytes)
    assert model.version == small_candidate.version and model.sklearn_version == TRAINED_WITH_SKLEARN
