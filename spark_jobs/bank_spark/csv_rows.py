"""The bank CSV's rows: read with the explicit schema, flagged valid or with the reason to quarantine them.

The features job (bank_spark.features_job) checks the header, then reads the rows with
read_strict_rows and checked_rows: one pass that fails at the first rejected row. Only then
does it read them with read_parsed_rows and keep those flag_valid passes (valid_rows), and
read the CSV again with read_bank_csv and flag_rows for the quarantine's (record, reason)
rows (quarantine_rows). A row is rejected when Spark cannot parse it
(undecodable bytes, unbalanced quotes, a wrong field count, a bad int) or when it breaks a
domain rule (text that cannot be real, a missing value, a value outside its range, month
names or yes/no); the reason names every rule it breaks. Only built-in Spark expressions
are used (no Python UDFs).
"""

from __future__ import annotations

import functools
import operator

from pyspark.sql import Column, DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

# The serving contract: the model's categorical inputs, yes/no columns and month names.
from bank_serving.schema import CATEGORICAL_COLUMNS, MONTHS, YES_NO_COLUMNS

EXPECTED_COLUMNS: tuple[str, ...] = (
    "age", "job", "marital", "education", "default", "balance", "housing", "loan",
    "contact", "day", "month", "duration", "campaign", "pdays", "previous",
    "poutcome", "y",
)  # fmt: skip
INT_COLUMNS: tuple[str, ...] = (
    "age", "balance", "day", "duration", "campaign", "pdays", "previous",
)  # fmt: skip
STRING_COLUMNS: tuple[str, ...] = tuple(c for c in EXPECTED_COLUMNS if c not in INT_COLUMNS)

# Text that cannot be real: undecodable bytes (read as U+FFFD: Spark's CSV reader decodes
# UTF-8 and replaces what it cannot) and control characters. A row holding any goes to the
# quarantine rather than into the features with its text silently altered.
NOT_TEXT = r"[\x00-\x1f\x7f\x{FFFD}]"
REPLACEMENT_CHARACTER = "\ufffd"
# The longest real category is 13 characters ("self-employed"); anything near this is not one.
MAX_CATEGORY_LENGTH = 64
# The categories data/bank/bank-names.txt documents. A value among them is text by construction,
# so the row's validity test runs the text rules only for other values: a regex over every row
# was a third of the CSV pass (measured at 100x). Other values stay valid categories if they pass.
DOCUMENTED_CATEGORIES: dict[str, tuple[str, ...]] = {
    "job": (
        "admin.", "unknown", "unemployed", "management", "housemaid", "entrepreneur", "student",
        "blue-collar", "self-employed", "retired", "technician", "services",
    ),
    "marital": ("married", "divorced", "single"),
    "education": ("unknown", "secondary", "primary", "tertiary"),
    "contact": ("unknown", "telephone", "cellular"),
    "poutcome": ("unknown", "other", "failure", "success"),
}  # fmt: skip

CORRUPT_COLUMN = "_corrupt_record"
# RFC 4180 quoting (a quote inside a quoted field is doubled); the field counter
# in flag_rows assumes the same rules.
CSV_OPTIONS: dict[str, str] = {"sep": ";", "quote": '"', "escape": '"'}

# The 17 typed columns as the CSV holds them (read_parsed_rows), and with the corrupt record (read_bank_csv).
PARSED_SCHEMA = T.StructType(
    [T.StructField(c, T.IntegerType() if c in INT_COLUMNS else T.StringType()) for c in EXPECTED_COLUMNS]
)
RAW_SCHEMA = T.StructType([*PARSED_SCHEMA.fields, T.StructField(CORRUPT_COLUMN, T.StringType())])
# The same fields, all strings: re-parsing a corrupt line with it recovers the raw tokens.
_RAW_TOKENS_DDL = ", ".join(f"`{c}` STRING" for c in EXPECTED_COLUMNS)

_VALUE_SHOWN = 40  # characters of an offending value quoted in a reason


# --------------------------------------------------------------------------- read and flag


def read_bank_csv(spark: SparkSession, path: str) -> DataFrame:
    """The CSV with the explicit schema; rows Spark cannot parse keep their line in _corrupt_record.

    Measured on Spark 3.5.6: bad ints, too few and too many fields all set
    _corrupt_record, but only when every column is read (with column pruning a
    short row passes unflagged), so every query over it must reference all 17
    columns and _corrupt_record, as flag_rows' reason does. Empty fields read as null.
    """
    return (
        _csv_reader(spark)
        .schema(RAW_SCHEMA)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
        .csv(path)
    )


