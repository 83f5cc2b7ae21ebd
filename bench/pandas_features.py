"""The features job in one process: the single-machine baseline of bench/features_bench.py.

    .venv/bin/python bench/pandas_features.py --input CSV --output DIR

Writes DIR/features/part-00000.parquet and DIR/quarantine/part-00000.parquet
(record, reason) and prints a one-line JSON summary of the row counts.

The same as the Spark features job (bank_spark.features_job): the header check; the domain rules of
its _domain_reason (bank_spark.csv_rows: missing values, ranges, yes/no, month names) with the same
reasons in the same order; rows with a wrong field count quarantined with the
job's reason; the features in FEATURE_COLUMNS order, with the types and
nullability the job's parquet has. tests/integration/bench/test_features_bench.py holds the two equal.

Different on purpose: no manifest protocol, quarantine-ratio gate or baseline
model (the features only); a value that is not an int32, or an unbalanced
quote, fails the read instead of being quarantined (pyarrow converts whole
columns; the synthetic data has neither); balance_slog can differ from Spark's
in the last bit (the C library's log1p against Java's StrictMath).

pyarrow's multi-threaded CSV reader and compute kernels, not pandas
operations: a DataFrame would add a copy of every column (object arrays for
the strings) for nothing, and pandas 2's arrow dtypes call these same kernels.
It is still what the benchmark compares Spark with: one process that holds the
whole table in memory. Serving's derive_features does not fit here (float32
outputs, a Python loop per row for months and yes/no); its schema constants do.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]

from bank_serving.schema import (  # noqa: E402
    CAMPAIGN_CAP,
    CATEGORICAL_COLUMNS,
    INT32_MAX,
    INT32_MIN,
    MONTH_NUMBER,
    RECORD_FIELDS,
    YES_NO_COLUMNS,
)
from bank_serving.schema import FEATURE_COLUMNS as MODEL_COLUMNS  # noqa: E402

PROG = "pandas_features"
# The CSV's columns, bank_spark.csv_rows.EXPECTED_COLUMNS and INT_COLUMNS (a test
# holds them equal; importing the job would import pyspark).
RAW_COLUMNS: tuple[str, ...] = (
    "age", "job", "marital", "education", "default", "balance", "housing", "loan",
    "contact", "day", "month", "duration", "campaign", "pdays", "previous",
    "poutcome", "y",
)  # fmt: skip
INT_COLUMNS: tuple[str, ...] = ("age", "balance", "day", "duration", "campaign", "pdays", "previous")
FEATURE_COLUMNS: tuple[str, ...] = (*MODEL_COLUMNS, "label")
# As the job's parquet has them: categories strings, balance_slog double, the rest int32;
# only pdays (null = never contacted) and balance_slog (log1p may be null in Spark) nullable.
FEATURES_SCHEMA = pa.schema(
    [
        pa.field(
            c,
            pa.string() if c in CATEGORICAL_COLUMNS else pa.float64() if c == "balance_slog" else pa.int32(),
            nullable=c in ("pdays", "balance_slog"),
        )
        for c in FEATURE_COLUMNS
    ]
)
QUARANTINE_SCHEMA = pa.schema([("record", pa.string()), ("reason", pa.string())])
_VALUE_SHOWN = 40  # characters of an offending value quoted in a reason, as in the job
STRING_COLUMNS: tuple[str, ...] = tuple(c for c in RAW_COLUMNS if c not in INT_COLUMNS)
# As the job's: undecodable text (U+FFFD) and control characters; categories at most 64 characters.
CONTROL = r"[\x00-\x1f\x7f]"
MAX_CATEGORY_LENGTH = 64


class InputError(ValueError):
    """The input is missing, unreadable or not the bank CSV."""


# --------------------------------------------------------------------------- read


def check_header(path: Path) -> None:
    """Raise InputError unless the first line names RAW_COLUMNS in order (quotes and a BOM allowed)."""
    with path.open("r", encoding="utf-8", errors="replace") as f:
        line = f.readline()
    names = [n.strip().strip('"').strip() for n in line.lstrip("\ufeff").rstrip("\r\n").split(";")]
    if names != list(RAW_COLUMNS):
        raise InputError(f"bad header: got {';'.join(names)!r}, expected {';'.join(RAW_COLUMNS)}")


def read_csv(path: Path) -> tuple[pa.Table, pa.Table]:
    """The rows that have 17 fields, typed, and the quarantine of those that do not.

    Empty fields read as null, as in Spark; so does a quoted empty string.
    """
    wrong_count: list[tuple[str, str]] = []

    def on_invalid_row(row: Any) -> str:
        # The same count as the job's: fields outside quotes.
        wrong_count.append((row.text, f"wrong field count: {row.actual_columns}, expected {row.expected_columns}"))
        return "skip"

    table = pv.read_csv(
        path,
        parse_options=pv.ParseOptions(
            delimiter=";", quote_char='"', double_quote=True, invalid_row_handler=on_invalid_row
        ),
        convert_options=pv.ConvertOptions(
            column_types={c: pa.int32() if c in INT_COLUMNS else pa.string() for c in RAW_COLUMNS},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    records, reasons = zip(*wrong_count) if wrong_count else ((), ())
    return table, pa.table([pa.array(records, pa.string()), pa.array(reasons, pa.string())], schema=QUARANTINE_SCHEMA)


# --------------------------------------------------------------------------- validate


@dataclass(frozen=True)
class Rule:
    """One domain rule of the job: where a row breaks it (boolean, never null) and the reason it then gives."""

    broken: Callable[[pa.Table], pa.ChunkedArray]
    reason: Callable[[pa.Table], pa.ChunkedArray | pa.Scalar]


def _concat(*parts: Any) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(*parts, "")


def _quoted(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return _concat("'", pc.utf8_slice_codeunits(values, 0, _VALUE_SHOWN), "'")


def _missing(column: str) -> Rule:
    def broken(t: pa.Table) -> pa.ChunkedArray:
        if column in INT_COLUMNS:
            return pc.is_null(t[column])
        # Spark's trim strips spaces only.
        return pc.or_kleene(pc.is_null(t[column]), pc.equal(pc.utf8_trim(t[column], " "), ""))

    return Rule(broken, lambda t: pa.scalar(f"missing {column}"))


def _out_of_range(column: str, low: int, high: int | None) -> Rule:
    def broken(t: pa.Table) -> pa.ChunkedArray:
        below = pc.less(t[column], low)
        return pc.fill_null(below if high is None else pc.or_(below, pc.greater(t[column], high)), False)

    text = f"{column} below {low}: " if high is None else f"{column} out of range {low}..{high}: "
    return Rule(broken, lambda t: _concat(text, pc.cast(t[column], pa.string())))


def _joined(parts: list[pa.ChunkedArray]) -> pa.ChunkedArray:
    """'; '-joined non-null parts (each part a string or null), as the job's _join_reasons."""
    with_sep = [pc.fill_null(_concat(part, "; "), "") for part in parts]
    return pc.utf8_slice_codeunits(_concat(*with_sep), 0, -2)


