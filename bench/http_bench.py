"""Benchmark the HTTP server (bank_serving.http): requests/s and latency percentiles with wrk on loopback.

    .venv/bin/python bench/http_bench.py [--runs 3] [--duration 10] [--connections 32] [--split 1:0 ...]
        [--rate R] [--serving DIR --out NAME]

Needs wrk (Debian/Ubuntu: `apt-get install wrk`) and taskset (util-linux). The
model is build/bench/model, which bench/serving_bench.py writes; if it is
missing, it is trained here the same way (bank-full.csv, default settings).

For each core split (--split SERVER_CPUS:WRK_CPUS, taskset lists such as 1:0;
"none" runs both unpinned) the server starts on a free loopback port, /readyz is
polled until 200, one 2 s wrk run warms up (discarded), then --runs wrk runs of
--duration seconds POST a single-record JSON body (a Lua script) with
--threads threads and --connections connections. Reported per split: requests/s
and wrk's p50/p75/p90/p99 latency, median and min–max over the runs, plus the
CPU each run used: the server's, wrk's, and everything else's (/proc/stat minus
the two), so a run skewed by other work on the machine shows it. The 1-minute
load average is recorded too, but it lags and counts the benchmark itself. wrk
is closed-loop: every connection waits for its answer, so at saturation latency
≈ connections / throughput plus queueing. --rate R paces it instead (each
connection waits connections/R ms between requests, wrk's delay() hook): the
latency at a given load rather than at the limit.

--container runs the server as Kubernetes would, in the serving image under
podman (serving/Dockerfile on the local Lambda base, the model appended as a
release does; the Deployment's command, user, read-only root, limits: one
CPU), pinned to the split's server CPUs with --cpuset-cpus; its result is
build/bench/http_container.json unless --out says otherwise.

Prints a summary and writes build/bench/http.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import OUT, REPO, machine_cpu, quiet_check, write_result
from devstack.procs import free_port

MODEL_DIR = OUT / "model"

WRK_MISSING = (
    "wrk is not installed: it is the load generator of this benchmark.\n"
    "  Debian/Ubuntu: sudo apt-get install wrk      (macOS: brew install wrk)"
)
LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""
# --rate: every connection waits this many ms before its next request (wrk's delay() hook, whole ms)
LUA_DELAY = "function delay() return {ms} end\n"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def ensure_model(csv_path: Path) -> Path:
    """build/bench/model, trained as bench/serving_bench.py trains it if it is not there."""
    if (MODEL_DIR / "model.onnx").is_file() and (MODEL_DIR / "model.json").is_file():
        return MODEL_DIR
    from bank_ml import artifacts, data, release

    print(f"no model in {MODEL_DIR}: training one on {csv_path} ...", flush=True)
    candidate = release.train_candidate(data.features_from_csv(csv_path))
    artifacts.write_model_files(MODEL_DIR, candidate.onnx_bytes, candidate.threshold)
    return MODEL_DIR


def one_record(csv_path: Path) -> dict[str, Any]:
    from bench.serving_bench import raw_records

    return raw_records(csv_path, 1)[0]


def _get(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 5) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(server: subprocess.Popen[bytes], port: int, timeout: float = 30.0) -> None:
    """Poll /readyz until it answers 200; fail if the server exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was ready")
        try:
            if _get(port, "GET", "/readyz")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.01)  # polling interval, not a guess at the start-up time
    raise SystemExit(f"the server was not ready within {timeout} s")


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return round(float(number) * _UNITS[unit], 3)


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms), request count and errors from `wrk --latency` output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk's output:\n{output}")
    percentiles = {f"p{p}_ms": _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M)}
    requests = re.search(r"^\s+(\d+) requests in", output, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests_per_s": round(float(rps.group(1)), 1),
        **percentiles,
        "requests": int(requests.group(1)) if requests else None,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
    }


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children_cpu() -> float:
    """CPU seconds of the waited-for child processes (wrk once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pinned(cpus: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


class _Server:
    """The server under test: a host process, or the serving image's HTTP command in a container."""

    def __init__(self, cpus: str | None, model_dir: Path, args: argparse.Namespace) -> None:
        self.container = None
        if args.image:
            from devstack.containers.lambda_rie import HttpContainer

            options = [f"--cpuset-cpus={cpus}"] if cpus else []
            self.container = HttpContainer(args.image, options=options, extra_args=["--log-level", "warning"],
                                           group="bench")  # fmt: skip
            self.container.start()
            self.port = self.container.port
            self.pid = int(self.container.state()["Pid"])  # type: ignore[call-overload]
            return
        self.port = free_port()
        # --serving: another checkout's bank_serving, first on the path of the server process only.
        env = {**os.environ, "PYTHONPATH": str(args.serving)} if args.serving else dict(os.environ)
        cmd = [sys.executable, "-m", "bank_serving.http", "--host", "127.0.0.1", "--port", str(self.port),
               "--model-dir", str(model_dir), "--log-level", "warning"]  # fmt: skip
        self.proc = subprocess.Popen(_pinned(cpus, cmd), env=env, cwd=args.serving or OUT)
        self.pid = self.proc.pid

    def wait_ready(self) -> None:
        if self.container is not None:
            self.container.wait_ready()
        else:
            wait_ready(self.proc, self.port)

    def stop(self) -> int:
        """SIGTERM (podman stop for the container); the exit code."""
        if self.container is not None:
            try:
                return self.container.stop(timeout=30)
            finally:
                self.container.remove()
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def bench_split(split: str, model_dir: Path, script: Path, args: argparse.Namespace) -> dict[str, Any]:
    server_cpus, wrk_cpus = (None, None) if split == "none" else split.split(":")
    server = _Server(server_cpus, model_dir, args)
    port = server.port
    try:
        server.wait_ready()
        status, answer = _get(port, "POST", "/predict", script.with_suffix(".json").read_bytes())
        if status != 200:
            raise SystemExit(f"POST /predict answered {status}: {answer!r}")
        url = f"http://127.0.0.1:{port}/predict"

        def wrk(seconds: int) -> dict[str, Any]:
            cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency",
                   "-s", str(script), url]  # fmt: skip
            load = round(os.getloadavg()[0], 2)
            start, (busy0, _), server0, wrk0 = time.monotonic(), machine_cpu(), process_cpu(server.pid), children_cpu()
            out = subprocess.run(_pinned(wrk_cpus, cmd), check=True, capture_output=True, text=True).stdout
            end, (busy1, _), server1, wrk1 = time.monotonic(), machine_cpu(), process_cpu(server.pid), children_cpu()
            result = parse_wrk(out)
            if result["non_2xx"] or result["socket_errors"]:
                raise SystemExit(f"wrk saw errors:\n{out}")
            server_s, wrk_s, wall = server1 - server0, wrk1 - wrk0, end - start
            return {
                **result,
                # percent of one CPU; "other" is everything else on the machine, the noise to watch
                "server_cpu_pct": round(100 * server_s / wall, 1),
                "wrk_cpu_pct": round(100 * wrk_s / wall, 1),
                "other_cpu_pct": round(100 * max(busy1 - busy0 - server_s - wrk_s, 0.0) / wall, 1),
                "load_avg_1m_before": load,
            }

        wrk(2)  # warm-up, discarded
        runs = []
        for _ in range(args.runs):
            runs.append(wrk(args.duration))
            print(f"  {split}: {runs[-1]}", flush=True)
    finally:
        code = server.stop()
    if code != 0:
        raise SystemExit(f"the server exited with {code} after SIGTERM (expected 0)")

    def summary(key: str) -> dict[str, float]:
        values = [r[key] for r in runs]
        return {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}

    return {
        "split": split,
        "other_cpu_pct_max": max(r["other_cpu_pct"] for r in runs),
        "server_cpus": server_cpus or "any",
        "wrk_cpus": wrk_cpus or "any",
        "wrk_threads": args.threads,
        "paced_ms_between_requests_per_connection": args.delay_ms,
        "connections": args.connections,
        "duration_s": args.duration,
        "runs": runs,
        "requests_per_s": summary("requests_per_s"),
        **{key: summary(key) for key in ("p50_ms", "p75_ms", "p90_ms", "p99_ms")},
    }


