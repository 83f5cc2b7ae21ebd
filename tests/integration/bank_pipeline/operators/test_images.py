"""ModelImagePushOperator against devstack: registry S3 → model layer → image, and its refusals."""

from __future__ import annotations

import json

import pytest
from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from bank_pipeline.model_registry import ModelRegistry
from bank_pipeline.operators.images import ModelImagePushOperator, image_model_json
from bank_pipeline.utils.oci import RegistryClient, RegistryError
from bank_pipeline.utils.oci_image import append_layer
from bank_pipeline.utils.oci_layer import model_layer
from tests.support.devstack_image_helpers import code_image, model_files, source_image, write_serving
from tests.support.recording_ti import RecordingTI

pytestmark = pytest.mark.integration


@pytest.fixture
def aws_env(ds, monkeypatch):
    for key, value in ds.env().items():
        monkeypatch.setenv(key, value)


def put_version(ds, prefix: str, version: str, info: dict) -> None:
    """A registered version as the model build leaves it: the model, then model.json last."""
    bucket, _, key = prefix.removeprefix("s3://").partition("/")
    files = {**model_files(version), "model.json": json.dumps(info).encode()}
    for name in sorted(files, key=lambda n: n == "model.json"):
        ds.client("s3").put_object(Bucket=bucket, Key=f"{key}{version}/{name}", Body=files[name])


@pytest.fixture
def registry(ds, bucket, aws_env, tmp_path) -> str:
    """A fresh registry prefix holding version v1; returns the prefix."""
    prefix = f"s3://{bucket}/models/{tmp_path.name}/"
    put_version(ds, prefix, "v1", {"version": "v1", "sha256": "x"})
    assert ModelRegistry(S3Hook(aws_conn_id=None), prefix).model_info("v1") == {"version": "v1", "sha256": "x"}
    return prefix


def push(ds, prefix: str, version: str, base_tag: str = "serving-base", repository: str = "push-test") -> dict:
    op = ModelImagePushOperator(
        task_id="push", version=version, registry_prefix=prefix,
        registry=ds.registry_url, repository=repository, base_tag=base_tag, aws_conn_id=None,
        plain_http_registries=[ds.registry_url],
    )  # fmt: skip
    ti = RecordingTI()
    pushed = op.execute(context={"ti": ti})
    # The image URI also under its own key: the release's operators take it as an XComArg.
    assert ti.pushed["image_uri"] == pushed["image_uri"]
    return pushed


def test_push_is_deterministic_and_sends_nothing_the_second_time(ds, registry, tmp_path):
    code_image(ds.registry_url, "push-test", "serving-base", {"var/task/app.py": b"def handler(e, c):\n    return e\n"})
    first = push(ds, registry, "v1")
    second = push(ds, registry, "v1")
    assert first["digest"] == second["digest"]
    assert first["image_uri"] == f"{ds.registry_url}/push-test@{first['digest']}"
    assert first["pushed_bytes"] > 0 and second["pushed_bytes"] == 0
    assert first["architecture"] == "amd64"


def test_re_release_on_a_new_base_image_moves_no_tag(ds, registry, tmp_path):
    """ECR with immutable tags (what the account's template sets): the base image's tag may move (an
    exclusion filter), a model image's never does. The same model on a new base gets a new tag."""
    repository = f"push-imm-{tmp_path.name[-8:]}".lower().replace("_", "-")
    ds.client("ecr").create_repository(
        repositoryName=repository, imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "serving-base*"}],
    )  # fmt: skip
    serving = write_serving(tmp_path / "serving")
    old_base = source_image(ds.registry_url, serving, repository, "serving-base")
    first = push(ds, registry, "v1", repository=repository)
    assert first["tag"] == f"v1-{old_base.removeprefix('sha256:')[:12]}" and first["base_digest"] == old_base

    (serving / "bank_serving" / "fix.py").write_text("FIXED = True\n")  # a new serving base image, same model
    new_base = source_image(ds.registry_url, serving, repository, "serving-base")
    second = push(ds, registry, "v1", repository=repository)
    assert second["tag"] == f"v1-{new_base.removeprefix('sha256:')[:12]}" != first["tag"]
    assert second["digest"] != first["digest"]
    client = RegistryClient(ds.registry_url)
    assert client.manifest_digest(repository, first["tag"]) == first["digest"]  # the first release's tag: unmoved
    assert push(ds, registry, "v1", repository=repository)["pushed_bytes"] == 0  # a rerun writes nothing

    # Tagging by model version alone, as releases did before: the re-release is refused.
    with pytest.raises(RegistryError, match=r"HTTP 400 TAG_INVALID: The image tag 'v1' already exists"):
        for base in (old_base, new_base):
            append_layer(client, repository, base, model_layer(model_files("v1")), "v1")


def test_unregistered_version_is_refused(ds, registry):
    with pytest.raises(ValueError, match="model version 'nope' is not registered"):
        push(ds, registry, "nope")


def test_missing_base_image_names_repo_and_tag(ds, registry):
    with pytest.raises(RegistryError, match="push-test.*no-such-base"):
        push(ds, registry, "v1", base_tag="no-such-base")


def test_the_same_model_registered_elsewhere_later_gives_the_same_image(ds, bucket, aws_env, tmp_path):
    """A second lake (or a re-created one) sharing the repository: the same model, registered at
    another time, is the same image under the same tag, so an immutable tag is no obstacle."""
    code_image(ds.registry_url, "push-test", "serving-base", {"var/task/app.py": b"def handler(e, c):\n    return e\n"})
    pushed = []
    for n, created_at in enumerate(("2026-01-01T00:00:00Z", "2026-11-28T12:00:00Z")):
        prefix = f"s3://{bucket}/models/{tmp_path.name}-lake{n}/"
        info = {"version": "v7", "sha256": "x", "threshold": 0.5, "created_at": created_at}
        put_version(ds, prefix, "v7", info)
        pushed.append(push(ds, prefix, "v7"))
    assert (pushed[1]["digest"], pushed[1]["tag"]) == (pushed[0]["digest"], pushed[0]["tag"])
    assert pushed[1]["pushed_bytes"] == 0
    # What the image holds: the model's description, not when it was registered.
    assert json.loads(image_model_json(json.dumps(info).encode())) == {"version": "v7", "sha256": "x", "threshold": 0.5}
