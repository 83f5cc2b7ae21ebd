"""Staging and the pure helpers of devstack.emr, against the real moto server (no Spark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack.emr import _split_spark_submit, failure_message
from devstack.staging import Stager, StagingError

pytestmark = pytest.mark.integration


def test_split_drops_master_and_deploy_mode_but_not_the_apps_own_args() -> None:
    args = ["spark-submit", "--deploy-mode", "cluster", "--master=yarn", "--conf", "a=b", "--verbose",
            "s3://b/job.py", "--master", "mine"]  # fmt: skip
    assert _split_spark_submit(args) == (["--conf", "a=b", "--verbose"], ["s3://b/job.py", "--master", "mine"])


@pytest.mark.parametrize(
    ("stdout", "stderr", "expected"),
    [
        # The contract line wins, wherever the Python driver's stderr landed.
        ("x\nbank_features: error: bad ratio 0.2\n", "26/01/01 00:00:00 INFO ShutdownHookManager: done\n",
         "bank_features: error: bad ratio 0.2"),
        # A Python traceback's last line.
        ("Traceback (most recent call last):\n  File \"j.py\", line 1\nValueError: boom\n", "", "ValueError: boom"),
        # A JVM failure in stderr; log4j INFO/WARN lines are chatter.
        ("", "Exception in thread \"main\" java.io.FileNotFoundException: x\n"
             "26/01/01 00:00:00 INFO ShutdownHookManager: Shutdown hook called\n",
         "Exception in thread \"main\" java.io.FileNotFoundException: x"),
        ("", "26/01/01 00:00:00 INFO A: only chatter\n", "26/01/01 00:00:00 INFO A: only chatter"),
        ("", "", "exit code 7"),
    ],
)  # fmt: skip
def test_failure_message(tmp_path: Path, stdout: str, stderr: str, expected: str) -> None:
    (tmp_path / "stdout").write_text(stdout)
    (tmp_path / "stderr").write_text(stderr)
    assert failure_message(tmp_path / "stdout", tmp_path / "stderr", 7) == expected


def test_stage_files_prefixes_and_mirror_back(s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="st/in/a.csv", Body=b"1")
    s3.put_object(Bucket=bucket, Key="st/out/old/x", Body=b"old")
    s3.put_object(Bucket=bucket, Key="st/out/same", Body=b"same")
    stager = Stager(s3, tmp_path)
    args = stager.stage_args(
        [f"s3://{bucket}/st/in/a.csv", f"--output=s3://{bucket}/st/out/", f"s3://{bucket}/st/empty", "plain"]
    )
    local_file, output, empty = Path(args[0]), args[1].removeprefix("--output="), args[2]
    assert local_file.read_text() == "1" and local_file.name == "a.csv"
    assert output.endswith("/") and Path(output, "old", "x").read_text() == "old"
    assert not empty.endswith("/") and Path(empty).is_dir() and not any(Path(empty).iterdir())
    assert args[3] == "plain"

    # A job: replaces old/, writes a manifest, a Hadoop checksum file, a file in the empty prefix.
    Path(output, "old", "x").unlink()
    Path(output, "new", "deep").mkdir(parents=True)
    Path(output, "new", "deep", "part-0").write_text("p")
    Path(output, "new", "deep", ".part-0.crc").write_text("crc")
    Path(output, "_manifest.json").write_text("{}")
    Path(empty, "f").write_text("f")
    report = stager.mirror_back()
    assert report.uploaded == [
        f"s3://{bucket}/st/out/new/deep/part-0",
        f"s3://{bucket}/st/out/_manifest.json",  # deepest first: the manifest last
        f"s3://{bucket}/st/empty/f",
    ]  # the unchanged input file and st/out/same are not re-uploaded
    assert report.deleted == [f"s3://{bucket}/st/out/old/x"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="st/")["Contents"]}
    assert keys == {"st/in/a.csv", "st/out/same", "st/out/new/deep/part-0", "st/out/_manifest.json", "st/empty/f"}


def test_staging_a_missing_bucket_fails_clearly(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="cannot stage s3://no-such-bucket-here/x"):
        Stager(s3, tmp_path).stage("s3://no-such-bucket-here/x")
