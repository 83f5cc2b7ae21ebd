"""Benchmark DAG parse time and what each DAG file imports at parse time.

    .venv/bin/python bench/parse_bench.py [--runs 7]

For dags/*.py and a reference, bench/example_emr_dag.py (a copy of the Amazon
provider's example EMR DAG), each fresh interpreter (`python -c DRIVER`) does:

- time `import airflow.sdk` (interpreter start-up excluded);
- time loading the file by importlib, as Airflow's DagBag does: the increment
  over the SDK import, measured in the same process;
- reload it under other module names, imports now cached: the file's own
  top-level code;
- list the heavy modules the load added to sys.modules and count the botocore
  clients it created.

A baseline interpreter only imports airflow.sdk. Runs go round-robin (baseline,
then each file, --runs times) so load on the machine spreads evenly; one
discarded run per file first compiles bytecode under build/bench/pycache (this
machine sets PYTHONDONTWRITEBYTECODE). AIRFLOW_HOME is a temporary directory.

Prints a summary and writes build/bench/parse.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import quiet_check, summary, write_result

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

DAG_FILES = sorted((REPO / "dags").glob("*.py"))
REFERENCE = BENCH / "example_emr_dag.py"
PYCACHE = REPO / "build" / "bench" / "pycache"
# Data and ML libraries: none belongs in a DAG file's parse (the goal).
DATA_LIBS = ("pandas", "sklearn", "pyspark", "numpy", "pyarrow", "onnxruntime", "matplotlib")
# Cloud SDKs: provider operators import them; reported, and clients must not be created at parse time.
CLOUD_LIBS = ("boto3", "botocore", "aiobotocore", "kubernetes")
HEAVY = DATA_LIBS + CLOUD_LIBS
OWN_CODE_GOAL_MS = 20.0

# Runs in a fresh interpreter: argv = [files (os.pathsep-separated) or "", reloads, comma-separated
# heavy modules]. One file loads in the interpreter itself; several load each in a child forked after
# `import airflow.sdk`, as the DAG processor parses each file in a process of its own, so no file
# sees what another imported. One JSON line per file (or one for none).
# botocore.client is patched by an import hook rather than imported up front: importing
# botocore early would move its import cost out of the file's load and hide that the file
# imports it. aiobotocore's clients (created only inside `async with`) are not counted.
DRIVER = r"""
import importlib.abc, importlib.util, json, os, sys, time, traceback

paths, reloads, heavy = [p for p in sys.argv[1].split(os.pathsep) if p], int(sys.argv[2]), sys.argv[3].split(",")
clients = []


class CountClients(importlib.abc.MetaPathFinder):
    def find_spec(self, name, target_path, target=None):
        if name != "botocore.client":
            return None
        spec = next(filter(None, (f.find_spec(name, target_path, target) for f in sys.meta_path if f is not self)))
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            create = module.ClientCreator.create_client

            def counted(creator, service_name, *args, **kwargs):
                clients.append(service_name)
                return create(creator, service_name, *args, **kwargs)

            module.ClientCreator.create_client = counted

        spec.loader.exec_module = exec_and_patch
        return spec


def load(name, path):
    # As DagBag: the module is in sys.modules while its code runs.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    start = time.perf_counter()
    spec.loader.exec_module(module)
    return time.perf_counter() - start


sys.meta_path.insert(0, CountClients())
start = time.perf_counter()
import airflow.sdk
out = {"sdk_s": time.perf_counter() - start, "heavy_after_sdk": [m for m in heavy if m in sys.modules]}


def report(path):
    out["path"] = path
    out["file_s"] = load("dag_file", path)
    out["heavy_added"] = [m for m in heavy if m in sys.modules and m not in out["heavy_after_sdk"]]
    out["clients"] = list(clients)
    out["reload_s"] = [load(f"dag_file_reload_{i}", path) for i in range(reloads)]
    print(json.dumps(out), flush=True)


