"""Tests of the features benchmark's parts: synthetic CSVs, the single-process job, the I/O floor, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from bank_spark import csv_rows as cr
from bank_spark import features_job as bf
from bench import features_bench, spark_copy, synth
from bench import pandas_features as pf
from tests.support.bank_csv import HEADER, csv_line
from tests.support.paths import BANK_FULL_CSV as BANK_FULL
from tests.support.paths import REPO

pytestmark = pytest.mark.integration


def token_sets(path: Path) -> list[set[bytes]]:
    """Per column, the raw values of a ';' file without quoted separators (header excluded)."""
    rows = [line.split(b";") for line in path.read_bytes().split(b"\n")[1:] if line]
    assert {len(r) for r in rows} == {len(cr.EXPECTED_COLUMNS)}
    return [set(column) for column in zip(*rows)]


def spark_outputs(spark: SparkSession, csv: Path, out: Path) -> tuple[pa.Table, set[tuple[str, str]]]:
    """The job's features (through parquet, as it writes them) and quarantine of a CSV, by its own functions."""
    flagged = cr.read_bank_csv(spark, str(csv)).transform(cr.flag_rows).cache()  # cached as read_bank_csv asks
    try:
        flagged.transform(cr.valid_rows).transform(bf.build_features).write.parquet(str(out))
        quarantine = {(r["record"], r["reason"]) for r in flagged.transform(cr.quarantine_rows).collect()}
    finally:
        flagged.unpersist()
    return pq.read_table(out), quarantine


def assert_same_features(ours: pa.Table, theirs: pa.Table) -> None:
    """Same schema and the same rows in any order; balance_slog within one ulp (libm vs Java's StrictMath)."""
    assert ours.schema.remove_metadata() == theirs.schema.remove_metadata()
    keys = [(c, "ascending") for c in ours.column_names if c != "balance_slog"]  # balance decides balance_slog
    ours, theirs = ours.sort_by(keys), theirs.sort_by(keys)
    for name in ours.column_names:
        if name == "balance_slog":
            np.testing.assert_array_max_ulp(ours[name].to_numpy(), theirs[name].to_numpy(), maxulp=1)
        else:
            assert ours[name].equals(theirs[name]), name


# --------------------------------------------------------------------------- synthetic CSVs


def test_synthetic_csv_is_deterministic_and_reused(tmp_path: Path) -> None:
    first = synth.write_synthetic(tmp_path / "a.csv", 1, seed=7, rows=3000)
    same = synth.write_synthetic(tmp_path / "b.csv", 1, seed=7, rows=3000)
    other = synth.write_synthetic(tmp_path / "c.csv", 1, seed=8, rows=3000)
    assert first.path.read_bytes() == same.path.read_bytes() != other.path.read_bytes()
    assert not first.reused and first.bytes == first.path.stat().st_size

    again = synth.write_synthetic(tmp_path / "a.csv", 1, seed=7, rows=3000)
    assert again.reused and again.bytes == first.bytes
    with first.path.open("r+b") as f:
        f.truncate(100)  # not what the sidecar says: generated again
    assert not synth.write_synthetic(tmp_path / "a.csv", 1, seed=7, rows=3000).reused
    assert first.path.read_bytes() == same.path.read_bytes()
    reseeded = synth.write_synthetic(tmp_path / "a.csv", 1, seed=8, rows=3000)
    assert not reseeded.reused and reseeded.path.read_bytes() == other.path.read_bytes()


def test_synthetic_csv_has_bank_full_format_and_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth, "CHUNK_ROWS", 7000)  # several chunks, the last one short
    data = synth.write_synthetic(tmp_path / "s.csv", 1, rows=20_000)
    text = data.path.read_bytes()
    assert text.split(b"\n")[0] == BANK_FULL.read_bytes().split(b"\n")[0]
    assert text.endswith(b'"\n') and text.count(b"\n") == 1 + 20_000 and b"\r" not in text
    ours, theirs = token_sets(data.path), token_sets(BANK_FULL)
    for name, values, source in zip(cr.EXPECTED_COLUMNS, ours, theirs):
        assert values <= source, name
        if len(source) <= 12:  # every category shows up in 20,000 draws
            assert values == source, name


