"""bank_pipeline.utils.oci and oci_layer without a registry: the deterministic layer and image references."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

import pytest

from bank_pipeline.utils import oci, oci_layer

pytestmark = pytest.mark.unit


def test_model_layer_is_deterministic_and_well_formed() -> None:
    files = {"model.onnx": b"\x08\x01onnx-bytes" * 100, "model.json": b'{"version": "abc"}'}
    first = oci_layer.model_layer(files)
    # Same bytes in another order, another call: the same blob.
    second = oci_layer.model_layer(dict(reversed(list(files.items()))))
    assert first == second
    assert first.digest == "sha256:" + hashlib.sha256(first.blob).hexdigest()
    assert first.size == len(first.blob)

    raw = gzip.decompress(first.blob)
    assert first.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    # gzip header: no file name flag, mtime 0.
    assert first.blob[:3] == b"\x1f\x8b\x08" and first.blob[3] & 0x08 == 0
    assert first.blob[4:8] == b"\x00\x00\x00\x00"

    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == ["opt", "opt/ml", "opt/ml/model", "opt/ml/model/model.json", "opt/ml/model/model.onnx"]
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
            assert m.mode == (0o755 if m.isdir() else 0o644)
        assert tar.extractfile("opt/ml/model/model.json").read() == files["model.json"]

    # Keys may also be the paths in the image.
    assert oci_layer.model_layer({f"opt/ml/model/{k}": v for k, v in files.items()}) == first
    assert oci_layer.model_layer({f"/opt/ml/model/{k}": v for k, v in files.items()}) == first

    changed = oci_layer.model_layer({**files, "model.json": b'{"version": "abd"}'})
    assert changed.digest != first.digest and changed.diff_id != first.diff_id


def test_layer_rejects_paths_outside_the_image() -> None:
    for bad in ("/etc/passwd", "../x", "a/../../b", ""):
        with pytest.raises(ValueError):
            oci_layer.layer({bad: b"x"})
    with pytest.raises(ValueError, match="both a file and a directory"):
        oci_layer.layer({"a": b"x", "a/b": b"y"})


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("127.0.0.1:5001/bank-serving@sha256:" + "a" * 64, ("127.0.0.1:5001", "bank-serving", "sha256:" + "a" * 64)),
        ("127.0.0.1:5001/bank-serving:base", ("127.0.0.1:5001", "bank-serving", "base")),
        ("127.0.0.1:5001/team/bank-serving", ("127.0.0.1:5001", "team/bank-serving", "latest")),
        ("1234.dkr.ecr.eu-west-1.amazonaws.com/bank:v1", ("1234.dkr.ecr.eu-west-1.amazonaws.com", "bank", "v1")),
    ],
)
def test_parse_image_ref(ref: str, expected: tuple[str, str, str]) -> None:
    parsed = oci.parse_image_ref(ref)
    assert tuple(parsed) == expected
    assert str(parsed) == ref if ":" in ref.rsplit("/", 1)[-1] or "@" in ref else f"{ref}:latest"


def test_base_url_defaults_to_http_only_on_the_loopback() -> None:
    assert oci.RegistryClient("127.0.0.1:5001").base_url == "http://127.0.0.1:5001"
    assert oci.RegistryClient("localhost:5000").base_url == "http://localhost:5000"
    ecr = "1234.dkr.ecr.eu-west-1.amazonaws.com"
    assert oci.RegistryClient(ecr, auth=("AWS", "pw")).base_url == f"https://{ecr}"
    assert oci.RegistryClient(f"https://{ecr}/").registry == ecr


def test_unreachable_registry_error_names_registry_repo_and_reference() -> None:
    client = oci.RegistryClient("127.0.0.1:9", timeout=2)  # discard port: nothing listens
    with pytest.raises(oci.RegistryError, match=r"registry 127\.0\.0\.1:9: GET bank-serving:base") as info:
        client.get_manifest("bank-serving", "base")
    assert (info.value.repo, info.value.reference) == ("bank-serving", "base")
