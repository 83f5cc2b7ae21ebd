"""Where the checkout's files are, for tests (the packages themselves never look there)."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
BANK_CSV = REPO / "data" / "bank" / "bank.csv"
BANK_FULL_CSV = REPO / "data" / "bank" / "bank-full.csv"


@cache
def locked_versions() -> dict[str, str]:
    """Every package of uv.lock (the dev environment) and its version, by normalized name."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}
