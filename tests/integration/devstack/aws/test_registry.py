"""devstack's image registry and the daemonless image push (bank_pipeline.utils.oci_image), with real processes."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

import devstack
from bank_pipeline.utils import oci, oci_image, oci_layer
from devstack import Devstack, procs
from devstack.aws.infra import Account
from tests.support.devstack_image_helpers import code_image, model_files, source_image, write_serving
from tests.support.paths import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in bank_serving tree: what the registry tests push as a code image (never run)."""
    return write_serving(tmp_path_factory.mktemp("serving"))


CODE = {"var/task/bank_serving/lambda_handler.py": b"def handler(event, context):\n    return event\n",
        "var/task/bank_serving/__init__.py": b""}  # fmt: skip


def test_devstack_serves_a_registry(ds: Devstack) -> None:
    assert ds.registry_url.startswith("127.0.0.1:")
    assert ds.env()["BANK_REGISTRY"] == ds.registry_url
    assert devstack.read_state(ds.state_dir)["registry_url"] == ds.registry_url
    assert requests.get(f"http://{ds.registry_url}/v2/", timeout=5).status_code == 200
    assert (ds.state_dir / "registry").is_dir()
    assert "level: warn" in (ds.state_dir / "registry.yml").read_text()


def test_a_pushed_image_is_a_real_oci_image(ds: Devstack) -> None:
    digest = code_image(ds.registry_url, "base-test", "base", CODE)
    assert code_image(ds.registry_url, "base-test", "base", CODE) == digest  # same bytes, same digest

    client = oci.RegistryClient(ds.registry_url)
    manifest, media_type, got = client.get_manifest("base-test", "base")
    assert (media_type, got) == (oci.OCI_MANIFEST, digest)
    config = json.loads(client.get_blob("base-test", manifest["config"]["digest"]))
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    blob = client.get_blob("base-test", manifest["layers"][0]["digest"])
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()]
    assert set(CODE) <= set(oci_layer_names(blob)) and not any("__pycache__" in n for n in oci_layer_names(blob))


def oci_layer_names(blob: bytes) -> list[str]:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return tar.getnames()


def test_model_layer_push_is_deterministic_idempotent_and_valid(ds: Devstack) -> None:
    code_image(ds.registry_url, "bank-serving", "base", CODE)
    files = model_files("m1", size=1_000_000)  # about the size of the bank model
    layer = oci_layer.model_layer(files)
    env = {"BANK_MODEL_DIR": "/opt/ml/model"}

    first = oci_image.append_layer(oci.RegistryClient(ds.registry_url), "bank-serving", "base", layer, "m1", env)
    assert first.pushed_bytes >= layer.size and first.seconds < 10
    # A fresh client (another task attempt), the layer rebuilt from the same bytes.
    again = oci_image.append_layer(
        oci.RegistryClient(ds.registry_url), "bank-serving", "base", oci_layer.model_layer(files), "m1", env
    )
    assert (again.digest, again.pushed_bytes) == (first.digest, 0)
    print(f"model layer {layer.size} bytes pushed in {first.seconds:.3f} s; re-push {again.seconds:.3f} s")

    client = oci.RegistryClient(ds.registry_url)
    manifest, media_type, digest = client.get_manifest("bank-serving", "m1")
    assert (media_type, digest) == (oci.OCI_MANIFEST, first.digest)
    assert client.get_manifest("bank-serving", first.digest)[2] == first.digest
    config = json.loads(client.get_blob("bank-serving", manifest["config"]["digest"]))
    layers = manifest["layers"]
    assert len(config["rootfs"]["diff_ids"]) == len(layers) == 2
    assert len(config["history"]) == 2 and config["history"][-1]["created"] == config["created"]
    for desc, diff_id in zip(layers, config["rootfs"]["diff_ids"], strict=True):
        blob = client.get_blob("bank-serving", desc["digest"])
        assert desc["size"] == len(blob) and desc["mediaType"] == oci.OCI_LAYER
        assert diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    assert layers[-1] == {"mediaType": oci.OCI_LAYER, "digest": layer.digest, "size": layer.size}
    assert manifest["config"]["size"] == len(client.get_blob("bank-serving", manifest["config"]["digest"]))
    assert "BANK_MODEL_DIR=/opt/ml/model" in config["config"]["Env"]
    assert config["config"]["Cmd"] == ["bank_serving.lambda_handler.handler"]  # the base's, kept

    # Another model: another digest; the base's layer is not sent again.
    other = oci_image.append_layer(client, "bank-serving", "base", oci_layer.model_layer(model_files("m2")), "m2", env)
    assert other.digest != first.digest and 0 < other.pushed_bytes < 10_000


