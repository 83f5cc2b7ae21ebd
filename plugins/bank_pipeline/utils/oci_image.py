"""Images on a registry, over ``RegistryClient``'s calls: an image's platform, a layer appended, an image pushed.

A release appends one layer holding the model to the serving base image and
pushes only that layer, a new config and a new manifest through the registry
HTTP API (the technique of ``crane append``, ko and jib). See
docs/interfaces.md ("Registry (S3) and image") for the image's layout.

- ``append_layer``: base manifest + config -> new config (diff_id appended,
  a history entry with a fixed timestamp, env merged) -> new manifest under a
  tag; idempotent (existing blobs are not re-sent, an unchanged tag is not
  rewritten). The tag may be a function of the base manifest's digest, so a
  new base image never needs an existing tag moved (ECR's IMMUTABLE tags).
- ``push_image``: a whole image of given layers and config, pushed the same way.
- ``image_platform``: an image's os/architecture from its config, what the
  release checks against Lambda's ``Architectures`` and the Deployment's
  ``kubernetes.io/arch`` node selector (``lambda_architecture`` maps the names).

An image index is resolved to one platform (linux/amd64 by default,
``select_platform``) and the result is a single-platform manifest, which is
what Lambda runs. The layer comes from ``bank_pipeline.utils.oci_layer``; the
registry calls are ``bank_pipeline.utils.oci``'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bank_pipeline.utils.oci import (
    INDEX_TYPES,
    LAYER_TYPE,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    NotOneImageError,
    RegistryClient,
    RegistryError,
    sha256_digest,
)
from bank_pipeline.utils.oci_layer import Layer

EPOCH = "1970-01-01T00:00:00Z"
DEFAULT_PLATFORM = "linux/amd64"

__all__ = [
    "Platform",
    "PushResult",
    "append_layer",
    "image_platform",
    "lambda_architecture",
]


# -- platforms ----------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """What an image runs on, from its config (``architecture`` in GOARCH names: amd64, arm64)."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/architecture[/variant]`` (``linux/amd64``), as ``str`` writes it."""
        os_name, _, rest = text.partition("/")
        architecture, _, variant = rest.partition("/")
        return cls(os=os_name, architecture=architecture, variant=variant)


# An image config's architecture (GOARCH) -> Lambda's Architectures value; Lambda runs no other.
LAMBDA_ARCHITECTURES = {"amd64": "x86_64", "arm64": "arm64"}


def lambda_architecture(platform: Platform) -> str | None:
    """Lambda's name for the architecture of ``platform`` (x86_64, arm64), or None if Lambda has none."""
    if platform.os != "linux":
        return None
    return LAMBDA_ARCHITECTURES.get(platform.architecture)


def select_platform(
    client: RegistryClient, repo: str, index: dict[str, Any], reference: str, platform: str = DEFAULT_PLATFORM
) -> tuple[dict[str, Any], str, str]:
    """The manifest of ``platform`` ("os/arch") in an image index."""
    os_name, arch = platform.split("/", 1)
    for entry in index.get("manifests", []):
        p = entry.get("platform") or {}
        if p.get("os") == os_name and p.get("architecture") == arch:
            return client.get_manifest(repo, entry["digest"])
    raise RegistryError(
        f"registry {client.registry}: {repo}:{reference} is an index without a {platform} image",
        registry=client.registry, repo=repo, reference=reference,
    )  # fmt: skip


def image_platform(client: RegistryClient, repo: str, reference: str) -> Platform:
    """The os/architecture in the config of ``repo`` at ``reference`` (a tag or digest).

    An image index is refused, naming what it holds: what the release deploys is one
    single-platform manifest (Lambda takes nothing else; ``docker buildx`` makes an index
    unless told ``--provenance=false``, and ``--platform`` picks the architecture).
    """
    manifest, media_type, _digest = client.get_manifest(repo, reference)
    if media_type in INDEX_TYPES:
        held = ", ".join(
            "/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant")))) or "unknown"
            for p in (entry.get("platform") or {} for entry in manifest.get("manifests", []))
        )
        raise NotOneImageError(
            f"registry {client.registry}: {repo}@{reference} is an image index ({held or 'empty'}), not one "
            "image: build it with `docker buildx build --platform linux/amd64 --provenance=false`",
            registry=client.registry, repo=repo, reference=reference,
        )  # fmt: skip
    if media_type not in MANIFEST_TYPES:
        raise NotOneImageError(
            f"registry {client.registry}: {repo}@{reference} has media type {media_type!r}; "
            f"expected one of {', '.join(MANIFEST_TYPES)}",
            registry=client.registry, repo=repo, reference=reference,
        )  # fmt: skip
    config = json.loads(client.get_blob(repo, manifest["config"]["digest"]))
    return _platform(config)


def _platform(config: Mapping[str, Any]) -> Platform:
    return Platform(
        os=str(config.get("os") or ""),
        architecture=str(config.get("architecture") or ""),
        variant=str(config.get("variant") or ""),
    )


# -- append a layer, push an image --------------------------------------------