if not paths:
    print(json.dumps(out))
elif len(paths) == 1:
    report(paths[0])
else:
    for path in paths:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                report(path)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stderr.flush()
            os._exit(code)
        if os.waitpid(pid, 0)[1] != 0:
            sys.exit(f"loading {path} failed")
"""


@dataclass(frozen=True)
class Load:
    """What one fresh interpreter measured; file fields are empty for a bare `import airflow.sdk`."""

    sdk_s: float
    heavy_after_sdk: tuple[str, ...]
    path: str | None = None
    file_s: float | None = None
    heavy_added: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    reload_s: tuple[float, ...] = ()


def parse_env(airflow_home: Path, pycache_prefix: Path | None = PYCACHE) -> dict[str, str]:
    """Environment of a parse: the bundle's packages come from the venv's install, as on a deployment.

    With a pycache_prefix, bytecode is read and written there (outside the repo) whatever
    PYTHONDONTWRITEBYTECODE says, so timed runs never compile; without one, Python's
    defaults apply (the venv's .pyc files, compiled at install), which suits a test.
    """
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home)}
    if pycache_prefix is not None:
        env["PYTHONPYCACHEPREFIX"] = str(pycache_prefix)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def load_fresh(path: Path | None, env: Mapping[str, str], *, reloads: int = 0) -> Load:
    """Import airflow.sdk, then load `path` (if any) in a new interpreter; see DRIVER.

    Runs in env["AIRFLOW_HOME"], so nothing Airflow writes lands in the caller's directory.
    Raises RuntimeError with the child's stderr when the load fails.
    """
    return _run_driver([path] if path else [], env, reloads)[-1]


def load_forked(paths: Sequence[Path], env: Mapping[str, str]) -> dict[Path, Load]:
    """Each of ``paths`` loaded in a child forked from one interpreter that imported airflow.sdk.

    What each file adds is measured as in a fresh interpreter of its own, at one interpreter's
    start-up for all of them (a test's use; the benchmark's times come from load_fresh).
    """
    loads = _run_driver(paths, env, 0)
    return {Path(load.path): load for load in loads}


def _run_driver(paths: Sequence[Path], env: Mapping[str, str], reloads: int) -> list[Load]:
    joined = os.pathsep.join(str(p) for p in paths)
    argv = [sys.executable, "-c", DRIVER, joined, str(reloads), ",".join(HEAVY)]
    out = subprocess.run(argv, env=dict(env), cwd=env["AIRFLOW_HOME"], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        what = joined if len(paths) < 2 else f"{len(paths)} files"
        raise RuntimeError(f"loading {what or 'airflow.sdk'} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    docs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return [
        Load(
            sdk_s=doc["sdk_s"],
            heavy_after_sdk=tuple(doc["heavy_after_sdk"]),
            path=doc.get("path"),
            file_s=doc.get("file_s"),
            heavy_added=tuple(doc.get("heavy_added", ())),
            clients=tuple(doc.get("clients", ())),
            reload_s=tuple(doc.get("reload_s", ())),
        )
        for doc in docs
    ]


def file_result(loads: Sequence[Load]) -> dict[str, Any]:
    """One file's figures over its runs: the increment over the SDK, own code, imports, clients."""
    return {
        "import_airflow_sdk_same_process_s": summary([x.sdk_s for x in loads]),
        "over_sdk_s": summary([x.file_s for x in loads if x.file_s is not None]),
        "own_code_ms": summary([s * 1000 for x in loads for s in x.reload_s], digits=2),
        "heavy_modules": sorted({m for x in loads for m in x.heavy_added}, key=HEAVY.index),
        "boto3_clients_created": max(len(x.clients) for x in loads),
        "client_services": sorted({c for x in loads for c in x.clients}),
    }


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=7, help="fresh interpreters per file and for the baseline; 7+ for a figure to quote"
    )
    parser.add_argument("--reloads", type=int, default=5, help="reloads per interpreter for the own-code figure")
    args = parser.parse_args()
    files = [*DAG_FILES, REFERENCE]
    busy = quiet_check()

    with tempfile.TemporaryDirectory(prefix="parse-bench-") as home:
        env = parse_env(Path(home))
        for path in files:
            load_fresh(path, env)  # compiles the file and what it imports; discarded
        baseline: list[Load] = []
        loads: dict[Path, list[Load]] = {path: [] for path in files}
        for _ in range(args.runs):
            baseline.append(load_fresh(None, env))
            for path in files:
                loads[path].append(load_fresh(path, env, reloads=args.reloads))

    results = {name: file_result(loads[path]) for path, name in ((p, _name(p)) for p in files)}
    reference = results[_name(REFERENCE)]
    doc = {
        "how": (
            f"{args.runs} fresh interpreters per file and for the baseline, round-robin, after one discarded "
            "run per file that compiles bytecode; times exclude interpreter start-up. over_sdk_s: loading the "
            "file by importlib after `import airflow.sdk` in the same process. own_code_ms: the same file "
            f"reloaded {args.reloads} times per interpreter under other module names (imports cached), pooled. "
            "heavy_modules: of the listed modules, those in sys.modules after the load and not after "
            "`import airflow.sdk`. boto3_clients_created: botocore ClientCreator.create_client calls "
            "during the first load. Summaries: runs, median, min, max."
        ),
        "machine_busy_percent_before": busy,
        "heavy_modules_checked": list(HEAVY),
        "baseline_import_airflow_sdk_s": summary([x.sdk_s for x in baseline]),
        "heavy_modules_after_import_airflow_sdk": sorted({m for x in baseline for m in x.heavy_after_sdk}),
        "files": results,
        "reference": _name(REFERENCE),
        "goals": {
            "over_sdk_s_median_at_most": reference["over_sdk_s"]["median"],
            "own_code_ms_median_at_most": OWN_CODE_GOAL_MS,
            "heavy_modules_none_of": list(DATA_LIBS),
            "boto3_clients_created": 0,
        },
    }
    _print(doc)
    write_result("parse", doc)