def read_parsed_rows(spark: SparkSession, path: str) -> DataFrame:
    """The rows Spark parses as read_bank_csv does, without its _corrupt_record column: malformed
    lines (those read_bank_csv flags) are dropped, as every query over it references all 17 columns.

    The features pass reads this: keeping the corrupt record costs a copy of every row
    (Spark's FailureSafeParser rebuilds each one to add the column), about a fifth of
    the parse. A malformed line still shows, as a line the features lack, and the
    quarantine pass then reads it with read_bank_csv.
    """
    return _csv_reader(spark).schema(PARSED_SCHEMA).option("mode", "DROPMALFORMED").csv(path)


def read_strict_rows(spark: SparkSession, path: str) -> DataFrame:
    """read_parsed_rows' rows, but a malformed line fails the query (FAILFAST) instead of being dropped.

    With checked_rows, the features pass of an input with no bad row: nothing is dropped
    unseen, so the job need not count the CSV's lines to know that.
    """
    return _csv_reader(spark).schema(PARSED_SCHEMA).option("mode", "FAILFAST").csv(path)


def _csv_reader(spark: SparkSession) -> DataFrameReader:
    return (
        spark.read.options(**CSV_OPTIONS)
        .option("header", "true")
        .option("enforceSchema", "true")  # the header is checked by features_job.check_header
    )


def _quoted(value: Column) -> Column:
    return F.concat(F.lit("'"), F.substring(value, 1, _VALUE_SHOWN), F.lit("'"))


def _join_reasons(parts: list[Column]) -> Column:
    """'; '-joined non-null parts, or null when there are none (concat_ws skips nulls)."""
    joined = F.concat_ws("; ", *parts)
    return F.when(joined != "", joined)


def _parse_reason(line: Column, tokens: Column) -> Column:
    """Why Spark rejected `line`: quoting, field count, or the int fields that did not parse."""
    # Field count outside quoted fields, so a quoted ';' does not count.
    unquoted = F.regexp_replace(line, r'"(?:[^"]|"")*"', "")
    n_fields = F.length(unquoted) - F.length(F.regexp_replace(unquoted, ";", "")) + 1
    n_quotes = F.length(line) - F.length(F.regexp_replace(line, '"', ""))
    bad_ints = [
        F.when(
            tokens[c].isNotNull() & F.col(c).isNull(),
            F.concat(F.lit(f"bad int in {c}: "), _quoted(tokens[c])),
        )
        for c in INT_COLUMNS
    ]
    return (
        F.when(F.instr(line, REPLACEMENT_CHARACTER) > 0, F.lit("not valid UTF-8: undecodable bytes in the line"))
        .when(n_quotes % 2 == 1, F.lit("unbalanced quotes"))
        .when(
            n_fields != len(EXPECTED_COLUMNS),
            F.format_string(f"wrong field count: %d, expected {len(EXPECTED_COLUMNS)}", n_fields),
        )
        .otherwise(F.coalesce(_join_reasons(bad_ints), F.lit("unparseable record")))
    )


def _range_check(column: str, low: int, high: int | None = None) -> tuple[Column, Column]:
    c = F.col(column)
    if high is None:
        return c < low, F.concat(F.lit(f"{column} below {low}: "), c.cast("string"))
    return (c < low) | (c > high), F.concat(F.lit(f"{column} out of range {low}..{high}: "), c.cast("string"))


# Here for the month rule; features_job's encode_month makes the feature with it too.
def month_number(month: Column) -> Column:
    """1..12 for "jan".."dec", else 0; a CASE whose branches are all literals, so never null."""
    number = F.when(month == MONTHS[0], 1)
    for i, name in enumerate(MONTHS[1:], start=2):
        number = number.when(month == name, i)
    return number.otherwise(0)


def _text_checks(columns: tuple[str, ...] = STRING_COLUMNS) -> list[tuple[Column, Column]]:
    """Text that cannot be real: not valid UTF-8, control characters, implausibly long categories.

    Each is one test per row over all the `columns` it concerns (the per-column reasons are
    built only for a row that breaks it).
    """
    undecodable = [
        F.when(F.instr(F.col(c), REPLACEMENT_CHARACTER) > 0, F.lit(f"{c} is not valid UTF-8 (undecodable bytes)"))
        for c in STRING_COLUMNS
    ]
    control = [
        F.when(
            F.col(c).rlike(r"[\x00-\x1f\x7f]"),
            F.concat(
                F.lit(f"control character in {c}: "), _quoted(F.regexp_replace(F.col(c), r"[\x00-\x1f\x7f]", "?"))
            ),
        )
        for c in STRING_COLUMNS
    ]
    too_long = [
        F.when(
            F.length(F.col(c)) > MAX_CATEGORY_LENGTH,
            F.format_string(f"{c} is %d characters long, at most {MAX_CATEGORY_LENGTH}", F.length(F.col(c))),
        )
        for c in CATEGORICAL_COLUMNS
    ]
    text = F.concat_ws("", *columns)
    return [
        (text.rlike(NOT_TEXT), _join_reasons([*undecodable, *control])),
        (F.greatest(*(F.length(F.col(c)) for c in CATEGORICAL_COLUMNS)) > MAX_CATEGORY_LENGTH, _join_reasons(too_long)),
    ]


