"""The report's plots (bench/report.py): PNGs under build/bench/, drawn with matplotlib's object API."""

from __future__ import annotations

from typing import Any

from bench.common import OUT

MIB_PER_GIB = 2**10
# How the report names each implementation of the features benchmark.
IMPL_LABELS = {
    "job": "features job (Spark)",
    "copy": "bare Spark CSV→parquet copy",
    "pandas": "pandas/pyarrow, one process",
}


def figure(width: float, height: float) -> Any:
    # The object API with an explicit Agg canvas: no pyplot state, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, name: str) -> str:
    fig.savefig(OUT / name, dpi=100, metadata={"Software": None})
    return name


def features_plot(scales: dict[str, Any], goal_gib: float) -> str:
    fig = figure(10, 4)
    wall, mem = fig.subplots(1, 2)
    for impl, label in IMPL_LABELS.items():
        points = [(s["rows"], s[impl]) for s in scales.values() if "wall_s" in s.get(impl, {})]
        if not points:
            continue
        xs = [p[0] for p in points]
        wall.plot(xs, [p[1]["wall_s"]["median"] for p in points], marker="o", label=label)
        mem.plot(xs, [p[1]["peak_pss_mib"] / MIB_PER_GIB for p in points], marker="o", label=label)
    wall.set(xscale="log", yscale="log", xlabel="rows", ylabel="wall time, s (median)", title="Wall time")
    mem.axhline(goal_gib, linestyle="--", color="grey", label=f"goal for the job at x1000: {goal_gib:g} GiB")
    mem.set(xscale="log", xlabel="rows", ylabel="peak PSS, GiB", title="Peak memory, whole process tree")
    for ax in (wall, mem):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, "features_scaling.png")


def scoring_plot(variants: dict[str, Any]) -> str:
    names = list(variants)
    fig = figure(9, 0.45 * len(names) + 1)
    ax = fig.subplots()
    colors = ["tab:blue" if "one process" not in n else "tab:grey" for n in names]
    ax.barh(names, [variants[n]["rows_per_s"] for n in names], color=colors)
    ax.invert_yaxis()
    ax.set(xscale="log", xlabel="rows/s (median; log scale)", title="Batch scoring: Spark UDFs vs one process (grey)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return save(fig, "scoring.png")


def demo_plot(doc: dict[str, Any]) -> str:
    tasks = doc["tasks_s"]
    fig = figure(8, 0.35 * len(tasks) + 1)
    ax = fig.subplots()
    names = list(tasks)
    ax.barh(names, [tasks[n]["median"] for n in names], color="tab:blue")
    ax.invert_yaxis()
    ax.set(xlabel="seconds (median)", title="make demo: time per task")
    ax.grid(True, axis="x", alpha=0.3)
    return save(fig, "demo_tasks.png")