def _print(doc: Mapping[str, Any]) -> None:
    base = doc["baseline_import_airflow_sdk_s"]
    goals = doc["goals"]
    print(f"machine {doc['machine_busy_percent_before']}% busy before the runs")
    print(
        f"import airflow.sdk: median {base['median']} s (min {base['min']}, max {base['max']}, {base['runs']} runs); "
        f"heavy modules it imports: {', '.join(doc['heavy_modules_after_import_airflow_sdk']) or 'none'}"
    )
    for name, r in doc["files"].items():
        over, own = r["over_sdk_s"], r["own_code_ms"]
        checks = []
        if name != doc["reference"]:
            checks = [
                "over-sdk " + ("ok" if over["median"] <= goals["over_sdk_s_median_at_most"] else "OVER"),
                "own-code " + ("ok" if own["median"] <= goals["own_code_ms_median_at_most"] else "OVER"),
                "imports " + ("ok" if not set(r["heavy_modules"]) & set(goals["heavy_modules_none_of"]) else "HEAVY"),
                "clients " + ("ok" if r["boto3_clients_created"] == 0 else "CREATED"),
            ]
        print(
            f"{name}{' (reference)' if name == doc['reference'] else ''}\n"
            f"  over import airflow.sdk: median {over['median']} s (min {over['min']}, max {over['max']}, "
            f"{over['runs']} runs)\n"
            f"  own top-level code: median {own['median']} ms (min {own['min']}, max {own['max']}, "
            f"{own['runs']} reloads)\n"
            f"  heavy modules added: {', '.join(r['heavy_modules']) or 'none'}; "
            f"botocore clients created: {r['boto3_clients_created']} {r['client_services'] or ''}"
            + (f"\n  goals: {', '.join(checks)}" if checks else "")
        )


if __name__ == "__main__":
    main()
