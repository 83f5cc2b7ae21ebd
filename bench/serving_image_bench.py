"""The serving image under podman, against the same code on the host: cold start, warm latency, build times.

    .venv/bin/python -m bench.serving_image_bench [--cold 10] [--warm 300]

Builds serving/Dockerfile on the local Lambda base (cached by content hash
after the first time), makes the model image as a release does (push to a
local registry, append the model layer, pull by digest) with the model of
build/bench/model (bench/http_bench.py's; trained if missing), then measures:

- cold start, ``--cold`` fresh containers: ``podman run -d`` returning (container
  start), the RIE listening, the init phase the RIE logs (``INIT REPORT``:
  Python imports + model load inside the container, Lambda's Init Duration),
  and the first answer of one record, all from just before ``podman run``;
- warm, ``--warm`` sequential invokes of 1 record and of 1,000 records on one
  container over a kept-alive connection: the handler's own time inside the
  container (bench/lambda_timing.py wraps it), the runtime's time as the RIE
  logs it (``INVOKE RTDONE ... duration``: awslambdaric receiving the event, the
  handler, posting the answer), the RIE's ``REPORT Duration`` (what Lambda
  bills) and the client's round trip;
- the same handler on the host (this venv's Python, the same model): cold init
  (``import bank_serving.lambda_handler`` in a fresh interpreter) and the warm
  handler call for 1 and 1,000 records, on the same direct-invocation events;
- the Kubernetes command (``python -m bank_serving.http``, the Deployment's
  settings): ``podman run -d`` -> /readyz 200, and ``podman stop``;
- sizes and the serving build's time (cached or not, as found).

Writes build/bench/serving_image.json. The HTTP throughput in the container is
bench/http_bench.py with ``--image``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import OUT, REPO, quiet_check, write_result
from devstack.aws.registry import Registry
from devstack.containers import lambda_image, podman
from devstack.containers.lambda_rie import HttpContainer, LambdaContainer, init_duration_ms

BANK = REPO / "data" / "bank" / "bank-full.csv"
MODEL_DIR = OUT / "model"
INT_FIELDS = {"age", "balance", "day", "campaign", "pdays", "previous"}
GROUP = "bench"
TIMING = Path(__file__).resolve().parent / "lambda_timing.py"  # mounted into the container: the handler's own time
RTDONE = re.compile(r"INVOKE RTDONE\(status: success[^)]*duration: ([0-9.]+)ms\)")
REPORT = re.compile(r"^REPORT RequestId: \S+\t(?:Init Duration: [0-9.]+ ms\t)?Duration: ([0-9.]+) ms", re.M)


def bank_records(n: int) -> list[dict[str, Any]]:
    """The first n rows of bank-full.csv as request records (duration and y dropped)."""
    with BANK.open(newline="") as handle:
        rows = list(itertools.islice(csv.DictReader(handle, delimiter=";"), n))
    return [
        {key: int(value) if key in INT_FIELDS else value for key, value in row.items() if key not in ("duration", "y")}
        for row in rows
    ]


def percentiles(ms: list[float]) -> dict[str, float]:
    """runs, p50/p90/p99, min and max of samples in milliseconds."""
    ms = sorted(ms)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"runs": len(ms), "p50_ms": round(cuts[49], 3), "p90_ms": round(cuts[89], 3),
            "p99_ms": round(cuts[98], 3), "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3)}  # fmt: skip


def ensure_model() -> Path:
    """build/bench/model (what bench/http_bench.py and bench/serving_bench.py use), trained if missing."""
    if not (MODEL_DIR / "model.onnx").is_file():
        from bank_ml import artifacts, data, release

        candidate = release.train_candidate(data.features_from_csv(BANK))
        artifacts.write_model_files(MODEL_DIR, candidate.onnx_bytes, candidate.threshold)
    return MODEL_DIR


def size_mb(ref: str) -> float:
    return round(int(podman.image_inspect(ref).get("Size") or 0) / 1e6, 1)  # type: ignore[call-overload]


def cold_starts(image: str, runs: int, record: dict[str, Any]) -> dict[str, Any]:
    """Fresh containers: podman run -d, the RIE listening, the init phase, the first answer."""
    run_d, listening, inits, totals = [], [], [], []
    for _ in range(runs):
        fn = LambdaContainer(image, group=GROUP, memory_mb=1024)
        try:
            fn.start()
            run_d.append(time.monotonic() - fn.started_at)
            fn.wait_ready()
            listening.append(time.monotonic() - fn.started_at)
            answer = fn.invoke(record)
            totals.append(time.monotonic() - fn.started_at)
            assert answer.function_error is None, answer.payload
            init = init_duration_ms(fn.logs())
            assert init is not None, fn.logs()[-2000:]
            inits.append(init)
        finally:
            fn.remove()
    return {
        "podman_run_d": percentiles([s * 1000 for s in run_d]),
        "rie_listening": percentiles([s * 1000 for s in listening]),
        "init_phase": percentiles(inits),
        "start_to_first_answer": percentiles([s * 1000 for s in totals]),
    }


def warm(image: str, runs: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Sequential invokes on one warm container, 1 record then 1,000: runtime, REPORT and client times."""
    result: dict[str, Any] = {}
    timing = {"handler": "lambda_timing.handler", "volumes": [f"{TIMING}:/var/task/lambda_timing.py:ro"]}
    with LambdaContainer(image, group=GROUP, memory_mb=1024, **timing) as fn:  # type: ignore[arg-type]
        fn.wait_ready()
        for name, event in (("1_record", records[0]), ("1000_records", {"records": records[:1000]})):
            for _ in range(5):  # init and first calls out of the samples
                assert fn.invoke(event).function_error is None
            before_rt, before_rep = len(RTDONE.findall(fn.logs())), len(REPORT.findall(fn.logs()))
            client, handler = [], []
            for _ in range(runs):
                answer = fn.invoke(event)
                assert answer.function_error is None, answer.payload
                client.append(answer.seconds * 1000)
                handler.append(answer.json()["handler_ms"])
            deadline = time.monotonic() + 10
            logs = fn.logs()
            while len(REPORT.findall(logs)) < before_rep + runs and time.monotonic() < deadline:
                time.sleep(0.05)  # the log reaches the file a moment after the answer
                logs = fn.logs()
            result[name] = {
                "handler": percentiles(handler),
                "handler_runtime": percentiles([float(x) for x in RTDONE.findall(logs)[before_rt : before_rt + runs]]),
                "rie_report_duration": percentiles(
                    [float(x) for x in REPORT.findall(logs)[before_rep : before_rep + runs]]
                ),
                "client_round_trip": percentiles(client),
            }
    return result


