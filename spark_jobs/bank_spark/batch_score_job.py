"""Score a committed features dataset with a registered model: batch predictions as parquet.

The job reads the model directory of the registry (model.onnx + model.json) on
the driver through the Hadoop FileSystem API (EMRFS on s3://, local paths
locally), checks model.onnx against the sha256 model.json records and against
the serving contract, broadcasts its bytes, and scores the features that
bank_features committed (only the files its _manifest.json lists) with
mapInArrow (mapInPandas's Arrow-native twin: columns pass through without a
round trip through pandas; BENCHMARKS.md has both). Each Python worker builds one
ONNX Runtime session per model and keeps it for every batch and task it runs. Scoring is serving's own code
(bank_serving: OnnxModel.predict_proba, labels), so a row gets the probability
and label the Lambda would give it.

Output (the manifest protocol of docs/interfaces.md, as bank_features):

    <output>/_attempts/<attempt_id>/scores/part-*.parquet   every input column + probability, predicted
    <output>/_manifest.json                                 written last: the commit point

Runs with its code shipped as one zip, which the DAG builds
(bank_pipeline.resources.py_files_zip): bank_spark (this module and the runtime
it shares with the features job) and bank_serving. Its entry point is
bank_spark/entrypoints/batch_score.py:

    spark-submit --py-files bank_jobs.zip batch_score.py
        --features URI --model URI --output URI --run-id ID
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from bank_serving.model import ModelLoadError, OnnxModel
from bank_serving.schema import FEATURE_COLUMNS, FEATURE_TYPES
from bank_spark import drift_counts
from bank_spark.cli import JobArgumentParser, JobError, run_job
from bank_spark.commit import MANIFEST_NAME, commit, new_attempt_id, utc_timestamp
from bank_spark.storage import HadoopFs, parquet_parts

PROG = "batch_score"
PROBABILITY = "probability"
PREDICTED = "predicted"
SCORE_FIELDS: tuple[T.StructField, ...] = (
    T.StructField(PROBABILITY, T.DoubleType(), nullable=False),
    T.StructField(PREDICTED, T.IntegerType(), nullable=False),
)
MODEL_FILE = "model.onnx"
MODEL_JSON = "model.json"
PROFILE_FILE = "profile.json"
MANIFEST = MANIFEST_NAME
# Rows per Arrow batch, i.e. per ONNX Runtime run: Spark's own default, which the job
# keeps (and records in the manifest) unless spark-submit sets another. ONNX Runtime's
# rows/s on this model stops rising near 10,000 rows a run, and a batch stays a few MB,
# so a Python worker's memory does not grow with the partition size.
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
ARROW_BATCH_ROWS = 10_000
_NUMERIC_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType)
_CACHED_MODELS = 4  # sessions a Python worker keeps (one per model it has scored with)


class ScoreJobError(JobError):
    """A failure the job reports as `batch_score: error: <message>`."""


class UsageError(ScoreJobError):
    """Bad command-line arguments."""


class ModelError(ScoreJobError):
    """The model is missing, corrupt, or does not match the serving contract."""


class FeaturesError(ScoreJobError):
    """The features are not committed, unreadable, or lack a column the model needs."""


class ScoringError(ValueError):
    """Raised in a Python worker for a row the model cannot score; main() reports its message."""


@dataclass(frozen=True)
class JobConfig:
    """Arguments of one run (see the module docstring)."""

    features: str
    model: str
    output: str
    run_id: str
    psi_threshold: float = 0.2


# --------------------------------------------------------------------------- serving code


@functools.lru_cache(maxsize=1)
def feature_types() -> dict[str, str]:
    """The model's inputs, in order, and their ONNX element type ("string" or "float")."""
    return {name: FEATURE_TYPES[name] for name in FEATURE_COLUMNS}


# --------------------------------------------------------------------------- scoring


# Per Python worker: sha256 -> loaded model. A module global of an importable module
# (see _BatchScorer), so it outlives the task: Spark reuses Python workers.
_MODELS: dict[str, OnnxModel] = {}


