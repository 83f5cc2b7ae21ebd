"""Benchmark the features job against its I/O floor and a single-process implementation, 1× to 1000× bank-full.

    .venv/bin/python bench/features_bench.py [--scales 1,10,100,1000] [--runs N]
        [--impls job,copy,pandas] [--spark-events] [--timeout 10800]

Per scale, a synthetic CSV of scale × 45,211 rows (bench/synth.py, cached under
build/bench/data), then --runs rounds (default 3 up to 100×, 1 above), each
running in turn:

- job: spark-submit of the features job's entry point (bank_spark.features_job), the whole job;
- copy: spark-submit bench/spark_copy.py, the same parse written straight to parquet (the I/O floor);
- pandas: bench/pandas_features.py, the same features in one process (pyarrow).

spark-submit runs as devstack runs EMR steps: local[2], client mode, no UI,
Spark's default 1 GiB driver heap, spark.local.dir and TMPDIR in a work dir
under build/bench/work that is removed after each run, with the outputs. Each
run is measured by common.run_measured: wall time of the whole command (JVM
start-up included) and the peak PSS and RSS of its whole process tree. The CSV
is read once before each scale, so every run finds it in the page cache; rounds
go round-robin so that drift in the machine's load spreads over all three.
Every run's output row count is checked: synthetic rows are all valid, so each
implementation must write as many rows as it read.

pandas runs at a scale only when its peak predicted linearly (bytes per row)
from the largest smaller scale it ran at is below 80% of MemAvailable; the
result says where it stops fitting.

--spark-events keeps each Spark run's event log under build/bench/spark-events
and adds to the result where the time of the last run of each scale went: the
seconds of each kind of Spark job, and the time outside jobs.

Prints progress and a table; writes build/bench/features.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.common import (
    OUT,
    PY,
    Peak,
    machine_cpu,
    meminfo_bytes,
    python_env,
    quiet_check,
    run_measured,
    summary,
    write_result,
)
from bench.synth import BASE_ROWS, synthetic_csv
from devstack import spark_local

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

IMPLEMENTATIONS = ("job", "copy", "pandas")
# The job as EMR runs it: its entry point, importing the installed bank_spark.
JOB = Path(str(resources.files("bank_spark").joinpath("entrypoints", "bank_features.py")))
COPY = BENCH / "spark_copy.py"
PANDAS = BENCH / "pandas_features.py"
WORK_ROOT = OUT / "work"
EVENTS_ROOT = OUT / "spark-events"
JOB_OVER_COPY_GOAL = 1.25
JOB_PEAK_GOAL_MIB = 2048  # at 1000×
PANDAS_MEMORY_SHARE = 0.8  # of MemAvailable: the most a pandas run may be predicted to need
HOW_RUNS = (
    "wall: the whole command from start to exit, {runs} run(s) round-robin with the other implementations, "
    "median (min-max); rows/s: input rows / median wall; peak PSS (RSS): the largest over the runs of the "
    "process tree's total (spark-submit, JVM, Python), sampled every 0.1 s; CSV in the page cache; "
    "others_busy_pct: the machine's CPU time during each run not spent by the benchmark and its children, "
    "in % of all cores (runs on a busy machine are slower)"
)


class RunFailed(RuntimeError):
    """A run exited non-zero, timed out, or wrote the wrong number of rows."""


@dataclass
class Sample:
    """One measured run."""

    wall_s: float
    peak: Peak
    rows_out: int
    others_busy_pct: float
    spark_time: dict[str, Any] | None = None
    phase_seconds: dict[str, float] | None = None


@dataclass
class Scale:
    """What one scale measured: samples per implementation, or why it has none."""

    rows: int
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- commands


def spark_submit(script: Path, args: Sequence[str], work: Path, events: Path | None) -> list[str]:
    """spark-submit as devstack runs an EMR step, optionally with an event log."""
    conf = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(events)} if events is not None else {}
    confs = [arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")]
    return spark_local.command(work, [*confs, str(script), *args])


def command(
    impl: str, csv: Path, out: Path, work: Path, run_id: str, events: Path | None
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one run of an implementation."""
    io_args = ["--input", str(csv), "--output", str(out)]
    if impl == "job":
        return spark_submit(JOB, [*io_args, "--run-id", run_id], work, events), spark_local.environment(work, python=PY)
    if impl == "copy":
        return spark_submit(COPY, io_args, work, events), spark_local.environment(work, python=PY)
    return [PY, str(PANDAS), *io_args], python_env(TMPDIR=str(work / "tmp"))


