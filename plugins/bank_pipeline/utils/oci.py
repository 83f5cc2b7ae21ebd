"""OCI images without a Docker daemon: a deterministic layer and a small registry client.

A release appends one layer holding the model to the serving base image and
pushes only that layer, a new config and a new manifest through the registry
HTTP API (the technique of ``crane append``, ko and jib). See
docs/interfaces.md ("Registry (S3) and image") for the image's layout.

- ``layer(files)`` / ``model_layer(files)``: a gzip'd tar whose bytes depend
  only on the files' paths and bytes (mtime 0, uid/gid 0, no user names, modes
  0644/0755, sorted, gzip header without time or name), so the same model
  gives the same digest. The ``diff_id`` (sha256 of the tar) is stable
  everywhere; the gzip ``digest`` is stable for a given zlib (the one this
  process links), which is what idempotent re-pushes need.
- ``RegistryClient``: one method per registry API call (Docker Registry HTTP
  API V2 / OCI distribution spec), basic auth (ECR: user ``AWS``, password
  from ``ecr_auth``), errors raised as ``RegistryError`` naming the registry,
  repository, reference, HTTP status and the registry's own message.
- ``append_layer``: base manifest + config -> new config (diff_id appended,
  a history entry with a fixed timestamp, env merged) -> new manifest under a
  tag; idempotent (existing blobs are not re-sent, an unchanged tag is not
  rewritten). The tag may be a function of the base manifest's digest, so a
  new base image never needs an existing tag moved (ECR's IMMUTABLE tags).
- ``image_platform``: an image's os/architecture from its config, what the
  release checks against Lambda's ``Architectures`` and the Deployment's
  ``kubernetes.io/arch`` node selector (``lambda_architecture`` maps the names).

Not supported: schema1 manifests, zstd layers, chunked or resumable uploads
(a blob is sent in one PUT: fine for a model layer of a few MB), token (Bearer)
auth as Docker Hub uses; an image index is resolved to one platform
(linux/amd64 by default) and the result is a single-platform manifest, which
is what Lambda runs. Imports only the standard library and ``requests``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

MODEL_DIR = "opt/ml/model"  # in the image: /opt/ml/model (BANK_MODEL_DIR)
EPOCH = "1970-01-01T00:00:00Z"
DEFAULT_PLATFORM = "linux/amd64"

__all__ = [
    "Layer",
    "ImageRef",
    "Platform",
    "PushResult",
    "RegistryClient",
    "NotOneImageError",
    "RegistryError",
    "append_layer",
    "deterministic_tar",
    "ecr_auth",
    "image_platform",
    "lambda_architecture",
    "layer",
    "model_layer",
    "package_files",
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


# -- the layer ----------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer: ``digest`` names the blob, ``diff_id`` the uncompressed tar."""

    blob: bytes
    digest: str
    diff_id: str

    @property
    def size(self) -> int:
        return len(self.blob)


def _clean_path(path: str) -> tuple[str, ...]:
    parts = tuple(p for p in path.strip("/").split("/") if p not in ("", "."))
    if not parts or ".." in parts or path.startswith("/"):
        raise ValueError(f"layer path must be relative, without '..': {path!r}")
    return parts


def deterministic_tar(files: Mapping[str, bytes]) -> bytes:
    """A tar of ``files`` (relative path -> bytes) and every parent directory.

    Entries sorted by path; mtime 0, uid/gid 0, empty uname/gname, 0755
    directories, 0644 files: the bytes depend on nothing but the input.
    """
    entries: dict[str, bytes | None] = {}  # None: a directory
    for path, data in files.items():
        parts = _clean_path(path)
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if entries.get(parent) is not None:
                raise ValueError(f"layer path {parent!r} is both a file and a directory")
            entries[parent] = None
        name = "/".join(parts)
        if name in entries:
            raise ValueError(f"layer path {name!r} given twice or is also a directory")
        entries[name] = bytes(data)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            content = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


_SKIP_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache"}


def package_files(package: str) -> dict[str, bytes]:
    """The files of an importable package by path under its parent (``bank_serving/model.py``).

    What an image layer or a zip of the package holds: read with importlib.resources, so
    it works for a wheel, an editable checkout or a zip; caches and bytecode are skipped.
    """
    from importlib import resources

    root = resources.files(package)
    files: dict[str, bytes] = {}
    pending = [(root, package)]
    while pending:
        node, rel = pending.pop()
        for child in node.iterdir():
            name = f"{rel}/{child.name}"
            if child.is_dir():
                if child.name not in _SKIP_PARTS:
                    pending.append((child, name))
            elif not child.name.endswith((".pyc", ".pyo")):
                files[name] = child.read_bytes()
    return dict(sorted(files.items()))


def layer(files: Mapping[str, bytes]) -> Layer:
    """A deterministic gzip'd tar layer of ``files`` (paths relative to the image's /)."""
    tar = deterministic_tar(files)
    out = io.BytesIO()
    # filename="" and mtime=0: the gzip header carries neither name nor time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(tar)
    blob = out.getvalue()
    return Layer(blob=blob, digest=sha256_digest(blob), diff_id=sha256_digest(tar))


def model_layer(files: Mapping[str, bytes]) -> Layer:
    """The model layer: ``files`` under /opt/ml/model/.

    Keys are file names (``model.onnx``), placed under /opt/ml/model/, or paths
    already there (``opt/ml/model/model.onnx``, with or without the leading /):
    both give the same layer.
    """

    def path(name: str) -> str:
        rel = name.lstrip("/")
        return rel if rel.startswith(f"{MODEL_DIR}/") else f"{MODEL_DIR}/{rel}"

    return layer({path(name): data for name, data in files.items()})


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


# -- append a layer -----------------------------------------------------------


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