def load_model(model_bytes: bytes, *, where: str = MODEL_FILE) -> OnnxModel:
    """The ONNX model checked against the serving contract (bank_serving's own checks), once per process."""
    sha256 = hashlib.sha256(model_bytes).hexdigest()
    model = _MODELS.get(sha256)
    if model is None:
        try:
            model = OnnxModel.from_bytes(model_bytes, where=where)
        except ModelLoadError as err:
            raise ModelError(str(err)) from err
        if len(_MODELS) >= _CACHED_MODELS:
            _MODELS.clear()
        _MODELS[sha256] = model
    return model


def score_batch(batch: pa.RecordBatch, model: OnnxModel) -> pa.RecordBatch:
    """`batch` with probability (P(subscribes), double) and predicted (0/1 at the model's threshold) appended.

    Every input column passes through as the same Arrow buffers: no conversion
    to pandas and back, which mapInPandas pays for every column, used by the
    model or not (bench/scoring_bench.py measures both; BENCHMARKS.md).
    Numbers go to the model as serving feeds them (float32, null as NaN: pdays
    of the never-contacted); a null category has no encoding and is a
    ScoringError naming the column.
    """
    columns = {}
    for name, kind in feature_types().items():
        column = batch.column(name)
        if kind == "string" and column.null_count:
            raise ScoringError(
                f"features column {name} holds {column.null_count} null(s) in a batch of "
                f"{batch.num_rows} rows; the model needs a category in every row"
            )
        columns[name] = column.to_numpy(zero_copy_only=False)  # nulls of numbers become NaN
    probabilities = model.predict_proba(columns)
    return batch.append_column(
        pa.field(PROBABILITY, pa.float64(), nullable=False), pa.array(probabilities.astype("float64"))
    ).append_column(
        pa.field(PREDICTED, pa.int32(), nullable=False), pa.array(model.labels(probabilities).astype("int32"))
    )


@dataclass(frozen=True)
class _BatchScorer:
    """The mapInArrow function.

    A class of an importable module rather than a closure: cloudpickle ships it
    by reference, so on the worker `load_model` finds the module's own cache
    (a closure would carry a fresh copy of the cache in every task and rebuild
    the ONNX session each time). `model` is the bytes or a Broadcast of them.
    """

    model: bytes | Broadcast[bytes]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model_bytes = self.model.value if isinstance(self.model, Broadcast) else self.model
        model = load_model(model_bytes)
        for batch in batches:
            yield score_batch(batch, model)


def score_batches(model_bytes: bytes) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The mapInArrow function scoring with `model_bytes` (an ONNX model of the serving contract).

    Each output batch is its input batch with probability (double) and
    predicted (int) appended; every other column passes through unchanged.
    """
    return _BatchScorer(model_bytes)


def check_features_schema(schema: T.StructType) -> None:
    """Raise FeaturesError naming every model input that is missing or of the wrong type.

    Categories must be strings; any integral or floating type is accepted for
    the rest (the model receives float32 either way).
    """
    fields = {f.name: f.dataType for f in schema.fields}
    expected = feature_types()
    missing = [name for name in expected if name not in fields]
    wrong = [
        f"{name} is {fields[name].simpleString()}, expected {'string' if kind == 'string' else 'a number'}"
        for name, kind in expected.items()
        if name in fields
        and not (
            isinstance(fields[name], T.StringType) if kind == "string" else isinstance(fields[name], _NUMERIC_TYPES)
        )
    ]
    taken = [name for name in (PROBABILITY, PREDICTED) if name in fields]
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if wrong:
        problems.append("wrong type(s): " + "; ".join(wrong))
    if taken:
        problems.append(f"column(s) {', '.join(taken)} already exist and would be overwritten by the scores")
    if problems:
        raise FeaturesError("features do not fit the model: " + "; ".join(problems))


def scores_schema(schema: T.StructType) -> T.StructType:
    """The input schema with probability and predicted appended."""
    return T.StructType([*schema.fields, *SCORE_FIELDS])


def score(df: DataFrame, model_bytes: bytes) -> DataFrame:
    """`df` scored: the same rows, every column kept, probability and predicted appended.

    Checks the model and the columns on the driver first (clear errors before
    any task runs), then ships the model once per executor as a broadcast.
    """
    load_model(model_bytes)
    check_features_schema(df.schema)
    model = df.sparkSession.sparkContext.broadcast(model_bytes)
    scorer: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]] = _BatchScorer(model)
    return df.mapInArrow(scorer, scores_schema(df.schema))  # type: ignore[arg-type]  # pyspark's stub wants Iterable


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ModelSource:
    """A checked model directory: the bytes to broadcast and the model they load as."""

    uri: str
    model_bytes: bytes
    model: OnnxModel
    profile: dict[str, Any] | None = None  # profile.json: the training data drift is measured against


@dataclass(frozen=True)
class FeaturesSource:
    """A committed features dataset: its manifest, and that manifest's sha256 (the lineage the scores record)."""

    uri: str
    manifest: dict[str, Any]
    manifest_sha256: str


