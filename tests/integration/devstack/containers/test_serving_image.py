"""The real serving image under podman: as Lambda runs it (AWS's RIE + awslambdaric) and as Kubernetes does.

serving/Dockerfile is built with podman on the local Lambda base (debootstrap +
Python + awslambdaric + the RIE, devstack/containers/lambda_image.py), both rebuilt only
when their inputs change; `make test` builds the base first (a few minutes
once). The model image is made as a release makes it: the serving image pushed
to devstack's registry, the model appended as one layer by
bank_pipeline.utils.oci_image, the result pulled by digest. Every container carries a
label unique to this module; the last test checks that none is left.
"""

from __future__ import annotations

import csv
import itertools
import json
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bank_ml import artifacts, data, release
from bank_pipeline.utils import oci
from bank_serving.model import OnnxModel, load_model_dir
from bank_serving.service import handle_event
from devstack import Devstack
from devstack.aws.registry import Registry
from devstack.containers import lambda_image, podman
from devstack.containers.lambda_rie import HttpContainer, LambdaContainer, model_volume, pod_options
from tests.support.paths import BANK_CSV

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

GROUP = f"pytest-{uuid.uuid4().hex[:8]}"  # the label value of every container this module starts
INT_FIELDS = {"age", "balance", "day", "campaign", "pdays", "previous"}


def bank_records(n: int) -> list[dict[str, Any]]:
    """The first n rows of bank.csv as request records (duration and y dropped)."""
    with BANK_CSV.open(newline="") as handle:
        rows = list(itertools.islice(csv.DictReader(handle, delimiter=";"), n))
    return [
        {key: int(value) if key in INT_FIELDS else value for key, value in row.items() if key not in ("duration", "y")}
        for row in rows
    ]