def _missing_checks(columns: tuple[str, ...] = EXPECTED_COLUMNS) -> list[tuple[Column, Column]]:
    """(broken, reason) of a null, or for text a blank, value in each of `columns`."""
    return [
        (
            F.col(c).isNull() | ((F.trim(F.col(c)) == "") if c in STRING_COLUMNS else F.lit(False)),
            F.lit(f"missing {c}"),
        )
        for c in columns
    ]


def _value_checks() -> list[tuple[Column, Column]]:
    """(broken, reason) of each column's own rule: ranges, months, yes/no."""
    yes_no = [
        (~F.col(c).isin("yes", "no"), F.concat(F.lit(f"{c} not yes/no: "), _quoted(F.col(c))))
        for c in (*YES_NO_COLUMNS, "y")
    ]
    return [
        _range_check("age", 1, 120),
        _range_check("day", 1, 31),
        (month_number(F.col("month")) == 0, F.concat(F.lit("month not jan..dec: "), _quoted(F.col("month")))),
        _range_check("campaign", 1),
        _range_check("pdays", -1),
        _range_check("previous", 0),
        *yes_no,
    ]


# Columns with a rule of their own (_value_checks): a null or blank value breaks it too.
_OWN_RULE = frozenset({"age", "day", "month", "campaign", "pdays", "previous", *YES_NO_COLUMNS, "y"})


def _domain_checks() -> list[tuple[Column, Column]]:
    """(broken, reason) of every domain rule, in the order reasons are reported."""
    return [*_text_checks(), *_missing_checks(), *_value_checks()]


def _domain_reason() -> Column:
    """Every missing value and domain violation of a row that parsed, or null.

    The reason text is built only for a row that breaks a rule; a good row costs
    one OR of the rules. (Building and joining some 30 strings for every row
    made the job's pass over the CSV take 1.8 times as long at 10x bank-full.)
    A rule on a null value is null, not true, but every null also breaks its
    `missing` rule, so the OR is true exactly when some rule is.
    """
    checks = _domain_checks()
    broken = functools.reduce(operator.or_, (rule for rule, _ in checks))
    return F.when(broken, _join_reasons([F.when(rule, reason) for rule, reason in checks]))


def _valid(line: Column) -> Column:
    """Whether a row parsed and breaks no rule: the one test every good row pays, kept cheap.

    True exactly when flag_rows' reason is null, without building it: the row's rules OR-ed as
    a plain boolean, which whole-stage code generation compiles into the scan (filtering on
    the null-ness of the reason expression cost a third of the pass, measured at 30x). Rules
    another rule implies are left out: the text rules look at the categorical columns only
    (bad text in a yes/no column, month or y breaks that column's own rule), and only at a
    value that is not a documented category (the OR stops at the first true operand); a null
    or blank value is tested only where the column has no rule of its own (a rule on a null
    is null, and a null rule counts as broken). The reason still names every rule broken.
    """
    categories = [
        F.col(c).isNull()
        | (
            ~F.col(c).isin(*DOCUMENTED_CATEGORIES[c])
            & ((F.trim(F.col(c)) == "") | F.col(c).rlike(NOT_TEXT) | (F.length(F.col(c)) > MAX_CATEGORY_LENGTH))
        )
        for c in CATEGORICAL_COLUMNS
    ]
    others = tuple(c for c in EXPECTED_COLUMNS if c not in _OWN_RULE and c not in CATEGORICAL_COLUMNS)
    rules = [*categories, *(rule for rule, _ in _missing_checks(others)), *(rule for rule, _ in _value_checks())]
    return line.isNull() & ~F.coalesce(functools.reduce(operator.or_, rules), F.lit(True))


# What a query over checked_rows fails with at a row flag_valid rejects. It shows in Spark's
# task-failure log lines, so it says what happens next.
REJECTED_ROW = "bank_features: a row breaks a rule; the job writes the features without it, then the quarantine"
# Spark's error class for a line FAILFAST rejects (read_strict_rows).
_MALFORMED = "MALFORMED_RECORD_IN_PARSING"


