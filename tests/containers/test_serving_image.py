"""The real serving image under podman: as Lambda runs it (AWS's RIE + awslambdaric) and as Kubernetes does.

Needs podman (devstack/containers/README.md lists the Debian packages), the
registry (Debian docker-registry), PyPI for serving/Dockerfile's pip step (cached
by podman's layer cache after the first build) and the local Lambda base image,
which this module never builds: it skips, saying how to build it, when the base
for the current inputs is not in the project's podman store.

The model image is made as a release makes it: the serving image pushed to a
local registry, the model appended as one layer by bank_pipeline.oci, the result
pulled by digest. Every container carries a label unique to this run; the last
test checks that none is left.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devstack import lambda_image, podman
from devstack.lambda_rie import HttpContainer, LambdaContainer, model_volume
from devstack.registry import Registry, RegistryUnavailable
from devstack.registry import binary as registry_binary

REPO = Path(__file__).resolve().parents[2]
SERVING = REPO / "serving"
BANK = REPO / "data" / "bank" / "bank.csv"
FAULTS = Path(__file__).resolve().parent / "lambda_faults.py"
GROUP = f"pytest-{uuid.uuid4().hex[:8]}"  # the label value of every container this module starts
INT_FIELDS = {"age", "balance", "day", "campaign", "pdays", "previous"}


def _skip_reason() -> str | None:
    reason = podman.unavailable_reason()
    if reason is not None:
        return f"podman cannot run here: {reason}"
    try:
        registry_binary()
    except RegistryUnavailable as exc:
        return str(exc)
    if lambda_image.cached_base() is None:
        return (
            f"the local Lambda base image ({lambda_image.base_ref()}) is not built: "
            "`nice -n 19 python -m devstack.lambda_image build` (a few minutes; see devstack/containers/README.md)"
        )
    return None


_REASON = _skip_reason()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

if str(SERVING) not in sys.path:
    sys.path.insert(0, str(SERVING))
from bank_ml import artifacts, data, release  # noqa: E402


def bank_records(n: int) -> list[dict[str, Any]]:
    """The first n rows of bank.csv as request records (duration and y dropped)."""
    with BANK.open(newline="") as handle:
        rows = list(itertools.islice(csv.DictReader(handle, delimiter=";"), n))
    return [
        {key: int(value) if key in INT_FIELDS else value for key, value in row.items() if key not in ("duration", "y")}
        for row in rows
    ]


RECORDS = bank_records(20)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real model trained on bank.csv (about 1 s), as model.onnx + model.json."""
    candidate = release.train_candidate(data.features_from_csv(BANK))
    directory = tmp_path_factory.mktemp("model")
    artifacts.write_model_files(directory, candidate.onnx_bytes, candidate.threshold)
    return directory


