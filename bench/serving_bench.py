"""Benchmark the Lambda handler: cold init, warm latency for 1 and 1,000 records, scikit-learn vs ONNX.

    .venv/bin/python bench/serving_bench.py [--csv data/bank/bank-full.csv] [--runs 9]

Trains the default model on the CSV (features by serving's derivation, which a
test holds equal to the Spark job's), writes it to build/bench/model, then:

- cold init: a fresh `python -c` per run timing `import bank_serving.lambda_handler` (imports +
  model load; interpreter start-up excluded), median/min/max over --runs runs,
  after one discarded run that compiles bytecode (as the image's compileall does);
- warm: handler.handler on API Gateway proxy events whose body is JSON text, so
  JSON parsing and validation are included; p50/p99;
- reference: one record through scikit-learn's pipeline vs the ONNX scorer.

Prints a summary and writes it to build/bench/serving.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bank_ml import artifacts, data, release
from bank_serving.schema import RECORD_FIELDS
from bench.common import OUT, REPO, write_result

COLD_SNIPPET = (
    "import time; t = time.perf_counter(); import bank_serving.lambda_handler; print(time.perf_counter() - t)"
)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def cold_init(model_dir: Path, runs: int) -> dict[str, Any]:
    """Median/min/max of `import bank_serving.lambda_handler` (imports + model load) in fresh interpreters."""
    env = {**os.environ, "BANK_MODEL_DIR": str(model_dir)}
    # Cache bytecode outside the repo, and write it (this machine sets PYTHONDONTWRITEBYTECODE).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")

    def one() -> float:
        out = subprocess.run(
            [sys.executable, "-c", COLD_SNIPPET], env=env, cwd=OUT, check=True, capture_output=True, text=True
        )
        return float(out.stdout.strip().splitlines()[-1])

    one()  # compiles bank_serving and handler once; discarded
    times = [one() for _ in range(runs)]
    return {
        "runs": runs,
        "median_ms": _ms(statistics.median(times)),
        "min_ms": _ms(min(times)),
        "max_ms": _ms(max(times)),
    }


def latency(call: Callable[[], Any], repeat: int, warmup: int = 20) -> dict[str, Any]:
    """p50/p99 of `call` in milliseconds."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    return {
        "calls": repeat,
        "p50_ms": _ms(times[len(times) // 2]),
        "p99_ms": _ms(times[min(len(times) - 1, int(len(times) * 0.99))]),
    }


def raw_records(csv_path: Path, n: int) -> list[dict[str, Any]]:
    """The first n rows of the CSV as request records (duration and y dropped)."""
    kinds = {name: kind for name, kind, *_ in RECORD_FIELDS}
    with open(csv_path, newline="") as f:
        rows = list(itertools.islice(csv.DictReader(f, delimiter=";"), n))
    return [{k: int(v) if kinds[k] == "int" else v for k, v in row.items() if k in kinds} for row in rows]


def proxy_event(body: Any) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "POST /predict",
        "requestContext": {"http": {"method": "POST"}},
        "body": json.dumps(body),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=REPO / "data" / "bank" / "bank-full.csv")
    parser.add_argument("--runs", type=int, default=9, help="cold-init runs (at least 7)")
    args = parser.parse_args()
    runs = max(7, args.runs)

    candidate = release.train_candidate(data.features_from_csv(args.csv))
    model_dir = OUT / "model"
    artifacts.write_model_files(model_dir, candidate.onnx_bytes, candidate.threshold)

    os.environ["BANK_MODEL_DIR"] = str(model_dir)
    from bank_serving import lambda_handler as handler  # loads the model just written

    records = raw_records(args.csv, 1000)
    one, thousand = proxy_event(records[0]), proxy_event({"records": records})
    assert handler.handler(thousand, None)["statusCode"] == 200

    X1 = candidate.split.X_test.iloc[:1]
    features1 = {name: X1[name].to_numpy() for name in X1.columns}  # what the handler passes the scorer
    results = {
        "model_version": candidate.version,
        "holdout_roc_auc": candidate.metrics["roc_auc"],
        "cold_init": cold_init(model_dir, runs),
        "warm_1_record": latency(lambda: handler.handler(one, None), repeat=5000),
        "warm_1000_records": latency(lambda: handler.handler(thousand, None), repeat=500),
        "reference_1_record_scoring_only": {
            "sklearn": latency(lambda: candidate.pipeline.predict_proba(X1), repeat=500),
            "onnx": latency(lambda: handler.MODEL.predict_proba(features1), repeat=5000),
        },
    }

    cold, w1, w1000 = results["cold_init"], results["warm_1_record"], results["warm_1000_records"]
    ref = results["reference_1_record_scoring_only"]
    print(f"model {results['model_version']} (holdout ROC AUC {results['holdout_roc_auc']:.4f})")
    print(
        f"cold init (imports + model load): median {cold['median_ms']} ms, "
        f"min {cold['min_ms']}, max {cold['max_ms']} ({runs} runs)"
    )
    print(f"warm, 1 record:      p50 {w1['p50_ms']} ms, p99 {w1['p99_ms']} ms")
    print(f"warm, 1,000 records: p50 {w1000['p50_ms']} ms, p99 {w1000['p99_ms']} ms")
    print(
        f"1 record, scoring only: scikit-learn p50 {ref['sklearn']['p50_ms']} ms, ONNX p50 {ref['onnx']['p50_ms']} ms"
    )
    write_result("serving", results)


if __name__ == "__main__":
    main()
