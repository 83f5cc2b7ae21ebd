"""Tests of the features job's parts (bank_spark.features_job): the header, transforms on inline rows, input splits.

The rows' reading and checks, every bad-row case, are tested in test_csv_rows.py; main() end to end in
test_features_job_main.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from bank_spark import baseline as bl
from bank_spark import csv_rows as cr
from bank_spark import features_job as bf
from tests.support.bank_csv import GOOD, csv_line
from tests.support.paths import BANK_CSV as BANK

pytestmark = pytest.mark.integration

GOOD_LINE = csv_line()


# --------------------------------------------------------------------------- header


def test_header_accepts_the_file_header_with_or_without_quotes_and_bom() -> None:
    bf.check_header(BANK.read_text().splitlines()[0])
    bf.check_header("\ufeff" + ";".join(cr.EXPECTED_COLUMNS) + "\r\n")


@pytest.mark.parametrize(
    "names, fragments",
    [
        pytest.param(
            [c for c in cr.EXPECTED_COLUMNS if c not in ("duration", "pdays")],
            ["bad header: missing column(s): duration, pdays"],
            id="missing",
        ),
        pytest.param(
            [*cr.EXPECTED_COLUMNS[:-1], "target", "extra"],
            ["missing column(s): y", "unexpected column(s): target, extra"],
            id="unexpected",
        ),
        pytest.param(
            ["age", "marital", "job", *cr.EXPECTED_COLUMNS[3:]],
            [
                "different order",
                "Spark maps CSV columns by position",
                "got age;marital;job;",
                "expected age;job;marital;",
            ],
            id="reordered",
        ),
        pytest.param(
            [*cr.EXPECTED_COLUMNS[:-1], "age"],
            ["missing column(s): y", "duplicate column(s): age"],
            id="duplicate",
        ),
    ],
)
def test_header_errors_name_every_bad_column(names: list[str], fragments: list[str]) -> None:
    with pytest.raises(bf.HeaderError) as error:
        bf.check_header(";".join(f'"{n}"' for n in names))
    for fragment in fragments:
        assert fragment in str(error.value)


def test_header_error_for_a_data_line_and_for_no_line() -> None:
    with pytest.raises(bf.HeaderError, match="first line is not a header"):
        bf.check_header(GOOD_LINE)
    with pytest.raises(bf.InputError, match="input is empty: no header line"):
        bf.check_header(None)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"", None),
        (b"\n", ""),
        (b"a;b\r\nrest", "a;b"),
        (b"a;b\rrest", "a;b"),
        (b"\xef\xbb\xbfage;job\n1;x\n", "age;job"),
        (b"no newline at all", "no newline at all"),
        (b"bad \xff byte\n", "bad \ufffd byte"),
    ],
)
def test_first_line_as_sparks_text_reader_reads_it(
    spark: SparkSession, tmp_path: Path, content: bytes, line: str | None
) -> None:
    path = tmp_path / "input.csv"
    path.write_bytes(content)
    assert bf._first_line(bf.HadoopFs(spark, str(path))) == line
    first = spark.read.text(str(path)).first()
    assert (None if first is None else first[0]) == line


# --------------------------------------------------------------------------- feature transforms


def test_encode_month_maps_names_to_1_to_12(spark: SparkSession) -> None:
    df = spark.createDataFrame([(m,) for m in (*cr.MONTHS, "foo")], "month string")
    expected = spark.createDataFrame([(i,) for i in (*range(1, 13), 0)], "month int")
    assertDataFrameEqual(df.transform(bf.encode_month), expected)


def test_encode_previous_contact(spark: SparkSession) -> None:
    df = spark.createDataFrame([(-1,), (0,), (92,)], "pdays int")
    expected = spark.createDataFrame([(None, 0), (0, 1), (92, 1)], "pdays int, was_contacted int")
    assertDataFrameEqual(df.transform(bf.encode_previous_contact), expected)


def test_encode_yes_no(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("no", "yes", "no"), ("yes", "no", "yes")], "default string, housing string, loan string"
    )
    expected = spark.createDataFrame([(0, 1, 0), (1, 0, 1)], "default int, housing int, loan int")
    assertDataFrameEqual(df.transform(bf.encode_yes_no), expected)


def test_add_derived_features(spark: SparkSession) -> None:
    df = spark.createDataFrame([(2143, 1), (0, 10), (-250, 63)], "balance int, campaign int")
    expected = spark.createDataFrame(
        [(2143, 1, math.log1p(2143), 1), (0, 10, 0.0, 10), (-250, 63, -math.log1p(250), 10)],
        "balance int, campaign int, balance_slog double, campaign_capped int",
    )
    assertDataFrameEqual(df.transform(bf.add_derived_features), expected)


def test_label_replaces_y_and_duration_is_dropped(spark: SparkSession) -> None:
    df = spark.createDataFrame([(261, "no"), (5, "yes")], "duration int, y string")
    expected = spark.createDataFrame([(0,), (1,)], "label int")
    assertDataFrameEqual(df.transform(bf.drop_leakage).transform(bf.encode_label), expected)


def test_build_features(spark: SparkSession) -> None:
    valid_schema = T.StructType(
        [T.StructField(f.name, f.dataType, nullable=False) for f in cr.RAW_SCHEMA if f.name != cr.CORRUPT_COLUMN]
    )
    other = {
        "age": 30, "job": "unknown", "marital": "single", "education": "unknown", "default": "yes",
        "balance": -250, "housing": "no", "loan": "yes", "contact": "cellular", "day": 31, "month": "dec",
        "duration": 999, "campaign": 15, "pdays": 92, "previous": 3, "poutcome": "success", "y": "yes",
    }  # fmt: skip
    valid = spark.createDataFrame(
        [tuple(GOOD.values()), tuple(other.values()), tuple({**GOOD, "balance": 0, "month": "jan"}.values())],
        valid_schema,
    )
    types = {n: T.StringType() if n in cr.CATEGORICAL_COLUMNS else T.IntegerType() for n in bf.FEATURE_COLUMNS}
    types["balance_slog"] = T.DoubleType()
    nullable = {"balance_slog", "pdays"}  # log1p is nullable to Spark; pdays is null when never contacted
    expected_schema = T.StructType([T.StructField(n, types[n], n in nullable) for n in bf.FEATURE_COLUMNS])
    expected = spark.createDataFrame(
        [
            (58, "management", "married", "tertiary", 0, 2143, math.log1p(2143), 1, 0, "unknown",
             5, 5, 1, 1, None, 0, 0, "unknown", 0),
            (30, "unknown", "single", "unknown", 1, -250, -math.log1p(250), 0, 1, "cellular",
             31, 12, 15, 10, 92, 1, 3, "success", 1),
            (58, "management", "married", "tertiary", 0, 0, 0.0, 1, 0, "unknown",
             5, 1, 1, 1, None, 0, 0, "unknown", 0),
        ],
        expected_schema,
    )  # fmt: skip
    features = valid.transform(bf.build_features)
    assertDataFrameEqual(features, expected)
    assert features.schema == expected_schema  # assertDataFrameEqual ignores nullability
    assert "duration" not in features.columns and "y" not in features.columns


def test_baseline_is_not_fitted_without_both_labels(spark: SparkSession) -> None:
    rows = [(*{**GOOD, "age": 20 + i}.values(), None) for i in range(20)]  # all labelled "no"
    valid = spark.createDataFrame(rows, cr.RAW_SCHEMA).drop(cr.CORRUPT_COLUMN)
    baseline = bl.fit_baseline(valid.transform(bf.build_features), 0.2, 42)
    assert baseline["roc_auc"] is None and baseline["pr_auc"] is None
    assert baseline["note"] == "not fitted: the train and holdout sets each need both labels"
    assert baseline["train_rows"] + baseline["test_rows"] == 20


def test_baseline_sample_keeps_small_inputs_whole_and_samples_large_ones(spark: SparkSession) -> None:
    df = spark.range(20_000)
    assert bl.baseline_sample(df, 20_000, 20_000, 42) is df
    sampled = bl.baseline_sample(df, 20_000, 2_000, 42)
    assert 1_700 < sampled.count() < 2_300  # Bernoulli: about max_rows
    assert sorted(r.id for r in sampled.collect()) == sorted(
        r.id for r in bl.baseline_sample(df, 20_000, 2_000, 42).collect()
    ), "seeded: the same sample every run"


# --------------------------------------------------------------------------- input splits


@pytest.mark.parametrize(
    ("input_bytes", "cores", "splits"),
    [
        (461_018_846, 2, 4),  # 100x bank-full: 4 even splits, not 128+128+128+56 MiB
        (4_610_192_874, 2, 36),  # 1000x: whole waves of 2
        (4_610_192_874, 16, 48),  # a cluster: 3 waves of 16
        (4_616_577, 2, 2),  # bank-full: no split under the cost of opening a file (4 MiB)
        (10, 8, 1),  # a tiny file: one split
    ],
)
def test_input_splits_fill_whole_waves_of_the_cores(input_bytes: int, cores: int, splits: int) -> None:
    split = bf.balanced_split_bytes(input_bytes, cores)
    assert bf.OPEN_COST_BYTES <= split <= bf.SPLIT_BYTES
    assert -(-input_bytes // split) == splits  # how many splits Spark cuts the file into
    assert splits % cores == 0 or split == bf.OPEN_COST_BYTES


def test_the_split_size_is_set_while_the_job_reads_and_one_set_on_spark_submit_is_kept(spark: SparkSession) -> None:
    key = "spark.sql.files.maxPartitionBytes"
    with bf.balanced_splits(spark, 461_018_846):
        assert int(spark.conf.get(key)) == bf.balanced_split_bytes(461_018_846, spark.sparkContext.defaultParallelism)
    assert spark.conf.get(key, None) is None  # the session's own setting again
    spark.conf.set(key, "1000000")
    try:
        with bf.balanced_splits(spark, 461_018_846):
            assert spark.conf.get(key) == "1000000"
        assert spark.conf.get(key) == "1000000"
    finally:
        spark.conf.unset(key)
