"""The S3A jars: downloaded once, checked against their pinned digest, never used when they do not match."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import spark_local
from devstack.cache import cache_dir

pytestmark = pytest.mark.unit


@pytest.fixture
def maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A local 'Maven Central' serving tmp_path/repo, and an empty cache."""
    repo = tmp_path / "repo"
    (repo / "g" / "a").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(spark_local, "MAVEN", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("BANK_CACHE_DIR", str(tmp_path / "cache"))
    yield repo
    server.shutdown()
    thread.join()


def test_a_jar_is_downloaded_once_and_checked(maven: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (maven / "g" / "a" / "a.jar").write_bytes(b"jar bytes")
    monkeypatch.setattr(spark_local, "JARS", (("g/a/a.jar", hashlib.sha256(b"jar bytes").hexdigest()),))
    (path,) = spark_local.ensure_jars()
    assert path.read_bytes() == b"jar bytes" and path.parent == cache_dir() / "jars"
    (maven / "g" / "a" / "a.jar").unlink()  # the second call needs no network
    assert spark_local.ensure_jars() == [path]


def test_a_jar_that_does_not_match_its_digest_is_refused_and_not_kept(
    maven: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (maven / "g" / "a" / "a.jar").write_bytes(b"tampered")
    monkeypatch.setattr(spark_local, "JARS", (("g/a/a.jar", "0" * 64),))
    with pytest.raises(RuntimeError, match=r"g/a/a\.jar: sha256 [0-9a-f]{64}, expected 0{64}: not used"):
        spark_local.ensure_jars()
    assert list((cache_dir() / "jars").iterdir()) == []


def test_the_s3a_properties_point_s3_at_the_endpoint_with_the_keys() -> None:
    props = spark_local.s3a_properties("http://127.0.0.1:4566", "AK", "SK", [Path("/j/a.jar"), Path("/j/b.jar")])
    assert props["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert props["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:4566"
    assert props["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert (props["spark.hadoop.fs.s3a.access.key"], props["spark.hadoop.fs.s3a.secret.key"]) == ("AK", "SK")
    assert props["spark.driver.extraClassPath"] == "/j/a.jar:/j/b.jar"