@pytest.fixture(scope="module")
def host_handler(model_dir: Path) -> ModuleType:
    """serving/handler.py imported on the host (the venv's numpy and onnxruntime) over the same model."""
    previous = os.environ.get("BANK_MODEL_DIR")
    os.environ["BANK_MODEL_DIR"] = str(model_dir)
    try:
        spec = importlib.util.spec_from_file_location("host_handler", SERVING / "handler.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        if previous is None:
            os.environ.pop("BANK_MODEL_DIR", None)
        else:
            os.environ["BANK_MODEL_DIR"] = previous


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A CNCF distribution registry on 127.0.0.1 (devstack's ECR stand-in): ``host:port``."""
    reg = Registry(tmp_path_factory.mktemp("registry"))
    host = reg.start()
    yield host
    reg.stop()


@pytest.fixture(scope="module")
def model_image(registry: str, model_dir: Path) -> Iterator[str]:
    """serving/Dockerfile built on the cached base, plus the model layer as a release appends it; by digest."""
    base = lambda_image.cached_base()
    assert base is not None
    serving = lambda_image.build_serving(base, tag="localhost/bank-serving:pytest")
    ref = lambda_image.model_image(serving, model_dir, registry, tag="pytest")
    yield ref
    podman.podman("rmi", "--ignore", ref)


@pytest.fixture(scope="module", autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Remove whatever container of this module is left, even after a failure."""
    yield
    for name in podman.containers(GROUP):
        podman.podman("rm", "-f", "-t", "0", name)


def test_rie_answers_a_record_like_the_host_handler(model_image: str, host_handler: ModuleType) -> None:
    expected = host_handler.handler(RECORDS[0], None)
    with LambdaContainer(model_image, group=GROUP) as fn:
        fn.wait_ready()
        got = fn.invoke(RECORDS[0])
        batch = fn.invoke({"records": RECORDS})
    assert got.function_error is None, got.payload
    answer = got.json()
    assert answer["statusCode"] == 200 and answer["headers"] == {"Content-Type": "application/json"}
    assert answer["body"]["model_version"] == expected["body"]["model_version"]
    [prediction] = answer["body"]["predictions"]
    [host_prediction] = expected["body"]["predictions"]
    assert prediction["label"] == host_prediction["label"]
    assert prediction["probability"] == pytest.approx(host_prediction["probability"], abs=1e-6)

    host_batch = host_handler.handler({"records": RECORDS}, None)["body"]["predictions"]
    assert batch.function_error is None, batch.payload
    got_batch = batch.json()["body"]["predictions"]
    assert [p["label"] for p in got_batch] == [p["label"] for p in host_batch]
    assert [p["probability"] for p in got_batch] == pytest.approx([p["probability"] for p in host_batch], abs=1e-6)


def test_a_bad_request_is_an_answer_not_a_function_error(model_image: str) -> None:
    with LambdaContainer(model_image, group=GROUP) as fn:
        fn.wait_ready()
        got = fn.invoke({"records": [{"age": "thirty"}]})
    assert got.function_error is None
    answer = got.json()
    assert answer["statusCode"] == 400 and "records[0]" in answer["body"]["error"]


def test_a_handler_that_raises_is_an_unhandled_function_error(model_image: str, model_dir: Path) -> None:
    volume = f"{FAULTS}:/var/task/lambda_faults.py:ro"
    with LambdaContainer(model_image, handler="lambda_faults.raise_error", volumes=[volume], group=GROUP) as fn:
        fn.wait_ready()
        got = fn.invoke({"n": 1})
        again = fn.invoke({"n": 2})  # the execution environment survives a handler error
    assert got.function_error == "Unhandled" and got.rie_status == 200
    payload = got.json()
    assert payload["errorType"] == "BankFault" and "raised on purpose" in payload["errorMessage"]
    assert payload["requestId"] and any("lambda_faults.py" in line for line in payload["stackTrace"])
    assert again.function_error == "Unhandled" and "{'n': 2}" in again.json()["errorMessage"]


def test_a_bad_model_is_an_init_error(model_image: str, model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad-model"
    bad.mkdir()
    shutil.copy(model_dir / "model.json", bad / "model.json")
    (bad / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes()[:1000])  # truncated
    bad.chmod(0o755)
    with LambdaContainer(model_image, volumes=[model_volume(bad)], group=GROUP) as fn:
        fn.wait_ready()
        got = fn.invoke(RECORDS[0])
    assert got.function_error == "Unhandled" and got.rie_status == 502
    payload = got.json()
    assert payload["errorType"] == "ModelLoadError"
    assert "model.onnx" in payload["errorMessage"] and "corrupt" in payload["errorMessage"]


def test_a_timeout_is_a_function_error_and_the_next_invoke_starts_cold(model_image: str) -> None:
    volume = f"{FAULTS}:/var/task/lambda_faults.py:ro"
    with LambdaContainer(model_image, handler="lambda_faults.sleep", timeout_s=1, volumes=[volume], group=GROUP) as fn:
        fn.wait_ready()
        slow = fn.invoke({"seconds": 5})
        quick = fn.invoke({"seconds": 0})
    assert slow.function_error == "Unhandled"
    assert slow.json() == {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 1.00 seconds"}
    assert slow.seconds < 4  # the RIE answered at the timeout, not after the handler's 5 s
    assert quick.function_error is None and quick.json() == {"slept": 0.0}


def test_the_http_command_serves_under_the_pods_security_settings(model_image: str, model_dir: Path) -> None:
    expected_version = json.loads((model_dir / "model.json").read_text())["version"]
    server = HttpContainer(model_image, group=GROUP)
    with server:
        server.wait_ready()
        assert server.get("/healthz") == (200, {"status": "ok"})
        assert server.get("/readyz") == (200, {"status": "ready", "model_version": expected_version})
        state = server.state()
        assert state["Running"] and not state["OOMKilled"]
        assert server.stop(timeout=10) == 0  # SIGTERM: drains and exits 0 within the grace period


def test_every_container_is_removed() -> None:
    """Runs last (file order): no container of this module is left, running or not."""
    assert podman.containers(GROUP) == []