def read_model(spark: SparkSession, uri: str) -> ModelSource:
    """model.onnx of a model directory, checked against model.json's sha256 and the serving contract."""
    fs = HadoopFs(spark, uri)
    if not fs.exists():
        raise ModelError(f"model not found: {uri}")
    for name in (MODEL_JSON, MODEL_FILE):
        if not fs.exists(name):
            raise ModelError(f"no model at {uri}: {name} is missing")
    try:
        info = json.loads(fs.read_bytes(MODEL_JSON))
    except ValueError as err:
        raise ModelError(f"{fs.uri(MODEL_JSON)} is not JSON: {err}") from err
    if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
        raise ModelError(f"{fs.uri(MODEL_JSON)}: expected an object with a sha256 string")
    model_bytes = fs.read_bytes(MODEL_FILE)
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != info["sha256"]:
        raise ModelError(
            f"{fs.uri(MODEL_FILE)}: corrupt or replaced: sha256 {digest} != {info['sha256']} recorded in {MODEL_JSON}"
        )
    model = load_model(model_bytes, where=fs.uri(MODEL_FILE))
    profile = None
    if fs.exists(PROFILE_FILE):  # versions registered before drift was measured have none
        try:
            profile = json.loads(fs.read_bytes(PROFILE_FILE))
        except ValueError as err:
            raise ModelError(f"{fs.uri(PROFILE_FILE)} is not JSON: {err}") from err
        if not isinstance(profile, dict) or profile.get("format_version") != 1 or "features" not in profile:
            raise ModelError(f"{fs.uri(PROFILE_FILE)}: expected a training profile of format_version 1")
    return ModelSource(uri=uri, model_bytes=model_bytes, model=model, profile=profile)


def _manifest_files(manifest: Any, where: str) -> list[str]:
    """The relative file names a features manifest lists; FeaturesError if it is not one."""
    if not isinstance(manifest, dict):
        raise FeaturesError(f"{where}: expected a JSON object")
    if manifest.get("format_version") != 1:
        raise FeaturesError(f"{where}: format_version {manifest.get('format_version')!r}, expected 1")
    files = manifest.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise FeaturesError(f"{where}: 'files' must be a non-empty list of paths, got {files!r}")
    outside = [f for f in files if f.startswith("/") or ".." in f.split("/") or "://" in f]
    if outside:
        raise FeaturesError(f"{where}: files must be relative to the manifest's directory: {', '.join(outside)}")
    return files


def read_features(spark: SparkSession, uri: str) -> tuple[DataFrame, FeaturesSource]:
    """The features committed at `uri` (a bank_features output directory), through its manifest only.

    Files no manifest lists (an attempt still being written, or one that
    failed) are never read.
    """
    fs = HadoopFs(spark, uri)
    if not fs.exists():
        raise FeaturesError(f"features not found: {uri}")
    if not fs.exists(MANIFEST):
        raise FeaturesError(
            f"no committed features at {uri}: {MANIFEST} is missing (bank_features writes it last; "
            "a run that failed or is still running has none)"
        )
    raw = fs.read_bytes(MANIFEST)
    where = fs.uri(MANIFEST)
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise FeaturesError(f"{where} is not JSON: {err}") from err
    files = _manifest_files(manifest, where)
    absent = [name for name in files if not fs.exists(name)]
    if absent:
        raise FeaturesError(f"{where} lists file(s) that do not exist: {', '.join(absent[:5])}")
    paths = [fs.uri(name) for name in files]
    try:
        df = spark.read.parquet(*paths)
    except Exception as err:  # noqa: BLE001 - Spark raises several captured and Java exception types
        raise FeaturesError(f"features at {uri} are unreadable: {_root_cause(err)}") from err
    check_features_schema(df.schema)
    return df, FeaturesSource(uri=uri, manifest=manifest, manifest_sha256=hashlib.sha256(raw).hexdigest())


