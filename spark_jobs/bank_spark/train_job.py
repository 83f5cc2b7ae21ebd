"""Build the model on the cluster: train, compare with the live model, export to ONNX, register.

    spark-submit --py-files bank_jobs.zip bank_train.py --features URI --registry URI --output URI
        --run-id ID --code-version HASH [--hyperparameters JSON] [--min-roc-auc 0.8]
        [--roc-auc-tolerance 0.005] [--force-deploy] [--baseline-max-rows 200000] [--build-record URI]

``--features`` is a committed bank_features output (read through its manifest only),
``--registry`` the model registry prefix (``models/bank/``), ``--output`` the JSON file
this run's candidate record goes to, written last: the release DAG gates on it.
``--build-record`` is a second copy of it, named by the build's inputs, written after it:
a release with the same inputs reads it instead of building again.

The phases (``phase_seconds`` in the record):

- **read**: the manifest's parquet files copied to the driver's local disk and read with
  pyarrow (``bank_ml.data``), in a canonical row order, so the model depends only on the rows;
- **train**: scikit-learn on a seeded stratified holdout, ONNX export and its parity check,
  holdout metrics of the ONNX model (``bank_ml.release``), on the driver: the bank data
  fits one node's memory many times over (BENCHMARKS.md has the peak at 100x);
- **live**: the registry's live model scored on the same holdout;
- **baseline**: the pyspark.ml logistic regression on the cluster (``bank_spark.baseline``), in a
  thread of its own from the start, beside the driver's Python work (``baseline_wait``: how
  long the build then still waited for it);
- **register**: the version directory (model, model.json, metrics.json with lineage, model
  card, ROC and PR plots, the training profile drift is measured against) uploaded with model.json last; a version is a content hash and
  immutable, so a rerun on the same data registers nothing new.

The gate (``bank_ml.gate``) is decided here with the DAG's Params and recorded in the card.
"""

from __future__ import annotations

import json
import posixpath
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from bank_ml.train import HyperParams
from bank_spark.baseline import baseline_sample, fit_baseline
from bank_spark.batch_score_job import read_features
from bank_spark.cli import JobArgumentParser, JobError, run_job, small_shuffles
from bank_spark.storage import HadoopFs

PROG = "bank_train"
LIVE_FILE = "live.json"
COMMIT_FILE = "model.json"  # uploaded last: a version whose model.json exists is complete
MODEL_FILES = ("model.onnx", COMMIT_FILE)


class TrainJobError(JobError):
    """A failure the job reports as `bank_train: error: <message>`."""


class UsageError(TrainJobError):
    """Bad command-line arguments."""


@dataclass(frozen=True)
class JobConfig:
    """Arguments of one run (see the module docstring)."""

    features: str
    registry: str
    output: str
    run_id: str
    code_version: str
    hyperparameters: dict[str, Any]
    min_roc_auc: float = 0.80
    roc_auc_tolerance: float = 0.005
    force_deploy: bool = False
    seed: int = 42
    holdout_fraction: float = 0.2
    baseline_max_rows: int = 200_000
    build_record: str | None = None