def checked_rows(parsed: DataFrame) -> DataFrame:
    """read_strict_rows' frame as valid_rows gives it (the 17 columns, none null), or a failed query.

    No Filter and no count: a row flag_valid rejects raises REJECTED_ROW instead
    (is_rejection tells that failure from others). The check rides on `age`, a column
    every feature set keeps, so Spark cannot prune it away.
    """
    checked = F.when(_valid(F.lit(None)), F.col("age")).otherwise(F.raise_error(F.lit(REJECTED_ROW)))
    return parsed.select(*_not_null_columns({"age": checked}))


def _not_null_columns(replaced: dict[str, Column] | None = None) -> list[Column]:
    """The 17 input columns (or ``replaced``'s expression for one), each coalesced to 0 or "" under
    its own name: every null is rejected before, and the coalesce only lets Spark know, so the
    parquet schema and the manifest say nullable=false."""
    given = replaced or {}
    return [F.coalesce(given.get(c, F.col(c)), F.lit(0 if c in INT_COLUMNS else "")).alias(c) for c in EXPECTED_COLUMNS]


def is_rejection(error: BaseException) -> bool:
    """Whether a query over checked_rows(read_strict_rows(...)) failed because a row was rejected.

    Told by the Java exceptions in the failure's cause chain, never by the text of the whole
    trace: a RuntimeException whose message is REJECTED_ROW (raise_error), or a SparkThrowable of
    error class MALFORMED_RECORD_IN_PARSING (FAILFAST).
    """
    from py4j.java_gateway import is_instance_of
    from pyspark import SparkContext

    java = getattr(error, "java_exception", None) or getattr(error, "_origin", None)  # py4j's, pyspark's
    gateway = SparkContext._gateway  # type: ignore[attr-defined]
    seen = 0
    while java is not None and gateway is not None and seen < 32:  # a cause chain is short; a cycle would not end
        if java.getClass().getName() == "java.lang.RuntimeException" and java.getMessage() == REJECTED_ROW:
            return True
        if is_instance_of(gateway, java, "org.apache.spark.SparkThrowable"):
            error_class = java.getErrorClass()
            if error_class and str(error_class).startswith(_MALFORMED):
                return True
        java, seen = java.getCause(), seen + 1
    return False


def _reconstructed_record() -> Column:
    """A CSV line equivalent to a parsed row (its original text is not kept by Spark)."""
    fields = [
        F.coalesce(
            F.col(c).cast("string") if c in INT_COLUMNS else F.concat(F.lit('"'), F.col(c), F.lit('"')),
            F.lit(""),
        )
        for c in EXPECTED_COLUMNS
    ]
    return F.concat_ws(";", *fields)


def flag_rows(parsed: DataFrame) -> DataFrame:
    """Add `reason` (null for a good row), `record` (the offending line, null for a good row) and
    `valid` (whether reason is null, computed without it).

    Input: read_bank_csv's frame. Output: the 17 columns, record, reason, valid.
    """
    line = F.col(CORRUPT_COLUMN)
    # A separate column so that the re-parse runs once per corrupt row, not once per reference.
    with_tokens = parsed.withColumn("_tokens", F.when(line.isNotNull(), F.from_csv(line, _RAW_TOKENS_DDL, CSV_OPTIONS)))
    flagged = with_tokens.withColumn(
        "reason",
        F.when(line.isNotNull(), _parse_reason(line, F.col("_tokens"))).otherwise(_domain_reason()),
    )
    return flagged.select(
        *EXPECTED_COLUMNS,
        F.when(F.col("reason").isNotNull(), F.coalesce(line, _reconstructed_record())).alias("record"),
        "reason",
        _valid(line).alias("valid"),
    )


def flag_valid(parsed: DataFrame) -> DataFrame:
    """read_bank_csv's or read_parsed_rows' frame with `valid` only: what the features pass needs, without the reasons.

    Planning flag_rows' reasons costs some 3,000 calls through Py4J (about a second with a cold
    JVM); a run builds them only when a row was rejected.
    """
    line = F.col(CORRUPT_COLUMN) if CORRUPT_COLUMN in parsed.columns else F.lit(None)  # read_parsed_rows: none
    return parsed.withColumn("valid", _valid(line))


QUARANTINE_SCHEMA = T.StructType([T.StructField("record", T.StringType()), T.StructField("reason", T.StringType())])


def quarantine_rows(flagged: DataFrame) -> DataFrame:
    """The rejected rows of a flag_rows frame: record, reason (QUARANTINE_SCHEMA)."""
    return flagged.where(~F.col("valid")).select("record", "reason")


def valid_rows(flagged: DataFrame) -> DataFrame:
    """The good rows of a flag_rows or flag_valid frame, the 17 input columns, none null."""
    # Only `valid` is read: Spark prunes the reason and record expressions from this plan.
    return flagged.where(F.col("valid")).select(*_not_null_columns())