def test_interrupted_generation_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synth, "CHUNK_ROWS", 1000)
    synth.write_synthetic(tmp_path / "s.csv", 1, seed=1, rows=3000)
    joins = 0
    real_join = synth.pc.binary_join_element_wise

    def interrupted(*args: Any) -> Any:
        nonlocal joins
        joins += 1
        if joins == 2:
            raise KeyboardInterrupt
        return real_join(*args)

    monkeypatch.setattr(synth.pc, "binary_join_element_wise", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synth.write_synthetic(tmp_path / "s.csv", 1, seed=2, rows=3000)
    # The old file may stay, but without a sidecar it is never reused.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


# --------------------------------------------------------------------------- the single-process job


def test_pandas_constants_are_the_jobs() -> None:
    assert pf.RAW_COLUMNS == cr.EXPECTED_COLUMNS
    assert pf.INT_COLUMNS == cr.INT_COLUMNS
    assert pf.FEATURE_COLUMNS == bf.FEATURE_COLUMNS


def test_pandas_features_equal_the_jobs_on_bank_full(spark: SparkSession, tmp_path: Path) -> None:
    counts = pf.run(BANK_FULL, tmp_path / "pandas")
    theirs, quarantine = spark_outputs(spark, BANK_FULL, tmp_path / "spark")
    assert counts == {"rows_in": 45211, "rows_out": theirs.num_rows, "rows_quarantined": len(quarantine)}
    assert_same_features(pq.read_table(tmp_path / "pandas" / "features"), theirs)


BAD_LINES = [
    csv_line(age=0),
    csv_line(day=32),
    csv_line(month="Mai"),
    csv_line(month=None),  # missing only: no "not jan..dec" for a null
    csv_line(y="maybe"),
    csv_line(loan="unknown"),
    csv_line(campaign=0),
    csv_line(pdays=-2),
    csv_line(previous=-1),
    csv_line(age=200, y="?", job=" ", balance=None),
    csv_line(job=""),  # a quoted empty string reads as null
    csv_line(month="x" * 50),  # quoted shortened to 40 characters
    csv_line().rsplit(";", 1)[0],  # 16 fields
    csv_line() + ';"extra"',
    csv_line(age=59) + ";",
    csv_line(job="admin.\x07"),  # a control character
    csv_line(loan="no\t", contact="cell\x1bular"),  # two of them, one also not yes/no
    csv_line(education="x" * 500),  # implausibly long
    csv_line(marital="marr\ufffdied"),  # what undecodable bytes read as
]


def test_pandas_quarantine_equals_the_jobs(spark: SparkSession, tmp_path: Path) -> None:
    good = [csv_line(), csv_line(job="self;employed", balance=-7, pdays=3, campaign=12), csv_line(balance=0)]
    csv = tmp_path / "cases.csv"
    csv.write_text("\n".join([HEADER, *good, *BAD_LINES]) + "\n")
    counts = pf.run(csv, tmp_path / "pandas")
    theirs, quarantine = spark_outputs(spark, csv, tmp_path / "spark")
    ours = pq.read_table(tmp_path / "pandas" / "quarantine")
    assert {(r["record"], r["reason"]) for r in ours.to_pylist()} == quarantine
    assert len(quarantine) == len(BAD_LINES) == counts["rows_quarantined"]
    assert_same_features(pq.read_table(tmp_path / "pandas" / "features"), theirs)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "input not found"),
        ("age;job\n1;x\n", "bad header"),
        (f"{HEADER}\n", "no data rows"),
        (f"{HEADER}\n{csv_line(balance='abc')}\n", "not an int32"),
    ],
    ids=["missing", "header", "empty", "bad int"],
)
def test_pandas_cli_reports_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, fragment: str
) -> None:
    csv = tmp_path / "in.csv"
    if content is not None:
        csv.write_text(content)
    assert pf.main(["--input", str(csv), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pandas_features: error: ") and fragment in err


# --------------------------------------------------------------------------- the I/O floor


def test_spark_copy_writes_the_jobs_parsed_columns(spark: SparkSession, tmp_path: Path) -> None:
    data = synth.write_synthetic(tmp_path / "s.csv", 1, rows=2000)
    spark_copy.copy(spark, str(data.path), str(tmp_path / "copy"))
    table = pq.read_table(tmp_path / "copy")
    assert table.num_rows == 2000
    assert table.schema.names == list(cr.EXPECTED_COLUMNS)
    assert {str(t) for c, t in zip(table.schema.names, table.schema.types) if c in cr.INT_COLUMNS} == {"int32"}


def test_spark_copy_reports_a_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert spark_copy.main(["--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "out")]) == 1
    assert "spark_copy: error: input not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- the benchmark's own arithmetic


def test_pandas_fit_predicts_linearly() -> None:
    fit = features_bench.PandasFit(from_scale=100, bytes_per_row=500.0)
    assert fit.predicted(1000) == 500.0 * 1000 * synth.BASE_ROWS
    available = 20 * 2**30
    largest = fit.largest_scale(available)
    assert fit.predicted(largest) <= 0.8 * available < fit.predicted(largest + 1)


def test_spark_time_sums_jobs_by_call_site(tmp_path: Path) -> None:
    def job(i: int, start: int, end: int, call_site: str | None, stage: str) -> list[dict[str, Any]]:
        props = {"callSite.short": call_site} if call_site else {}
        infos = [{"Stage ID": 10 * i, "Stage Name": "parent"}, {"Stage ID": 10 * i + 1, "Stage Name": stage}]
        return [
            {"Event": "SparkListenerJobStart", "Job ID": i, "Submission Time": start, "Properties": props,
             "Stage Infos": infos},
            {"Event": "SparkListenerJobEnd", "Job ID": i, "Completion Time": end},
        ]  # fmt: skip

    events = [
        {"Event": "SparkListenerApplicationStart", "Timestamp": 0},
        *job(0, 1000, 2000, f"first at {REPO}/spark_jobs/bank_spark/features_job.py:1", "ignored"),
        *job(1, 2000, 5000, None, "parquet at X.java:0"),
        *job(2, 5000, 5500, None, "parquet at X.java:0"),
        {"Event": "SparkListenerApplicationEnd", "Timestamp": 6000},
    ]
    (tmp_path / "local-1").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert features_bench.spark_time(tmp_path) == {
        "app_s": 6.0,
        "outside_jobs_s": 1.5,
        "jobs": [
            {"what": "first at spark_jobs/bank_spark/features_job.py:1", "jobs": 1, "seconds": 1.0},
            {"what": "parquet at X.java:0", "jobs": 2, "seconds": 3.5},
        ],
    }
