"""The commit protocol of docs/interfaces.md, shared by both jobs (S3 has no rename).

Each attempt writes under ``<output>/_attempts/<attempt_id>/``; ``_manifest.json``,
written last in one PUT, is the commit point; then every other attempt of the
run is deleted. Readers go through the manifest only.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from bank_spark.storage import HadoopFs

MANIFEST_NAME = "_manifest.json"
ATTEMPTS = "_attempts"


def utc_timestamp() -> str:
    """Now, as the manifests record it: ISO-8601 UTC to the second, with a Z."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_attempt_id() -> str:
    """Sortable and unique: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def commit(out: HadoopFs, manifest: dict[str, Any], attempt_id: str) -> None:
    """The commit point of docs/interfaces.md: the manifest in one PUT, then every other attempt deleted."""
    out.write_bytes(MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    # Committed: older attempts of this run are now garbage.
    for name in out.list_names(ATTEMPTS):
        if name != attempt_id:
            out.delete(f"{ATTEMPTS}/{name}")
