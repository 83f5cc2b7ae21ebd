"""The serving image under podman: cold start, warm invoke latency through AWS's RIE, the HTTP command, sizes.

    nice -n 19 python -m devstack.lambda_image build     # once: the local Lambda base
    python bench/serving_image_bench.py [--cold 10] [--warm 200]

Builds serving/Dockerfile on the cached local base (podman's layer cache makes
that quick after the first time), makes the model image as a release does (push
to a local registry, append the model layer, pull by digest), then measures:

- cold start: ``podman run -d`` -> first answered invoke of one record, wall
  time on the client, over fresh containers; the RIE's logged init phase (python
  imports + model load; ``INIT REPORT``) separately;
- warm invoke latency: p50/p90/p99 of ``--warm`` sequential invokes of 1 record
  and of 1,000 records on one container over a kept-alive HTTP connection, and
  peak memory (cgroup v1 ``memory.max_usage_in_bytes``, and each process's VmHWM);
- the Kubernetes command: ``podman run -d`` -> /readyz 200, and ``podman stop -t 10``;
- image sizes (``podman image inspect`` Size, uncompressed).

Writes build/bench/serving_image.json (not part of bench/report.py's report).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, quiet_check, write_result
from devstack import lambda_image, podman
from devstack.lambda_rie import HttpContainer, LambdaContainer, init_duration_ms
from devstack.registry import Registry

BANK = REPO / "data" / "bank" / "bank.csv"
INT_FIELDS = {"age", "balance", "day", "campaign", "pdays", "previous"}
GROUP = "bench"


def bank_records(n: int) -> list[dict[str, Any]]:
    """The first n rows of bank.csv as request records (duration and y dropped)."""
    with BANK.open(newline="") as handle:
        rows = list(itertools.islice(csv.DictReader(handle, delimiter=";"), n))
    return [
        {key: int(value) if key in INT_FIELDS else value for key, value in row.items() if key not in ("duration", "y")}
        for row in rows
    ]


def percentiles(samples: list[float]) -> dict[str, float]:
    """runs, p50/p90/p99, min and max of samples in seconds, reported in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"runs": len(ms), "p50_ms": round(cuts[49], 3), "p90_ms": round(cuts[89], 3),
            "p99_ms": round(cuts[98], 3), "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3)}  # fmt: skip


def train_model(directory: Path) -> Path:
    """The small real model of the serving tests (bank.csv, about 1 s) in ``directory``."""
    from bank_ml import artifacts, data, release

    candidate = release.train_candidate(data.features_from_csv(BANK))
    artifacts.write_model_files(directory, candidate.onnx_bytes, candidate.threshold)
    return directory


def size_mb(ref: str) -> float:
    return round(int(podman.image_inspect(ref).get("Size") or 0) / 1e6, 1)  # type: ignore[call-overload]


def cold_starts(image: str, runs: int, record: dict[str, Any]) -> dict[str, Any]:
    """Fresh containers: podman run -d -> first answer of one record, and the RIE's init phase."""
    totals, run_returns, inits = [], [], []
    for _ in range(runs):
        fn = LambdaContainer(image, group=GROUP)
        try:
            fn.start()
            run_returns.append(time.monotonic() - fn.started_at)
            fn.wait_ready()
            answer = fn.invoke(record)
            totals.append(time.monotonic() - fn.started_at)
            assert answer.function_error is None, answer.payload
            init = init_duration_ms(fn.logs())
            if init is not None:
                inits.append(init / 1000)
        finally:
            fn.remove()
    return {"start_to_first_answer": percentiles(totals), "podman_run_d": percentiles(run_returns),
            "rie_init_phase": percentiles(inits)}  # fmt: skip


def warm(image: str, runs: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Sequential invokes on one warm container: 1 record and 1,000 records; peak memory."""
    with LambdaContainer(image, group=GROUP) as fn:
        fn.wait_ready()
        one, many = records[0], {"records": records[:1000]}
        for event in (one, many):  # init + first calls out of the samples
            assert fn.invoke(event).function_error is None
        result: dict[str, Any] = {}
        for name, event in (("1_record", one), ("1000_records", many)):
            samples = []
            for _ in range(runs):
                answer = fn.invoke(event)
                assert answer.function_error is None, answer.payload
                samples.append(answer.seconds)
            result[name] = percentiles(samples)
        # The cgroup's peak undercounts: pages of the image's libraries already in the page cache
        # are charged to the cgroup that read them first. The processes' peak RSS (VmHWM) counts them.
        peak = podman.podman("exec", fn.name, "cat", "/sys/fs/cgroup/memory/memory.max_usage_in_bytes")
        result["cgroup_peak_memory_mb"] = round(int(peak.strip()) / 1e6, 1)
        hwm = podman.podman(
            "exec", fn.name, "sh", "-c", 'for p in /proc/[0-9]*; do [ "${p#/proc/}" = $$ ] || grep -H VmHWM $p/status; done'
        )
        result["peak_rss_mb"] = {  # per process: the RIE (pid 1) and the runtime (python3 -m awslambdaric)
            line.split("/")[2]: round(int(line.split()[1]) / 1e3, 1) for line in hwm.splitlines() if "kB" in line
        }
    return result


def http_command(image: str, runs: int) -> dict[str, Any]:
    """The Kubernetes command: podman run -d -> /readyz 200; podman stop -t 10 (exit code 0)."""
    ready, stops = [], []
    for _ in range(runs):
        server = HttpContainer(image, group=GROUP)
        try:
            server.start()
            server.wait_ready()
            ready.append(time.monotonic() - server.started_at)
            started = time.monotonic()
            assert server.stop(timeout=10) == 0
            stops.append(time.monotonic() - started)
        finally:
            server.remove()
    return {"start_to_ready": percentiles(ready), "stop": percentiles(stops)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=10, help="fresh containers for the cold start")
    parser.add_argument("--warm", type=int, default=200, help="invokes per payload size")
    args = parser.parse_args(argv)
    base = lambda_image.cached_base()
    if base is None:
        print("no local Lambda base image: nice -n 19 python -m devstack.lambda_image build", file=sys.stderr)
        return 1
    busy = quiet_check()
    records = bank_records(1000)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model").mkdir()
        model_dir = train_model(Path(tmp) / "model")
        registry = Registry(Path(tmp) / "registry")
        host = registry.start()
        try:
            started = time.monotonic()
            serving = lambda_image.build_serving(base, tag="localhost/bank-serving:bench")
            build_s = time.monotonic() - started
            started = time.monotonic()
            image = lambda_image.model_image(serving, model_dir, host, tag="bench")
            release_s = time.monotonic() - started
            result = {
                "machine_busy_percent_before": busy,
                "serving_build_seconds": round(build_s, 2),
                "model_image_push_append_pull_seconds": round(release_s, 2),
                "sizes_mb": {"base": size_mb(base), "serving": size_mb(serving), "model_image": size_mb(image)},
                "cold": cold_starts(image, args.cold, records[0]),
                "warm": warm(image, args.warm, records),
                "http_command": http_command(image, max(3, args.cold // 2)),
            }
            podman.podman("rmi", "--ignore", image)
        finally:
            registry.stop()
    assert podman.containers(GROUP) == [], "containers left behind"
    write_result("serving_image", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