# --------------------------------------------------------------------------- job


def _same_dir(a: HadoopFs, b: HadoopFs) -> bool:
    return a.uri().rstrip("/") == b.uri().rstrip("/")


def run(spark: SparkSession, config: JobConfig) -> dict[str, Any]:
    """Score, verify and commit; return the manifest. Raises ScoreJobError on bad input.

    The data is scored once: the row counts and the score summary come from
    reading back the written parquet (two small columns), not from the scoring plan.
    """
    started = time.monotonic()
    attempt_id = new_attempt_id()
    out = HadoopFs(spark, config.output)
    for name, other in (("--features", config.features), ("--model", config.model)):
        if _same_dir(out, HadoopFs(spark, other)):
            raise UsageError(f"--output must be a directory of its own, not the {name} directory {other}")

    source = read_model(spark, config.model)
    features, committed = read_features(spark, config.features)
    rows_in = features.count()  # from the parquet footers
    rows = committed.manifest.get("rows")
    manifest_rows = rows.get("out") if isinstance(rows, dict) else None
    if manifest_rows is not None and manifest_rows != rows_in:
        raise FeaturesError(
            f"features at {config.features} hold {rows_in} rows but their manifest says rows.out={manifest_rows}"
        )

    attempt = f"_attempts/{attempt_id}"
    scored_at = time.monotonic()
    writer = score(features, source.model_bytes).write
    # No coalesce: it would fold the Python scoring into fewer tasks (the files follow the
    # input's partitions). No _SUCCESS marker: the manifest is the commit.
    writer.option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false").parquet(out.uri(f"{attempt}/scores"))
    score_seconds = time.monotonic() - scored_at

    files = parquet_parts(out, f"{attempt}/scores")
    if not files:
        raise ScoreJobError(f"no parquet file written under {out.uri(f'{attempt}/scores')}: not committed")
    totals = (
        spark.read.parquet(*[out.uri(f) for f in files])
        .agg(F.count(F.lit(1)).alias("rows"), F.avg(PROBABILITY).alias("mean"), F.sum(PREDICTED).alias("positive"))
        .first()
    )
    assert totals is not None  # an aggregate always has one row
    rows_out, positive = int(totals["rows"]), int(totals["positive"] or 0)
    if rows_out != rows_in:
        raise ScoreJobError(f"wrote {rows_out} scored rows for {rows_in} feature rows: not committed")

    measured_at = time.monotonic()
    paths = {"scores": f"{attempt}/scores"}
    if source.profile is None:
        drift_summary: dict[str, Any] = {
            "status": "unmeasured",
            "reason": f"model {source.model.version} has no {PROFILE_FILE} (registered before drift was measured)",
        }
    else:
        scored = spark.read.parquet(*[out.uri(f) for f in files])
        title = f"Drift of scoring run {config.run_id} (model {source.model.version})"
        written, drift_summary = drift_counts.write_report(
            out, attempt, scored, source.profile, PROBABILITY, rows_out, config.psi_threshold, title
        )
        paths.update(written)
    drift_seconds = time.monotonic() - measured_at

    manifest: dict[str, Any] = {
        "format_version": 1,
        "run_id": config.run_id,
        "attempt_id": attempt_id,
        "committed_at": utc_timestamp(),
        "model": {
            "uri": config.model,
            "version": source.model.version,
            "sha256": source.model.sha256,
            "threshold": source.model.threshold,
            "sklearn_version": source.model.sklearn_version,
        },
        "features": {
            "uri": config.features,
            "manifest_sha256": committed.manifest_sha256,
            "run_id": committed.manifest.get("run_id"),
            "attempt_id": committed.manifest.get("attempt_id"),
        },
        "paths": paths,
        "files": files,
        "rows": {"in": rows_in, "out": rows_out},
        "summary": {
            "mean_probability": None if totals["mean"] is None else round(float(totals["mean"]), 6),
            "predicted_positive": positive,
            "predicted_positive_ratio": round(positive / rows_out, 6) if rows_out else None,
        },
        "drift": drift_summary,
        "schema": [
            {"name": f.name, "type": f.dataType.simpleString(), "nullable": f.nullable}
            for f in scores_schema(features.schema).fields
        ],
        "arrow_max_records_per_batch": int(spark.conf.get(ARROW_BATCH_CONF) or ARROW_BATCH_ROWS),
        "spark_version": spark.version,
        "duration_seconds": round(time.monotonic() - started, 3),
        "score_seconds": round(score_seconds, 3),
        "drift_seconds": round(drift_seconds, 3),
    }
    commit(out, manifest, attempt_id)
    return manifest


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> JobConfig:
    """The command line as a JobConfig; raises UsageError on bad usage (--help exits 0)."""
    parser = JobArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0], usage_error=UsageError)
    parser.add_argument("--features", required=True, help="a committed bank_features output directory")
    parser.add_argument("--model", required=True, help="a model directory: model.onnx + model.json")
    parser.add_argument("--output", required=True, help="this run's own output directory")
    parser.add_argument("--run-id", required=True)
    parser.add_argument(
        "--psi-threshold", type=float, default=0.2, help="population stability above which a feature has drifted"
    )
    args = parser.parse_args(argv)
    if not 0 < args.psi_threshold < 10:
        parser.error(f"--psi-threshold must be above 0 and below 10, got {args.psi_threshold:g}")
    for option in ("features", "model", "output", "run_id"):
        if not getattr(args, option).strip():
            parser.error(f"--{option.replace('_', '-')} must not be empty")
    return JobConfig(
        features=args.features, model=args.model, output=args.output, run_id=args.run_id,
        psi_threshold=args.psi_threshold,
    )  # fmt: skip


