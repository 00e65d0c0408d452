"""The report's plots as PNG (matplotlib, no pyplot state): Pareto front, throughput, trainable parameters, loss curves.

One subplot per (model, GPU) when the results mix them, so no bar or curve is compared across unlike conditions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from peftbench.report import METRICS, Row, facet_title, facets, fmt_number

DOMINATED = "#b8b8b8"


def method_colours(names) -> dict[str, str]:
    """One colour per method name, the same in every plot and in the HTML."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: "#%02x%02x%02x" % tuple(int(255 * c) for c in cmap(i % 10)[:3]) for i, name in enumerate(sorted(names))}


def pareto_front(points: list[tuple[float, float]], higher_x: bool, higher_y: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (at least as good on both, better on one)."""
    sx, sy = (1 if higher_x else -1), (1 if higher_y else -1)
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            sx * ox >= sx * x and sy * oy >= sy * y and (sx * ox > sx * x or sy * oy > sy * y)
            for j, (ox, oy) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _axes(n: int, width: float = 8.0, height: float = 3.6):
    fig = Figure(figsize=(width, height * n), dpi=100, layout="constrained")
    return fig, [fig.add_subplot(n, 1, i + 1) for i in range(n)]


def plot_pareto(path: Path, rows: list[Row], x: str, y: str, colours: dict[str, str]) -> bool:
    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.values[x][0]) and not math.isnan(r.values[y][0])]
    if not ok:
        return False
    groups = list(dict.fromkeys(r.facet for r in ok))
    fig, axes = _axes(len(groups), height=4.2)
    for ax, facet in zip(axes, groups):
        pts = [r for r in ok if r.facet == facet]
        xy = [(r.values[x][0], r.values[y][0]) for r in pts]
        front = set(pareto_front(xy, METRICS[x][1], METRICS[y][1]))
        for i, (r, (px, py)) in enumerate(zip(pts, xy)):
            colour = colours.get(r.method.split(" (")[0], "C0") if i in front else DOMINATED
            ax.scatter([px], [py], color=colour, s=60, zorder=3, edgecolor="black" if i in front else "none")
            label = f"{r.method} [{r.engine}]" if len({o.engine for o in ok}) > 1 else r.method
            ax.annotate(label, (px, py), textcoords="offset points", xytext=(5, 4), fontsize=8,
                        color="black" if i in front else "#888888")  # fmt: skip
        draw_front(ax, xy, front, x, y)
        ax.set_title(f"Pareto front — {facet_title(facet)} (grey: dominated)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.savefig(path)
    return True


def draw_front(ax, xy: list[tuple[float, float]], front: set[int], x: str, y: str) -> None:
    """The Pareto front as a dashed line through its points, and axis labels that say which way is better."""
    line = sorted(xy[i] for i in front)
    ax.plot([p[0] for p in line], [p[1] for p in line], color="black", lw=1, ls="--", zorder=2)
    ax.set_xlabel(f"{METRICS[x][0]} ({'higher' if METRICS[x][1] else 'lower'} is better)")
    ax.set_ylabel(f"{METRICS[y][0]} ({'higher' if METRICS[y][1] else 'lower'} is better)")


ENGINE_COLOURS = {"peft": "#4c72b0", "liger": "#dd8452", "unsloth": "#55a868"}


def engine_label(row: Row) -> str:
    """`unsloth`, or `peft · profile=fast` when one method ran in variants under one engine."""
    base = row.method.split(" (")[0]
    return row.engine + (f" · {row.method[len(base) + 2:-1]}" if row.method != base else "")


def plot_engines(path: Path, rows: list[Row], x: str = "gpu_allocated_gib_peak", y: str = "tokens_per_s") -> bool:
    """The engines of each method on the memory-vs-speed plane, one panel per (model, GPU, method), with the method's
    Pareto front. Drawn only when the results hold more than one engine."""
    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.values[x][0]) and not math.isnan(r.values[y][0])]
    if len({r.engine for r in ok}) < 2:
        return False
    panels = list(dict.fromkeys((r.facet, r.method.split(" (")[0]) for r in ok))
    fig, axes = _axes(len(panels), width=7.0, height=3.4)
    for ax, (facet, method) in zip(axes, panels):
        pts = [r for r in ok if r.facet == facet and r.method.split(" (")[0] == method]
        xy = [(r.values[x][0], r.values[y][0]) for r in pts]
        front = set(pareto_front(xy, METRICS[x][1], METRICS[y][1]))
        for i, (r, (px, py)) in enumerate(zip(pts, xy)):
            ax.scatter([px], [py], color=ENGINE_COLOURS.get(r.engine, "C3"), s=70, zorder=3,
                       edgecolor="black" if i in front else "none", label=r.engine)  # fmt: skip
            ax.annotate(engine_label(r), (px, py), textcoords="offset points", xytext=(5, 4), fontsize=8,
                        color="black" if i in front else "#777777")  # fmt: skip
        draw_front(ax, xy, front, x, y)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8, loc="best")
        ax.set_title(f"{method}: engines — {facet_title(facet)} (outlined: Pareto front)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.savefig(path)
    return True


def plot_bars(path: Path, rows: list[Row], col: str, colours: dict[str, str], log: bool = False) -> bool:
    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.values[col][0]) and r.values[col][0] > 0]
    if not ok:
        return False
    groups = list(dict.fromkeys(r.facet for r in ok))
    fig, axes = _axes(len(groups), height=max(2.4, 0.35 * max(sum(r.facet == g for r in ok) for g in groups) + 1.2))
    for ax, facet in zip(axes, groups):
        pts = sorted((r for r in ok if r.facet == facet), key=lambda r: r.values[col][0])
        means = [r.values[col][0] for r in pts]
        errs = [0 if math.isnan(r.values[col][1]) else r.values[col][1] for r in pts]
        ax.barh([r.method for r in pts], means, xerr=errs if any(errs) else None,
                color=[colours.get(r.method.split(" (")[0], "C0") for r in pts])  # fmt: skip
        if log:
            ax.set_xscale("log")
        for i, value in enumerate(means):
            ax.annotate(fmt_number(value, col), (value, i), textcoords="offset points", xytext=(3, -3), fontsize=8)
        ax.set_xlabel(METRICS[col][0] + (" (log scale)" if log else ""))
        ax.set_title(facet_title(facet), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(path)
    return True


def plot_losses(path: Path, frame, recs: list[dict[str, Any]], colours: dict[str, str]) -> bool:
    """Every run's training-loss curve; random-init runs dashed (their loss says nothing about quality)."""
    by_id = {rec["run_id"]: rec for rec in recs}
    runs = [r for _, r in frame.iterrows() if by_id.get(r["run_id"], {}).get("loss_curve")]
    if not runs:
        return False
    groups = [f for f in facets(frame) if any((r["model"], r["gpu"]) == f for r in runs)]
    fig, axes = _axes(len(groups), height=4.0)
    for ax, facet in zip(axes, groups):
        seen = set()
        for run in (r for r in runs if (r["model"], r["gpu"]) == facet):
            curve = by_id[run["run_id"]]["loss_curve"]
            label = run["method_label"] if run["method_label"] not in seen else None
            seen.add(run["method_label"])
            ax.plot([p[0] for p in curve], [p[1] for p in curve], label=label, lw=1.4,
                    color=colours.get(run["method"], "C0"), ls="-" if run["quality_valid"] else "--")  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.set_title(f"Loss curves — {facet_title(facet)}", fontsize=10)
        ax.legend(fontsize=8, ncol=2)
        ax.grid(alpha=0.3)
    fig.savefig(path)
    return True


def memory_col(rows: list[Row]) -> str:
    for col in ("gpu_allocated_gib_peak", "gpu_nvml_used_gib_peak", "rss_gib_peak"):
        if any(r.status == "ok" and not math.isnan(r.values[col][0]) for r in rows):
            return col
    return "gpu_allocated_gib_peak"


def write_plots(out: Path, frame, rows: list[Row], recs: list[dict[str, Any]], x: str, y: str) -> dict[str, Path]:
    """Write the PNGs that have data; returns {name: path} of those written."""
    colours = method_colours(set(frame["method"]))
    plots = {
        "pareto": lambda p: plot_pareto(p, rows, x, y, colours),
        "engines": lambda p: plot_engines(p, rows, memory_col(rows), "tokens_per_s"),
        "throughput": lambda p: plot_bars(p, rows, "tokens_per_s", colours),
        "trainable_params": lambda p: plot_bars(p, rows, "trainable_params", colours, log=True),
        "loss_curves": lambda p: plot_losses(p, frame, recs, colours),
    }
    written = {}
    for name, draw in plots.items():
        path = out / f"{name}.png"
        if draw(path):
            written[name] = path
        else:
            path.unlink(missing_ok=True)  # a stale plot from an earlier report must not sit beside this one
    return written
