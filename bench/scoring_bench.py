"""Benchmark batch scoring: Spark's ways of calling Python against one process scoring in chunks.

    .venv/bin/python bench/scoring_bench.py [--rows 1000000] [--row-udf-rows 200000]
        [--sklearn-row-udf-rows 10000] [--runs 3]

Data: the Spark features job's own transforms over bank-full, repeated to
--rows rows, written once to build/bench/data/scoring-<rows>.parquet (4 files,
so the 2 cores each get tasks). Models: the release model trained on bank-full
as the DAG trains it, as scikit-learn (the pipeline) and as ONNX (what the
registry holds and bank_spark.batch_score_job scores with).

Spark (local[2], Arrow batches of 10,000 rows) reads the parquet, scores and
writes to the `noop` sink, so every row is scored and nothing is stored:
- mapInArrow with ONNX: bank_spark.batch_score_job.score, the batch job's own path,
  and the same scorer through mapInPandas;
- a scalar pandas UDF (Series in, Series out) with ONNX, and with scikit-learn;
- a row-at-a-time Python UDF and an Arrow-optimised Python UDF (useArrow=True,
  Spark 3.5), with ONNX and with scikit-learn. These are slow, so they score a
  prefix of the same rows (--row-udf-rows, --sklearn-row-udf-rows); rates are
  per row, so they compare.
In one process, data already in memory as the model's input frame:
- scikit-learn predict_proba and ONNX Runtime in 10,000-row chunks (scikit-learn's
  HistGradientBoosting predicts with one OpenMP thread per core, so on both
  cores; ONNX Runtime with one thread, as in serving and in the Spark workers,
  and with two). The goal compares the job with the faster ONNX figure.
Every Spark variant keeps all the input columns next to the score (the job
also adds `predicted`), so each writes the same rows to the sink.

Each variant: one untimed warm-up on a 20,000-row prefix (starts the Python
workers, JIT), then --runs timed runs; median/min/max seconds and rows/s from
the median. Writes build/bench/scoring.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.common import OUT, REPO, quiet_check, summary, write_result

# The Python workers Spark starts run this interpreter: they import the same installed code.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.sql import DataFrame, Row, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql import types as T  # noqa: E402

from bank_ml import data, release  # noqa: E402
from bank_serving.features import as_feeds  # noqa: E402
from bank_serving.schema import PROBABILITIES_OUTPUT  # noqa: E402
from bank_spark import batch_score_job as batch_score  # noqa: E402
from bank_spark import csv_rows as cr  # noqa: E402
from bank_spark import features_job as bf  # noqa: E402

CHUNK = 10_000
JOB = "onnx mapInArrow (batch_score.score: the job)"
ONNX_1 = "onnx in one process, 10k-row chunks, 1 thread"
ONNX_2 = "onnx in one process, 10k-row chunks, 2 threads"
WARMUP_ROWS = 20_000
BANK_FULL = REPO / "data" / "bank" / "bank-full.csv"


def model_frame(columns: dict[str, pd.Series] | pd.DataFrame) -> pd.DataFrame:
    """The model's input frame (as bank_ml.data.to_xy builds it): strings as object, numbers float32, null NaN."""
    kinds = batch_score.feature_types()
    return pd.DataFrame(
        {
            name: np.asarray(columns[name], dtype=object)
            if kind == "string"
            else pd.to_numeric(columns[name]).to_numpy(dtype=np.float32, na_value=np.nan)
            for name, kind in kinds.items()
        }
    )


