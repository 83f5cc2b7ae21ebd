"""Benchmark the local Kubernetes control plane (devstack.kube): start time and memory.

    .venv/bin/python -m bench.kube_bench [--runs 3] [--etcd /usr/bin/etcd] [--idle 30]

Each run starts a cluster (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok with 2 fake Nodes), creates a Deployment of 2 replicas and
times, from the moment start() is called:

- ready: start() returned (API /readyz, controller manager and scheduler healthy,
  Nodes Ready and untainted, ServiceAccount default/default made);
- deployment: that Deployment is Available with 2 ready replicas.

Three kinds of run, in this order:

- cold: a new state directory (PKI made, etcd empty) and the binaries dropped from
  the page cache first (posix_fadvise DONTNEED on those files only: nothing else on
  the machine loses its cache);
- fresh: a new state directory, binaries in the page cache;
- restart: the state directory of the previous run again (PKI and etcd data kept;
  the Deployment exists already, so its time is how long until it is Available again).

After the last run it waits --idle seconds and reads each process's RSS from
/proc (VmRSS). Binaries must be built (devstack/kube/build.sh). Prints a summary
and writes build/bench/kube.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import quiet_check, summary, write_result
from devstack import kube

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "bench"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "bench"}},
        "template": {
            "metadata": {"labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/bench:1"}]},
        },
    },
}


def drop_page_cache(paths: list[Path]) -> None:
    """Evict these files' pages from the page cache (clean pages only; root not needed)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def one_run(state_dir: Path, etcd: Path | None, idle: float = 0.0) -> dict[str, Any]:
    """Start, wait for the Deployment, (idle and sample RSS,) stop; the timings."""
    t0 = time.monotonic()
    kc = kube.KubeCluster(state_dir, etcd_binary=etcd, nodes=2)
    try:
        kc.start()
        ready = time.monotonic() - t0
        kc.create("/apis/apps/v1/namespaces/default/deployments", DEPLOYMENT, exist_ok=True)
        path = "/apis/apps/v1/namespaces/default/deployments/bench"
        while True:
            status = kc.get(path).get("status", {})
            conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
            if status.get("readyReplicas") == 2 and conditions.get("Available") == "True":
                break
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"Deployment not Available after 300 s: {status}")
            time.sleep(0.05)
        deployment = time.monotonic() - t0
        result: dict[str, Any] = {
            "ready_s": round(ready, 2),
            "deployment_s": round(deployment, 2),
            "phases_s": {k: round(v, 2) for k, v in kc.timings.items()},
        }
        if idle:
            time.sleep(idle)  # a measurement window: memory once the cluster has settled
            result["rss_mib"] = {k: round((v or 0) / 2**20, 1) for k, v in kc.rss().items()}
        return result
    finally:
        t1 = time.monotonic()
        kc.stop()
        print(f"  stop took {time.monotonic() - t1:.2f} s")


def main() -> None:
    """Run the benchmark and write build/bench/kube.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind")
    parser.add_argument("--etcd", type=Path, default=None, help="etcd binary (default: the built one)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle before reading RSS")
    args = parser.parse_args()
    bin_dir = kube.default_bin_dir()
    if missing := kube.missing_binaries(bin_dir):
        sys.exit(f"not built in {bin_dir}: {', '.join(missing)}; run devstack/kube/build.sh")
    binaries = [bin_dir / b for b in kube.BINARIES if b != "etcd"] + [args.etcd or bin_dir / "etcd"]
    busy = quiet_check()
    print(f"machine busy before the runs: {busy}% of all CPUs")
    runs: dict[str, list[dict[str, Any]]] = {"cold": [], "fresh": [], "restart": []}
    scratch = Path(tempfile.mkdtemp(prefix="kube-bench-"))
    try:
        for i in range(args.runs):
            for kind, results in runs.items():
                state = scratch / f"run{i}"
                if kind != "restart":
                    shutil.rmtree(state, ignore_errors=True)
                if kind == "cold":
                    drop_page_cache(binaries)
                last = i == args.runs - 1 and kind == "restart"
                result = one_run(state, args.etcd, idle=args.idle if last else 0.0)
                ready, available = result["ready_s"], result["deployment_s"]
                print(f"{kind:8s} run {i}: ready {ready:6.2f} s, Deployment Available {available:6.2f} s")
                results.append(result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rss = runs["restart"][-1]["rss_mib"]
    print(f"RSS after {args.idle:.0f} s idle (MiB): " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    print(f"                               total {sum(rss.values()):.1f}")
    write_result(
        "kube",
        {
            "versions": (bin_dir / "VERSIONS").read_text().split("\n")[:3],
            "etcd_binary": str(args.etcd or bin_dir / "etcd"),
            "busy_before_percent": busy,
            **{
                kind: {
                    "ready_s": summary([r["ready_s"] for r in rs], 2),
                    "deployment_s": summary([r["deployment_s"] for r in rs], 2),
                    "runs": rs,
                }
                for kind, rs in runs.items()
            },
            "idle_rss_mib": rss,
        },
    )


if __name__ == "__main__":
    main()
