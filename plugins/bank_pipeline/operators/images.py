"""Model image = serving base image + one layer holding the model, pushed without a Docker daemon.

The base image (runtime, libraries, handler) changes when code changes; the
model changes every release. So a release appends one small deterministic layer
to the base image's manifest and pushes only that layer, a new config and a new
manifest through the registry HTTP API (the technique of ``crane append``, ko
and jib): seconds, no daemon, and the same model bytes give the same digest.
On AWS the registry is ECR (credentials from EcrHook); locally, devstack's.

The model image's tag is ``<model version>-<12 hex of the base manifest's digest>``
(``model_image_tag``): the same model on a new base image gets a new tag, so no
release ever moves an existing tag, which an ECR repository with IMMUTABLE tags
refuses (``TAG_INVALID``). Same model and base, same tag and digest: a rerun
writes nothing. That holds across registries too (a second lake, a re-created
bucket, staging and production sharing one repository): the image's model.json is
the registry's without ``created_at``, the one field that says when the version was
registered rather than what it is, so the layer depends on the model alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.sdk import BaseOperator

from bank_pipeline.links import RegistryImageLink

if TYPE_CHECKING:
    from airflow.sdk import Context

MODEL_DIR = "/opt/ml/model"
MODEL_FILES = ("model.onnx", "model.json")
# model.json fields that describe the registration, not the model: kept out of the image.
REGISTRATION_FIELDS = ("created_at",)


def image_model_json(registered: bytes) -> bytes:
    """The model.json the image holds: the registry's, less REGISTRATION_FIELDS."""
    import json

    info = {k: v for k, v in json.loads(registered).items() if k not in REGISTRATION_FIELDS}
    return (json.dumps(info, indent=2) + "\n").encode()


class PushedImage(TypedDict):
    """What ModelImagePushOperator returns (its XCom)."""

    image_uri: str
    digest: str
    tag: str
    base_digest: str
    architecture: str
    layer_bytes: int
    pushed_bytes: int
    push_seconds: float


def model_image_tag(version: str, base_digest: str) -> str:
    """``<version>-<first 12 hex of the base digest>``: unique per (model, base image), never moved."""
    return f"{version}-{base_digest.removeprefix('sha256:')[:12]}"


class ModelImagePushOperator(BaseOperator):
    """Append the registered model ``version`` to the serving base image and push it,
    tagged ``model_image_tag(version, base digest)``.

    :param version: a version registered in the S3 model registry.
    :param registry_prefix: the registry's s3:// prefix.
    :param registry: host[:port] of the image registry; empty: the account's ECR.
    :param repository: holds both the base image and the model images.
    :param base_tag: the serving base image's tag.
    :param plain_http_registries: registries reached over plain HTTP (settings' BANK_PLAIN_HTTP_REGISTRIES).
    :return: a PushedImage (``image_uri`` is ``host/repo@sha256:…``)
    """

    template_fields: Sequence[str] = ("version", "registry", "repository", "base_tag")
    operator_extra_links = (RegistryImageLink(),)

    def __init__(
        self,
        *,
        version: str,
        registry_prefix: str,
        registry: str,
        repository: str,
        base_tag: str,
        aws_conn_id: str | None = "aws_default",
        plain_http_registries: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plain_http_registries = tuple(plain_http_registries)
        self.version = version
        self.registry_prefix = registry_prefix
        self.registry = registry
        self.repository = repository
        self.base_tag = base_tag
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> PushedImage:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from bank_pipeline.hooks.image_registry import ImageRegistryHook
        from bank_pipeline.model_registry import ModelRegistry
        from bank_pipeline.utils import oci_image, oci_layer

        registry = ModelRegistry(S3Hook(aws_conn_id=self.aws_conn_id), self.registry_prefix)
        if registry.model_info(self.version) is None:
            raise ValueError(f"model version {self.version!r} is not registered under {self.registry_prefix}")
        with tempfile.TemporaryDirectory() as tmp:
            files = {
                f"{MODEL_DIR.lstrip('/')}/{name}": registry.download(self.version, name, Path(tmp)).read_bytes()
                for name in MODEL_FILES
            }
        model_json = f"{MODEL_DIR.lstrip('/')}/model.json"
        files[model_json] = image_model_json(files[model_json])
        layer = oci_layer.model_layer(files)
        host, client = ImageRegistryHook(self.registry, self.aws_conn_id, self.plain_http_registries).get_conn()
        version = self.version
        pushed = oci_image.append_layer(
            client,
            self.repository,
            self.base_tag,
            layer,
            tag=lambda base_digest: model_image_tag(version, base_digest),
            env={"BANK_MODEL_DIR": MODEL_DIR},
        )
        image_uri = f"{host}/{self.repository}@{pushed.digest}"
        # Under its own key too, so that the release's operators take it as an XComArg.
        context["ti"].xcom_push(key="image_uri", value=image_uri)
        RegistryImageLink.persist(
            context,
            self,
            registry=host,
            repository=self.repository,
            digest=pushed.digest,
            plain_http=host in self.plain_http_registries,
        )
        self.log.info(
            "Pushed %s as %s:%s (%s; layer %s, %d bytes, %d bytes sent in %.2fs)",
            image_uri, self.repository, pushed.tag, pushed.platform, layer.digest, layer.size,
            pushed.pushed_bytes, pushed.seconds,
        )  # fmt: skip
        return {
            "image_uri": image_uri,
            "digest": pushed.digest,
            "tag": pushed.tag,
            "base_digest": pushed.base_digest,
            "architecture": pushed.platform.architecture if pushed.platform else "",
            "layer_bytes": layer.size,
            "pushed_bytes": pushed.pushed_bytes,
            "push_seconds": round(pushed.seconds, 3),
        }