def _text_rules() -> list[Rule]:
    """The job's _text_checks: not valid UTF-8 or control characters in any text column; long categories."""

    def undecodable(t: pa.Table, c: str) -> pa.ChunkedArray:
        return pc.fill_null(pc.match_substring(t[c], "\ufffd"), False)

    def control(t: pa.Table, c: str) -> pa.ChunkedArray:
        return pc.fill_null(pc.match_substring_regex(t[c], CONTROL), False)

    def long(t: pa.Table, c: str) -> pa.ChunkedArray:
        return pc.fill_null(pc.greater(pc.utf8_length(t[c]), MAX_CATEGORY_LENGTH), False)

    def text_reason(t: pa.Table) -> pa.ChunkedArray:
        return _joined(
            [pc.if_else(undecodable(t, c), f"{c} is not valid UTF-8 (undecodable bytes)", None) for c in STRING_COLUMNS]
            + [
                pc.if_else(
                    control(t, c),
                    _concat(f"control character in {c}: ", _quoted(pc.replace_substring_regex(t[c], CONTROL, "?"))),
                    None,
                )
                for c in STRING_COLUMNS
            ]
        )

    def long_reason(t: pa.Table) -> pa.ChunkedArray:
        return _joined(
            [
                pc.if_else(
                    long(t, c),
                    _concat(
                        f"{c} is ",
                        pc.cast(pc.utf8_length(t[c]), pa.string()),
                        f" characters long, at most {MAX_CATEGORY_LENGTH}",
                    ),
                    None,
                )
                for c in CATEGORICAL_COLUMNS
            ]
        )

    return [
        Rule(
            lambda t: functools.reduce(pc.or_, (pc.or_(undecodable(t, c), control(t, c)) for c in STRING_COLUMNS)),
            text_reason,
        ),
        Rule(lambda t: functools.reduce(pc.or_, (long(t, c) for c in CATEGORICAL_COLUMNS)), long_reason),
    ]


def _not_in(column: str, allowed: list[str], text: str) -> Rule:
    # A null breaks only the missing rule (in Spark this reason is then null and skipped).
    return Rule(
        lambda t: pc.and_(pc.is_valid(t[column]), pc.invert(pc.is_in(t[column], value_set=pa.array(allowed)))),
        lambda t: _concat(text, _quoted(t[column])),
    )