def _root_cause(error: BaseException) -> str:
    """The innermost message of a Spark failure, on one line: a Java exception's root cause
    ("...part-0.parquet is not a Parquet file...") rather than "An error occurred while calling o67.parquet"."""
    java = getattr(error, "java_exception", None)
    if java is None:
        message = str(error)
    else:
        while java.getCause() is not None:
            java = java.getCause()
        message = f"{java.getClass().getSimpleName()}: {java.getMessage()}"
    return " ".join(message.split())[:300]


# "bank_spark.batch_score_job.ModelError: ..." as the last line of a worker's traceback.
_WORKER_ERROR = re.compile(
    r"^(?:[\w.]+\.)?(?:"
    + "|".join(c.__name__ for c in (ScoringError, ScoreJobError, ModelError, FeaturesError))
    + r"): (.+)$",
    re.MULTILINE,
)


def _worker_error(error: BaseException) -> ScoreJobError | None:
    """This module's error raised in a Python worker, found in the text of the driver-side exception."""
    match = _WORKER_ERROR.search(str(error))
    return ScoreJobError(match.group(1)) if match else None


def _configure(spark: SparkSession) -> None:
    if spark.conf.get(ARROW_BATCH_CONF, None) is None:
        spark.conf.set(ARROW_BATCH_CONF, str(ARROW_BATCH_ROWS))


def _summary(config: JobConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "committed",
        "run_id": config.run_id,
        "attempt_id": manifest["attempt_id"],
        "output": config.output,
        "model_version": manifest["model"]["version"],
        "rows": manifest["rows"]["out"],
        **manifest["summary"],
        "drift_crossed": manifest["drift"].get("crossed"),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the job from the command line; 0 on success, non-zero with a last stderr line on failure."""
    if SparkSession.getActiveSession() is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        # Plain `python batch_score.py`: local workers run this interpreter, which has
        # pandas and onnxruntime (Spark's default, "python3", may not).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return run_job(
        PROG,
        argv,
        parse_args,
        run,
        configure=_configure,
        summarize=_summary,
        translate=lambda error: _worker_error(error) or error,
    )