HOST_SNIPPET = """
import json, sys, time
t = time.perf_counter()
import bank_serving.lambda_handler as h
init = time.perf_counter() - t
events = json.load(sys.stdin)
out = {"init_ms": init * 1000}
for name, event in events.items():
    for _ in range(5):
        h.handler(event, None)
    samples = []
    for _ in range(RUNS):
        t = time.perf_counter()
        h.handler(event, None)
        samples.append((time.perf_counter() - t) * 1000)
    out[name] = samples
print(json.dumps(out))
"""


def host(model_dir: Path, runs: int, cold_runs: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The same handler and model on the host: cold init in fresh interpreters, warm direct calls."""
    import json

    env = {**os.environ, "BANK_MODEL_DIR": str(model_dir)}
    events = {"1_record": records[0], "1000_records": {"records": records[:1000]}}
    inits, warm_samples = [], {}
    for i in range(cold_runs + 1):
        out = subprocess.run(
            [sys.executable, "-c", HOST_SNIPPET.replace("RUNS", str(runs if i == 0 else 1))],
            input=json.dumps(events), capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        got = json.loads(out.stdout)
        if i == 0:
            warm_samples = {name: got[name] for name in events}
        else:
            inits.append(got["init_ms"])
    return {"init": percentiles(inits), **{name: percentiles(s) for name, s in warm_samples.items()}}


def http_command(image: str, runs: int) -> dict[str, Any]:
    """The Kubernetes command: podman run -d -> /readyz 200; podman stop -t 10 (exit code 0)."""
    ready, stops = [], []
    for _ in range(runs):
        server = HttpContainer(image, group=GROUP)
        try:
            server.start()
            server.wait_ready()
            ready.append((time.monotonic() - server.started_at) * 1000)
            started = time.monotonic()
            assert server.stop(timeout=10) == 0
            stops.append((time.monotonic() - started) * 1000)
        finally:
            server.remove()
    return {"start_to_ready": percentiles(ready), "stop": percentiles(stops)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=10, help="fresh containers (and fresh host interpreters)")
    parser.add_argument("--warm", type=int, default=300, help="invokes per payload size")
    args = parser.parse_args(argv)
    busy = quiet_check()
    records = bank_records(1000)
    model_dir = ensure_model()
    started = time.monotonic()
    base = lambda_image.build_base()
    serving = lambda_image.serving_image()
    build_s = time.monotonic() - started
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "registry")
        host_port = registry.start()
        try:
            started = time.monotonic()
            image = lambda_image.model_image(serving, model_dir, host_port, tag="bench")
            release_s = time.monotonic() - started
            result: dict[str, Any] = {
                "machine_busy_percent_before": busy,
                "base": {"ref": base.ref, "cached": base.cached, "steps_s": base.steps},
                "base_and_serving_build_seconds": round(build_s, 2),
                "model_image_push_append_pull_seconds": round(release_s, 2),
                "sizes_mb": {"base": size_mb(base.ref), "serving": size_mb(serving), "model_image": size_mb(image)},
                "container": {
                    "cold": cold_starts(image, args.cold, records[0]),
                    "warm": warm(image, args.warm, records),
                },
                "host": host(model_dir, args.warm, args.cold, records),
                "http_command": http_command(image, max(3, args.cold // 2)),
            }
            podman.podman("rmi", "--ignore", image)
        finally:
            registry.stop()
    assert podman.containers(GROUP) == [], "containers left behind"
    c, h = result["container"], result["host"]
    print(f"cold: podman run -d {c['cold']['podman_run_d']['p50_ms']} ms, init phase {c['cold']['init_phase']['p50_ms']} ms "
          f"(host {h['init']['p50_ms']} ms), first answer {c['cold']['start_to_first_answer']['p50_ms']} ms")  # fmt: skip
    for name in ("1_record", "1000_records"):
        w = c["warm"][name]
        print(f"warm {name}: handler p50 {w['handler']['p50_ms']} ms, runtime {w['handler_runtime']['p50_ms']} ms, REPORT "
              f"{w['rie_report_duration']['p50_ms']} ms, client {w['client_round_trip']['p50_ms']} ms; "
              f"host handler p50 {h[name]['p50_ms']} ms")  # fmt: skip
    write_result("serving_image", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
