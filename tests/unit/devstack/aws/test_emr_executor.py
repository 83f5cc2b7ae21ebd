"""The pure helpers of devstack.aws.emr_executor: reading spark-submit's command line, choosing a failure's message."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.aws.emr_executor import _split_spark_submit, failure_message

pytestmark = pytest.mark.unit


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
