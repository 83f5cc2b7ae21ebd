"""Tests of the features job (bank_spark.features_job): transforms on inline rows, every bad-input case, main() end to end."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from bank_spark import baseline as bl
from bank_spark import features_job as bf
from tests.bank_csv import GOOD, HEADER, csv_line
from tests.paths import BANK_CSV as BANK
from tests.paths import BANK_FULL_CSV as BANK_FULL

pytestmark = pytest.mark.integration

GOOD_LINE = csv_line()


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_main(*args: Any) -> tuple[int, str, str]:
    """main() with stdout and stderr captured (works in module-scoped fixtures, unlike capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = bf.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


def tree(root: Path) -> list[str]:
    """Every file under root (hidden ones too), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def attempts(root: Path) -> set[str]:
    return {p.name for p in (root / "_attempts").iterdir()}


def parquet_rows(root: Path, files: list[str]) -> int:
    return sum(pq.ParquetFile(root / f).metadata.num_rows for f in files)


# --------------------------------------------------------------------------- header


def test_header_accepts_the_file_header_with_or_without_quotes_and_bom() -> None:
    bf.check_header(BANK.read_text().splitlines()[0])
    bf.check_header("\ufeff" + ";".join(bf.EXPECTED_COLUMNS) + "\r\n")


@pytest.mark.parametrize(
    "names, fragments",
    [
        pytest.param(
            [c for c in bf.EXPECTED_COLUMNS if c not in ("duration", "pdays")],
            ["bad header: missing column(s): duration, pdays"],
            id="missing",
        ),
        pytest.param(
            [*bf.EXPECTED_COLUMNS[:-1], "target", "extra"],
            ["missing column(s): y", "unexpected column(s): target, extra"],
            id="unexpected",
        ),
        pytest.param(
            ["age", "marital", "job", *bf.EXPECTED_COLUMNS[3:]],
            [
                "different order",
                "Spark maps CSV columns by position",
                "got age;marital;job;",
                "expected age;job;marital;",
            ],
            id="reordered",
        ),
        pytest.param(
            [*bf.EXPECTED_COLUMNS[:-1], "age"],
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


# --------------------------------------------------------------------------- quarantine reasons of parsed files

# name: (line, reason); the record kept is the line itself unless PARSE_RECORDS says otherwise.
PARSE_CASES: dict[str, tuple[str, str]] = {
    "too few fields": (GOOD_LINE.rsplit(";", 1)[0], "wrong field count: 16, expected 17"),
    "too many fields": (GOOD_LINE + ';"extra"', "wrong field count: 18, expected 17"),
    "trailing separator": (csv_line(age=59) + ";", "wrong field count: 18, expected 17"),
    "one field": ("58", "wrong field count: 1, expected 17"),
    "bad int": (csv_line(balance="abc"), "bad int in balance: 'abc'"),
    "two bad ints": (csv_line(age="x1", pdays="1.5"), "bad int in age: 'x1'; bad int in pdays: '1.5'"),
    "int overflow": (csv_line(balance=99999999999), "bad int in balance: '99999999999'"),
    "unbalanced quotes": (GOOD_LINE.replace('"management"', '"management'), "unbalanced quotes"),
    "missing int": (csv_line(balance=None), "missing balance"),
    "empty string": (csv_line(job=""), "missing job"),
    "age": (csv_line(age=0), "age out of range 1..120: 0"),
    "day": (csv_line(day=32), "day out of range 1..31: 32"),
    "month": (csv_line(month="Mai"), "month not jan..dec: 'Mai'"),
    "y": (csv_line(y="maybe"), "y not yes/no: 'maybe'"),
    "yes/no column": (csv_line(loan="unknown"), "loan not yes/no: 'unknown'"),
    "campaign": (csv_line(campaign=0), "campaign below 1: 0"),
    "pdays": (csv_line(pdays=-2), "pdays below -1: -2"),
    "previous": (csv_line(previous=-1), "previous below 0: -1"),
    "several violations": (csv_line(age=200, y="?"), "age out of range 1..120: 200; y not yes/no: '?'"),
    "control character": (csv_line(job="admin.\x07"), "control character in job: 'admin.?'"),
    "tab in a yes/no": (csv_line(loan="no\t"), "control character in loan: 'no?'; loan not yes/no: 'no\t'"),
    "implausibly long": (csv_line(education="x" * 500), "education is 500 characters long, at most 64"),
    "U+FFFD in the file": (csv_line(marital="marr\ufffdied"), "marital is not valid UTF-8 (undecodable bytes)"),
}
# Spark reads "" as null and keeps no text of rows it parsed: their record is rebuilt.
PARSE_RECORDS = {"empty string": csv_line(job=None)}
GOOD_LINES = [
    GOOD_LINE,
    csv_line(job="self;employed", balance=-7),  # a quoted separator is not a field boundary
    csv_line(job='say ""hi""', balance=8) + "\r",  # doubled quotes and a CRLF ending
]


@pytest.fixture(scope="module")
def parsed_cases(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataFrame]:
    lines = [HEADER, *GOOD_LINES, *(line for line, _ in PARSE_CASES.values())]
    path = write_csv(tmp_path_factory.mktemp("cases") / "cases.csv", lines)
    # Cached, as in run(): the corrupt-record flags need the full parse.
    flagged = bf.read_bank_csv(spark, str(path)).transform(bf.flag_rows).cache()
    yield flagged
    flagged.unpersist()


def test_quarantine_holds_every_bad_row_with_its_reason(spark: SparkSession, parsed_cases: DataFrame) -> None:
    expected = spark.createDataFrame(
        [(PARSE_RECORDS.get(name, line), reason) for name, (line, reason) in PARSE_CASES.items()],
        "record string, reason string",
    )
    assertDataFrameEqual(parsed_cases.transform(bf.quarantine_rows), expected)


def test_valid_is_exactly_a_null_reason(spark: SparkSession, parsed_cases: DataFrame) -> None:
    """The cheap test the good rows pay agrees with the reasons on every case, bad text in every column included."""
    text_cases = [
        (*{**GOOD, column: GOOD[column][:1] + bad + GOOD[column][1:]}.values(), None)
        for column in bf.STRING_COLUMNS
        for bad in ("\x07", "\ufffd")
    ]
    missing_cases = [(*{**GOOD, column: None}.values(), None) for column in bf.EXPECTED_COLUMNS] + [
        (*{**GOOD, column: "  "}.values(), None) for column in bf.STRING_COLUMNS
    ]
    inline = spark.createDataFrame(text_cases + missing_cases, bf.RAW_SCHEMA).transform(bf.flag_rows)
    for frame in (parsed_cases, inline):
        disagree = frame.where(F.col("valid") != F.col("reason").isNull()).select("record", "reason", "valid")
        assert disagree.collect() == []
    reasons = [r["reason"] for r in inline.collect()]
    assert all(r is not None for r in reasons)
    assert len(reasons) == 3 * len(bf.STRING_COLUMNS) + len(bf.EXPECTED_COLUMNS)
    assert {"missing duration", "missing balance", "missing y", "missing month; month not jan..dec: '  '"} <= set(
        reasons
    )
    assert "control character in default: 'n?o'; default not yes/no: 'n\x07o'" in reasons


def test_an_empty_quarantine_has_the_schema_of_a_full_one(spark: SparkSession, tmp_path: Path) -> None:
    """A run with no bad row writes its quarantine without planning the reasons: the same parquet schema."""
    schemas = []
    for name, lines in {"clean": [HEADER, GOOD_LINE], "dirty": [HEADER, GOOD_LINE, csv_line(y="maybe")]}.items():
        out = tmp_path / name
        rc, _, stderr = run_main(
            "--input", write_csv(tmp_path / f"{name}.csv", lines), "--output", out, "--run-id", "r"
        )
        assert rc == 0 or "quarantined 1 of 2 rows" in stderr
        (attempt,) = attempts(out)
        schemas.append(pq.read_table(out / "_attempts" / attempt / "quarantine").schema)
    assert schemas[0] == schemas[1]
    assert schemas[0].names == ["record", "reason"]


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


def test_documented_categories_are_bank_fulls_own_values() -> None:
    """The fast path of the validity test: exactly the categories the data holds, nothing a typo could add."""
    with BANK_FULL.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    assert {c: set(v) for c, v in bf.DOCUMENTED_CATEGORIES.items()} == {
        c: {row[c] for row in rows} for c in bf.DOCUMENTED_CATEGORIES
    }


@pytest.mark.parametrize("name", list(PARSE_CASES))
def test_reason_of_each_bad_row(parsed_cases: DataFrame, name: str) -> None:
    line, reason = PARSE_CASES[name]
    reasons = {r["record"]: r["reason"] for r in parsed_cases.transform(bf.quarantine_rows).collect()}
    assert reasons[PARSE_RECORDS.get(name, line)] == reason


def test_undecodable_bytes_send_the_row_to_the_quarantine_never_altered_into_the_features(
    spark: SparkSession, tmp_path: Path
) -> None:
    """The documented rule (docs/interfaces.md): a row that is not valid UTF-8 is quarantined, its
    record showing U+FFFD where the file's bytes could not be decoded; the other rows are kept as they are."""
    good = GOOD_LINE.encode()
    lines = [
        HEADER.encode(),
        good,
        good.replace(b"management", b"manag\xe9ment"),  # Latin-1, not UTF-8
        good.replace(b'"married"', b'"marr\xed\xa0\x80ied"'),  # a lone surrogate's bytes
        good.replace(b"2143", b"21\xff43"),  # in an int: the line does not parse either
    ]
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    flagged = bf.read_bank_csv(spark, str(path)).transform(bf.flag_rows)
    reasons = sorted(r["reason"] for r in flagged.transform(bf.quarantine_rows).collect())
    assert reasons == [
        "job is not valid UTF-8 (undecodable bytes)",
        "marital is not valid UTF-8 (undecodable bytes)",
        "not valid UTF-8: undecodable bytes in the line",
    ]
    records = [r["record"] for r in flagged.transform(bf.quarantine_rows).collect()]
    assert all("\ufffd" in record for record in records)
    assert [tuple(r) for r in flagged.transform(bf.valid_rows).select("job", "marital", "balance").collect()] == [
        ("management", "married", 2143)
    ]


def test_good_rows_pass_including_quoted_separators(parsed_cases: DataFrame) -> None:
    valid = parsed_cases.transform(bf.valid_rows)
    assert sorted((r["job"], r["balance"]) for r in valid.collect()) == [
        ("management", 2143),
        ('say "hi"', 8),
        ("self;employed", -7),
    ]


def test_the_features_pass_keeps_exactly_the_rows_the_quarantine_pass_finds_good(
    spark: SparkSession, tmp_path: Path
) -> None:
    """read_parsed_rows drops malformed lines instead of keeping their text: every bad case still
    stays out of the features, a bad int in a column the features drop (duration) included."""
    malformed_duration = csv_line(duration="x")
    lines = [HEADER, *GOOD_LINES, *(line for line, _ in PARSE_CASES.values()), malformed_duration]
    path = str(write_csv(tmp_path / "cases.csv", lines))
    fast = bf.read_parsed_rows(spark, path).transform(bf.flag_valid).transform(bf.valid_rows)
    full = bf.read_bank_csv(spark, path).transform(bf.flag_rows).transform(bf.valid_rows)
    features = fast.transform(bf.build_features)
    assert "duration" not in features.columns
    assertDataFrameEqual(features, full.transform(bf.build_features))
    assert features.count() == len(GOOD_LINES)
    quarantine = bf.read_bank_csv(spark, path).transform(bf.flag_rows).transform(bf.quarantine_rows)
    assert {r["record"]: r["reason"] for r in quarantine.collect()}[malformed_duration] == "bad int in duration: 'x'"


def test_manifest_reasons_keep_the_top_ones_and_sum_the_rest(
    parsed_cases: DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bf, "MAX_MANIFEST_REASONS", 1)
    reasons = bf._reason_counts(parsed_cases.transform(bf.quarantine_rows), len(PARSE_CASES))
    assert reasons == {"wrong field count: 18, expected 17": 2, "(other reasons)": len(PARSE_CASES) - 2}


def test_flag_rows_on_inline_rows(spark: SparkSession) -> None:
    short = GOOD_LINE.rsplit(";", 1)[0]
    raw = [
        (*GOOD.values(), None),
        (*{**GOOD, "age": 0, "y": "maybe"}.values(), None),
        (*{**GOOD, "job": " ", "balance": None}.values(), None),
        (*{**GOOD, "y": None}.values(), short),  # what Spark makes of a 16-field line
    ]
    flagged = spark.createDataFrame(raw, bf.RAW_SCHEMA).transform(bf.flag_rows)
    expected_schema = T.StructType(
        [f for f in bf.RAW_SCHEMA.fields if f.name != bf.CORRUPT_COLUMN]
        + [T.StructField("record", T.StringType()), T.StructField("reason", T.StringType()),
           T.StructField("valid", T.BooleanType(), nullable=False)]
    )  # fmt: skip
    expected = spark.createDataFrame(
        [
            (*GOOD.values(), None, None, True),
            (*{**GOOD, "age": 0, "y": "maybe"}.values(), csv_line(age=0, y="maybe"),
             "age out of range 1..120: 0; y not yes/no: 'maybe'", False),
            (*{**GOOD, "job": " ", "balance": None}.values(), csv_line(job=" ", balance=None),
             "missing job; missing balance", False),
            (*{**GOOD, "y": None}.values(), short, "wrong field count: 16, expected 17", False),
        ],
        expected_schema,
    )  # fmt: skip
    assertDataFrameEqual(flagged, expected)

    valid = flagged.transform(bf.valid_rows)
    assertDataFrameEqual(valid, spark.createDataFrame([tuple(GOOD.values())], valid.schema))
    assert [f.name for f in valid.schema] == list(bf.EXPECTED_COLUMNS)
    assert not any(f.nullable for f in valid.schema), "validated columns are declared non-null"


# --------------------------------------------------------------------------- feature transforms


def test_encode_month_maps_names_to_1_to_12(spark: SparkSession) -> None:
    df = spark.createDataFrame([(m,) for m in (*bf.MONTHS, "foo")], "month string")
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
        [T.StructField(f.name, f.dataType, nullable=False) for f in bf.RAW_SCHEMA if f.name != bf.CORRUPT_COLUMN]
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
    types = {n: T.StringType() if n in bf.CATEGORICAL_COLUMNS else T.IntegerType() for n in bf.FEATURE_COLUMNS}
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
    valid = spark.createDataFrame(rows, bf.RAW_SCHEMA).drop(bf.CORRUPT_COLUMN)
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


# --------------------------------------------------------------------------- main(): bad inputs


def sample_lines(step: int = 15) -> list[str]:
    """The header and every step-th data row of bank.csv (~300 rows for step 15)."""
    lines = BANK.read_text().splitlines()
    return [lines[0], *lines[1::step]]


@pytest.mark.parametrize(
    "content, fragments",
    [
        pytest.param(
            [HEADER.replace('"duration";', "").replace('"pdays";', ""), GOOD_LINE],
            ["bad header: missing column(s): duration, pdays"],
            id="missing-columns",
        ),
        pytest.param(
            [HEADER.replace('"y"', '"target";"extra"'), GOOD_LINE],
            ["missing column(s): y", "unexpected column(s): target, extra"],
            id="unexpected-columns",
        ),
        pytest.param(
            [HEADER.replace('"job";"marital"', '"marital";"job"'), GOOD_LINE],
            ["columns in a different order (Spark maps CSV columns by position)", "got age;marital;job;"],
            id="reordered-columns",
        ),
        pytest.param([GOOD_LINE, GOOD_LINE], ["first line is not a header"], id="no-header"),
        pytest.param([HEADER], ["input has a header but no data rows"], id="header-only"),
        pytest.param([HEADER, "", "  "], ["input has a header but no data rows"], id="header-and-blank-lines"),
        pytest.param([], ["input is empty: no header line"], id="empty-file"),
    ],
)
def test_main_rejects_bad_input_files(
    spark: SparkSession, tmp_path: Path, content: list[str], fragments: list[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", content)
    rc, stdout, stderr = run_main("--input", source, "--output", tmp_path / "out", "--run-id", "r")
    assert rc != 0
    assert stdout == ""
    error = last_line(stderr)
    assert error.startswith("bank_features: error: ")
    for fragment in fragments:
        assert fragment in error
    assert not (tmp_path / "out").exists(), "nothing is written for an input rejected up front"


def test_blank_lines_are_not_rows_and_not_quarantined(spark: SparkSession, tmp_path: Path) -> None:
    # More lines than feature rows sends the job to its second pass, which must find nothing to quarantine.
    source = write_csv(tmp_path / "in.csv", [HEADER, GOOD_LINE, "", GOOD_LINE, ""])
    rc, _, stderr = run_main("--input", source, "--output", tmp_path / "out", "--run-id", "r")
    assert rc == 0, stderr
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert m["rows"] == {"in": 2, "out": 2, "quarantined": 0}
    assert pq.read_table(tmp_path / "out" / m["paths"]["quarantine"]).num_rows == 0


def test_main_rejects_a_missing_input_and_a_directory(spark: SparkSession, tmp_path: Path) -> None:
    rc, _, stderr = run_main("--input", tmp_path / "nope.csv", "--output", tmp_path / "out", "--run-id", "r")
    assert rc != 0
    assert last_line(stderr) == f"bank_features: error: input not found: {tmp_path / 'nope.csv'}"
    rc, _, stderr = run_main("--input", tmp_path, "--output", tmp_path / "out", "--run-id", "r")
    assert rc != 0
    assert last_line(stderr).startswith("bank_features: error: input is a directory, expected one CSV file")
    assert not (tmp_path / "out").exists()


def test_main_reports_unexpected_failures_on_one_line(spark: SparkSession, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", sample_lines(step=227))
    not_a_dir = tmp_path / "out"
    not_a_dir.write_text("a file where the output directory should be")
    rc, stdout, stderr = run_main("--input", source, "--output", not_a_dir, "--run-id", "r")
    assert rc != 0 and stdout == ""
    assert "Traceback" in stderr  # the details stay available above the contract line
    error = last_line(stderr)
    assert error.startswith("bank_features: error: Py4JJavaError: ")
    assert len(error) < 600


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--max-quarantine-ratio", "-0.1"], "--max-quarantine-ratio must be within 0..1"),
        (["--max-quarantine-ratio", "x"], "argument --max-quarantine-ratio: invalid float value: 'x'"),
        # The baseline moved to the model build (bank_spark.train_job): its options are gone from here.
        (["--baseline-max-rows", "10"], "unrecognized arguments: --baseline-max-rows 10"),
    ],
)
def test_main_rejects_bad_arguments(tmp_path: Path, extra: list[str], fragment: str) -> None:
    rc, _, stderr = run_main("--input", "in.csv", "--output", tmp_path / "out", "--run-id", "r", *extra)
    assert rc == 2
    assert last_line(stderr).startswith("bank_features: error: ")
    assert fragment in last_line(stderr)


def test_main_fails_when_too_many_rows_are_quarantined(spark: SparkSession, tmp_path: Path) -> None:
    bad = [GOOD_LINE.rsplit(";", 1)[0], GOOD_LINE + ';"x"', csv_line(balance="abc")]
    good = sample_lines(step=227)  # header + 20 rows
    source = write_csv(tmp_path / "in.csv", good + bad)
    out = tmp_path / "out"
    rc, stdout, stderr = run_main("--input", source, "--output", out, "--run-id", "r")

    assert rc != 0 and stdout == ""
    error = last_line(stderr)
    rows = len(good) - 1 + len(bad)
    assert error.startswith(f"bank_features: error: quarantined 3 of {rows} rows: ratio {3 / rows:.4f} ")
    assert "exceeds --max-quarantine-ratio 0.01" in error
    assert "top reasons: " in error and "wrong field count: 16, expected 17 (1)" in error
    assert "bad int in balance: 'abc' (1)" in error
    assert not (out / "_manifest.json").exists()
    (attempt,) = attempts(out)
    files = tree(out / "_attempts" / attempt)
    assert files and all(f.startswith("quarantine/part-") and f.endswith(".parquet") for f in files)
    quarantine = pq.read_table(out / "_attempts" / attempt / "quarantine")
    assert quarantine.column_names == ["record", "reason"]
    assert sorted(quarantine.column("record").to_pylist()) == sorted(bad)


# --------------------------------------------------------------------------- main(): commits and reruns

SAMPLE_BAD = {
    GOOD_LINE + ';"extra"': "wrong field count: 18, expected 17",
    csv_line(y="maybe"): "y not yes/no: 'maybe'",
}


@pytest.fixture(scope="module")
def history(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three runs of one run id on one output: commit, rerun (commit), failed rerun."""
    root = tmp_path_factory.mktemp("history")
    source = write_csv(root / "bank-sample.csv", sample_lines() + list(SAMPLE_BAD))
    out = root / "out"
    base = ["--input", source, "--output", out, "--run-id", "sample"]
    h: dict[str, Any] = {"source": source, "out": out}

    h["rc1"], h["stdout1"], h["stderr1"] = run_main(*base)
    assert h["rc1"] == 0, h["stderr1"]
    h["manifest1"] = json.loads((out / "_manifest.json").read_text())

    h["rc2"], h["stdout2"], h["stderr2"] = run_main(*base, "--input-etag", '"etag-2"')
    assert h["rc2"] == 0, h["stderr2"]
    h["manifest2_text"] = (out / "_manifest.json").read_text()
    h["manifest2"] = json.loads(h["manifest2_text"])
    h["tree2"] = tree(out)
    h["attempts2"] = attempts(out)

    h["rc3"], h["stdout3"], h["stderr3"] = run_main(*base, "--max-quarantine-ratio", "0.001")
    h["tree3"] = tree(out)
    h["attempts3"] = attempts(out)
    return h


def test_run_prints_a_one_line_json_summary(history: dict[str, Any]) -> None:
    assert history["rc1"] == 0, history["stderr1"]
    (line,) = history["stdout1"].splitlines()
    summary = json.loads(line)
    m1 = history["manifest1"]
    assert summary["attempt_id"] == m1["attempt_id"]
    assert summary["output"] == str(history["out"])
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (
        m1["rows"]["in"], m1["rows"]["out"], m1["rows"]["quarantined"],
    )  # fmt: skip


def test_manifest_fields_are_complete_and_consistent(history: dict[str, Any]) -> None:
    assert history["rc2"] == 0, history["stderr2"]
    m = history["manifest2"]
    out: Path = history["out"]
    attempt = f"_attempts/{m['attempt_id']}"
    assert m["format_version"] == 1
    assert m["run_id"] == "sample"
    assert datetime.fromisoformat(m["committed_at"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    source = history["source"]
    assert m["input"] == {"uri": str(source), "etag": '"etag-2"', "bytes": os.path.getsize(source)}
    assert m["paths"] == {"features": f"{attempt}/features", "quarantine": f"{attempt}/quarantine"}
    assert m["files"] and all(f.startswith(f"{attempt}/features/part-") and f.endswith(".parquet") for f in m["files"])
    assert all((out / f).is_file() for f in m["files"])

    rows = m["rows"]
    assert rows == {"in": len(sample_lines()) - 1 + len(SAMPLE_BAD), "out": len(sample_lines()) - 1, "quarantined": 2}
    assert rows["in"] == rows["out"] + rows["quarantined"]
    assert parquet_rows(out, m["files"]) == rows["out"]
    assert m["quarantine"] == {
        "ratio": round(2 / rows["in"], 6),
        "max_ratio": 0.01,
        "reasons": {reason: 1 for reason in sorted(SAMPLE_BAD.values())},
    }

    parquet_schema = pq.read_schema(out / m["files"][0])
    assert [f["name"] for f in m["schema"]] == list(bf.FEATURE_COLUMNS) == parquet_schema.names
    assert {f["name"]: f["type"] for f in m["schema"]}["balance_slog"] == "double"
    assert [f["name"] for f in m["schema"] if f["nullable"]] == ["balance_slog", "pdays"]
    assert m["spark_version"] == "3.5.6"
    assert m["duration_seconds"] > 0
    assert set(m["phase_seconds"]) == {"features", "quarantine"}
    assert sum(m["phase_seconds"].values()) <= m["duration_seconds"]
    assert "baseline" not in m  # fitted by the model build now (tests/ml/test_ml_build.py)


def test_committed_data_matches_the_manifest(history: dict[str, Any]) -> None:
    out: Path = history["out"]
    m = history["manifest2"]
    features = pq.read_table(out / m["paths"]["features"]).to_pydict()
    assert set(features["label"]) == {0, 1}
    assert set(features["month"]) <= set(range(1, 13))
    assert all((p is None) == (w == 0) for p, w in zip(features["pdays"], features["was_contacted"]))
    quarantine = pq.read_table(out / m["paths"]["quarantine"]).to_pylist()
    assert {q["record"]: q["reason"] for q in quarantine} == SAMPLE_BAD


def test_rerun_replaces_the_output(history: dict[str, Any]) -> None:
    m1, m2 = history["manifest1"], history["manifest2"]
    assert m1["attempt_id"] != m2["attempt_id"]
    assert history["attempts2"] == {m2["attempt_id"]}, "older attempts are deleted after the commit"
    assert parquet_rows(history["out"], m2["files"]) == m2["rows"]["out"]  # no duplicates
    assert history["tree2"] == sorted(
        ["_manifest.json", *m2["files"], *(f for f in history["tree2"] if "/quarantine/" in f)]
    )


def test_failed_rerun_leaves_the_previous_commit_in_force(history: dict[str, Any]) -> None:
    assert history["rc3"] != 0
    error = last_line(history["stderr3"])
    assert error.startswith("bank_features: error: quarantined 2 of ")
    assert "exceeds --max-quarantine-ratio 0.001" in error
    out: Path = history["out"]
    m2 = history["manifest2"]
    assert (out / "_manifest.json").read_text() == history["manifest2_text"]
    assert parquet_rows(out, m2["files"]) == m2["rows"]["out"]
    (failed,) = history["attempts3"] - {m2["attempt_id"]}
    failed_files = [f for f in history["tree3"] if f.startswith(f"_attempts/{failed}/")]
    assert failed_files and all(f.startswith(f"_attempts/{failed}/quarantine/part-") for f in failed_files)


def test_output_holds_only_the_contract_files(history: dict[str, Any]) -> None:
    for f in history["tree3"]:
        parts = f.split("/")
        assert f == "_manifest.json" or (
            len(parts) == 4
            and parts[0] == "_attempts"
            and parts[2] in ("features", "quarantine")
            and parts[3].startswith("part-")
            and parts[3].endswith(".parquet")
        ), f"unexpected file {f}"  # no .crc side files, no _SUCCESS


# --------------------------------------------------------------------------- main(): the full data set


def test_bank_full(spark: SparkSession, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, stdout, stderr = run_main("--input", BANK_FULL, "--output", out, "--run-id", "full")
    assert rc == 0, stderr
    m = json.loads((out / "_manifest.json").read_text())
    assert m["rows"]["in"] == 45211
    assert m["rows"]["out"] + m["rows"]["quarantined"] == 45211
    assert parquet_rows(out, m["files"]) == m["rows"]["out"]
    print(f"bank-full: rows {m['rows']}, {m['duration_seconds']} s")


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