def scoring_data(spark: SparkSession, rows: int) -> str:
    """build/bench/data/scoring-<rows>.parquet: the job's features of bank-full, repeated to `rows` rows.

    Each size is a dataset of its own in 4 files, so both cores get tasks; a
    `limit(n)` of the large one would not do: Spark pushes the UDF below each
    partition's local limit, scoring up to n rows per partition.
    """
    path = OUT / "data" / f"scoring-{rows}.parquet"
    if path.is_dir() and spark.read.parquet(str(path)).count() == rows:
        return str(path)
    features = cr.read_bank_csv(spark, str(BANK_FULL)).transform(cr.flag_rows).transform(cr.valid_rows)
    features = features.transform(bf.build_features)
    copies = -(-rows // 45_211)
    tiled = features.crossJoin(spark.range(copies).withColumnRenamed("id", "_copy")).drop("_copy").limit(rows)
    tiled.repartition(4).write.mode("overwrite").parquet(str(path))
    return str(path)


def local_session(app: str) -> SparkSession:
    """local[2] with the job's Arrow batches, quiet, no UI: the scoring benchmarks' Spark."""
    # One OpenMP thread per Python worker, as Spark gives each task on a cluster (it sets
    # OMP_NUM_THREADS from spark.executor.cores, which local mode leaves unset): two workers
    # with two spinning OpenMP threads each on 2 cores made scikit-learn 15 times slower per
    # row here. Set only for the JVM and its workers: this process's OpenMP already started.
    os.environ["OMP_NUM_THREADS"] = "1"
    spark = (
        SparkSession.builder.master("local[2]")
        .appName(app)
        .config("spark.ui.enabled", "false")
        .config(batch_score.ARROW_BATCH_CONF, str(batch_score.ARROW_BATCH_ROWS))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    del os.environ["OMP_NUM_THREADS"]
    return spark


# --------------------------------------------------------------------------- Spark variants


def onnx_row(model_bytes: bytes) -> Callable[[Row], float]:
    """One row (a struct of the features) in, P(subscribes) out: the book's row-at-a-time UDF, with ONNX."""
    names, loaded = list(batch_score.feature_types()), []

    def predict(row: Row) -> float:
        if not loaded:  # once per task; the closure is unpickled per task
            loaded.append(batch_score.load_model(model_bytes))
        return float(loaded[0].predict_proba({n: [row[n]] for n in names})[0])

    return predict


def sklearn_row(pipeline: Any) -> Callable[[Row], float]:
    names = list(batch_score.feature_types())

    def predict(row: Row) -> float:
        one = pd.DataFrame({n: [np.nan if row[n] is None else row[n]] for n in names})
        return float(pipeline.predict_proba(one)[0, 1])

    return predict


def onnx_series(model_bytes: bytes) -> Callable[..., pd.Series]:
    names = list(batch_score.feature_types())

    def predict(*columns: pd.Series) -> pd.Series:
        model = batch_score.load_model(model_bytes)
        return pd.Series(model.predict_proba(dict(zip(names, columns))).astype("float64"))

    return predict


def sklearn_series(pipeline: Any) -> Callable[..., pd.Series]:
    names = list(batch_score.feature_types())

    def predict(*columns: pd.Series) -> pd.Series:
        return pd.Series(pipeline.predict_proba(model_frame(dict(zip(names, columns))))[:, 1])

    return predict


def onnx_pandas_batches(model_bytes: bytes) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas: the job's scorer over pandas frames instead of Arrow batches (every column converted twice)."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = batch_score.load_model(model_bytes)
        for batch in batches:
            p = model.predict_proba(batch)
            yield batch.assign(probability=p.astype("float64"), predicted=model.labels(p).astype("int32"))

    return score


def spark_variants(model_bytes: bytes, pipeline: Any) -> dict[str, Callable[[DataFrame], DataFrame]]:
    """name -> how that variant turns the features into scores."""
    inputs = [F.col(n) for n in batch_score.feature_types()]
    row = F.struct(*inputs)
    row_onnx = F.udf(onnx_row(model_bytes), T.DoubleType(), useArrow=False)
    arrow_onnx = F.udf(onnx_row(model_bytes), T.DoubleType(), useArrow=True)
    row_sklearn = F.udf(sklearn_row(pipeline), T.DoubleType(), useArrow=False)
    arrow_sklearn = F.udf(sklearn_row(pipeline), T.DoubleType(), useArrow=True)
    series_onnx = F.pandas_udf(onnx_series(model_bytes), T.DoubleType())  # type: ignore[call-overload]
    series_sklearn = F.pandas_udf(sklearn_series(pipeline), T.DoubleType())  # type: ignore[call-overload]
    return {
        JOB: lambda df: batch_score.score(df, model_bytes),
        "onnx mapInPandas": lambda df: df.mapInPandas(
            onnx_pandas_batches(model_bytes), batch_score.scores_schema(df.schema)
        ),
        "onnx pandas UDF": lambda df: df.select("*", series_onnx(*inputs).alias("probability")),
        "onnx Arrow-optimised row UDF": lambda df: df.select("*", arrow_onnx(row).alias("probability")),
        "onnx row UDF": lambda df: df.select("*", row_onnx(row).alias("probability")),
        "sklearn pandas UDF": lambda df: df.select("*", series_sklearn(*inputs).alias("probability")),
        "sklearn Arrow-optimised row UDF": lambda df: df.select("*", arrow_sklearn(row).alias("probability")),
        "sklearn row UDF": lambda df: df.select("*", row_sklearn(row).alias("probability")),
    }


def two_thread_session(model_bytes: bytes) -> ort.InferenceSession:
    """The model with two intra-op threads: one process using both cores (serving and the job use one)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def time_spark(scores: DataFrame) -> float:
    start = time.perf_counter()
    scores.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def time_chunks(predict: Callable[[pd.DataFrame], Any], X: pd.DataFrame) -> float:
    start = time.perf_counter()
    for i in range(0, len(X), CHUNK):
        predict(X.iloc[i : i + CHUNK])
    return time.perf_counter() - start


def result(seconds: list[float], rows: int, how: str) -> dict[str, Any]:
    s = summary(seconds, 3)
    return {"rows": rows, "seconds": s, "rows_per_s": round(rows / s["median"]), "how": how}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--row-udf-rows", type=int, default=200_000, help="rows for the ONNX row-at-a-time UDFs")
    parser.add_argument("--sklearn-row-udf-rows", type=int, default=10_000, help="rows for scikit-learn row UDFs")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    busy = quiet_check()

    print("training the release model on bank-full ...", flush=True)
    candidate = release.train_candidate(data.features_from_csv(BANK_FULL))
    model_bytes, pipeline = candidate.onnx_bytes, candidate.pipeline

    spark = local_session("scoring_bench")
    results: dict[str, Any] = {}
    try:
        path = scoring_data(spark, args.rows)
        features = spark.read.parquet(path)
        for name, variant in spark_variants(model_bytes, pipeline).items():
            rows = args.rows
            if "row UDF" in name:
                rows = min(args.rows, args.sklearn_row_udf_rows if name.startswith("sklearn") else args.row_udf_rows)
            df = spark.read.parquet(scoring_data(spark, rows)) if rows < args.rows else features
            time_spark(variant(spark.read.parquet(scoring_data(spark, min(rows, WARMUP_ROWS)))))
            seconds = []
            for i in range(args.runs):
                seconds.append(time_spark(variant(df)))
                print(f"{name}: run {i + 1}/{args.runs}, {rows:,} rows in {seconds[-1]:.2f} s", flush=True)
            results[name] = result(
                seconds, rows, "Spark local[2]: read parquet, score, write to the noop sink; wall time of the action"
            )
        table = features.toPandas()  # the same rows, for the in-process reference
    finally:
        spark.stop()

    X = model_frame(table)
    model = batch_score.load_model(model_bytes)
    two_threads = two_thread_session(model_bytes)
    for name, predict in {
        "sklearn in one process, 10k-row chunks": lambda chunk: pipeline.predict_proba(chunk),
        ONNX_1: lambda chunk: model.predict_proba(chunk),
        ONNX_2: lambda chunk: two_threads.run([PROBABILITIES_OUTPUT], as_feeds(chunk)),
    }.items():
        time_chunks(predict, X.iloc[:WARMUP_ROWS])
        seconds = []
        for i in range(args.runs):
            seconds.append(time_chunks(predict, X))
            print(f"{name}: run {i + 1}/{args.runs}, {len(X):,} rows in {seconds[-1]:.2f} s", flush=True)
        results[name] = result(seconds, len(X), "one process, the model's input frame in memory; prediction only")

    rate = {name: r["rows_per_s"] for name, r in results.items()}
    best_onnx = max(rate[ONNX_1], rate[ONNX_2])  # the in-process limit the goal compares with
    ratios = {
        "sklearn pandas UDF / sklearn row UDF": rate["sklearn pandas UDF"] / rate["sklearn row UDF"],
        "onnx pandas UDF / onnx row UDF": rate["onnx pandas UDF"] / rate["onnx row UDF"],
        "sklearn pandas UDF / sklearn in one process": rate["sklearn pandas UDF"]
        / rate["sklearn in one process, 10k-row chunks"],
        "onnx batch job (mapInArrow) / best onnx in one process": rate[JOB] / best_onnx,
        "onnx mapInPandas / best onnx in one process": rate["onnx mapInPandas"] / best_onnx,
    }
    print(f"\n{'variant':<42} {'rows':>10} {'median s':>9} {'rows/s':>10}")
    for name, r in results.items():
        print(f"{name:<42} {r['rows']:>10,} {r['seconds']['median']:>9.2f} {r['rows_per_s']:>10,}")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    write_result(
        "scoring",
        {
            "model_version": candidate.version,
            "machine_busy_before_pct": busy,
            "runs": args.runs,
            "variants": results,
            "ratios": {k: round(v, 2) for k, v in ratios.items()},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
