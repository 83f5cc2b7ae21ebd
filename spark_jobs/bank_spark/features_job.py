"""Turn the UCI Bank Marketing CSV into model-ready parquet features.

The job reads one semicolon-separated CSV (s3:// on EMR, a local path locally),
checks its header, sends rows that do not parse or break the domain rules to a
quarantine (record, reason), encodes the good rows as features and commits
everything with the manifest protocol of docs/interfaces.md (bank_spark.commit).
The rows are read and checked by bank_spark.csv_rows.
The model, and the pyspark.ml baseline it is compared with, are built from these
features by the release's own step (bank_spark.train_job):

    <output>/_attempts/<attempt_id>/features/part-*.parquet
    <output>/_attempts/<attempt_id>/quarantine/part-*.parquet
    <output>/_manifest.json          written last: the commit point

Features (one row per good input row):
    age, balance, day, campaign, previous   ints as read
    job, marital, education, contact,       strings as read; "unknown" stays a
    poutcome                                category of its own
    default, housing, loan                  yes/no as 1/0
    month                                   1..12
    pdays, was_contacted                    pdays = -1 ("never contacted") becomes
                                            was_contacted = 0 and pdays = null
    balance_slog                            sign(balance) * log1p(|balance|): tames
                                            the long tail, keeps overdrafts negative
    campaign_capped                         min(campaign, 10): beyond ten calls the
                                            exact count is noise
    label                                   1 if y = "yes" else 0
`duration` is dropped: it is only known after the call and leaks the outcome.

Only built-in Spark expressions are used (no Python UDFs), and files are
listed, written and deleted through the Hadoop FileSystem API of the JVM so
the same code works on EMRFS, S3A and local paths. Its entry point is
bank_spark/entrypoints/bank_features.py, with bank_spark and bank_serving shipped
in the --py-files zip:

    spark-submit --py-files bank_jobs.zip bank_features.py --input URI --output URI --run-id ID
        [--max-quarantine-ratio 0.01] [--input-etag ETAG]
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

# The serving contract: what the model's inputs are and how they are derived.
from bank_serving.schema import CAMPAIGN_CAP, YES_NO_COLUMNS
from bank_serving.schema import FEATURE_COLUMNS as MODEL_INPUT_COLUMNS
from bank_spark.cli import JobArgumentParser, JobError, run_job, say, small_shuffles
from bank_spark.commit import commit, new_attempt_id, utc_timestamp
from bank_spark.csv_rows import (
    EXPECTED_COLUMNS,
    QUARANTINE_SCHEMA,
    checked_rows,
    flag_rows,
    flag_valid,
    is_rejection,
    month_number,
    quarantine_rows,
    read_bank_csv,
    read_parsed_rows,
    read_strict_rows,
    valid_rows,
)
from bank_spark.storage import HadoopFs, parquet_parts, write_parquet

PROG = "bank_features"

# What the job writes: the model's inputs (the serving contract) and the label.
FEATURE_COLUMNS: tuple[str, ...] = (*MODEL_INPUT_COLUMNS, "label")

MAX_MANIFEST_REASONS = 20


class FeatureJobError(JobError):
    """A failure the job reports as `bank_features: error: <message>`."""


class InputError(FeatureJobError):
    """The input is missing, empty or not the bank CSV."""


class HeaderError(InputError):
    """The header row does not name the 17 expected columns in order."""


class QuarantineRatioError(FeatureJobError):
    """Too large a share of the rows was quarantined."""


class UsageError(FeatureJobError):
    """Bad command-line arguments."""


@dataclass(frozen=True)
class JobConfig:
    """Arguments of one run (see the module docstring)."""

    input: str
    output: str
    run_id: str
    max_quarantine_ratio: float = 0.01
    input_etag: str | None = None


# --------------------------------------------------------------------------- header


def parse_header(line: str) -> list[str]:
    """Column names of a header line: split on ';', strip whitespace, quotes and a BOM."""
    return [name.strip().strip('"').strip() for name in line.lstrip("\ufeff").rstrip("\r\n").split(";")]


def _names(names: Iterable[str]) -> str:
    return ", ".join(n if n else "(empty)" for n in names)


def check_header(line: str | None) -> None:
    """Raise HeaderError/InputError unless `line` is the expected 17-column header.

    The CSV reader maps columns by position, so the order matters as well as the set.
    """
    if line is None:
        raise InputError("input is empty: no header line")
    names = parse_header(line)
    expected = list(EXPECTED_COLUMNS)
    if names == expected:
        return
    if not set(names) & set(expected):
        raise HeaderError(
            f"first line is not a header (none of the {len(expected)} expected columns): "
            f"{line[:120]!r}; expected a header row {';'.join(expected)}"
        )
    missing = [c for c in expected if c not in names]
    unexpected = list(dict.fromkeys(c for c in names if c not in expected))
    duplicated = list(dict.fromkeys(c for c in names if names.count(c) > 1))
    problems = []
    if missing:
        problems.append(f"missing column(s): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected column(s): {_names(unexpected)}")
    if duplicated:
        problems.append(f"duplicate column(s): {_names(duplicated)}")
    if not problems:
        problems.append(
            "columns in a different order (Spark maps CSV columns by position): "
            f"got {';'.join(names)}, expected {';'.join(expected)}"
        )
    raise HeaderError("bad header: " + "; ".join(problems))


# --------------------------------------------------------------------------- features


def drop_leakage(df: DataFrame) -> DataFrame:
    """Drop `duration`: it is only known after the call and leaks the outcome."""
    return df.drop("duration")


def encode_label(df: DataFrame) -> DataFrame:
    """Replace y with label: 1 for "yes", 0 for "no"."""
    return df.withColumn("label", (F.col("y") == "yes").cast("int")).drop("y")


def encode_month(df: DataFrame) -> DataFrame:
    """month "jan".."dec" -> 1..12 (0 for anything else, which validation already rejects)."""
    return df.withColumn("month", month_number(F.col("month")))


def encode_yes_no(df: DataFrame) -> DataFrame:
    """default, housing, loan: "yes" -> 1, "no" -> 0."""
    return df.withColumns({c: (F.col(c) == "yes").cast("int") for c in YES_NO_COLUMNS})


def encode_previous_contact(df: DataFrame) -> DataFrame:
    """pdays = -1 means never contacted: was_contacted = 0 and pdays = null (not a day count)."""
    contacted = F.col("pdays") != -1
    # withColumns evaluates both against the original pdays.
    return df.withColumns({"was_contacted": contacted.cast("int"), "pdays": F.when(contacted, F.col("pdays"))})


def add_derived_features(df: DataFrame) -> DataFrame:
    """balance_slog = sign(balance) * log1p(|balance|); campaign_capped = min(campaign, 10)."""
    balance = F.col("balance")
    return df.withColumns(
        {
            "balance_slog": F.signum(balance) * F.log1p(F.abs(balance)),
            "campaign_capped": F.least(F.col("campaign"), F.lit(CAMPAIGN_CAP)),
        }
    )


def build_features(valid: DataFrame) -> DataFrame:
    """Features of valid rows (valid_rows' output), columns in FEATURE_COLUMNS order."""
    return (
        valid.transform(drop_leakage)
        .transform(encode_label)
        .transform(encode_month)
        .transform(encode_yes_no)
        .transform(encode_previous_contact)
        .transform(add_derived_features)
        .select(*FEATURE_COLUMNS)
    )


HEADER_BYTES = 64 * 1024  # read for the header line: far more than 17 column names take


def _first_line(source: HadoopFs) -> str | None:
    """The file's first line (None if it is empty), from one ranged read rather than a Spark job.

    As Hadoop's line reader reads it: split at \n, \r or \r\n, a UTF-8 byte order mark
    dropped, and undecodable bytes replaced as Spark's text reader replaces them.
    """
    head = source.read_head(HEADER_BYTES)
    if not head:
        return None
    line = re.split(rb"\r\n|\r|\n", head, maxsplit=1)[0].removeprefix(b"\xef\xbb\xbf")
    return line.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- job

SPLIT_BYTES = 128 * 1024 * 1024  # spark.sql.files.maxPartitionBytes' default: the largest split we make
OPEN_COST_BYTES = 4 * 1024 * 1024  # spark.sql.files.openCostInBytes' default


def balanced_split_bytes(input_bytes: int, cores: int) -> int:
    """A split size that cuts one file into whole waves of tasks over `cores`, none over SPLIT_BYTES.

    Spark's own choice leaves the last wave part-empty: 440 MiB on 2 cores is 128+128, then
    128+56, so one core idles for a third of the second wave (a tenth of the pass at 100x).
    """
    waves = max(1, math.ceil(input_bytes / (cores * SPLIT_BYTES)))
    # Spark takes the smaller of this and (bytes + open cost) / cores, which is never smaller;
    # a split under the cost Spark counts for opening a file is not worth its task.
    return max(OPEN_COST_BYTES, math.ceil(input_bytes / (cores * waves)))


@contextlib.contextmanager
def balanced_splits(spark: SparkSession, input_bytes: int) -> Iterator[None]:
    """maxPartitionBytes at balanced_split_bytes while the job reads, unless spark-submit set it."""
    key = "spark.sql.files.maxPartitionBytes"
    if spark.conf.get(key, None) is not None:
        yield
        return
    spark.conf.set(key, str(balanced_split_bytes(input_bytes, max(1, spark.sparkContext.defaultParallelism))))
    try:
        yield
    finally:
        spark.conf.unset(key)  # a session someone else started reads with its own splits again


def _reason_counts(quarantine: DataFrame, quarantined: int) -> dict[str, int]:
    """The most frequent reasons of quarantine_rows' frame; the rest summed under "(other reasons)"."""
    if quarantined == 0:
        return {}
    top = quarantine.groupBy("reason").count().orderBy(F.desc("count"), "reason").limit(MAX_MANIFEST_REASONS).collect()
    reasons = {r["reason"]: int(r["count"]) for r in top}
    rest = quarantined - sum(reasons.values())
    if rest:
        reasons["(other reasons)"] = rest
    return reasons


def run(spark: SparkSession, config: JobConfig) -> dict[str, Any]:
    """Run the job and commit it; return the manifest. Raises FeatureJobError on bad input.

    One pass over the CSV parses, checks and writes the features, and fails at the
    first row that is malformed or breaks a rule: an input with no bad row is read
    once, with no Filter and no count of its lines. Only when a row was rejected are
    the features written again without the bad rows, and the quarantine written
    from a third pass that keeps malformed lines.
    """
    started = time.monotonic()
    attempt_id = new_attempt_id()

    source = HadoopFs(spark, config.input)
    if not source.exists():
        raise InputError(f"input not found: {config.input}")
    if source.is_dir():
        raise InputError(f"input is a directory, expected one CSV file: {config.input}")
    input_bytes = source.size()
    check_header(_first_line(source))
    with balanced_splits(spark, input_bytes):
        return _write_and_commit(spark, config, source, input_bytes, started, attempt_id)


def _write_and_commit(
    spark: SparkSession, config: JobConfig, source: HadoopFs, input_bytes: int, started: float, attempt_id: str
) -> dict[str, Any]:
    # The validity test references all 17 columns, so the CSV reader never prunes one and
    # rejects every line read_bank_csv would flag as corrupt (a test holds the two equal).
    out = HadoopFs(spark, config.output)
    out_existed = out.exists()
    attempt = f"_attempts/{attempt_id}"
    timings: dict[str, float] = {}
    phase = time.monotonic()
    rejected = False
    with quiet_task_failures(spark):
        try:
            features = _write_features(read_strict_rows(spark, source.uri()).transform(checked_rows), out, attempt)
        except Exception as error:  # noqa: BLE001 - py4j's error of the failed Spark job; any other is raised
            if not is_rejection(error):
                raise
            rejected = True
    if rejected:
        timings["until_rejection"] = time.monotonic() - phase
        phase = time.monotonic()
        say(f"{PROG}: a row was rejected; writing the features without the rejected rows, then the quarantine")
        # A new attempt: a task of the stopped pass may still close (on S3, upload) a file after
        # this delete, into its own attempt, which the commit deletes with the other old ones.
        out.delete(attempt)
        attempt_id = new_attempt_id()
        attempt = f"_attempts/{attempt_id}"
        valid = read_parsed_rows(spark, source.uri()).transform(flag_valid).transform(valid_rows)
        features = _write_features(valid, out, attempt)
    files = parquet_parts(out, f"{attempt}/features")
    rows_out = sum(out.parquet_rows(f) for f in files)  # from the footers
    timings["features"] = time.monotonic() - phase
    phase = time.monotonic()

    if not rejected:
        quarantined = 0  # every row became a feature row
        # No rows, the schema: no second parse, no reasons to plan, no Python worker.
        # (From SQL text: spark.range(0) took 0.75 s in a cold JVM, this 0.06 s.)
        columns = ", ".join(f"CAST(NULL AS {f.dataType.simpleString()}) AS {f.name}" for f in QUARANTINE_SCHEMA)
        bad = spark.sql(f"SELECT {columns} LIMIT 0")
    else:
        # Counted, counted by reason and written: parse the CSV once more, not thrice.
        bad = read_bank_csv(spark, source.uri()).transform(flag_rows).transform(quarantine_rows).cache()
        quarantined = bad.count()
    try:
        rows_in = rows_out + quarantined
        if rows_in == 0:
            out.delete(attempt if out_existed else "")  # leave no trace of a run that had nothing to do
            raise InputError(f"input has a header but no data rows: {config.input}")
        ratio = quarantined / rows_in
        reasons = _reason_counts(bad, quarantined)
        write_parquet(bad, out.uri(f"{attempt}/quarantine"), quarantined)
    finally:
        bad.unpersist()
    timings["quarantine"] = time.monotonic() - phase

    if ratio > config.max_quarantine_ratio:
        out.delete(f"{attempt}/features")  # never committed; the quarantine is what to look at
        top = " | ".join(f"{reason} ({count})" for reason, count in list(reasons.items())[:5])
        raise QuarantineRatioError(
            f"quarantined {quarantined} of {rows_in} rows: ratio {ratio:.4f} exceeds "
            f"--max-quarantine-ratio {config.max_quarantine_ratio}; top reasons: {top}; "
            f"not committed, quarantine kept at {out.uri(f'{attempt}/quarantine')}"
        )

    manifest: dict[str, Any] = {
        "format_version": 1,
        "run_id": config.run_id,
        "attempt_id": attempt_id,
        "committed_at": utc_timestamp(),
        "input": {"uri": config.input, "etag": config.input_etag, "bytes": input_bytes},
        "paths": {"features": f"{attempt}/features", "quarantine": f"{attempt}/quarantine"},
        "files": files,
        "rows": {"in": rows_in, "out": rows_out, "quarantined": quarantined},
        "quarantine": {"ratio": round(ratio, 6), "max_ratio": config.max_quarantine_ratio, "reasons": reasons},
        "schema": [
            {"name": f.name, "type": f.dataType.simpleString(), "nullable": f.nullable} for f in features.schema.fields
        ],
        "spark_version": spark.version,
        "duration_seconds": round(time.monotonic() - started, 3),
        # Where the time went: the CSV pass (parse, check, write the features); if a row was
        # rejected, the first pass until then and the quarantine's pass.
        "phase_seconds": {name: round(seconds, 3) for name, seconds in timings.items()},
    }
    commit(out, manifest, attempt_id)
    return manifest


# Where Spark logs a failed task and the aborted write, in the driver (and in local mode's executor).
TASK_FAILURE_LOGGERS = (
    "org.apache.spark.scheduler.TaskSetManager",
    "org.apache.spark.executor.Executor",
    "org.apache.spark.sql.execution.datasources.FileFormatWriter",
)


@contextlib.contextmanager
def quiet_task_failures(spark: SparkSession) -> Iterator[None]:
    """Spark's log lines about failed tasks off, while the first pass runs.

    A rejected row stops that pass by failing its task, which is the expected way for it to end
    on a dirty input: an ERROR with a stack trace (and a malformed line's text) in the step's log
    would say otherwise. Any other failure still reaches the caller with its whole Java trace.
    """
    log4j = spark.sparkContext._jvm.org.apache.logging.log4j  # type: ignore[union-attr]
    levels = {name: log4j.LogManager.getLogger(name).getLevel() for name in TASK_FAILURE_LOGGERS}
    for name in TASK_FAILURE_LOGGERS:
        log4j.core.config.Configurator.setLevel(name, log4j.Level.OFF)
    try:
        yield
    finally:
        for name, level in levels.items():
            log4j.core.config.Configurator.setLevel(name, level)


def _write_features(rows: DataFrame, out: HadoopFs, attempt: str) -> DataFrame:
    """Write the features of valid_rows' (or checked_rows') 17 columns under <attempt>/features; return them."""
    features = rows.transform(build_features)
    features.write.option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false").parquet(
        out.uri(f"{attempt}/features")
    )
    return features


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> JobConfig:
    """The command line as a JobConfig; raises UsageError on bad usage (--help exits 0)."""
    parser = JobArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0], usage_error=UsageError)
    parser.add_argument("--input", required=True, help="the bank CSV file (s3:// or local)")
    parser.add_argument("--output", required=True, help="this run's own output directory")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--max-quarantine-ratio", type=float, default=0.01)
    parser.add_argument("--input-etag", default=None)
    args = parser.parse_args(argv)
    if not 0.0 <= args.max_quarantine_ratio <= 1.0:
        parser.error(f"--max-quarantine-ratio must be within 0..1, got {args.max_quarantine_ratio}")
    if not args.run_id.strip():
        parser.error("--run-id must not be empty")
    return JobConfig(
        input=args.input,
        output=args.output,
        run_id=args.run_id,
        max_quarantine_ratio=args.max_quarantine_ratio,
        input_etag=args.input_etag,
    )


def _summary(config: JobConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "committed",
        "run_id": config.run_id,
        "attempt_id": manifest["attempt_id"],
        "output": config.output,
        "rows_in": manifest["rows"]["in"],
        "rows_out": manifest["rows"]["out"],
        "rows_quarantined": manifest["rows"]["quarantined"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the job from the command line; 0 on success, non-zero with a last stderr line on failure."""
    return run_job(PROG, argv, parse_args, run, configure=small_shuffles, summarize=_summary)
