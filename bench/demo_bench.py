"""Benchmark `make demo`: its wall time, split by stage and by task.

    .venv/bin/python bench/demo_bench.py [--runs 3]

Runs `python -m devstack.harness.demo` --runs times in fresh processes (each starts its
own devstack and Airflow database under build/demo) and reads the stage and
task timings each run writes to build/demo/summary.json. Reports, per stage,
median/min/max over the runs, plus the whole process's wall time (interpreter
start-up and shutdown included) and the peak memory of its process tree.
Writes build/bench/demo.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench.common import PY, REPO, quiet_check, run_measured, summary, write_result

SUMMARY = REPO / "build" / "demo" / "summary.json"


def one_run(i: int, runs: int) -> dict[str, Any]:
    SUMMARY.unlink(missing_ok=True)  # so a stale file can never pass for this run's
    print(f"demo run {i}/{runs} ...", flush=True)
    # PSS of ~20 processes (a JVM among them) costs CPU to read; every 0.1 s it slowed the
    # demo by ~7 s on 2 cores (78 s against 71 s unsampled), so sample once a second.
    measured = run_measured([PY, "-m", "devstack.harness.demo"], cwd=REPO, timeout=1800, interval=1.0)
    timings = json.loads(SUMMARY.read_text())["timings"]
    print(f"  {measured.wall_s:.1f} s, peak {measured.peak.pss_bytes / 2**20:,.0f} MiB (PSS)", flush=True)
    return {"wall_s": measured.wall_s, "peak_pss_mib": measured.peak.pss_bytes / 2**20, "timings": timings}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    busy = quiet_check()
    results = [one_run(i, args.runs) for i in range(1, args.runs + 1)]
    stages = list(results[0]["timings"])
    by_stage = {s: summary([r["timings"][s] for r in results if s in r["timings"]], 2) for s in stages}
    report = {
        "how": (
            f"python -m devstack.harness.demo, {args.runs} fresh processes in a row; stage and task times from each run's "
            "build/demo/summary.json (tasks from Airflow's task instances), whole = the process's wall time; "
            "median/min/max over the runs; peak PSS of the process tree sampled every 1 s"
        ),
        "machine_busy_before_pct": busy,
        "whole_s": summary([r["wall_s"] for r in results], 2),
        "peak_pss_mib": round(max(r["peak_pss_mib"] for r in results), 1),
        "stages_s": {s: v for s, v in by_stage.items() if "." not in s},
        "tasks_s": {s: v for s, v in by_stage.items() if "." in s},
    }
    whole = report["whole_s"]
    print(f"make demo: median {whole['median']} s (min {whole['min']}, max {whole['max']}, {args.runs} runs)")
    for stage, s in report["stages_s"].items():
        print(f"  {stage:<22} median {s['median']:6.2f} s  ({s['min']}-{s['max']})")
    write_result("demo", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
