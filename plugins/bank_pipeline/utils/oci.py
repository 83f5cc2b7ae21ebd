"""A registry client without a Docker daemon: its HTTP calls, image references, media types, digests.

- ``RegistryClient``: one method per registry API call (Docker Registry HTTP
  API V2 / OCI distribution spec), basic auth (ECR: user ``AWS``, password
  from ``ecr_auth``), errors raised as ``RegistryError`` naming the registry,
  repository, reference, HTTP status and the registry's own message.
- ``parse_image_ref`` / ``ImageRef``: ``registry/repo@sha256:...`` or ``registry/repo:tag``.
- the manifest, config and layer media types (OCI and Docker schema2), and
  ``sha256_digest``, the content address of a blob or manifest.

Images are made of these calls in ``bank_pipeline.utils.oci_image`` (a layer
appended, a whole image pushed, an image's platform); the layer itself comes
from ``bank_pipeline.utils.oci_layer``.

Not supported: schema1 manifests, chunked or resumable uploads (a blob is sent
in one PUT: fine for a model layer of a few MB), token (Bearer) auth as Docker
Hub uses. Imports only the standard library and ``requests``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
LAYER_TYPE = {OCI_MANIFEST: OCI_LAYER, DOCKER_MANIFEST: DOCKER_LAYER}

__all__ = [
    "ImageRef",
    "RegistryClient",
    "NotOneImageError",
    "RegistryError",
    "ecr_auth",
    "parse_image_ref",
    "sha256_digest",
]


class RegistryError(RuntimeError):
    """A registry call failed; the message names registry, repo, reference, status.

    A plain RuntimeError (not an AirflowFailException): a 5xx or a dropped
    connection may well pass on retry.
    """

    def __init__(
        self,
        message: str,
        *,
        registry: str,
        repo: str,
        reference: str,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.registry, self.repo, self.reference, self.status, self.code = registry, repo, reference, status, code


class NotOneImageError(RegistryError):
    """The reference names an image index or a manifest of another media type, not one image."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- references ---------------------------------------------------------------


class ImageRef(NamedTuple):
    """``registry/repo@sha256:...`` or ``registry/repo:tag``."""

    registry: str
    repo: str
    reference: str  # a digest (sha256:...) or a tag

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry}/{self.repo}{sep}{self.reference}"


def parse_image_ref(ref: str) -> ImageRef:
    """Split ``HOST[:PORT]/REPO[@sha256:HEX | :TAG]`` (the tag defaults to ``latest``)."""
    if "@" in ref:
        name, reference = ref.split("@", 1)
    else:
        name, reference = ref, "latest"
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            name, reference = ref.rsplit(":", 1)
    if "/" not in name:
        raise ValueError(f"image reference {ref!r} has no registry host (HOST[:PORT]/REPO...)")
    registry, repo = name.split("/", 1)
    if not repo or not reference:
        raise ValueError(f"bad image reference {ref!r}")
    return ImageRef(registry, repo, reference)


# -- the client ---------------------------------------------------------------


def _base_url(url: str) -> str:
    if "://" not in url:  # "host:port": plain http only for the loopback
        host = url.split("/", 1)[0].rsplit(":", 1)[0]
        url = ("http://" if host in ("127.0.0.1", "localhost", "[::1]") else "https://") + url
    return url.rstrip("/")