def output_files(impl: str, out: Path) -> tuple[list[Path], dict[str, float] | None]:
    """The features parquet files a run wrote, and the job's own phase timings (its manifest's)."""
    if impl == "job":
        manifest = json.loads((out / "_manifest.json").read_text())
        return [out / f for f in manifest["files"]], manifest.get("phase_seconds")
    return sorted((out if impl == "copy" else out / "features").glob("*.parquet")), None


# --------------------------------------------------------------------------- Spark's event log


def spark_time(events: Path) -> dict[str, Any]:
    """Where a Spark application's time went, from its event log in `events`.

    Jobs are named by their Python call site when PySpark set one ("collect at
    spark_jobs/bank_spark/features_job.py:411"), else by their last stage ("parquet at ...",
    "treeAggregate at RDDLossFunction.scala:61"), and summed per name in order of
    first start. Outside jobs: session start-up, planning, driver-side Python, shutdown.
    """
    (log,) = list(events.iterdir())
    app: dict[str, int] = {}
    started: dict[int, tuple[str, int]] = {}
    kinds: dict[str, list[float]] = {}  # name -> [jobs, seconds]
    with log.open() as f:
        for line in f:
            event = json.loads(line)
            kind = event["Event"]
            if kind == "SparkListenerApplicationStart":
                app["start"] = event["Timestamp"]
            elif kind == "SparkListenerApplicationEnd":
                app["end"] = event["Timestamp"]
            elif kind == "SparkListenerJobStart":
                name = (
                    event["Properties"].get("callSite.short")
                    or max(event["Stage Infos"], key=lambda s: s["Stage ID"])["Stage Name"]
                )
                started[event["Job ID"]] = (name.replace(f"{REPO}/", ""), event["Submission Time"])
            elif kind == "SparkListenerJobEnd":
                name, start = started[event["Job ID"]]
                totals = kinds.setdefault(name, [0, 0.0])
                totals[0] += 1
                totals[1] += (event["Completion Time"] - start) / 1000
    app_s = (app["end"] - app["start"]) / 1000
    in_jobs = sum(seconds for _, seconds in kinds.values())
    return {
        "app_s": round(app_s, 2),
        "outside_jobs_s": round(app_s - in_jobs, 2),
        "jobs": [{"what": name, "jobs": int(n), "seconds": round(s, 2)} for name, (n, s) in kinds.items()],
    }


# --------------------------------------------------------------------------- runs


