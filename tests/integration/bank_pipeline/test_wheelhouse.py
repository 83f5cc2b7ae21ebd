"""The nodes' wheelhouse as a deployment builds it: pip downloads the locked wheels, checking every hash.

pip reaches PyPI here; the rest of the wheelhouse is tested in tests/unit/bank_pipeline/test_wheelhouse.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from bank_pipeline import resources, wheelhouse

# six 1.17.0's wheel, as uv.lock records it: a tiny download to exercise pip's hash checking for real.
SIX_WHEEL_SHA256 = "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"


@pytest.mark.integration  # pip reaches PyPI
def test_download_checks_every_hash_and_is_done_once_per_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        resources, "node_requirements", lambda: f"six==1.17.0 --hash=sha256:{SIX_WHEEL_SHA256}\n".encode()
    )
    directory = wheelhouse.download("x86_64", tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == ["requirements.txt", "six-1.17.0-py2.py3-none-any.whl"]

    def no_pip(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert wheelhouse.download("x86_64", tmp_path) == directory


@pytest.mark.integration  # pip reaches PyPI
def test_a_wheel_that_is_not_the_locked_one_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(resources, "node_requirements", lambda: b"six==1.17.0 --hash=sha256:" + b"0" * 64 + b"\n")
    with pytest.raises(RuntimeError, match="pip download of the x86_64 wheels exited 1: .*(?i:hash)"):
        wheelhouse.download("x86_64", tmp_path)
    assert [p.name for p in (tmp_path / "x86_64").iterdir()] == []  # nothing half-written left behind
