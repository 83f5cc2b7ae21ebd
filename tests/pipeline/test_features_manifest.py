"""The reader's checks of a committed features manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from bank_pipeline import lake
from bank_pipeline.errors import BadInputError
from bank_pipeline.features import check_manifest
from bank_pipeline.lake import parquet_problems, split_s3_uri

pytestmark = pytest.mark.unit


def manifest(**over):
    base = {
        "run_id": "r1",
        "rows": {"in": 100, "out": 99, "quarantined": 1},
        "files": ["_attempts/a/features/part-0.parquet"],
        "paths": {"features": "_attempts/a/features"},
        "input": {"etag": "abc"},
    }
    base.update(over)
    return base


def check(m, **kw):
    args = {"run_id": "r1", "max_quarantine_ratio": 0.01, "input_etag": "abc"} | kw
    return check_manifest(m, **args)


def test_consistent_manifest_passes():
    assert check(manifest()) == []


@pytest.mark.parametrize(
    ("m", "kw", "needle"),
    [
        (manifest(run_id="other"), {}, "manifest is for run 'other'"),
        (manifest(rows={"in": 100, "out": 90, "quarantined": 1}), {}, "rows do not add up"),
        (manifest(rows={"in": 100, "out": 95, "quarantined": 5}), {}, "quarantined share 0.0500 exceeds"),
        (manifest(rows={"in": 0, "out": 0, "quarantined": 0}), {}, "no rows were written"),
        (manifest(), {"input_etag": "changed"}, "input changed during the run"),
        (manifest(files=[]), {}, "lists no parquet files"),
        ({"run_id": "r1"}, {}, "manifest lacks rows, files, paths, input"),
    ],
)
def test_each_contradiction_is_named(m, kw, needle):
    assert any(needle in p for p in check(m, **kw)), check(m, **kw)


@pytest.mark.parametrize("uri", ["bank-lake/x.csv", "s3:///x.csv", "https://bank-lake/x.csv", ""])
def test_non_s3_uri_is_refused(uri):
    with pytest.raises(BadInputError, match="expected an s3://bucket/key URI"):
        split_s3_uri(uri)


def test_s3_uri_splits():
    assert split_s3_uri("s3://bank-lake/raw/bank/bank-full.csv") == ("bank-lake", "raw/bank/bank-full.csv")


def test_parquet_footers_are_checked_against_rows_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs

    # The local disk stands in for S3: tmp_path is the "bucket", out/ the prefix.
    monkeypatch.setattr(lake, "arrow_s3", lambda hook: fs.LocalFileSystem())
    (tmp_path / "out").mkdir()
    for name, rows in (("a.parquet", 3), ("b.parquet", 2)):
        pq.write_table(pa.table({"x": list(range(rows))}), tmp_path / "out" / name)
    listed = {"files": ["a.parquet", "b.parquet"], "rows": {"out": 5}}

    assert parquet_problems(None, str(tmp_path), "out/", listed) == []
    assert parquet_problems(None, str(tmp_path), "out/", listed | {"rows": {"out": 6}}) == [
        "parquet holds 5 rows but the manifest says rows.out=6"
    ]
    [problem] = parquet_problems(None, str(tmp_path), "out/", listed | {"files": ["a.parquet", "gone.parquet"]})
    assert problem.startswith(f"listed file s3://{tmp_path}/out/gone.parquet unreadable")