@dataclass(frozen=True)
class PushResult:
    """The pushed image: ``repo@digest`` is what to deploy (never the mutable tag)."""

    digest: str
    repo: str
    tag: str
    pushed_bytes: int  # blob bytes uploaded (0 when the registry had them all)
    seconds: float
    base_digest: str = ""  # the base image manifest the layer was appended to
    platform: Platform | None = None  # from the base image's config


def _merge_env(env_list: list[str], env: Mapping[str, str]) -> list[str]:
    merged = list(env_list)
    index = {item.split("=", 1)[0]: i for i, item in enumerate(merged)}
    for key in sorted(env):
        item = f"{key}={env[key]}"
        if key in index:
            merged[index[key]] = item
        else:
            merged.append(item)
    return merged


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def append_layer(
    client: RegistryClient,
    repo: str,
    base_ref: str,
    layer: Layer,
    tag: str | Callable[[str], str],
    env: Mapping[str, str] | None = None,
    *,
    platform: str = DEFAULT_PLATFORM,
    # Written into the config's history, so part of the digest: unchanged since append_layer lived in oci.
    created_by: str = "bank_pipeline.utils.oci.append_layer",
) -> PushResult:
    """Push ``base_ref`` + ``layer`` as ``repo:tag``; return the new manifest's digest.

    ``tag`` is a tag or a function of the base manifest's digest giving one: a tag
    that names both the layer's content and the base never has to move to another
    image, which a repository with immutable tags (ECR IMMUTABLE) refuses.
    The new config is the base's with the layer's diff_id appended, a history
    entry dated like the base (or 1970-01-01) and ``env`` merged into
    config.Env; the manifest keeps the base's media types (OCI or Docker
    schema2). Same inputs, same digest; blobs the registry has are not sent,
    and a tag that already names the new manifest is not written again.
    """
    started = time.monotonic()
    pushed_before = client.bytes_pushed
    base, media_type, base_digest = client.get_manifest(repo, base_ref)
    if media_type in INDEX_TYPES:
        base, media_type, base_digest = select_platform(client, repo, base, base_ref, platform)
    if callable(tag):
        tag = tag(base_digest)
    if media_type not in MANIFEST_TYPES:
        raise RegistryError(
            f"registry {client.registry}: {repo}:{base_ref} has media type {media_type!r}; "
            f"expected one of {', '.join(MANIFEST_TYPES)}",
            registry=client.registry, repo=repo, reference=base_ref,
        )  # fmt: skip
    config = json.loads(client.get_blob(repo, base["config"]["digest"]))
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    if len(rootfs.get("diff_ids", [])) != len(base.get("layers", [])):
        raise RegistryError(
            f"registry {client.registry}: {repo}:{base_ref}: config has {len(rootfs.get('diff_ids', []))} "
            f"diff_ids for {len(base.get('layers', []))} layers",
            registry=client.registry, repo=repo, reference=base_ref,
        )  # fmt: skip
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), layer.diff_id]
    config["history"] = [
        *config.get("history", []),
        {"created": config.get("created") or EPOCH, "created_by": created_by, "comment": layer.diff_id},
    ]
    if env:
        inner = config.setdefault("config", {})
        inner["Env"] = _merge_env(inner.get("Env") or [], env)
    config_bytes = _dumps(config)

    client.push_blob(repo, layer.blob)
    config_digest = client.push_blob(repo, config_bytes)
    manifest = dict(base)
    manifest["config"] = {**base["config"], "digest": config_digest, "size": len(config_bytes)}
    manifest["layers"] = [
        *base.get("layers", []),
        {"mediaType": LAYER_TYPE[media_type], "digest": layer.digest, "size": layer.size},
    ]
    manifest_bytes = _dumps(manifest)
    digest = sha256_digest(manifest_bytes)
    if client.manifest_digest(repo, tag) != digest:
        client.put_manifest(repo, tag, manifest_bytes, media_type)
    return PushResult(
        digest=digest,
        repo=repo,
        tag=tag,
        pushed_bytes=client.bytes_pushed - pushed_before,
        seconds=round(time.monotonic() - started, 3),
        base_digest=base_digest,
        platform=_platform(config),
    )


def push_image(client: RegistryClient, repo: str, tag: str, layers: list[Layer], config: dict[str, Any]) -> str:
    """Push a whole OCI image (``config`` gets ``rootfs`` from ``layers``); return its digest.

    A tag that already names this image is not written again (an immutable tag would refuse it).
    """
    config = {**config, "rootfs": {"type": "layers", "diff_ids": [item.diff_id for item in layers]}}
    config_bytes = _dumps(config)
    for item in layers:
        client.push_blob(repo, item.blob)
    config_digest = client.push_blob(repo, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER, "digest": item.digest, "size": item.size} for item in layers],
    }
    manifest_bytes = _dumps(manifest)
    digest = sha256_digest(manifest_bytes)
    if client.manifest_digest(repo, tag) == digest:
        return digest
    return client.put_manifest(repo, tag, manifest_bytes, OCI_MANIFEST)
