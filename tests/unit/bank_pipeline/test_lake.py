"""The lake's paths: one value (bank_pipeline.lake.Lake), every path in the lake bucket."""

from __future__ import annotations

import pytest

from bank_pipeline import settings
from bank_pipeline.lake import Lake
from bank_pipeline.wheelhouse import wheelhouse_uri

pytestmark = pytest.mark.unit

RUN = "manual__2026-01-02T00:00:00+00:00"
KEY = "run=manual__2026-01-02T00_00_00_00_00/"


def test_every_path_is_in_the_lake_bucket_and_a_runs_directory_is_its_own() -> None:
    lake = Lake("my-lake")
    assert lake.raw_input == "s3://my-lake/raw/bank/bank-full.csv"
    assert lake.features_run(RUN) == f"s3://my-lake/features/bank/{KEY}"
    assert lake.scores_run(RUN) == f"s3://my-lake/scores/bank/{KEY}"
    assert lake.candidate(RUN) == f"s3://my-lake/training/bank/{KEY}candidate.json"
    assert lake.live_model == "s3://my-lake/models/bank/live.json"
    assert lake.wheelhouse("aarch64") == wheelhouse_uri("s3://my-lake/code/", "aarch64")
    assert lake.emr_logs == "s3://my-lake/emr-logs/"
    prefixes = [lake.features, lake.scores, lake.training, lake.models, lake.code, lake.emr_logs]
    assert all(p.startswith("s3://my-lake/") and p.endswith("/") for p in prefixes)
    assert len(set(prefixes)) == len(prefixes), "no two kinds of data share a prefix"


def test_the_settings_lake_is_the_lake_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANK_LAKE_BUCKET", "their-lake")
    assert settings.load().lake == Lake("their-lake")


def test_an_unknown_node_architecture_has_no_wheelhouse() -> None:
    with pytest.raises(ValueError, match="unknown node architecture 'sparc'"):
        Lake("b").wheelhouse("sparc")
