"""The nodes' wheelhouse: where it lives, what a run says when it is missing, and how a deployment builds it.

The download through pip (which reaches PyPI) is tested in tests/integration/bank_pipeline/test_wheelhouse.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bank_pipeline import resources, spark_steps, wheelhouse
from bank_pipeline.errors import WheelhouseMissingError


class KeysOnly:
    """What require_wheelhouse asks of an S3Hook: whether a key exists."""

    def __init__(self, keys: set[tuple[str, str]]) -> None:
        self.keys = keys

    def check_for_key(self, key: str, bucket_name: str) -> bool:
        return (bucket_name, key) in self.keys


@pytest.mark.unit
@pytest.mark.parametrize(
    ("instance_type", "arch"),
    [("m5.xlarge", "x86_64"), ("r5.xlarge", "x86_64"), ("m6g.xlarge", "aarch64"), ("c7gn.large", "aarch64"),
     ("m6gd.2xlarge", "aarch64"), ("m6i.xlarge", "x86_64"), ("g5.xlarge", "x86_64")],
)  # fmt: skip
def test_node_architecture_follows_the_instance_type(instance_type: str, arch: str) -> None:
    assert wheelhouse.node_arch(instance_type) == arch


@pytest.mark.unit
def test_the_wheelhouse_is_addressed_by_architecture_and_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    x86 = wheelhouse.wheelhouse_uri("s3://lake/code/", "x86_64")
    arm = wheelhouse.wheelhouse_uri("s3://lake/code", "aarch64")
    assert x86.startswith("s3://lake/code/wheelhouse/x86_64/") and x86.endswith("/")
    assert arm.startswith("s3://lake/code/wheelhouse/aarch64/")
    assert x86.rsplit("/", 2)[1] != arm.rsplit("/", 2)[1]
    monkeypatch.setattr(resources, "node_requirements", lambda: b"numpy==9.9.9\n")
    assert wheelhouse.wheelhouse_uri("s3://lake/code/", "x86_64") != x86  # a lock change is a new prefix
    with pytest.raises(ValueError, match="unknown node architecture 'riscv64'"):
        wheelhouse.wheelhouse_uri("s3://lake/code/", "riscv64")


@pytest.mark.unit
def test_a_run_without_the_wheelhouse_fails_at_once_naming_the_command() -> None:
    with pytest.raises(WheelhouseMissingError) as error:
        spark_steps.require_wheelhouse(KeysOnly(set()), "s3://lake/code/", "m6g.xlarge")
    message = str(error.value)
    assert "wheelhouse for aarch64 (m6g.xlarge) is not staged at s3://lake/code/wheelhouse/aarch64/" in message
    assert "`python -m bank_pipeline.wheelhouse --bucket lake --arch aarch64`" in message


@pytest.mark.unit
def test_a_staged_wheelhouse_is_found_by_its_marker() -> None:
    uri = wheelhouse.wheelhouse_uri("s3://lake/code/", "x86_64")
    marker = ("lake", uri.removeprefix("s3://lake/") + resources.NODE_REQUIREMENTS)
    assert spark_steps.require_wheelhouse(KeysOnly({marker}), "s3://lake/code/", "m5.xlarge") == uri
    # Wheels without the marker are a set still being uploaded (or a broken one): not staged.
    wheel = ("lake", uri.removeprefix("s3://lake/") + "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl")
    with pytest.raises(WheelhouseMissingError):
        spark_steps.require_wheelhouse(KeysOnly({wheel}), "s3://lake/code/", "m5.xlarge")


@pytest.mark.unit
@pytest.mark.parametrize("prefix", ["lake/code/", "https://lake/code/", "s3:///code/"])
def test_the_deploy_command_refuses_a_code_prefix_that_is_not_s3(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        wheelhouse.main(["--bucket", "lake", "--code-prefix", prefix])
    assert exit_.value.code == 2
    assert f"--code-prefix must be an s3://bucket/prefix/ URI, got {prefix!r}" in capsys.readouterr().err


@pytest.mark.unit
def test_upload_sends_the_marker_last_and_never_after_a_failed_wheel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import boto3
    from moto import mock_aws

    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }.items():
        monkeypatch.setenv(name, value)
    good, bad = tmp_path / "good", tmp_path / "bad"
    for directory in (good, bad):
        directory.mkdir()
        (directory / "a-1.0-py3-none-any.whl").write_bytes(b"a" * 1000)
        (directory / "b-1.0-py3-none-any.whl").write_bytes(b"b" * 2000)
        (directory / resources.NODE_REQUIREMENTS).write_bytes(b"a==1.0\nb==1.0\n")
    (bad / "c-1.0-py3-none-any.whl").symlink_to(tmp_path / "gone.whl")  # unreadable: its upload fails
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="lake")
        assert wheelhouse.upload(s3, good, "lake", "code/wheelhouse/x86_64/1/") == 3
        keys = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="lake")["Contents"]}
        assert keys == {"code/wheelhouse/x86_64/1/a-1.0-py3-none-any.whl": 1000,
                        "code/wheelhouse/x86_64/1/b-1.0-py3-none-any.whl": 2000,
                        "code/wheelhouse/x86_64/1/requirements.txt": 14}  # fmt: skip
        with pytest.raises(FileNotFoundError):
            wheelhouse.upload(s3, bad, "lake", "code/wheelhouse/x86_64/2/")
        staged = {
            o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix="code/wheelhouse/x86_64/2/").get("Contents", [])
        }
        assert "code/wheelhouse/x86_64/2/requirements.txt" not in staged
