"""Benchmark what measuring drift adds to the batch scoring job, at 1x and 100x bank-full.

    .venv/bin/python -m bench.drift_bench [--scales 1 100] [--runs 3]

Data: bench.scoring_bench's (the features job's own transforms over bank-full, repeated to
45,211 x scale rows, 4 parquet files), committed as a features output (a _manifest.json listing
them). Model: the release model trained on bank-full, registered with its training profile
(bank_ml.drift.reference_profile), as the model build registers it. Each run is the job itself
(bank_spark.batch_score_job.run, local[2], Arrow batches of 10,000 rows) into a fresh output:
its manifest says how long scoring (writing the scores parquet) took and how long drift took
(counting the written rows into the profile's bins in one aggregation, and writing the report).
Writes build/bench/drift.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bank_ml import artifacts, data, drift, release
from bank_spark import batch_score_job as batch_score
from bench.common import quiet_check, summary, write_result
from bench.scoring_bench import BANK_FULL, local_session, scoring_data

BANK_FULL_ROWS = 45_211


def commit(path: str, rows: int) -> str:
    """The scoring data's directory as a committed features output: its part files in a manifest."""
    directory = Path(path)
    files = sorted(p.name for p in directory.glob("part-*.parquet"))
    manifest = {"format_version": 1, "run_id": "bench", "attempt_id": "bench", "files": files, "rows": {"out": rows}}
    (directory / "_manifest.json").write_text(json.dumps(manifest))
    return str(directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    busy = quiet_check()
    print("training the release model on bank-full ...", flush=True)
    table = data.features_from_csv(BANK_FULL)
    candidate = release.train_candidate(table)
    scratch = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    model = scratch / candidate.version
    artifacts.write_model_files(model, candidate.onnx_bytes, candidate.threshold)
    (model / "profile.json").write_text(json.dumps(drift.reference_profile(table, candidate.probabilities)))
    spark = local_session("drift_bench")
    results: dict[str, Any] = {"machine_busy_percent": busy, "model_version": candidate.version, "scales": {}}
    try:
        for scale in args.scales:
            rows = BANK_FULL_ROWS * scale
            features = commit(scoring_data(spark, rows), rows)
            runs = []
            for i in range(args.runs):
                output = scratch / f"out-{scale}-{i}"
                config = batch_score.JobConfig(features=features, model=str(model), output=str(output), run_id="bench")
                manifest = batch_score.run(spark, config)
                runs.append({k: manifest[k] for k in ("score_seconds", "drift_seconds", "duration_seconds")})
                shutil.rmtree(output, ignore_errors=True)
                print(f"{scale:>4}x ({rows:,} rows) run {i}: {runs[-1]}", flush=True)
            median = {k: summary([r[k] for r in runs], 3)["median"] for k in runs[0]}
            results["scales"][str(scale)] = {"rows": rows, "runs": runs, "median": median,
                                             "drift_share_of_job": round(median["drift_seconds"] / median["duration_seconds"], 3)}  # fmt: skip
    finally:
        spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    write_result("drift", results)
    print(json.dumps({s: r["median"] for s, r in results["scales"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