def _peak_rss_mb() -> float:
    """The driver's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _timed_baseline(features: DataFrame, rows: int, config: JobConfig) -> tuple[dict[str, Any], float]:
    """The pyspark.ml baseline on (a sample of) the features, and the seconds it took."""
    started = time.monotonic()
    baseline = fit_baseline(
        baseline_sample(features, rows, config.baseline_max_rows, config.seed), config.holdout_fraction, config.seed
    )
    baseline["max_rows"] = config.baseline_max_rows
    return baseline, time.monotonic() - started


def register(registry: HadoopFs, version_dir: Path, version: str) -> bool:
    """Upload a version directory, model.json last; False (nothing written) when the version exists.

    A version is the hash of its model: one that exists with another sha256 is refused.
    """
    local = json.loads((version_dir / COMMIT_FILE).read_text())
    marker = f"{version}/{COMMIT_FILE}"
    if registry.exists(marker):
        existing = json.loads(registry.read_bytes(marker))
        if existing.get("sha256") != local.get("sha256"):
            raise TrainJobError(
                f"version {version} exists at {registry.uri(version)} with sha256 {existing.get('sha256')}, "
                f"not {local.get('sha256')}: versions are immutable"
            )
        return False
    files = sorted(p for p in version_dir.iterdir() if p.is_file() and p.name != COMMIT_FILE)
    for path in [*files, version_dir / COMMIT_FILE]:
        registry.copy_from_local(str(path), f"{version}/{path.name}")
    return True


def _live_model(registry: HadoopFs, directory: Path) -> Path | None:
    """The live model's files copied into ``directory``, or None before the first release."""
    if not registry.exists(LIVE_FILE):
        return None
    record = json.loads(registry.read_bytes(LIVE_FILE))
    version = record.get("version")
    if not isinstance(version, str) or not all(registry.exists(f"{version}/{n}") for n in MODEL_FILES):
        raise TrainJobError(f"{registry.uri(LIVE_FILE)} names version {version!r}, which is not registered")
    directory.mkdir(parents=True)
    for name in MODEL_FILES:
        registry.copy_to_local(f"{version}/{name}", str(directory / name))
    return directory


def run(spark: SparkSession, config: JobConfig) -> dict[str, Any]:
    """Train, compare, register and write the candidate record; return it."""
    from bank_ml import artifacts, data, drift, gate, release

    started = time.monotonic()
    timings: dict[str, float] = {}
    hp = HyperParams.from_dict(config.hyperparameters)  # checked by parse_args
    features_df, source = read_features(spark, config.features)
    features = HadoopFs(spark, config.features)
    registry = HadoopFs(spark, config.registry)
    manifest = source.manifest
    rows = int(manifest["rows"]["out"])
    # The baseline is Spark's work (the JVM, on the cluster), the model the driver's Python:
    # they run side by side, the baseline in a thread of its own.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="baseline") as pool,
        tempfile.TemporaryDirectory(prefix="bank-train-") as tmp,
    ):
        baseline_run = pool.submit(_timed_baseline, features_df, rows, config)
        phase = time.monotonic()
        local = []
        for number, name in enumerate(manifest["files"]):
            target = f"{tmp}/features/{number:05d}.parquet"
            features.copy_to_local(name, target)
            local.append(target)
        try:
            table = data.read_features(local)
        except data.FeatureDataError as err:
            raise TrainJobError(f"features at {config.features}: {err}") from err
        timings["read"] = time.monotonic() - phase

        phase = time.monotonic()
        try:
            candidate = release.train_candidate(table, hp, holdout_fraction=config.holdout_fraction, seed=config.seed)
        except data.FeatureDataError as err:
            raise TrainJobError(f"features at {config.features}: {err}") from err
        timings["train"] = time.monotonic() - phase

        phase = time.monotonic()
        live = release.score_live(_live_model(registry, Path(tmp) / "live"), candidate)
        timings["live"] = time.monotonic() - phase

        phase = time.monotonic()
        baseline, timings["baseline"] = baseline_run.result()
        timings["baseline_wait"] = time.monotonic() - phase

        decision = gate.decide(
            candidate.metrics,
            live and live["metrics"],
            min_roc_auc=config.min_roc_auc,
            tolerance=config.roc_auc_tolerance,
            force_deploy=config.force_deploy,
        )
        lineage = {
            "features_uri": features.uri(manifest["paths"]["features"]),
            "features_manifest_uri": features.uri("_manifest.json"),
            "manifest_sha256": source.manifest_sha256,
            "code_version": config.code_version,
            "run_id": config.run_id,
        }
        phase = time.monotonic()
        profile = drift.reference_profile(table, candidate.probabilities)  # what scoring measures drift against
        version = artifacts.write_version(
            f"{tmp}/registry", candidate, lineage=lineage, baseline=baseline, live=live, gate=decision, profile=profile
        )
        registered = register(registry, Path(tmp) / "registry" / version, version)
        timings["register"] = time.monotonic() - phase
    record = {
        "run_id": config.run_id,
        "version": version,
        "registered": registered,
        "registry_uri": registry.uri(version) + "/",
        "metrics": candidate.metrics,
        "baseline": baseline,
        "live": live,
        "deploy": decision.deploy,
        "reason": decision.reason,
        "rows": rows,
        "phase_seconds": {name: round(seconds, 3) for name, seconds in timings.items()},
        "duration_seconds": round(time.monotonic() - started, 3),
        "driver_peak_rss_mb": _peak_rss_mb(),
    }
    document = json.dumps(record, indent=2).encode()
    for uri in filter(None, (config.output, config.build_record)):  # the run's first, then the build's
        HadoopFs(spark, posixpath.dirname(uri.rstrip("/"))).write_bytes(posixpath.basename(uri), document)
    return record


