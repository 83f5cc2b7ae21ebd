"""Benchmark the model build (bank_spark.train_job) as an EMR step runs it, at 1× and 100× bank-full.

    .venv/bin/python -m bench.train_bench [--scales 1,100] [--runs N] [--timeout 3600]

Per scale, the features the build reads: the features job run once on bank-full (1×) or on
the synthetic CSV of that scale (bench/synth.py), kept under build/bench/data/features-x<scale>.
Then --runs runs (default 3 at 1×, 1 above) of the build's entry point through spark-submit as
devstack runs an EMR step (local[2], client mode, no UI, Spark's default 1 GiB driver heap),
each into a registry of its own (nothing live: the live phase is empty). Each run: wall time of
the whole command (JVM start-up included), peak PSS and RSS of its process tree
(common.run_measured), and from the build's own record its phase_seconds and the driver's peak
RSS (the Python process that trains: scikit-learn runs there, on the primary node). The
baseline runs in a thread beside the driver's work; baseline_wait is what the build still
waited for it after its own work.

The synthetic rows' columns are drawn independently, so the model finds no signal at 100×
(ROC AUC about 0.5); the work per row (reading, one-hot encoding, 100 trees of up to 31
leaves, ONNX export and scoring of the holdout) is the same as on real data.

Prints a table; writes build/bench/train.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from bench.common import OUT, PY, machine, run_measured, summary, write_result
from bench.synth import BASE_ROWS, DATA_DIR, synthetic_csv
from devstack import spark_local

REPO = Path(__file__).resolve().parents[1]
ENTRY = Path(str(resources.files("bank_spark").joinpath("entrypoints", "bank_train.py")))
FEATURES_ENTRY = Path(str(resources.files("bank_spark").joinpath("entrypoints", "bank_features.py")))
BANK_FULL = REPO / "data" / "bank" / "bank-full.csv"
WORK_ROOT = OUT / "work"
PHASES = ("read", "train", "live", "baseline", "baseline_wait", "register")


def features_for(scale: int, timeout: float) -> Path:
    """The committed features of one scale, made once by the features job (cached)."""
    target = DATA_DIR / f"features-x{scale}"
    if (target / "_manifest.json").is_file():
        return target
    csv = BANK_FULL if scale == 1 else synthetic_csv(scale).path
    work = Path(tempfile.mkdtemp(prefix=f"features-x{scale}-", dir=WORK_ROOT))
    try:
        argv = spark_local.command(work, [str(FEATURES_ENTRY), "--input", str(csv), "--output", str(target),
                                          "--run-id", f"bench-x{scale}", "--max-quarantine-ratio", "1"])  # fmt: skip
        subprocess.run(argv, env=spark_local.environment(work, python=PY), cwd=work, check=True,
                       capture_output=True, text=True, timeout=timeout)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def build_once(features: Path, scale: int, number: int, timeout: float) -> dict[str, Any]:
    """One run of the build into a registry of its own; its measurements and record."""
    work = Path(tempfile.mkdtemp(prefix=f"train-x{scale}-{number}-", dir=WORK_ROOT))
    try:
        record_path = work / "candidate.json"
        args = ["--features", str(features), "--registry", str(work / "registry"), "--output", str(record_path),
                "--run-id", f"bench-x{scale}-{number}", "--code-version", "bench", "--min-roc-auc", "0"]  # fmt: skip
        measured = run_measured(
            spark_local.command(work, [str(ENTRY), *args]),
            env=spark_local.environment(work, python=PY),
            cwd=work,
            timeout=timeout,
        )
        record = json.loads(record_path.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "wall_s": measured.wall_s,
        "peak": measured.peak.as_dict(),
        "phase_seconds": record["phase_seconds"],
        "driver_peak_rss_mb": record["driver_peak_rss_mb"],
        "rows": record["rows"],
        "roc_auc": record["metrics"]["roc_auc"],
        "version": record["version"],
    }


def scale_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rows": runs[0]["rows"],
        "runs": len(runs),
        "wall_s": summary([r["wall_s"] for r in runs]),
        "peak_pss_mib": max(r["peak"]["peak_pss_mib"] for r in runs),
        "peak_rss_mib": max(r["peak"]["peak_rss_mib"] for r in runs),
        "driver_peak_rss_mib": max(r["driver_peak_rss_mb"] for r in runs),
        "phase_seconds": {p: summary([r["phase_seconds"][p] for r in runs]) for p in PHASES},
        "roc_auc": runs[-1]["roc_auc"],
        "versions": sorted({r["version"] for r in runs}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,100", help="comma-separated multiples of bank-full")
    parser.add_argument("--runs", type=int, default=None, help="runs per scale (default 3 at 1×, 1 above)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    scales: dict[str, Any] = {}
    for scale in (int(s) for s in args.scales.split(",")):
        features = features_for(scale, args.timeout)
        runs = []
        for number in range(args.runs or (3 if scale == 1 else 1)):
            print(f"x{scale} run {number + 1}: the build on {scale * BASE_ROWS:,} rows ...", flush=True)
            runs.append(build_once(features, scale, number, args.timeout))
            r = runs[-1]
            phases = ", ".join(f"{p} {r['phase_seconds'][p]:.1f}s" for p in PHASES)
            print(f"  {r['wall_s']:.1f} s, peak PSS {r['peak']['peak_pss_mib']:,.0f} MiB, driver RSS "
                  f"{r['driver_peak_rss_mb']:,.0f} MB ({phases})", flush=True)  # fmt: skip
        scales[f"x{scale}"] = scale_result(runs)
    write_result("train", {
        "machine": machine(),
        "how": "spark-submit of bank_spark/entrypoints/bank_train.py as devstack runs an EMR step (local[2], "
               "client mode, default driver heap); features from the features job (bank-full at x1, bench/synth.py "
               "at larger scales, whose independent columns leave the model no signal); a fresh registry per run; "
               "peak memory of the whole process tree sampled by common.run_measured",
        "scales": scales,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
