"""Push an image from podman's store to a registry, quickly the second time: the first push of an
image records its manifest and compressed blobs, a later one sends them through the registry API."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bank_pipeline.utils import oci
from devstack.cache import cache_dir
from devstack.containers import podman as pm


def _manifest_bytes(registry: str, repo: str, digest: str) -> tuple[bytes, str]:
    """The raw manifest ``repo@digest`` (bytes as stored: its digest is theirs) and its media type."""
    import requests

    accept = ", ".join(oci.MANIFEST_TYPES)
    resp = requests.get(f"http://{registry}/v2/{repo}/manifests/{digest}", headers={"Accept": accept}, timeout=30)
    resp.raise_for_status()
    return resp.content, resp.headers.get("Content-Type", "").split(";")[0]


PUSHED_KEEP = 3  # image records (and their compressed blobs) kept in <cache>/pushed


def push(ref: str, destination: str, store: pm.Store | None = None) -> str:
    """Push image ``ref`` to ``destination`` (``HOST:PORT/REPO:TAG``, plain http); return ``HOST:PORT/REPO@sha256:...``.

    ``podman push`` compresses every layer again unless it pushed them to that
    very host:port before (its blob cache is per location), and devstack's
    registry gets a new port at each start: 5-6 s for the serving image, every
    time. So the first push of an image is recorded under
    ``<cache>/pushed`` (image id -> the manifest's bytes, and the compressed
    blobs, fetched back from the registry), and a later push of the same image
    uploads those blobs through the registry API (what the registry has is not
    sent) and puts the manifest: about a second to an empty registry, a few
    milliseconds to one that has them.
    """
    store = store or pm.default_store()
    name, tag = destination.rsplit(":", 1) if ":" in destination.rsplit("/", 1)[-1] else (destination, "latest")
    registry, repo = name.split("/", 1)
    image_id = str(pm.image_inspect(ref, store)["Id"])
    home = cache_dir() / "pushed"
    record = home / f"{image_id}.json"
    if record.exists():
        known = json.loads(record.read_text())
        if _push_recorded(known, registry, repo, tag, home / "blobs"):
            return f"{name}@{known['digest']}"
    with tempfile.TemporaryDirectory() as tmp:
        digest_file = Path(tmp) / "digest"
        pm.podman(
            "push", "--tls-verify=false", "--digestfile", str(digest_file), ref, f"docker://{destination}",
            store=store, timeout=1800,
        )  # fmt: skip
        digest = digest_file.read_text().strip()
    _record_push(home, image_id, registry, repo, digest)
    return f"{name}@{digest}"


def _push_recorded(known: dict[str, str], registry: str, repo: str, tag: str, blobs: Path) -> bool:
    """Push a recorded image with the registry API; False if a blob of it is missing from the cache."""
    client = oci.RegistryClient(registry)
    manifest_bytes = bytes.fromhex(known["manifest"])
    if client.manifest_digest(repo, known["digest"]) != known["digest"]:
        manifest = json.loads(manifest_bytes)
        for desc in [manifest["config"], *manifest.get("layers", [])]:
            if client.blob_exists(repo, desc["digest"]):
                continue
            path = blobs / desc["digest"].replace(":", "-")
            if not path.is_file():
                return False
            client.push_blob(repo, path.read_bytes())
    client.put_manifest(repo, tag, manifest_bytes, known["media_type"])
    return True


def _record_push(home: Path, image_id: str, registry: str, repo: str, digest: str) -> None:
    """Keep the pushed manifest and its blobs (fetched back from the registry); prune older records."""
    manifest, media_type = _manifest_bytes(registry, repo, digest)
    client = oci.RegistryClient(registry)
    blobs = home / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    parsed = json.loads(manifest)
    for desc in [parsed["config"], *parsed.get("layers", [])]:
        path = blobs / desc["digest"].replace(":", "-")
        if not path.is_file():
            partial = path.with_suffix(".partial")
            partial.write_bytes(client.get_blob(repo, desc["digest"]))  # checked against its digest
            os.replace(partial, path)
    (home / f"{image_id}.json").write_text(
        json.dumps({"digest": digest, "media_type": media_type, "manifest": manifest.hex()})
    )
    records = sorted(home.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in records[PUSHED_KEEP:]:
        old.unlink(missing_ok=True)
    wanted = set()
    for path in records[:PUSHED_KEEP]:
        kept = json.loads(bytes.fromhex(json.loads(path.read_text())["manifest"]))
        wanted |= {d["digest"].replace(":", "-") for d in [kept["config"], *kept.get("layers", [])]}
    for blob in blobs.iterdir():
        if blob.name not in wanted:
            blob.unlink(missing_ok=True)
