"""The images devstack's Lambda runs: an ImageUri resolved to its digest in devstack's registry (CodeSha256, at
CreateFunction and UpdateFunctionCode), and an image prepared for podman (its platform's manifest, its
architecture, pulled), as ``devstack.aws.awslambda`` describes."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from moto.awslambda.exceptions import InvalidParameterValueException

from bank_pipeline.utils import oci, oci_image
from devstack.aws.lambda_config import CONFIG, is_ours


def resolve_image_uri(uri: str) -> str | None:
    """``registry/repo@digest`` of an ImageUri in devstack's registry (None: not ours)."""
    try:
        ref = oci.parse_image_ref(uri)
    except ValueError:
        return None
    if not is_ours(ref.registry):
        return None
    try:
        digest = oci.RegistryClient(ref.registry, timeout=10).manifest_digest(ref.repo, ref.reference)
    except oci.RegistryError as exc:
        raise InvalidParameterValueException(f"devstack: cannot check image {uri}: {exc}") from exc
    if digest is None:
        raise InvalidParameterValueException(f"Source image {uri} does not exist. Provide a valid source image.")
    return f"{ref.registry}/{ref.repo}@{digest}"


@dataclass(frozen=True)
class Image:
    """An image as devstack runs it: ``registry/repo@digest`` (a platform's manifest) and its architecture."""

    ref: str
    digest: str
    architecture: str = ""


_IMAGES: dict[str, Image] = {}  # by the reference asked for (a digest's answer never changes)
_IMAGES_LOCK = threading.Lock()


def prepare_image(ref: oci.ImageRef) -> Image:
    """Resolve ``ref`` in the registry (an index: its linux/amd64 image), read its architecture, pull it into podman.

    Raises oci.RegistryError (404: the image is gone) or podman's error (a
    layer podman cannot apply). Once per digest.
    """
    key = str(ref)
    with _IMAGES_LOCK:
        if key in _IMAGES and ref.reference.startswith("sha256:"):
            return _IMAGES[key]
    client = oci.RegistryClient(ref.registry)
    manifest, media_type, digest = client.get_manifest(ref.repo, ref.reference)
    if media_type in oci.INDEX_TYPES:
        manifest, media_type, digest = oci_image.select_platform(client, ref.repo, manifest, ref.reference)
    config = json.loads(client.get_blob(ref.repo, manifest["config"]["digest"]))
    image = Image(f"{ref.registry}/{ref.repo}@{digest}", digest, config.get("architecture") or "")
    if CONFIG.environments is not None:
        CONFIG.environments.pull(image.ref)
    with _IMAGES_LOCK:
        _IMAGES[key] = image
    return image