def own_cpu() -> float:
    """CPU seconds of this process and its waited-for descendants (the runs' process trees)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_once(impl: str, csv: Path, rows: int, run_id: str, timeout: float, events: bool) -> Sample:
    """Run and measure one implementation on `csv`; its work dir and output are removed after."""
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=WORK_ROOT))
    events_dir = EVENTS_ROOT / run_id if events and impl != "pandas" else None
    if events_dir is not None:
        shutil.rmtree(events_dir, ignore_errors=True)
        events_dir.mkdir(parents=True)
    try:
        (work / "tmp").mkdir()
        out = work / "out"
        argv, env = command(impl, csv, out, work, run_id, events_dir)
        busy, total, own = *machine_cpu(), own_cpu()
        try:
            measured = run_measured(argv, env=env, cwd=work, timeout=timeout)
        except subprocess.CalledProcessError as exc:
            lines = [line for line in (exc.stderr or "").splitlines() if line.strip()]
            raise RunFailed(f"exit code {exc.returncode}: {lines[-1][:300] if lines else '(no stderr)'}") from exc
        except subprocess.TimeoutExpired as exc:
            raise RunFailed(f"timed out after {timeout:.0f} s") from exc
        busy_after, total_after = machine_cpu()
        others = max(0.0, busy_after - busy - (own_cpu() - own)) / (total_after - total)
        try:
            files, phases = output_files(impl, out)
            rows_out = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        except (OSError, ValueError, KeyError) as exc:
            raise RunFailed(f"exited 0 but its output is unreadable: {exc!r}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rows_out != rows:
        raise RunFailed(f"wrote {rows_out:,} rows, expected {rows:,} (synthetic rows are all valid)")
    return Sample(
        measured.wall_s,
        measured.peak,
        rows_out,
        round(100 * others, 1),
        spark_time(events_dir) if events_dir else None,
        phases,
    )


@dataclass(frozen=True)
class PandasFit:
    """pandas' peak per row, measured at one scale, and what it predicts."""

    from_scale: int
    bytes_per_row: float

    def predicted(self, scale: int) -> float:
        return self.bytes_per_row * scale * BASE_ROWS

    def largest_scale(self, available: int) -> int:
        """The largest scale whose predicted peak is below PANDAS_MEMORY_SHARE of `available`."""
        return int(PANDAS_MEMORY_SHARE * available // (self.bytes_per_row * BASE_ROWS))


def warm(path: Path) -> None:
    """Read a file once so that the runs find it in the page cache."""
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


def measure_scale(
    scale: int, runs: int, impls: Sequence[str], fit: PandasFit | None, timeout: float, events: bool
) -> tuple[Scale, dict[str, Any]]:
    """Generate (or reuse) the CSV and run every implementation `runs` times, round-robin."""
    data = synthetic_csv(scale)
    busy = quiet_check()
    info: dict[str, Any] = {
        "rows": data.rows,
        "csv_bytes": data.bytes,
        "csv_generation_s": data.seconds,
        "csv_reused": data.reused,
        "machine_busy_pct_before": busy,
    }
    origin = "cached" if data.reused else "generated"
    print(
        f"x{scale}: {data.rows:,} rows, CSV {data.bytes / 2**20:,.0f} MiB ({origin}, generation took "
        f"{data.seconds:.1f} s); machine {busy}% busy",
        flush=True,
    )
    result = Scale(data.rows)
    todo = list(impls)
    if "pandas" in todo and fit is not None:
        available = meminfo_bytes("MemAvailable")
        predicted = fit.predicted(scale)
        if predicted > PANDAS_MEMORY_SHARE * available:
            todo.remove("pandas")
            info["pandas_not_run"] = (
                f"not run: predicted {predicted / 2**30:.1f} GiB (x{fit.from_scale}'s {fit.bytes_per_row:.0f} B/row) "
                f"> {PANDAS_MEMORY_SHARE * available / 2**30:.1f} GiB ({PANDAS_MEMORY_SHARE:.0%} of MemAvailable); "
                f"the largest scale that would fit: x{fit.largest_scale(available)}"
            )
            print(f"x{scale} pandas {info['pandas_not_run']}", flush=True)
    warm(data.path)
    for i in range(1, runs + 1):
        for impl in todo:
            if impl in result.errors:
                continue
            try:
                sample = run_once(impl, data.path, data.rows, f"bench-x{scale}-{impl}-{i}", timeout, events)
            except RunFailed as exc:
                result.errors[impl] = f"run {i}/{runs}: {exc}"
                print(f"x{scale} {impl} run {i}/{runs}: FAILED {exc}", flush=True)
                continue
            result.samples.setdefault(impl, []).append(sample)
            pss_mib = sample.peak.pss_bytes / 2**20
            print(
                f"x{scale} {impl} run {i}/{runs}: {sample.wall_s:.1f} s, peak PSS {pss_mib:,.0f} MiB, "
                f"{sample.rows_out:,} rows; others kept {sample.others_busy_pct:.0f}% of the CPUs busy",
                flush=True,
            )
    return result, info


# --------------------------------------------------------------------------- report


def figures(samples: list[Sample], rows: int) -> dict[str, Any]:
    """An implementation's figures at one scale, with how they were measured."""
    wall = summary([s.wall_s for s in samples], 3)
    entry: dict[str, Any] = {
        "wall_s": wall,
        "rows_per_s": round(rows / wall["median"]),
        "peak_pss_mib": round(max(s.peak.pss_bytes for s in samples) / 2**20, 1),
        "peak_rss_mib": round(max(s.peak.rss_bytes for s in samples) / 2**20, 1),
        "rows_out": samples[-1].rows_out,
        "others_busy_pct": summary([s.others_busy_pct for s in samples], 1),
        "how": HOW_RUNS.format(runs=len(samples)),
    }
    if samples[-1].phase_seconds is not None:
        entry["job_phase_seconds_last_run"] = samples[-1].phase_seconds
    if samples[-1].spark_time is not None:
        entry["spark_time_last_run"] = samples[-1].spark_time
    return entry


def scale_result(measured: Scale, info: dict[str, Any]) -> dict[str, Any]:
    """One scale's part of features.json (the keys bench/report.py reads)."""
    doc: dict[str, Any] = dict(info)
    for impl, samples in measured.samples.items():
        doc[impl] = figures(samples, measured.rows)
    for impl, error in measured.errors.items():
        doc[impl] = {**doc.get(impl, {}), "error": error}
    if "job" in measured.samples and "copy" in measured.samples:
        ratio = doc["job"]["wall_s"]["median"] / doc["copy"]["wall_s"]["median"]
        doc["job_over_copy"] = {
            "ratio": round(ratio, 2),
            "goal": JOB_OVER_COPY_GOAL,
            "met": ratio <= JOB_OVER_COPY_GOAL,
            "how": "median wall of the job / median wall of the copy at this scale",
        }
    return doc


def print_table(scales: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n{'scale':>6} {'impl':<7} {'wall s: median (min-max) runs':<32} {'rows/s':>11} {'PSS MiB':>9} {'RSS MiB':>9}"
    )
    for name, doc in scales.items():
        for impl in IMPLEMENTATIONS:
            entry = doc.get(impl)
            if entry is None or "wall_s" not in entry:
                note = (entry or {}).get("error") or (doc.get("pandas_not_run") if impl == "pandas" else None)
                if note:
                    print(f"{name:>6} {impl:<7} {note}")
                continue
            w = entry["wall_s"]
            wall = f"{w['median']:.1f} ({w['min']:.1f}-{w['max']:.1f}) {w['runs']}"
            print(
                f"{name:>6} {impl:<7} {wall:<32} {entry['rows_per_s']:>11,} "
                f"{entry['peak_pss_mib']:>9,.0f} {entry['peak_rss_mib']:>9,.0f}"
            )
        if "job_over_copy" in doc:
            print(f"{name:>6} job/copy {doc['job_over_copy']['ratio']:.2f}× (goal ≤ {JOB_OVER_COPY_GOAL}×)")


def parse_scales(text: str) -> list[int]:
    """--scales: comma-separated multiples of bank-full, run smallest first (pandas' fit needs that)."""
    scales = sorted({int(s) for s in text.split(",") if s.strip()})
    if not scales or scales[0] < 1:
        raise argparse.ArgumentTypeError(f"scales must be positive integers, got {text!r}")
    return scales


def parse_impls(text: str) -> list[str]:
    impls = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [i for i in impls if i not in IMPLEMENTATIONS]
    if not impls or unknown:
        raise argparse.ArgumentTypeError(f"implementations are {', '.join(IMPLEMENTATIONS)}; got {text!r}")
    return impls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=parse_scales, default=[1, 10, 100, 1000], help="e.g. 1,10")
    parser.add_argument("--runs", type=int, default=None, help="runs per scale (default 3 up to 100×, 1 above)")
    parser.add_argument("--impls", type=parse_impls, default=list(IMPLEMENTATIONS), help="e.g. job,copy")
    parser.add_argument("--spark-events", action="store_true", help="keep Spark event logs; report where time goes")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per run")
    args = parser.parse_args(argv)
    if {"job", "copy"} & set(args.impls) and not spark_local.SPARK_SUBMIT.exists():
        parser.error(f"no spark-submit next to {PY}: run with the project's venv")

    scales: dict[str, dict[str, Any]] = {}
    fit: PandasFit | None = None
    for scale in args.scales:
        runs = args.runs or (3 if scale <= 100 else 1)
        measured, info = measure_scale(scale, runs, args.impls, fit, args.timeout, args.spark_events)
        scales[f"x{scale}"] = scale_result(measured, info)
        if "pandas" in measured.samples:
            peak = max(s.peak.pss_bytes for s in measured.samples["pandas"])
            fit = PandasFit(scale, peak / measured.rows)

    result: dict[str, Any] = {
        "how": (
            "synthetic CSVs of scale × 45,211 rows, columns drawn independently from bank-full (bench/synth.py, "
            "seed 42); spark-submit --master local[2] --deploy-mode client, spark.ui.enabled=false, default "
            "driver memory; each run measured by common.run_measured; outputs deleted after each run. "
            "The synthetic rows are all valid, so the job's second pass (the quarantine, only when rows are "
            "rejected) never runs. The Spark MLlib baseline moved to the model build (bench/train_bench.py)"
        ),
        "goals": {"job_over_copy_max": JOB_OVER_COPY_GOAL, "job_peak_pss_mib_max_at_x1000": JOB_PEAK_GOAL_MIB},
        "scales": scales,
    }
    if fit is not None:
        available = meminfo_bytes("MemAvailable")
        result["pandas_limit"] = {
            "from_scale": fit.from_scale,
            "bytes_per_row": round(fit.bytes_per_row),
            "mem_available_gib": round(available / 2**30, 1),
            "largest_scale_that_fits": fit.largest_scale(available),
            "how": (
                f"peak PSS of pandas at x{fit.from_scale} / its rows, extrapolated linearly (the interpreter's "
                f"fixed ~100 MB makes it slightly pessimistic); fits = below {PANDAS_MEMORY_SHARE:.0%} of "
                "MemAvailable when the benchmark ended"
            ),
        }
    print_table(scales)
    if "pandas_limit" in result:
        limit = result["pandas_limit"]
        print(
            f"pandas: {limit['bytes_per_row']:,} B/row at x{limit['from_scale']}: fits up to "
            f"x{limit['largest_scale_that_fits']} ({PANDAS_MEMORY_SHARE:.0%} of "
            f"{limit['mem_available_gib']} GiB available)"
        )
    write_result("features", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
