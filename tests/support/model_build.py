"""The features job's and the model build's runs on local paths, as the integration tests' fixtures make them.

The fixtures themselves (``full_run``, ``train_run``) are in tests/integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bank_ml import data


@dataclass(frozen=True)
class FeatureRun:
    """A committed run of the features job (bank_spark.features_job)."""

    output: Path
    manifest: dict[str, Any]

    @property
    def paths(self) -> list[str]:
        return data.feature_paths(self.manifest, str(self.output))


@dataclass(frozen=True)
class TrainRun:
    """A run of the model build (bank_spark.train_job) on the features run, into a local registry."""

    registry: Path
    record: dict[str, Any]
    exit_code: int
    stderr: str


def run_train(features: Path, registry: Path, output: Path, *extra: str, run_id: str = "tests-train") -> TrainRun:
    """The model build's main() as spark-submit runs it, on local paths (the same code EMR runs)."""
    from bank_spark.train_job import main

    out, err = io.StringIO(), io.StringIO()
    args = ["--features", str(features), "--registry", str(registry), "--output", str(output), "--run-id", run_id,
            "--code-version", "0123456789abcdef", *extra]  # fmt: skip
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    record = json.loads(output.read_text()) if rc == 0 else {}
    return TrainRun(registry=registry, record=record, exit_code=rc, stderr=err.getvalue())