def domain_rules() -> list[Rule]:
    """The rules of the job's _domain_reason, in its order.

    Serving's RECORD_FIELDS holds the same bounds and lists the ints and the month
    in the job's order; a bound that an int32 cannot break (balance) is no rule.
    """
    rules = [*_text_rules(), *(_missing(c) for c in RAW_COLUMNS)]
    for name, kind, low, high in RECORD_FIELDS:
        if kind == "month":
            rules.append(_not_in(name, list(MONTH_NUMBER), f"{name} not jan..dec: "))
        elif kind == "int" and (low, high) != (INT32_MIN, INT32_MAX):
            rules.append(_out_of_range(name, low, None if high == INT32_MAX else high))
    rules += [_not_in(c, ["yes", "no"], f"{c} not yes/no: ") for c in (*YES_NO_COLUMNS, "y")]
    return rules


def _record(t: pa.Table) -> pa.ChunkedArray:
    """The job's rebuilt CSV line of a parsed row: ints bare, strings quoted, nulls empty."""
    fields = [
        pc.fill_null(pc.cast(t[c], pa.string()) if c in INT_COLUMNS else _concat('"', t[c], '"'), "")
        for c in RAW_COLUMNS
    ]
    return pc.binary_join_element_wise(*fields, ";")


def split_valid(table: pa.Table, rules: list[Rule]) -> tuple[pa.Table, pa.Table]:
    """(rows breaking no rule, quarantine of the others with every reason '; '-joined as the job does)."""
    bad = functools.reduce(pc.or_, (rule.broken(table) for rule in rules))
    if not pc.any(bad).as_py():
        return table, QUARANTINE_SCHEMA.empty_table()  # the usual case: no copy of the table
    rejected = table.filter(bad)
    # Each part "reason; " or "", then the last "; " cut: null_handling="skip" would be simpler,
    # but pyarrow 26 drops the rows whose parts are all null from its output.
    parts = [pc.if_else(rule.broken(rejected), _concat(rule.reason(rejected), "; "), "") for rule in rules]
    reasons = pc.utf8_slice_codeunits(_concat(*parts), 0, -2)
    quarantine = pa.table([_record(rejected), reasons], schema=QUARANTINE_SCHEMA)
    return table.filter(pc.invert(bad)), quarantine


# --------------------------------------------------------------------------- features


def build_features(valid: pa.Table) -> pa.Table:
    """The job's features of valid rows (see bank_spark.features_job's docstring)."""
    balance = pc.cast(valid["balance"], pa.float64())
    contacted = pc.not_equal(valid["pdays"], -1)
    month_numbers = pa.array(list(MONTH_NUMBER.values()), pa.int32())
    derived = {
        **{c: pc.cast(pc.equal(valid[c], "yes"), pa.int32()) for c in YES_NO_COLUMNS},
        "balance_slog": pc.multiply(pc.sign(balance), pc.log1p(pc.abs(balance))),
        "month": pc.take(month_numbers, pc.index_in(valid["month"], value_set=pa.array(list(MONTH_NUMBER)))),
        "campaign_capped": pc.min_element_wise(valid["campaign"], pa.scalar(CAMPAIGN_CAP, pa.int32())),
        "pdays": pc.if_else(contacted, valid["pdays"], pa.scalar(None, pa.int32())),
        "was_contacted": pc.cast(contacted, pa.int32()),
        "label": pc.cast(pc.equal(valid["y"], "yes"), pa.int32()),
    }
    return pa.Table.from_arrays(
        [derived[c] if c in derived else valid[c] for c in FEATURE_COLUMNS], schema=FEATURES_SCHEMA
    )


# --------------------------------------------------------------------------- job


def run(input_path: Path, output: Path) -> dict[str, int]:
    """Read, validate, derive, write; return the row counts. Raises InputError on bad input."""
    if not input_path.is_file():
        raise InputError(f"input not found or not a file: {input_path}")
    check_header(input_path)
    try:
        table, wrong_count = read_csv(input_path)
    except pa.ArrowInvalid as exc:
        raise InputError(
            f"{input_path}: {exc} (rows with a value that is not an int32 are not quarantined here)"
        ) from exc
    valid, rejected = split_valid(table, domain_rules())
    quarantine = pa.concat_tables([wrong_count, rejected])
    rows_in = table.num_rows + wrong_count.num_rows
    if rows_in == 0:
        raise InputError(f"input has a header but no data rows: {input_path}")
    for name, data in (("features", build_features(valid)), ("quarantine", quarantine)):
        (output / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(data, output / name / "part-00000.parquet")
    return {"rows_in": rows_in, "rows_out": valid.num_rows, "rows_quarantined": quarantine.num_rows}


def main(argv: list[str] | None = None) -> int:
    """CLI: 0 and a JSON line of counts, or 1 and `pandas_features: error: ...` on stderr."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="the bank CSV file")
    parser.add_argument("--output", type=Path, required=True, help="directory for features/ and quarantine/")
    args = parser.parse_args(argv)
    try:
        counts = run(args.input, args.output)
    except (InputError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