def test_docker_schema2_base_keeps_docker_media_types(ds: Devstack) -> None:
    client = oci.RegistryClient(ds.registry_url)
    code = oci_layer.layer({"var/task/bank_serving/lambda_handler.py": b"def handler(e, c):\n    return 1\n"})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"]},
                         "rootfs": {"type": "layers", "diff_ids": [code.diff_id]}}).encode()  # fmt: skip
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.DOCKER_MANIFEST,
        "config": {"mediaType": oci.DOCKER_CONFIG, "digest": client.push_blob("docker-base", config),
                   "size": len(config)},
        "layers": [{"mediaType": oci.DOCKER_LAYER, "digest": client.push_blob("docker-base", code.blob),
                    "size": code.size}],
    }  # fmt: skip
    client.put_manifest("docker-base", "base", json.dumps(manifest).encode(), oci.DOCKER_MANIFEST)

    result = oci_image.append_layer(
        client, "docker-base", "base", oci_layer.model_layer({"m": b"x"}), "m", {"A": "2", "B": "3"}
    )
    pushed, media_type, _ = client.get_manifest("docker-base", result.digest)
    assert media_type == oci.DOCKER_MANIFEST
    assert [d["mediaType"] for d in pushed["layers"]] == [oci.DOCKER_LAYER, oci.DOCKER_LAYER]
    assert pushed["config"]["mediaType"] == oci.DOCKER_CONFIG
    env = json.loads(client.get_blob("docker-base", pushed["config"]["digest"]))["config"]["Env"]
    assert env == ["A=2", "B=3"]


def test_registry_errors_name_repo_reference_and_status(ds: Devstack) -> None:
    client = oci.RegistryClient(ds.registry_url)
    with pytest.raises(oci.RegistryError) as info:
        oci_image.append_layer(client, "bank-serving", "no-such-tag", oci_layer.model_layer({"m": b"x"}), "t")
    message = str(info.value)
    assert f"registry {ds.registry_url}" in message and "bank-serving:no-such-tag" in message
    assert "HTTP 404" in message and "MANIFEST_UNKNOWN" in message
    assert (info.value.status, info.value.code) == (404, "MANIFEST_UNKNOWN")

    missing_config = {"mediaType": oci.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 1}
    bad = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": missing_config, "layers": []})
    with pytest.raises(oci.RegistryError, match=r"PUT bank-serving:broken: HTTP 400 MANIFEST_BLOB_UNKNOWN"):
        client.put_manifest("bank-serving", "broken", bad.encode(), oci.OCI_MANIFEST)


def test_ecr_auth_from_the_amazon_provider_hook(ds: Devstack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ds.env().items():
        monkeypatch.setenv(key, value)
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook

    host, auth = oci.ecr_auth(EcrHook(aws_conn_id=None))
    assert host == "123456789012.dkr.ecr.us-east-1.amazonaws.com"  # moto's default account
    assert auth == ("AWS", "123456789012-auth-token")
    assert oci.RegistryClient(host, auth=auth).base_url == f"https://{host}"


def test_missing_binary_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from devstack.aws import registry, server

    monkeypatch.setattr(registry.shutil, "which", lambda *a, **k: None)
    assert server.serve(0, tmp_path) == 2
    err = capsys.readouterr().err
    assert "docker-registry" in err and "Debian package" in err
    assert devstack.read_state(tmp_path) is None


@pytest.mark.timeout(120)
def test_up_prints_the_registry_and_down_stops_it(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devstack", *args, "--state-dir", str(tmp_path)],
            cwd=REPO, capture_output=True, text=True, timeout=90,
        )  # fmt: skip

    up = cli("up", "--port", "0")
    registry_pids: list[int] = []
    try:
        assert up.returncode == 0, up.stderr
        state = devstack.read_state(tmp_path)
        assert state is not None
        assert f"export BANK_REGISTRY={state['registry_url']}" in up.stdout
        assert f"http://{state['registry_url']}" in up.stdout
        registry_pids = [p for p in procs.session_pids(state["pid"]) if "docker-registry" in " ".join(procs.cmdline(p))]
        assert len(registry_pids) == 1
        # Its own process group, like a Spark step.
        assert procs.group_pids(registry_pids[0]) == registry_pids
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not any(procs.alive(p) for p in registry_pids)
    assert procs.session_pids(state["pid"]) == []


# -- ECR's immutable tags (devstack.aws.registry.TagGuardProxy) ----------------------------------------


def immutable_repo(ds: Devstack, mutability: str = "IMMUTABLE", filters: list[str] | None = None) -> str:
    """A repository created in moto's ECR (as CloudFormation or CreateRepository would) with that mutability."""
    name = f"imm-{uuid.uuid4().hex[:8]}"
    extra = (
        {"imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": f} for f in filters]}
        if filters
        else {}
    )
    ds.client("ecr").create_repository(repositoryName=name, imageTagMutability=mutability, **extra)
    return name


def push_model(ds: Devstack, repo: str, model: str, tag: str) -> oci_image.PushResult:
    return oci_image.append_layer(
        oci.RegistryClient(ds.registry_url), repo, "base", oci_layer.model_layer({"m": model.encode()}), tag
    )


