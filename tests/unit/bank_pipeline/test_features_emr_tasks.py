"""The reader's checks of a committed features manifest."""

from __future__ import annotations

import pytest

from bank_pipeline import lake
from bank_pipeline.errors import BadInputError
from bank_pipeline.features_emr_tasks import check_manifest
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


def test_parquet_footers_are_checked_against_rows_out(monkeypatch: pytest.MonkeyPatch):
    """Row counts from the footers by ranged GETs (moto's S3 in-process), without pyarrow on the worker."""
    import io

    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from moto import mock_aws

    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="lake")
        for name, rows in (("a.parquet", 3), ("b.parquet", 2)):
            buffer = io.BytesIO()
            pq.write_table(pa.table({"x": list(range(rows)), "s": [str(i) for i in range(rows)]}), buffer)
            s3.put_object(Bucket="lake", Key=f"out/{name}", Body=buffer.getvalue())
        s3.put_object(Bucket="lake", Key="out/c.csv", Body=b"x;y\n1;2\n")
        hook = S3Hook(aws_conn_id=None)
        listed = {"files": ["a.parquet", "b.parquet"], "rows": {"out": 5}}

        assert lake.parquet_rows(hook, "lake", "out/a.parquet") == 3
        assert parquet_problems(hook, "lake", "out/", listed) == []
        assert parquet_problems(hook, "lake", "out/", listed | {"rows": {"out": 6}}) == [
            "parquet holds 5 rows but the manifest says rows.out=6"
        ]
        [gone] = parquet_problems(hook, "lake", "out/", listed | {"files": ["a.parquet", "gone.parquet"]})
        assert gone.startswith("listed file s3://lake/out/gone.parquet unreadable") and "NoSuchKey" in gone
        [csv] = parquet_problems(hook, "lake", "out/", listed | {"files": ["a.parquet", "c.csv"]})
        assert csv.startswith("listed file s3://lake/out/c.csv unreadable: not a parquet file")
