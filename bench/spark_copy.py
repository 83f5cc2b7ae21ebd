"""The I/O floor of the features job: the same CSV read the same way, written straight to parquet.

    spark-submit bench/spark_copy.py --input CSV --output DIR

Reads with the job's own reader (bank_spark.csv_rows.read_bank_csv: its
explicit schema, ';', RFC 4180 quoting, header, PERMISSIVE) and drops the
_corrupt_record column before anything runs, so Spark prunes it from the scan:
the 17 typed columns are parsed and written, nothing else. That is the
cheapest copy that still does the job's parse: no header check, validation,
features, counts or model. The output keeps Spark's own partitioning (a file
per input split), as the job's features do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from pyspark.sql import SparkSession  # noqa: E402

from bank_spark.csv_rows import CORRUPT_COLUMN, read_bank_csv  # noqa: E402

PROG = "spark_copy"


def copy(spark: SparkSession, input_uri: str, output_uri: str) -> None:
    """Parse `input_uri` as the job does and write its 17 columns as parquet under `output_uri`."""
    read_bank_csv(spark, input_uri).drop(CORRUPT_COLUMN).write.mode("overwrite").parquet(output_uri)


def main(argv: list[str] | None = None) -> int:
    """CLI: 0 when copied, 1 and `spark_copy: error: ...` on stderr when the input is missing."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="the bank CSV (a local path)")
    parser.add_argument("--output", required=True, help="the parquet directory (replaced)")
    args = parser.parse_args(argv)
    if not Path(args.input).is_file():
        print(f"{PROG}: error: input not found or not a file: {args.input}", file=sys.stderr)
        return 1
    spark = SparkSession.builder.appName(PROG).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")  # as the job does: INFO logging is work too
    try:
        copy(spark, args.input, args.output)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
