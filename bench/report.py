"""Turn build/bench/*.json into one markdown report and plots; optionally update BENCHMARKS.md.

    .venv/bin/python bench/report.py [--update BENCHMARKS.md]

Writes build/bench/report.md and build/bench/*.png. With --update, replaces the
part of the given file between the `<!-- bench:begin -->` and `<!-- bench:end -->`
markers with the report, and copies the plots next to it under docs/bench/, so
the committed figures are always one benchmark run's, with its machine and date.
A benchmark whose JSON is missing is reported as not measured, never guessed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import OUT, REPO, summary
from bench.plots import IMPL_LABELS, MIB_PER_GIB, demo_plot, features_plot, scoring_plot

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PLOTS_DIR = REPO / "docs" / "bench"


def load(name: str) -> dict[str, Any] | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def spread(s: dict[str, Any], fmt: str = "{:.2f}", unit: str = "") -> str:
    """'median (min–max, n runs)' of a common.summary."""
    m, lo, hi = (fmt.format(s[k]) for k in ("median", "min", "max"))
    return f"{m}{unit} ({lo}–{hi}, {s['runs']} run{'s' if s['runs'] != 1 else ''})"


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("**met**" if met else "**missed**")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- sections


def features_section(doc: dict[str, Any]) -> tuple[str, list[str]]:
    scales = doc["scales"]
    rows = []
    for name, s in scales.items():
        for impl, label in IMPL_LABELS.items():
            e = s.get(impl)
            if not e or "wall_s" not in e:
                note = (e or {}).get("error") or (s.get("pandas_not_run") if impl == "pandas" else None)
                if note:
                    rows.append([name, label, note, "", "", ""])
                continue
            rows.append(
                [
                    name,
                    label,
                    spread(e["wall_s"], "{:.1f}", " s"),
                    f"{e['rows_per_s']:,}",
                    f"{e['peak_pss_mib']:,.0f}",
                    f"{e['peak_rss_mib']:,.0f}",
                ]
            )
    out = [
        "## Features job at scale",
        "",
        doc["how"] + ".",
        "",
        table(["scale", "implementation", "wall time", "rows/s", "peak PSS MiB", "peak RSS MiB"], rows),
        "",
        "Peak memory is the whole process tree (spark-submit, JVM, Python workers), sampled every 0.1 s; PSS "
        "shares a page among the processes that map it, RSS counts it once per process.",
        "",
    ]
    goal_rows = []
    for name, s in scales.items():
        if "job_over_copy" in s:
            r = s["job_over_copy"]
            phases = s["job"].get("job_phase_seconds_last_run") or {}
            detail = ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
            goal_rows.append(
                [f"job / copy at {name}", f"{r['ratio']:.2f}×", f"≤ {r['goal']}×", verdict(r["met"]), detail]
            )
    top = scales.get("x1000", {}).get("job")
    if top and "peak_pss_mib" in top:
        goal_mib = doc["goals"]["job_peak_pss_mib_max_at_x1000"]
        met = top["peak_pss_mib"] <= goal_mib
        goal_rows.append(
            ["job peak memory at x1000", f"{top['peak_pss_mib']:,.0f} MiB", f"≤ {goal_mib:,} MiB", verdict(met), "PSS"]
        )
    if goal_rows:
        out += [table(["goal", "measured", "target", "", "job phases (last run)"], goal_rows), ""]
    limit = doc.get("pandas_limit")
    if limit:
        out += [
            f"Where pandas stops fitting: {limit['bytes_per_row']:,} bytes per row at x{limit['from_scale']}, so "
            f"about x{limit['largest_scale_that_fits']} is the largest scale that fits in "
            f"{limit['mem_available_gib']} GiB available ({limit['how']}).",
            "",
        ]
    goal_gib = doc["goals"]["job_peak_pss_mib_max_at_x1000"] / MIB_PER_GIB
    return "\n".join(out), [features_plot(scales, goal_gib)]


def scoring_section(doc: dict[str, Any]) -> tuple[str, list[str]]:
    variants = doc["variants"]
    rows = [
        [name, f"{v['rows']:,}", spread(v["seconds"], "{:.2f}", " s"), f"{v['rows_per_s']:,}"]
        for name, v in variants.items()
    ]
    goals = {  # ratio -> the target
        "sklearn pandas UDF / sklearn row UDF": 200,
        "onnx batch job (mapInArrow) / best onnx in one process": 0.9,
        "sklearn pandas UDF / sklearn in one process": 0.9,
    }
    ratio_rows = [
        [
            name,
            f"{value:.2f}×",
            f"≥ {goals[name]}×" if name in goals else "",
            verdict(value >= goals[name]) if name in goals else "",
        ]
        for name, value in doc["ratios"].items()
    ]
    out = [
        "## Batch scoring",
        "",
        f"Model {doc['model_version']} (the release model trained on bank-full). Spark runs are local[2], "
        "reading parquet, scoring and writing to the `noop` sink; in-process runs score the model's input frame "
        "already in memory, in 10,000-row chunks. Every Spark variant keeps all input columns next to its "
        "score; row-at-a-time UDFs score fewer rows of the same data (rates are per row).",
        "",
        table(["variant", "rows", "wall time", "rows/s"], rows),
        "",
        table(["ratio of rows/s", "measured", "goal", ""], ratio_rows),
        "",
    ]
    return "\n".join(out), [scoring_plot(variants)]


def parse_section(doc: dict[str, Any]) -> tuple[str, list[str]]:
    base = doc["baseline_import_airflow_sdk_s"]
    reference = doc.get("reference")
    ref_over = doc["files"][reference]["over_sdk_s"]["median"] if reference in doc["files"] else None
    rows = []
    for name, f in doc["files"].items():
        own = f["own_code_ms"]
        heavy = ", ".join(f["heavy_modules"]) or "none"
        goals = []
        if name != reference and ref_over is not None:
            goals.append(f"{'≤' if f['over_sdk_s']['median'] <= ref_over else '>'} reference")
        goals.append("own code " + ("≤ 20 ms" if own["median"] <= 20 else "> 20 ms"))
        rows.append(
            [
                f"`{name}`" + (" (reference)" if name == reference else ""),
                spread(f["over_sdk_s"], "{:.3f}", " s"),
                spread(own, "{:.1f}", " ms"),
                heavy,
                str(f["boto3_clients_created"]),
                "; ".join(goals),
            ]
        )
    out = [
        "## DAG parse time",
        "",
        f"Bare `import airflow.sdk`: {spread(base, '{:.3f}', ' s')}. {doc['how']}",
        "",
        table(
            [
                "file",
                "over `import airflow.sdk`",
                "own top-level code",
                "heavy modules added",
                "boto3 clients",
                "goals",
            ],
            rows,
        ),
        "",
    ]
    return "\n".join(out), []


def serving_section(serving: dict[str, Any] | None, http: dict[str, Any] | None) -> tuple[str, list[str]]:
    out = ["## Serving", ""]
    if serving:
        c, w1, w1000 = serving["cold_init"], serving["warm_1_record"], serving["warm_1000_records"]
        ref = serving["reference_1_record_scoring_only"]
        out += [
            table(
                ["what", "figure", "how"],
                [
                    [
                        "Lambda handler cold init (imports + model load)",
                        f"{c['median_ms']:.0f} ms ({c['min_ms']:.0f}–{c['max_ms']:.0f}, {c['runs']} runs)",
                        "fresh interpreter per run, `import bank_serving.lambda_handler`, start-up excluded",
                    ],
                    [
                        "warm, 1 record",
                        f"p50 {w1['p50_ms']} ms, p99 {w1['p99_ms']} ms",
                        f"{w1['calls']:,} calls, API Gateway proxy event",
                    ],
                    [
                        "warm, 1,000 records",
                        f"p50 {w1000['p50_ms']} ms, p99 {w1000['p99_ms']} ms",
                        f"{w1000['calls']:,} calls",
                    ],
                    [
                        "1 record, scoring only: scikit-learn vs ONNX",
                        f"p50 {ref['sklearn']['p50_ms']} ms vs {ref['onnx']['p50_ms']} ms",
                        "same record, same process",
                    ],
                ],
            ),  # fmt: skip
            "",
        ]
    if http:
        rows = []
        for s in http["splits"]:
            where = "unpinned" if s["split"] == "none" else f"server CPU {s['server_cpus']}, wrk CPU {s['wrk_cpus']}"
            rows.append(
                [
                    where,
                    f"{s['connections']}",
                    spread({**s["requests_per_s"], "runs": len(s["runs"])}, "{:,.0f}"),
                    f"{s['p50_ms']['median']} ms",
                    f"{s['p99_ms']['median']} ms ({s['p99_ms']['min']}–{s['p99_ms']['max']})",
                ]
            )
        out += [
            f"HTTP: {http['endpoint']}, {http['server']}; load from {http['load_generator']}, "
            f"{http['splits'][0]['duration_s']} s per run.",
            "",
            table(["placement", "connections", "requests/s", "p50", "p99"], rows),
            "",
        ]
    return "\n".join(out), []


def train_section(doc: dict[str, Any]) -> tuple[str, list[str]]:
    phases = ("read", "train", "live", "baseline", "baseline_wait", "register")
    rows = [
        [
            name,
            f"{scale['rows']:,}",
            spread(scale["wall_s"], "{:.1f}", " s"),
            ", ".join(f"{p} {scale['phase_seconds'][p]['median']:.1f} s" for p in phases),
            f"{scale['driver_peak_rss_mib']:,.0f}",
            f"{scale['peak_pss_mib']:,.0f}",
            f"{scale['roc_auc']:.3f}",
        ]
        for name, scale in doc["scales"].items()
    ]
    out = [
        "## Model build on EMR (bank_spark.train_job)",
        "",
        f"{doc['how']}.",
        "",
        table(
            ["scale", "rows", "wall time", "phases (median)", "driver peak RSS MB", "peak PSS MiB (tree)", "ROC AUC"],
            rows,
        ),  # fmt: skip
        "",
    ]
    return "\n".join(out), []


def release_section(doc: dict[str, Any]) -> tuple[str, list[str]]:
    b, r = doc["build_and_push_layer_s"], doc["repush_same_model_s"]
    b_ms = {**{k: b[k] * 1000 for k in ("median", "min", "max")}, "runs": b["runs"]}
    out = [
        "## Release: trained model to image digest",
        "",
        f"model.onnx {doc['model_onnx_bytes']:,} B → model layer {doc['layer_bytes']:,} B (gzip). "
        f"Build the layer and push layer, config and manifest: {spread(b_ms, '{:.0f}', ' ms')}; "
        f"re-push of the same model (nothing to upload): {r['median'] * 1000:.0f} ms. {doc['how']}.",
        "",
    ]
    return "\n".join(out), []


def canary_rollback_section(doc: dict[str, Any]) -> tuple[str, list[str]]:
    rows = []
    targets = {
        "Lambda": {k: v for k, v in doc.items() if k.startswith("poll_")},
        "Kubernetes": doc.get("kubernetes", {}),
    }
    for target, results in targets.items():
        for key, result in results.items():
            figures = {k: [r[k] for r in result["rounds"]] for k in result["median"]}

            def cell(name: str, figures: dict[str, list[float]] = figures) -> str:
                return spread(summary(figures[name], 3), "{:.2f}", " s") if name in figures else "–"

            rows.append([target, key.removeprefix("poll_"), cell("crossed_to_back_s"), cell("crossed_to_detected_s"),
                         cell("detected_to_back_s")])  # fmt: skip
    out = [
        "## Canary rollback",
        "",
        "From a canary crossing its error threshold (a model failing one request in five, 50 % of the traffic) to "
        "the traffic back on the old version, on devstack, the bake polling every *poll* (BANK_POLL_SECONDS). "
        "Lambda: from the answer that crossed it to UpdateAlias with no weights returned. Kubernetes: from the "
        "client's first 500 to its last answer from a canary pod (the Service's endpoints without them); "
        "detected = the operator's abort.",
        "",
        table(["target", "poll", "crossed → traffic back", "crossed → detected", "detected → back"], rows),
        "",
    ]
    return "\n".join(out), []


def drift_section(doc: dict[str, Any]) -> tuple[str, list[str]]:
    rows = []
    for scale, result in doc["scales"].items():
        runs = result["runs"]

        def cell(name: str, runs: list[dict[str, float]] = runs) -> str:
            return spread(summary([r[name] for r in runs], 3), "{:.2f}", " s")

        rows.append([f"{scale}x", f"{result['rows']:,}", cell("score_seconds"), cell("drift_seconds"),
                     cell("duration_seconds"), f"{result['drift_share_of_job']:.0%}"])  # fmt: skip
    out = [
        "## Drift in the scoring job",
        "",
        f"Model {doc['model_version']} with its training profile; the scoring job itself (local[2]) on bank-full's "
        "features repeated to each size. scoring = writing the scores parquet; drift = counting the written rows "
        "into the profile's bins (one aggregation) and writing the report.",
        "",
        table(["size", "rows", "scoring", "drift", "whole job", "drift's share"], rows),
        "",
    ]
    return "\n".join(out), []


def demo_section(doc: dict[str, Any]) -> tuple[str, list[str]]:
    rows = [[f"**{k}**", spread(v, "{:.1f}", " s")] for k, v in doc["stages_s"].items()]
    rows += [[k, spread(v, "{:.2f}", " s")] for k, v in doc["tasks_s"].items()]
    out = [
        "## `make demo`",
        "",
        f"Whole run: {spread(doc['whole_s'], '{:.1f}', ' s')}, peak {doc['peak_pss_mib']:,.0f} MiB (PSS, whole "
        f"process tree). {doc['how']}.",
        "",
        table(["stage / task", "wall time"], rows),
        "",
    ]
    return "\n".join(out), [demo_plot(doc)]


def containers_section(
    image: dict[str, Any] | None,
    http: dict[str, Any] | None,
    host_http: dict[str, Any] | None,
    invoke: dict[str, Any] | None,
) -> tuple[str, list[str]]:
    """The serving image in containers (podman) against the same code on the host."""
    out = ["## Serving in containers", ""]
    if image:
        c, h = image["container"], image["host"]
        cold = c["cold"]

        def ms(p: dict[str, Any], key: str = "p50_ms") -> str:
            return f"{p[key]:.3g} ms"

        rows = [
            ["cold: handler init (imports + model load)", ms(cold["init_phase"]), ms(h["init"]),
             f"container: the RIE's INIT REPORT, {cold['init_phase']['runs']} fresh containers; host: fresh interpreters"],
            ["cold: container start (`podman run -d` returns)", ms(cold["podman_run_d"]), "–", "reported apart from init"],
            ["cold: `podman run` → first answer, 1 record", ms(cold["start_to_first_answer"]), "–",
             "start, RIE listening, init, invoke"],
        ]  # fmt: skip
        for name, label in (("1_record", "1 record"), ("1000_records", "1,000 records")):
            w = c["warm"][name]
            rows.append([f"warm, {label}: handler", f"p50 {ms(w['handler'])}, p99 {ms(w['handler'], 'p99_ms')}",
                         f"p50 {ms(h[name])}, p99 {ms(h[name], 'p99_ms')}", f"{w['handler']['runs']} invokes"])  # fmt: skip
            rows.append([f"warm, {label}: through the RIE", f"runtime {ms(w['handler_runtime'])}, REPORT "
                         f"{ms(w['rie_report_duration'])}, client {ms(w['client_round_trip'])}", "–",
                         "awslambdaric's invoke, Lambda's billed Duration, the caller's round trip (p50)"])  # fmt: skip
        ready = image["http_command"]["start_to_ready"]
        rows.append(["HTTP command: `podman run` → /readyz 200", ms(ready), "–", f"{ready['runs']} runs"])
        out += [table(["what", "container", "host", "how"], rows), ""]
    if http and host_http:
        rows = []
        for label, doc in (("container", http), ("host", host_http)):
            for sp in doc["splits"]:
                rows.append([label, "unpinned" if sp["split"] == "none" else f"server CPU {sp['server_cpus']}, wrk CPU {sp['wrk_cpus']}",
                             spread({**sp["requests_per_s"], "runs": len(sp["runs"])}, "{:,.0f}"),
                             f"{sp['p50_ms']['median']} ms", f"{sp['p99_ms']['median']} ms"])  # fmt: skip
        out += [
            f"HTTP, {http['endpoint']}: {http['server']}.",
            "",
            table(["where", "placement", "requests/s", "p50", "p99"], rows),
            "",
        ]
    if invoke:
        rows = [[name.replace("_", " "), f"{invoke['cold'][name]['p50_ms']:.0f} ms", f"{invoke['warm'][name]['p50_ms']:.1f} ms"]
                for name in invoke["cold"]]  # fmt: skip
        out += [f"devstack's Lambda, {invoke['how']}.", "", table(["payload", "cold (p50)", "warm (p50)"], rows), ""]
    return "\n".join(out), []


# --------------------------------------------------------------------------- report


def machine_line(docs: list[dict[str, Any]]) -> str:
    m = docs[0]["machine"]
    dates = sorted(d["measured_at"] for d in docs)
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Python {m['python']}. "
        f"Measured {dates[0]} to {dates[-1]}."
    )


def sections() -> list[tuple[str, list[str]]]:
    """(markdown, plot files) of each benchmark in report order; draws the plots into build/bench/."""
    docs = {name: load(name) for name in ("features", "train", "scoring", "parse", "serving", "http", "release",
                                          "demo", "serving_image", "http_container", "lambda_invoke",
                                          "canary_rollback", "drift")}  # fmt: skip
    found = [d for d in docs.values() if d and "machine" in d]
    out: list[tuple[str, list[str]]] = [(machine_line(found) + "\n", [])] if found else []
    makers: dict[str, Callable[[], tuple[str, list[str]]]] = {
        "features": lambda: features_section(docs["features"]),
        "train": lambda: train_section(docs["train"]),
        "scoring": lambda: scoring_section(docs["scoring"]),
        "drift": lambda: drift_section(docs["drift"]),
        "parse": lambda: parse_section(docs["parse"]),
        "serving": lambda: serving_section(docs["serving"], docs["http"]),
        "serving_image": lambda: containers_section(
            docs["serving_image"], docs["http_container"], docs["http"], docs["lambda_invoke"]
        ),
        "release": lambda: release_section(docs["release"]),
        "canary_rollback": lambda: canary_rollback_section(docs["canary_rollback"]),
        "demo": lambda: demo_section(docs["demo"]),
    }
    for name, make in makers.items():
        measured = docs[name] or (name == "serving" and docs["http"])
        out.append(
            make()
            if measured
            else (f"## {name}\n\nNot measured: build/bench/{name}.json is missing (run `make bench`).\n", [])
        )
    return out


def render(parts: list[tuple[str, list[str]]], images: str) -> str:
    """The report's markdown, each section followed by its plots linked under `images`."""
    lines = []
    for text, pngs in parts:
        lines.append(text)
        lines += [f"![{p}]({images}{p})\n" for p in pngs]
    return "\n".join(lines)


def update(target: Path, report: str, plots: list[str]) -> None:
    """Replace the marked part of `target` with the report; copy the plots to docs/bench/."""
    text = target.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{target}: no {BEGIN} ... {END} markers to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    for p in plots:
        shutil.copyfile(OUT / p, PLOTS_DIR / p)
    target.write_text(f"{head}{BEGIN}\n{report}\n{END}{tail}")
    print(f"updated {target} and {PLOTS_DIR.relative_to(REPO)}/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", type=Path, help="a markdown file with bench markers to update (BENCHMARKS.md)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    parts = sections()
    plots = [p for _, pngs in parts for p in pngs]
    report = render(parts, images="")  # report.md sits next to the plots
    (OUT / "report.md").write_text(report + "\n")
    print(report)
    print(f"written to {(OUT / 'report.md').relative_to(REPO)} with {len(plots)} plot(s)")
    if args.update:
        target = args.update if args.update.is_absolute() else REPO / args.update
        update(target, render(parts, images=f"{PLOTS_DIR.relative_to(REPO)}/"), plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