class RegistryClient:
    """One method per registry HTTP API call (``/v2/...``).

    ``base_url``: ``https://ACCOUNT.dkr.ecr.REGION.amazonaws.com`` on AWS,
    ``http://127.0.0.1:PORT`` under devstack (a bare ``host:port`` means http
    for the loopback, https otherwise). ``auth``: (user, password) for basic
    auth, e.g. ``ecr_auth(hook)[1]``. ``bytes_pushed`` counts the blob bytes
    this client has uploaded.
    """

    def __init__(self, base_url: str, auth: tuple[str, str] | None = None, timeout: float = 120.0) -> None:
        self.base_url = _base_url(base_url)
        self.registry = self.base_url.split("://", 1)[1]
        self.timeout = timeout
        self.bytes_pushed = 0
        self._session = requests.Session()
        if auth is not None:
            self._session.auth = auth

    # -- plumbing ---------------------------------------------------------

    def _request(
        self, method: str, path: str, repo: str, reference: str, ok: tuple[int, ...], **kwargs: Any
    ) -> requests.Response:
        url = path if "://" in path else f"{self.base_url}{path}"
        what = f"{method} {repo}{'@' if reference.startswith('sha256:') else ':'}{reference}"
        try:
            resp = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise RegistryError(
                f"registry {self.registry}: {what}: {exc}", registry=self.registry, repo=repo, reference=reference
            ) from exc
        if resp.status_code not in ok:
            code, message = _registry_error(resp)
            raise RegistryError(
                f"registry {self.registry}: {what}: HTTP {resp.status_code}"
                + (f" {code}: {message}" if code or message else ""),
                registry=self.registry,
                repo=repo,
                reference=reference,
                status=resp.status_code,
                code=code,
            )
        return resp

    # -- the API ------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/ (raises unless 200)."""
        self._request("GET", "/v2/", "", "", (200,))

    def get_manifest(self, repo: str, reference: str) -> tuple[dict[str, Any], str, str]:
        """(manifest, media type, digest) of a tag or digest; an index is returned as is."""
        resp = self._request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            repo,
            reference,
            (200,),
            headers={"Accept": ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))},
        )
        digest = sha256_digest(resp.content)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(
                f"registry {self.registry}: {repo}@{reference}: content has digest {digest}",
                registry=self.registry, repo=repo, reference=reference,
            )  # fmt: skip
        manifest = json.loads(resp.content)
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip() or manifest.get("mediaType", "")
        return manifest, media_type, digest

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """HEAD a manifest: its digest, or None if the tag/digest is unknown."""
        resp = self._request(
            "HEAD",
            f"/v2/{repo}/manifests/{reference}",
            repo,
            reference,
            (200, 404),
            headers={"Accept": ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))},
        )
        return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None

    def get_blob(self, repo: str, digest: str) -> bytes:
        """A blob's bytes, checked against its digest."""
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", repo, digest, (200,))
        if sha256_digest(resp.content) != digest:
            raise RegistryError(
                f"registry {self.registry}: blob {repo}@{digest}: content does not match its digest",
                registry=self.registry, repo=repo, reference=digest,
            )  # fmt: skip
        return resp.content

    def blob_exists(self, repo: str, digest: str) -> bool:
        """HEAD a blob."""
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", repo, digest, (200, 404))
        return resp.status_code == 200

    def push_blob(self, repo: str, data: bytes) -> str:
        """Upload a blob unless the repository has it (POST an upload, PUT it whole); its digest."""
        digest = sha256_digest(data)
        if self.blob_exists(repo, digest):
            return digest
        start = self._request("POST", f"/v2/{repo}/blobs/uploads/", repo, digest, (202,))
        location = start.headers.get("Location")
        if not location:
            raise RegistryError(
                f"registry {self.registry}: POST {repo} blob upload: no Location header",
                registry=self.registry, repo=repo, reference=digest,
            )  # fmt: skip
        if "://" not in location:
            location = f"{self.base_url}{location}"
        sep = "&" if "?" in location else "?"
        self._request(
            "PUT",
            f"{location}{sep}digest={digest}",
            repo,
            digest,
            (201,),
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self.bytes_pushed += len(data)
        return digest

    def put_manifest(self, repo: str, reference: str, manifest: bytes, media_type: str) -> str:
        """PUT a manifest under a tag (or its digest); return its digest, checked against the bytes."""
        digest = sha256_digest(manifest)
        resp = self._request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            repo,
            reference,
            (201,),
            data=manifest,
            headers={"Content-Type": media_type},
        )
        answered = resp.headers.get("Docker-Content-Digest", digest)
        if answered != digest:
            raise RegistryError(
                f"registry {self.registry}: PUT {repo}:{reference}: registry says digest {answered}, "
                f"the manifest's bytes have {digest}",
                registry=self.registry, repo=repo, reference=reference,
            )  # fmt: skip
        return digest


def _registry_error(resp: requests.Response) -> tuple[str | None, str]:
    """The first (code, message) of a registry error body ({"errors": [...]}), or (None, body text)."""
    try:
        errors = resp.json().get("errors") or []
        first = errors[0]
        detail = first.get("detail")
        message = first.get("message", "") + (f" ({json.dumps(detail)})" if detail else "")
        return first.get("code"), message
    except (ValueError, AttributeError, IndexError, TypeError):
        return None, resp.text[:200].strip()


# -- ECR ----------------------------------------------------------------------


def ecr_auth(ecr_hook: Any, registry_id: str | None = None) -> tuple[str, tuple[str, str]]:
    """(registry host, (user, password)) for ECR's registry API, from an Amazon provider ``EcrHook``.

    ``EcrHook(aws_conn_id=...).get_temporary_credentials`` wraps ECR's
    GetAuthorizationToken (valid 12 hours); the user is ``AWS``. Use as
    ``host, auth = ecr_auth(hook); RegistryClient(f"https://{host}", auth=auth)``.
    """
    creds = ecr_hook.get_temporary_credentials(registry_ids=[registry_id] if registry_id else None)
    if not creds:
        raise RuntimeError(f"ECR returned no authorization data (registry id {registry_id or 'default'})")
    first = creds[0]
    return first.registry, (first.username, first.password)
