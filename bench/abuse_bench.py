"""Abuse the HTTP server (bank_serving.http) as a hostile client would: memory and liveness under attack.

    .venv/bin/python bench/abuse_bench.py [--duration 15] [--hostile 16] [--many 1000] [--case NAME ...]
        [--serving DIR] [--label before|after]

Each case starts a fresh server on a free loopback port (the model is
build/bench/model, trained as bench/http_bench.py trains it if missing), waits
for /readyz, then runs one attack from a separate process for --duration
seconds while this process samples the server's RSS (/proc, every 20 ms) and
probes GET /healthz the way the kubelet does (a new connection per probe, every
100 ms, 2 s timeout: the liveness probe's timeoutSeconds). Cases:

- header-flood: --hostile connections each stream one endless header value;
- header-count-flood: --hostile connections each stream endless short header lines;
- url-flood: --hostile connections each stream an endless request target;
- slow-client: --hostile connections each drip an endless header one byte per second (slowloris);
- idle-connections: --many connections that connect and never send a byte;
- many-connections: --many connections that each send an incomplete request head, then nothing.

The attacker is persistent: each of its connections is opened again as soon as
the server closes it, so an attack lasts the whole case however fast the
server refuses it.

Reported per case: the server's RSS before and at its peak, /healthz latency
(p50, p99, max; a probe that fails or times out counts as 2 s) and failures, and
how many hostile connections were opened and how many the server closed, after
how long (with the first status line it sent them, if any). A case stops early if
the server's RSS passes --rss-cap-mib, so a server without limits cannot take
the machine down. Loopback only; every loop is bounded in time.

Prints a summary and writes build/bench/abuse.json (abuse-<label>.json with
--label). Not part of the test suite nor of `make bench`; BENCHMARKS.md's notes
hold its before/after figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import OUT, REPO, write_result
from bench.http_bench import _get, ensure_model, wait_ready
from devstack import procs
from devstack.procs import free_port

HOST = "127.0.0.1"
PROBE_INTERVAL_S = 0.1
PROBE_TIMEOUT_S = 2.0
RSS_INTERVAL_S = 0.02
CHUNK = 16 * 1024  # bytes per write of a flood

# case -> (connections argument, what each connection sends first, what it repeats, seconds between repeats)
_POST = b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
CASES: dict[str, tuple[str, bytes, bytes, float]] = {
    "header-flood": ("hostile", _POST + b"X-Flood: ", b"a" * CHUNK, 0.0),
    "header-count-flood": ("hostile", _POST, b"X-A: b\r\n" * (CHUNK // 8), 0.0),
    "url-flood": ("hostile", b"GET /healthz?", b"a" * CHUNK, 0.0),
    "slow-client": ("hostile", _POST + b"X-Slow: ", b"a", 1.0),
    "idle-connections": ("many", b"", b"", 0.0),
    "many-connections": ("many", _POST, b"", 0.0),
}


# --------------------------------------------------------------------------- the attacker (own process)


async def _hostile(port: int, first: bytes, repeat: bytes, every: float, deadline: float) -> dict[str, Any]:
    """One hostile connection until the deadline or until the server closes it."""
    opened = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), max(deadline - opened, 0.1))
    except (TimeoutError, OSError) as err:
        return {"connected": False, "error": type(err).__name__}
    result: dict[str, Any] = {"connected": True, "sent": 0, "closed_after_s": None, "status_line": None}

    async def read_until_closed() -> None:
        data = b""
        while chunk := await reader.read(65536):
            data += chunk[: max(0, 200 - len(data))]
        result["closed_after_s"] = round(time.monotonic() - opened, 3)
        result["status_line"] = data.split(b"\r\n", 1)[0].decode("latin-1") or None

    reading = asyncio.ensure_future(read_until_closed())
    try:
        writer.write(first)
        result["sent"] += len(first)
        while not reading.done() and time.monotonic() < deadline:
            if repeat:
                writer.write(repeat)
                result["sent"] += len(repeat)
                await asyncio.wait_for(writer.drain(), max(deadline - time.monotonic(), 0.01))
            # a flood writes on at once, a slow client waits `every` s, an idle one until the deadline
            pause = every if repeat else deadline - time.monotonic()
            await asyncio.wait([reading], timeout=max(min(pause, deadline - time.monotonic()), 0))
    except (TimeoutError, OSError):
        pass  # reset by the server, or the deadline passed mid-write
    try:
        await asyncio.wait_for(asyncio.shield(reading), 0.2)  # a close that raced the last write
    except (TimeoutError, OSError):
        pass
    reading.cancel()
    writer.transport.abort()
    return result


async def _persistent(port: int, case: str, deadline: float) -> list[dict[str, Any]]:
    """One attacker slot: a hostile connection, and a new one each time the server closes it, until the deadline."""
    _, first, repeat, every = CASES[case]
    results = []
    while time.monotonic() < deadline:
        results.append(await _hostile(port, first, repeat, every, deadline))
        if not results[-1]["connected"]:
            await asyncio.sleep(0.05)  # refused (backlog full): try again shortly, not in a tight loop
    return results


async def _attack(port: int, case: str, connections: int, duration: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + duration
    # Open the connections at once but not all in one burst: the listen backlog is finite.
    tasks = []
    for i in range(connections):
        tasks.append(asyncio.ensure_future(_persistent(port, case, deadline)))
        if i % 100 == 99:
            await asyncio.sleep(0.01)
    return [result for slot in await asyncio.gather(*tasks) for result in slot]


def _attacker(port: int, case: str, connections: int, duration: float, out: Any) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out.put(asyncio.run(_attack(port, case, connections, duration)))


# --------------------------------------------------------------------------- the observer (this process)


def _probe_healthz(port: int, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            status, _ = _get(port, "GET", "/healthz", timeout=PROBE_TIMEOUT_S)
            if status != 200:
                failures.append(f"status {status}")
        except OSError as err:
            failures.append(type(err).__name__)
            latencies.append(PROBE_TIMEOUT_S)
        else:
            latencies.append(time.perf_counter() - started)
        stop.wait(PROBE_INTERVAL_S)


def _sample_rss(pid: int, stop: threading.Event, peak: list[int], cap: int) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], _rss(pid))
        if peak[0] > cap:
            peak.append(1)  # over the cap: the case stops early
            return
        stop.wait(RSS_INTERVAL_S)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_case(case: str, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    kind = CASES[case][0]
    connections = args.hostile if kind == "hostile" else args.many
    port = free_port()
    # --serving: another checkout's bank_serving, first on the path of the server process only.
    env = {**os.environ, "PYTHONPATH": str(args.serving)} if args.serving else dict(os.environ)
    cmd = [sys.executable, "-m", "bank_serving.http", "--host", HOST, "--port", str(port),
           "--model-dir", str(model_dir), "--log-level", "error", *args.server_arg]  # fmt: skip
    # The server inherits this process's file limit; 1,000 connections need more than 1,024 descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = subprocess.Popen(cmd, env=env, cwd=args.serving or OUT)
    try:
        wait_ready(server, port)
        rss_start = _rss(server.pid)
        stop = threading.Event()
        latencies: list[float] = []
        failures: list[str] = []
        peak = [rss_start]
        cap = args.rss_cap_mib << 20
        observers = [
            threading.Thread(target=_probe_healthz, args=(port, stop, latencies, failures), daemon=True),
            threading.Thread(target=_sample_rss, args=(server.pid, stop, peak, cap), daemon=True),
        ]
        results: Any = multiprocessing.get_context("fork").Queue()
        attacker = multiprocessing.get_context("fork").Process(
            target=_attacker, args=(port, case, connections, args.duration, results), daemon=True
        )
        started = time.monotonic()
        attacker.start()
        for thread in observers:
            thread.start()
        conns: list[dict[str, Any]] = []
        # Read the attacker's results as they come: a process does not exit before its queue is drained.
        while len(peak) == 1 and time.monotonic() - started < args.duration + 30:
            try:
                conns = results.get(timeout=0.05)
                break
            except queue.Empty:
                if not attacker.is_alive():
                    break
        capped = len(peak) > 1
        attack_s = time.monotonic() - started
        if attacker.is_alive() and not conns:
            attacker.terminate()
        attacker.join()
        stop.set()
        for thread in observers:
            thread.join()
        alive = server.poll() is None
    finally:
        server.terminate()
        try:
            code = server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    closed = [c["closed_after_s"] for c in conns if c.get("closed_after_s") is not None]
    statuses = sorted({c["status_line"] for c in conns if c.get("status_line")})
    lat_ms = [x * 1000 for x in latencies] or [float("nan")]
    return {
        "case": case,
        "connections": connections,
        "connections_opened": sum(1 for c in conns if c.get("connected")),
        "duration_s": args.duration,
        "stopped_at_rss_cap": capped,
        "attack_s": round(attack_s, 1),
        "bytes_sent_mib": round(sum(c.get("sent", 0) for c in conns) / 2**20, 1),
        "rss_start_mib": round(rss_start / 2**20, 1),
        "rss_peak_mib": round(peak[0] / 2**20, 1),
        "healthz_probes": len(latencies),
        "healthz_failures": len(failures),
        "healthz_failure_kinds": sorted(set(failures)),
        "healthz_p50_ms": round(statistics.median(lat_ms), 1),
        "healthz_p99_ms": round(_percentile(lat_ms, 0.99), 1),
        "healthz_max_ms": round(max(lat_ms), 1),
        "closed_by_server": len(closed),
        "closed_after_s_median": round(statistics.median(closed), 2) if closed else None,
        "closed_after_s_max": max(closed) if closed else None,
        "answers": statuses,
        "server_alive_after": alive,
        "server_exit_code_on_sigterm": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=REPO / "data" / "bank" / "bank-full.csv")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per case")
    parser.add_argument("--hostile", type=int, default=16, help="connections of the flood and slow-client cases")
    parser.add_argument("--many", type=int, default=1000, help="connections of the idle/many-connections cases")
    parser.add_argument("--rss-cap-mib", type=int, default=2048, help="stop a case once the server's RSS passes this")
    parser.add_argument("--case", action="append", dest="cases", choices=sorted(CASES), help="default: all")
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before, after)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for the server")
    parser.add_argument("--serving", type=Path, default=None,
                        help="directory holding bank_serving/ (an older checkout's, for a before/after)")  # fmt: skip
    args = parser.parse_args()
    model_dir = ensure_model(args.csv)
    results = []
    for case in args.cases or list(CASES):
        print(f"{case}: {args.duration:.0f} s ...", flush=True)
        results.append(run_case(case, model_dir, args))
        print(f"  {results[-1]}", flush=True)
    report = {
        "label": args.label,
        "server": "python -m bank_serving.http " + " ".join(args.server_arg),
        "serving_dir": str(args.serving or "the installed bank_serving"),
        "probe": f"GET /healthz, new connection every {PROBE_INTERVAL_S} s, timeout {PROBE_TIMEOUT_S} s",
        "cases": results,
    }
    print(f"\n{'case':20} {'conns':>5} {'RSS start→peak MiB':>19} {'healthz p50/p99/max ms':>24} "
          f"{'fail':>4} {'opened/closed (median s)':>24}  answers")  # fmt: skip
    for r in results:
        closed = f"{r['connections_opened']}/{r['closed_by_server']} ({r['closed_after_s_median']})"
        print(f"{r['case']:20} {r['connections']:>5} {r['rss_start_mib']:>8}→{r['rss_peak_mib']:<8}"
              f"{'*' if r['stopped_at_rss_cap'] else ' ':1} "
              f"{r['healthz_p50_ms']:>8}/{r['healthz_p99_ms']}/{r['healthz_max_ms']:<8} "
              f"{r['healthz_failures']:>4} {closed:>24}  {', '.join(r['answers'])}")  # fmt: skip
    write_result(f"abuse{'-' + args.label if args.label else ''}", report)


if __name__ == "__main__":
    main()


def _rss(pid: int) -> int:
    """Resident set size of a process, 0 once it is gone."""
    return procs.rss_bytes(pid) or 0
