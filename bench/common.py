"""What every benchmark shares: where results go, summaries of repeated runs,
how busy the machine was, and the peak memory of a whole process tree.

Each benchmark writes build/bench/<name>.json through `write_result`, which adds
the machine and the time; bench/report.py turns those files into tables and plots.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench"
_TICK = os.sysconf("SC_CLK_TCK")


def summary(samples: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """runs, median, min, max of repeated measurements (in the samples' unit)."""
    if not samples:
        raise ValueError("summary of no samples")
    return {
        "runs": len(samples),
        "median": round(statistics.median(samples), digits),
        "min": round(min(samples), digits),
        "max": round(max(samples), digits),
    }


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return (total - idle - iowait) / _TICK, total / _TICK


def quiet_check(seconds: float = 2.0) -> float:
    """Percent of all CPUs busy over a short idle wait: what else runs on the machine."""
    busy0, total0 = machine_cpu()
    time.sleep(seconds)  # a measurement window, not a wait for a condition
    busy1, total1 = machine_cpu()
    return round(100 * (busy1 - busy0) / max(total1 - total0, 1e-9), 1)


def meminfo_bytes(field: str) -> int:
    """A /proc/meminfo field (MemTotal, MemAvailable, ...) in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/meminfo")


def machine() -> dict[str, Any]:
    """The machine a result was measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(meminfo_bytes("MemTotal") / 2**30, 1),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def write_result(name: str, result: Mapping[str, Any]) -> Path:
    """build/bench/<name>.json: the result plus when and where it was measured."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    doc = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine(),
        **result,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written to {path.relative_to(REPO)}")
    return path


# --------------------------------------------------------------------------- memory of a process tree


def _tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc (a process may exit while we look)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _pss_rss(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes from smaps_rollup; PSS shares a page among the processes mapping it."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
            elif line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return pss, rss


@dataclass
class Peak:
    """Largest total over the samples taken: PSS (the honest sum) and RSS (counts shared pages per process)."""

    pss_bytes: int = 0
    rss_bytes: int = 0
    samples: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "peak_pss_mib": round(self.pss_bytes / 2**20, 1),
            "peak_rss_mib": round(self.rss_bytes / 2**20, 1),
            "memory_samples": self.samples,
        }


class TreeMemory:
    """Samples the memory of a process and all its descendants in a thread until stopped.

    Sampling every `interval` seconds can miss a spike shorter than that; the
    JVM and pandas grow over seconds, so 0.1 s is enough for these jobs.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak = Peak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        totals = [_pss_rss(p) for p in _tree(self.pid)]
        self.peak.pss_bytes = max(self.peak.pss_bytes, sum(t[0] for t in totals))
        self.peak.rss_bytes = max(self.peak.rss_bytes, sum(t[1] for t in totals))
        self.peak.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measured:
    """One command's wall time, peak memory and output."""

    wall_s: float
    peak: Peak
    stdout: str
    stderr: str


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 3600,
    interval: float = 0.1,
) -> Measured:
    """Run a command to completion, timing it and sampling its process tree's memory
    every `interval` seconds.

    Raises subprocess.CalledProcessError (with the output) when it fails.
    """
    start = time.perf_counter()
    # Its own session, so that a timeout can stop the whole tree (spark-submit execs the
    # JVM, whose Python children would otherwise outlive it and hold the pipes open).
    proc = subprocess.Popen(
        list(argv), env=dict(env) if env is not None else None, cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    with TreeMemory(proc.pid, interval) as memory:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, list(argv), stdout, stderr)
    return Measured(wall, memory.peak, stdout, stderr)


def _stop_group(proc: subprocess.Popen[str], grace: float = 15.0) -> None:
    """Stop the process group: SIGINT first (Python runs its `with` blocks: devstack stops the
    servers it started in sessions of their own), then SIGTERM, then SIGKILL, `grace` s apart."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.communicate(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python (the packages come from the venv's install)."""
    return {**os.environ, **extra}


PY = sys.executable
