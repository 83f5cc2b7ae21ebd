"""Tests of the bank CSV's rows (bank_spark.csv_rows): every bad-row case and its reason, the two reads agreeing."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from bank_spark import csv_rows as cr
from bank_spark import features_job as bf
from tests.support.bank_csv import GOOD, HEADER, csv_line, write_csv
from tests.support.paths import BANK_FULL_CSV as BANK_FULL

pytestmark = pytest.mark.integration

GOOD_LINE = csv_line()


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
    flagged = cr.read_bank_csv(spark, str(path)).transform(cr.flag_rows).cache()
    yield flagged
    flagged.unpersist()


def test_quarantine_holds_every_bad_row_with_its_reason(spark: SparkSession, parsed_cases: DataFrame) -> None:
    expected = spark.createDataFrame(
        [(PARSE_RECORDS.get(name, line), reason) for name, (line, reason) in PARSE_CASES.items()],
        "record string, reason string",
    )
    assertDataFrameEqual(parsed_cases.transform(cr.quarantine_rows), expected)


def test_valid_is_exactly_a_null_reason(spark: SparkSession, parsed_cases: DataFrame) -> None:
    """The cheap test the good rows pay agrees with the reasons on every case, bad text in every column included."""
    text_cases = [
        (*{**GOOD, column: GOOD[column][:1] + bad + GOOD[column][1:]}.values(), None)
        for column in cr.STRING_COLUMNS
        for bad in ("\x07", "\ufffd")
    ]
    missing_cases = [(*{**GOOD, column: None}.values(), None) for column in cr.EXPECTED_COLUMNS] + [
        (*{**GOOD, column: "  "}.values(), None) for column in cr.STRING_COLUMNS
    ]
    inline = spark.createDataFrame(text_cases + missing_cases, cr.RAW_SCHEMA).transform(cr.flag_rows)
    for frame in (parsed_cases, inline):
        disagree = frame.where(F.col("valid") != F.col("reason").isNull()).select("record", "reason", "valid")
        assert disagree.collect() == []
    reasons = [r["reason"] for r in inline.collect()]
    assert all(r is not None for r in reasons)
    assert len(reasons) == 3 * len(cr.STRING_COLUMNS) + len(cr.EXPECTED_COLUMNS)
    assert {"missing duration", "missing balance", "missing y", "missing month; month not jan..dec: '  '"} <= set(
        reasons
    )
    assert "control character in default: 'n?o'; default not yes/no: 'n\x07o'" in reasons


def test_documented_categories_are_bank_fulls_own_values() -> None:
    """The fast path of the validity test: exactly the categories the data holds, nothing a typo could add."""
    with BANK_FULL.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    assert {c: set(v) for c, v in cr.DOCUMENTED_CATEGORIES.items()} == {
        c: {row[c] for row in rows} for c in cr.DOCUMENTED_CATEGORIES
    }


@pytest.mark.parametrize("name", list(PARSE_CASES))
def test_reason_of_each_bad_row(parsed_cases: DataFrame, name: str) -> None:
    line, reason = PARSE_CASES[name]
    reasons = {r["record"]: r["reason"] for r in parsed_cases.transform(cr.quarantine_rows).collect()}
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
    flagged = cr.read_bank_csv(spark, str(path)).transform(cr.flag_rows)
    reasons = sorted(r["reason"] for r in flagged.transform(cr.quarantine_rows).collect())
    assert reasons == [
        "job is not valid UTF-8 (undecodable bytes)",
        "marital is not valid UTF-8 (undecodable bytes)",
        "not valid UTF-8: undecodable bytes in the line",
    ]
    records = [r["record"] for r in flagged.transform(cr.quarantine_rows).collect()]
    assert all("\ufffd" in record for record in records)
    assert [tuple(r) for r in flagged.transform(cr.valid_rows).select("job", "marital", "balance").collect()] == [
        ("management", "married", 2143)
    ]


def test_good_rows_pass_including_quoted_separators(parsed_cases: DataFrame) -> None:
    valid = parsed_cases.transform(cr.valid_rows)
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
    fast = cr.read_parsed_rows(spark, path).transform(cr.flag_valid).transform(cr.valid_rows)
    full = cr.read_bank_csv(spark, path).transform(cr.flag_rows).transform(cr.valid_rows)
    features = fast.transform(bf.build_features)
    assert "duration" not in features.columns
    assertDataFrameEqual(features, full.transform(bf.build_features))
    assert features.count() == len(GOOD_LINES)
    quarantine = cr.read_bank_csv(spark, path).transform(cr.flag_rows).transform(cr.quarantine_rows)
    assert {r["record"]: r["reason"] for r in quarantine.collect()}[malformed_duration] == "bad int in duration: 'x'"


@pytest.mark.parametrize("name", [*PARSE_CASES, "bad int in duration"])
def test_the_checked_pass_fails_at_each_bad_row(spark: SparkSession, tmp_path: Path, name: str) -> None:
    """read_strict_rows + checked_rows: a file holding any one bad row fails the query, as a rejection."""
    bad = csv_line(duration="x") if name == "bad int in duration" else PARSE_CASES[name][0]
    path = str(write_csv(tmp_path / "one-bad.csv", [HEADER, *GOOD_LINES, bad]))
    with pytest.raises(Exception) as failure:
        cr.read_strict_rows(spark, path).transform(cr.checked_rows).transform(bf.build_features).collect()
    assert cr.is_rejection(failure.value), str(failure.value)[:2000]


def test_the_checked_pass_of_good_rows_equals_the_filtered_pass(spark: SparkSession, tmp_path: Path) -> None:
    path = str(write_csv(tmp_path / "good.csv", [HEADER, *GOOD_LINES, ""]))
    checked = cr.read_strict_rows(spark, path).transform(cr.checked_rows)
    filtered = cr.read_parsed_rows(spark, path).transform(cr.flag_valid).transform(cr.valid_rows)
    assertDataFrameEqual(checked, filtered, checkRowOrder=True)
    assert (
        checked.schema == filtered.schema
    )  # nullable=false in both: the manifest's schema does not depend on the path
    assert checked.count() == len(GOOD_LINES)


def test_only_a_rejected_row_is_a_rejection(spark: SparkSession, tmp_path: Path) -> None:
    with pytest.raises(Exception) as missing:
        cr.read_strict_rows(spark, str(tmp_path / "nope.csv")).transform(cr.checked_rows).collect()
    assert not cr.is_rejection(missing.value)
    with pytest.raises(Exception) as other_raise:
        spark.range(1).select(F.raise_error(F.lit("bank_features: something else"))).collect()
    assert not cr.is_rejection(other_raise.value)
    assert not cr.is_rejection(ValueError("No space left on device"))
    # Told by the Java exception, never by text: a Python error quoting the message is none.
    assert not cr.is_rejection(RuntimeError(f"Job aborted: java.lang.RuntimeException: {cr.REJECTED_ROW}"))


def test_manifest_reasons_keep_the_top_ones_and_sum_the_rest(
    parsed_cases: DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bf, "MAX_MANIFEST_REASONS", 1)
    reasons = bf._reason_counts(parsed_cases.transform(cr.quarantine_rows), len(PARSE_CASES))
    assert reasons == {"wrong field count: 18, expected 17": 2, "(other reasons)": len(PARSE_CASES) - 2}


def test_flag_rows_on_inline_rows(spark: SparkSession) -> None:
    short = GOOD_LINE.rsplit(";", 1)[0]
    raw = [
        (*GOOD.values(), None),
        (*{**GOOD, "age": 0, "y": "maybe"}.values(), None),
        (*{**GOOD, "job": " ", "balance": None}.values(), None),
        (*{**GOOD, "y": None}.values(), short),  # what Spark makes of a 16-field line
    ]
    flagged = spark.createDataFrame(raw, cr.RAW_SCHEMA).transform(cr.flag_rows)
    expected_schema = T.StructType(
        [f for f in cr.RAW_SCHEMA.fields if f.name != cr.CORRUPT_COLUMN]
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

    valid = flagged.transform(cr.valid_rows)
    assertDataFrameEqual(valid, spark.createDataFrame([tuple(GOOD.values())], valid.schema))
    assert [f.name for f in valid.schema] == list(cr.EXPECTED_COLUMNS)
    assert not any(f.nullable for f in valid.schema), "validated columns are declared non-null"