def parse_args(argv: list[str] | None = None) -> JobConfig:
    """The command line as a JobConfig; raises UsageError on bad usage (--help exits 0)."""
    parser = JobArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0], usage_error=UsageError)
    parser.add_argument("--features", required=True, help="a committed bank_features output directory")
    parser.add_argument("--registry", required=True, help="the model registry prefix (models/bank/)")
    parser.add_argument("--output", required=True, help="the candidate record's JSON file")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--code-version", required=True, help="hash of the model's code (lineage)")
    parser.add_argument("--hyperparameters", default="{}", help="a JSON object of HistGradientBoosting settings")
    parser.add_argument("--min-roc-auc", type=float, default=0.80)
    parser.add_argument("--roc-auc-tolerance", type=float, default=0.005)
    parser.add_argument("--force-deploy", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument(
        "--baseline-max-rows", type=int, default=200_000, help="fit the baseline on a sample of about this many rows"
    )
    parser.add_argument("--build-record", help="a copy of the candidate record named by the build's inputs")
    args = parser.parse_args(argv)
    for option in ("features", "registry", "output", "run_id", "code_version"):
        if not getattr(args, option).strip():
            parser.error(f"--{option.replace('_', '-')} must not be empty")
    try:
        hyperparameters = json.loads(args.hyperparameters)
    except ValueError as err:
        parser.error(f"--hyperparameters is not JSON: {err}")
    if not isinstance(hyperparameters, dict):
        parser.error(f"--hyperparameters must be a JSON object, got {args.hyperparameters}")
    try:
        HyperParams.from_dict(hyperparameters)
    except (TypeError, ValueError) as err:
        parser.error(f"--hyperparameters: {err}")
    if not 0.0 <= args.min_roc_auc <= 1.0:
        parser.error(f"--min-roc-auc must be within 0..1, got {args.min_roc_auc}")
    if not 0.0 <= args.roc_auc_tolerance <= 1.0:
        parser.error(f"--roc-auc-tolerance must be within 0..1, got {args.roc_auc_tolerance}")
    if not 0.0 < args.holdout_fraction < 1.0:
        parser.error(f"--holdout-fraction must be strictly between 0 and 1, got {args.holdout_fraction}")
    if args.baseline_max_rows < 100:
        parser.error(f"--baseline-max-rows must be at least 100, got {args.baseline_max_rows}")
    return JobConfig(
        features=args.features,
        registry=args.registry,
        output=args.output,
        run_id=args.run_id,
        code_version=args.code_version,
        hyperparameters=hyperparameters,
        min_roc_auc=args.min_roc_auc,
        roc_auc_tolerance=args.roc_auc_tolerance,
        force_deploy=args.force_deploy,
        seed=args.seed,
        holdout_fraction=args.holdout_fraction,
        baseline_max_rows=args.baseline_max_rows,
        build_record=args.build_record,
    )


def _summary(config: JobConfig, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "registered" if record["registered"] else "exists",
        "run_id": config.run_id,
        "version": record["version"],
        "roc_auc": record["metrics"]["roc_auc"],
        "deploy": record["deploy"],
        "output": config.output,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the job from the command line; 0 on success, non-zero with a last stderr line on failure."""
    return run_job(PROG, argv, parse_args, run, configure=small_shuffles, summarize=_summary)