@contextlib.contextmanager
def _model_image(model_dir: Path, tmp: Path, wanted: bool) -> Iterator[str | None]:
    """With --container: the serving image + the model layer (as a release makes it) in the project's podman store."""
    if not wanted:
        yield None
        return
    from devstack.aws.registry import Registry
    from devstack.containers import lambda_image, podman

    registry = Registry(tmp / "registry")
    host = registry.start()
    try:
        image = lambda_image.model_image(lambda_image.serving_image(), model_dir, host, tag="http-bench")
        yield image
        podman.podman("rmi", "--ignore", image)
    finally:
        registry.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=REPO / "data" / "bank" / "bank-full.csv")
    parser.add_argument("--runs", type=int, default=3, help="measured wrk runs per split (at least 3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rate", type=int, help="pace wrk near this many requests/s (default: as fast as it can)")
    parser.add_argument("--split", action="append", dest="splits", metavar="SERVER_CPUS:WRK_CPUS",
                        help='taskset CPU lists, e.g. 1:0; "none": unpinned (default: 1:0, then none)')  # fmt: skip
    parser.add_argument("--serving", type=Path, default=None,
                        help="directory holding bank_serving/ (an older checkout's, for a before/after)")  # fmt: skip
    parser.add_argument("--container", action="store_true",
                        help="the server in the serving image under podman, as the Deployment runs it")  # fmt: skip
    parser.add_argument("--out", default=None, help="result name: build/bench/<out>.json (http, http_container)")
    args = parser.parse_args()
    args.out = args.out or ("http_container" if args.container else "http")
    args.image = None
    args.runs = max(3, args.runs)
    # Paced: each connection sends, waits for the answer, then waits delay ms; rate ≈ connections / (delay + latency).
    args.delay_ms = args.connections * 1000 // args.rate if args.rate else None
    splits = args.splits or ["1:0", "none"]
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_MISSING)
    if any(s != "none" for s in splits) and shutil.which("taskset") is None:
        raise SystemExit("taskset is not installed (Debian: apt-get install util-linux), or use --split none")

    busy, load_before = quiet_check(), round(os.getloadavg()[0], 2)
    print(f"before: {busy}% of the CPUs busy with other work, load average {load_before}", flush=True)
    if busy > 10:
        print("warning: the machine is not quiet; the figures will be low and noisy", flush=True)
    model_dir = ensure_model(args.csv)
    record = json.dumps(one_record(args.csv), separators=(",", ":"))
    results = []
    with tempfile.TemporaryDirectory() as tmp, _model_image(model_dir, Path(tmp), args.container) as args.image:
        script = Path(tmp) / "post.lua"
        lua = LUA.format(body=json.dumps(record))  # a JSON string is a valid Lua string literal
        script.write_text(lua + (LUA_DELAY.format(ms=args.delay_ms) if args.delay_ms else ""))
        script.with_suffix(".json").write_text(record)
        for split in splits:
            paced = f", paced: {args.delay_ms} ms between requests per connection" if args.delay_ms else ""
            print(f"split {split} (server:wrk CPUs), {args.runs} x {args.duration} s, "
                  f"wrk {args.threads} thread(s), {args.connections} connections{paced}", flush=True)  # fmt: skip
            results.append(bench_split(split, model_dir, script, args))

    report = {
        "endpoint": "POST /predict, one record",
        "body_bytes": len(record),
        "server": "python -m bank_serving.http (uvicorn + h11 + uvloop, one process)"
        + (" in the serving image under podman, as the Deployment runs it" if args.container else "")
        if args.serving is None
        else f"python -m bank_serving.http from {args.serving} (one process)",
        "load_generator": subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        .stdout.split("Copyright")[0]
        .strip(),
        "other_work_before_pct": busy,
        "load_avg_1m_before": load_before,
        "splits": results,
    }

    print(f"\nPOST /predict, one record ({len(record)} B); median (min–max) of {args.runs} x {args.duration} s")
    for r in results:
        rps, p50, p99 = r["requests_per_s"], r["p50_ms"], r["p99_ms"]
        other = [x["other_cpu_pct"] for x in r["runs"]]
        server_cpu = [x["server_cpu_pct"] for x in r["runs"]]
        print(
            f"server on CPU {r['server_cpus']}, wrk on CPU {r['wrk_cpus']} ({r['wrk_threads']} thread, "
            f"{r['connections']} conns{', paced' if args.delay_ms else ''}): "
            f"{rps['median']:.0f} req/s ({rps['min']:.0f}–{rps['max']:.0f}), "
            f"p50 {p50['median']} ms ({p50['min']}–{p50['max']}), "
            f"p99 {p99['median']} ms ({p99['min']}–{p99['max']}); "
            f"CPU: server {min(server_cpu)}–{max(server_cpu)} %, other work {min(other)}–{max(other)} % (of one CPU)"
        )
    write_result(args.out, report)


if __name__ == "__main__":
    main()