def test_an_immutable_repository_refuses_to_move_a_tag_as_ecr_does(ds: Devstack, serving: Path) -> None:
    repo = immutable_repo(ds)
    source_image(ds.registry_url, serving, repo, "base")
    first = push_model(ds, repo, "m1", "v1")
    # The same image again: append_layer sees the tag already names it and writes nothing.
    assert push_model(ds, repo, "m1", "v1").digest == first.digest

    with pytest.raises(oci.RegistryError) as info:
        push_model(ds, repo, "m2", "v1")
    assert (info.value.status, info.value.code) == (400, "TAG_INVALID")
    assert str(info.value).endswith(
        f"PUT {repo}:v1: HTTP 400 TAG_INVALID: The image tag 'v1' already exists in the '{repo}' repository "
        "and cannot be overwritten because the tag is immutable."
    )
    client = oci.RegistryClient(ds.registry_url)
    assert client.manifest_digest(repo, "v1") == first.digest  # unmoved
    # As on ECR, even the same manifest PUT again under its tag is refused (a client must look first).
    manifest = requests.get(f"http://{ds.registry_url}/v2/{repo}/manifests/v1", headers={"Accept": oci.OCI_MANIFEST},
                            timeout=10).content  # fmt: skip
    again = requests.put(f"http://{ds.registry_url}/v2/{repo}/manifests/v1", data=manifest,
                         headers={"Content-Type": oci.OCI_MANIFEST}, timeout=10)  # fmt: skip
    assert again.status_code == 400 and again.json()["errors"][0]["code"] == "TAG_INVALID"
    # New tags, and pushes by digest, are fine.
    assert push_model(ds, repo, "m2", "v2").digest != first.digest


def test_mutability_exclusion_filters_and_mutable_repositories(ds: Devstack, serving: Path) -> None:
    # IMMUTABLE_WITH_EXCLUSION: the matching tags (the base image's, which CI moves) stay mutable.
    repo = immutable_repo(ds, "IMMUTABLE_WITH_EXCLUSION", ["serving-base*"])
    source_image(ds.registry_url, serving, repo, "serving-base")
    (serving / "bank_serving" / "extra.py").write_text("X = 1\n")
    try:
        source_image(ds.registry_url, serving, repo, "serving-base")  # moved: allowed
    finally:
        (serving / "bank_serving" / "extra.py").unlink()
    source_image(ds.registry_url, serving, repo, "base")
    push_model(ds, repo, "m1", "v1")
    with pytest.raises(oci.RegistryError, match="TAG_INVALID"):
        push_model(ds, repo, "m2", "v1")
    # MUTABLE_WITH_EXCLUSION: only the matching tags are immutable.
    repo = immutable_repo(ds, "MUTABLE_WITH_EXCLUSION", ["release-*"])
    source_image(ds.registry_url, serving, repo, "base")
    push_model(ds, repo, "m1", "latest")
    push_model(ds, repo, "m2", "latest")
    push_model(ds, repo, "m1", "release-1")
    with pytest.raises(oci.RegistryError, match="TAG_INVALID"):
        push_model(ds, repo, "m2", "release-1")
    # A repository moto's ECR does not have is mutable (the registry creates it on the first push).
    source_image(ds.registry_url, serving, "not-in-ecr", "base")
    push_model(ds, "not-in-ecr", "m1", "v1")
    push_model(ds, "not-in-ecr", "m2", "v1")


def test_a_push_by_skopeo_goes_through_the_proxy(ds: Devstack, serving: Path) -> None:
    """A real registry client (containers/image: chunked PATCH uploads, HEAD checks) through the proxy."""
    assert shutil.which("skopeo"), "skopeo is not installed: `make setup` installs it (Debian package skopeo)"
    source_image(ds.registry_url, serving, "skopeo-src", "base")
    digest = push_model(ds, "skopeo-src", "m1", "v1").digest
    copied = subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
         f"docker://{ds.registry_url}/skopeo-src:v1", f"docker://{ds.registry_url}/skopeo-dst:v1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert oci.RegistryClient(ds.registry_url).manifest_digest("skopeo-dst", "v1") == digest


def test_the_templates_repository_moves_the_base_tag_and_keeps_model_tags(
    ds: Devstack, account: Account, serving: Path
) -> None:
    # infra/bank-ml.cfn.yaml's repository: CI re-pushes serving-base per code change; a model tag never moves.
    repo = account.outputs["ImageRepositoryUri"].rsplit("/", 1)[-1]
    described = ds.client("ecr").describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert described["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    source_image(ds.registry_url, serving, repo, "serving-base-test")
    (serving / "bank_serving" / "extra.py").write_text("X = 2\n")
    try:
        source_image(ds.registry_url, serving, repo, "serving-base-test")
    finally:
        (serving / "bank_serving" / "extra.py").unlink()
    oci_image.append_layer(oci.RegistryClient(ds.registry_url), repo, "serving-base-test",
                           oci_layer.model_layer({"m": b"m1"}), "tmpl-v1")  # fmt: skip
    with pytest.raises(oci.RegistryError, match="TAG_INVALID"):
        oci_image.append_layer(oci.RegistryClient(ds.registry_url), repo, "serving-base-test",
                               oci_layer.model_layer({"m": b"m2"}), "tmpl-v1")  # fmt: skip