RECORDS = bank_records(20)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real model trained on bank.csv (about 1 s), as model.onnx + model.json."""
    candidate = release.train_candidate(data.features_from_csv(BANK_CSV))
    directory = tmp_path_factory.mktemp("model")
    artifacts.write_model_files(directory, candidate.onnx_bytes, candidate.threshold)
    directory.chmod(0o755)  # the containers' unprivileged users read it through a bind mount
    return directory


@pytest.fixture(scope="module")
def host_model(model_dir: Path) -> OnnxModel:
    """The same model loaded on the host (the venv's numpy and onnxruntime)."""
    return load_model_dir(model_dir)


@pytest.fixture(scope="module")
def serving() -> str:
    """serving/Dockerfile on the local Lambda base: built unless cached."""
    return lambda_image.serving_image()


@pytest.fixture(scope="module")
def model_image(ds: Devstack, serving: str, model_dir: Path) -> Iterator[str]:
    """The serving image plus the model layer as a release appends it, pulled by digest."""
    ref = lambda_image.model_image(serving, model_dir, ds.registry_url, repo="containers-test", tag="pytest")
    yield ref
    podman.podman("rmi", "--ignore", ref)


@pytest.fixture(scope="module", autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Remove whatever container of this module is left, even after a failure."""
    yield
    for name in podman.containers(GROUP):
        podman.podman("rm", "-f", "-t", "0", name)


def test_the_base_is_rebuilt_only_when_its_inputs_change() -> None:
    started = time.monotonic()
    report = lambda_image.build_base()
    assert report.cached and time.monotonic() - started < 5
    assert report.ref == lambda_image.base_ref() and report.ref.endswith(":" + lambda_image.inputs_hash()[:12])
    labels = podman.image_inspect(report.ref)["Labels"]
    assert labels[lambda_image.HASH_LABEL] == lambda_image.inputs_hash()  # type: ignore[index]


def test_the_base_is_laid_out_as_aws_lambda_base_images(serving: str) -> None:
    config = podman.image_inspect(lambda_image.build_base().ref)["Config"]
    assert config["Entrypoint"] == ["/lambda-entrypoint.sh"] and config["WorkingDir"] == "/var/task"  # type: ignore[index]
    assert {"LAMBDA_TASK_ROOT=/var/task", "LAMBDA_RUNTIME_DIR=/var/runtime"} <= set(config["Env"])  # type: ignore[index]
    # The entrypoint runs the RIE when AWS_LAMBDA_RUNTIME_API is unset, awslambdaric directly when set.
    script = podman.podman("run", "--rm", "--entrypoint", "cat", serving, "/lambda-entrypoint.sh")
    assert "/usr/local/bin/aws-lambda-rie" in script and "python3 -m awslambdaric" in script
    assert 'if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]' in script
    versions = podman.podman(
        "run", "--rm", "--entrypoint", "python3", serving, "-c",
        "import awslambdaric, numpy, onnxruntime, sys; print(sys.version_info[:2] >= (3, 11), numpy.__version__)",
    )  # fmt: skip
    assert versions.split()[0] == "True"


def test_the_serving_image_in_the_registry_is_a_lambda_image(ds: Devstack, tmp_path: Path) -> None:
    pushed = lambda_image.push_serving(ds.registry_url, "containers-test", "serving-base")
    started = time.monotonic()
    assert lambda_image.push_serving(ds.registry_url, "containers-test", "serving-base") == pushed  # cached build
    assert time.monotonic() - started < 30
    # To an empty registry (devstack's next start): the recorded blobs, not podman's recompression.
    other = Registry(tmp_path / "registry")
    host = other.start()
    try:
        again = lambda_image.push_serving(host, "containers-test", "serving-base")
    finally:
        other.stop()
    assert again.rsplit("@", 1)[1] == pushed.rsplit("@", 1)[1]
    client = oci.RegistryClient(ds.registry_url)
    manifest, _media_type, digest = client.get_manifest("containers-test", "serving-base")
    assert pushed == f"{ds.registry_url}/containers-test@{digest}"
    config = json.loads(client.get_blob("containers-test", manifest["config"]["digest"]))
    assert (config["architecture"], config["os"]) == ("amd64", "linux")  # what Lambda's x86_64 runs
    assert config["config"]["Entrypoint"] == ["/lambda-entrypoint.sh"]
    assert config["config"]["Cmd"] == ["bank_serving.lambda_handler.handler"]
    assert "BANK_MODEL_DIR=/opt/ml/model" in config["config"]["Env"]


def test_rie_answers_a_record_like_the_host_handler(model_image: str, host_model: OnnxModel) -> None:
    with LambdaContainer(model_image, group=GROUP) as fn:
        fn.wait_ready()
        got = fn.invoke(RECORDS[0])
        batch = fn.invoke({"records": RECORDS})
    expected = handle_event(RECORDS[0], host_model)
    assert got.function_error is None, got.payload
    answer = got.json()
    assert answer["statusCode"] == 200 and answer["headers"] == {"Content-Type": "application/json"}
    assert answer["body"]["model_version"] == expected["body"]["model_version"]
    [prediction] = answer["body"]["predictions"]
    [host_prediction] = expected["body"]["predictions"]
    assert prediction["label"] == host_prediction["label"]
    assert prediction["probability"] == pytest.approx(host_prediction["probability"], abs=1e-6)

    host_batch = handle_event({"records": RECORDS}, host_model)["body"]["predictions"]
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


def test_the_http_command_runs_as_the_deployment_says(model_image: str, model_dir: Path) -> None:
    expected_version = json.loads((model_dir / "model.json").read_text())["version"]
    options, _args, _env = pod_options()
    assert {"--read-only", "--cap-drop=ALL", "no-new-privileges", "--user", "1000:1000"} <= set(options)
    with HttpContainer(model_image, group=GROUP) as server:
        server.wait_ready()
        assert server.get("/healthz") == (200, {"status": "ok"})
        assert server.get("/readyz") == (200, {"status": "ready", "model_version": expected_version})
        whoami = podman.podman("exec", server.name, "python", "-c",
                               "import os; open('/tmp/x', 'w').write('x'); print(os.getuid(), os.getgid())")  # fmt: skip
        assert whoami.split() == ["1000", "1000"]
        denied = podman.podman("exec", server.name, "python", "-c",
                               "import pathlib\ntry:\n pathlib.Path('/var/task/x').write_text('x')\nexcept OSError as e:\n print(e)")  # fmt: skip
        assert "Read-only file system" in denied
        state = server.state()
        assert state["Running"] and not state["OOMKilled"]


def test_sigterm_drains_an_in_flight_request_in_the_container(model_image: str) -> None:
    """What the kubelet does at a rollout: SIGTERM; the request in flight is answered, then exit 0."""
    body = json.dumps(RECORDS[0]).encode()
    head = f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with HttpContainer(model_image, extra_args=["--drain-delay", "1"], group=GROUP) as server:
        server.wait_ready()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as in_flight:
            in_flight.sendall(head.encode() + body[:50])  # a request in flight: half its body sent
            assert server.get("/healthz")[0] == 200  # the request has surely reached the server
            podman.podman("kill", "--signal", "TERM", server.name)
            deadline = time.monotonic() + 10
            while server.get("/readyz")[0] != 503:  # draining: out of the Service's endpoints
                assert time.monotonic() < deadline, "never answered /readyz 503 after SIGTERM"
                time.sleep(0.02)
            in_flight.sendall(body[50:])
            reply = b""
            while chunk := in_flight.recv(65536):
                reply += chunk
        head_out, _, answer = reply.partition(b"\r\n\r\n")
        assert head_out.startswith(b"HTTP/1.1 200 "), reply[:500]
        assert json.loads(answer)["predictions"][0]["label"] in (0, 1)
        assert server.wait(timeout=30) == 0, server.logs()[-2000:]
        assert "stopped cleanly" in server.logs()


def test_every_container_is_removed() -> None:
    """Runs last (file order): no container of this module is left, running or not."""
    assert podman.containers(GROUP) == []
