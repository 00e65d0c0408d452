"""The report's plots as PNG (matplotlib, no pyplot state): Pareto front, throughput, trainable parameters, loss curves.

One subplot per (model, GPU) when the results mix them, so no bar or curve is compared across unlike conditions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from peftbench.report_data import (
    METRICS,
    NO_ENGINE,
    Row,
    facet_title,
    facets,
    fmt_cell,
    frontier_points,
    pareto_indices,
    standard_error,
)

DOMINATED = "#b8b8b8"


def method_colours(names) -> dict[str, str]:
    """One colour per method name, the same in every plot and in the HTML."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {
        name: "#{:02x}{:02x}{:02x}".format(*(int(255 * c) for c in cmap(i % 10)[:3]))
        for i, name in enumerate(sorted(names))
    }


pareto_front = pareto_indices  # the front's definition lives with the data (report_data), the plots draw it


def _axes(n: int, width: float = 8.0, height: float = 3.6):
    fig = Figure(figsize=(width, height * n), dpi=100, layout="constrained")
    return fig, [fig.add_subplot(n, 1, i + 1) for i in range(n)]


def several_engines(rows: list[Row], facet) -> bool:
    return len({r.engine for r in rows if r.facet == facet and r.status == "ok"} - {NO_ENGINE}) > 1


def error(row: Row, col: str) -> float:
    """The error bar of a point: the score's standard error, else the seeds' std; 0 when neither is known."""
    se = standard_error(row, col) if col in ("score", "score_delta") else row.values[col][1]
    return 0.0 if math.isnan(se) else se


def pareto_points(rows: list[Row], x: str, y: str) -> list[dict[str, Any]]:
    """The points of the Pareto plot, each keyed by its row's identity, with its label, values, error bars and front
    membership: the PNG and the HTML plot draw from this one list."""
    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.values[x][0]) and not math.isnan(r.values[y][0])]
    out = []
    for facet in dict.fromkeys(r.facet for r in ok):
        pts = [r for r in ok if r.facet == facet]
        front = set(pareto_front([(r.values[x][0], r.values[y][0]) for r in pts], METRICS[x][1], METRICS[y][1]))
        multi = several_engines(rows, facet)
        for i, r in enumerate(pts):
            out.append(
                {
                    "key": r.key,
                    "label": r.name(multi),
                    "facet": facet,
                    "method": r.method,
                    "x": r.values[x][0],
                    "y": r.values[y][0],
                    "xerr": error(r, x),
                    "yerr": error(r, y),
                    "front": i in front,
                }
            )
    return out


def plot_pareto(path: Path, rows: list[Row], x: str, y: str, colours: dict[str, str]) -> bool:
    points = pareto_points(rows, x, y)
    if not points:
        return False
    groups = list(dict.fromkeys(p["facet"] for p in points))
    fig, axes = _axes(len(groups), height=4.6)
    for ax, facet in zip(axes, groups):
        pts = [p for p in points if p["facet"] == facet]
        for p in pts:
            colour = colours.get(p["method"], "C0") if p["front"] else DOMINATED
            if p["xerr"] or p["yerr"]:
                ax.errorbar(
                    [p["x"]],
                    [p["y"]],
                    xerr=[p["xerr"]] if p["xerr"] else None,
                    yerr=[p["yerr"]] if p["yerr"] else None,
                    color=colour,
                    lw=1,
                    capsize=3,
                    zorder=2,
                )
            ax.scatter([p["x"]], [p["y"]], color=colour, s=60, zorder=3, edgecolor="black" if p["front"] else "none")
        annotate_apart(ax, pts)
        xy = [(p["x"], p["y"]) for p in pts]
        draw_front(ax, xy, {i for i, p in enumerate(pts) if p["front"]}, x, y)
        ax.set_title(f"Pareto front — {facet_title(facet)} (grey: dominated; bars: ±1 stderr)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.savefig(path)
    return True


def annotate_apart(ax, pts: list[dict[str, Any]]) -> None:
    """Each point's own label beside it; labels of points close together are stacked downwards so none overlaps
    (placed in display space after the axes know their limits)."""
    ax.get_xlim(), ax.get_ylim()  # settles the autoscaled limits, so transData maps points where they will be drawn
    placed: list[tuple[float, float]] = []
    for p in sorted(pts, key=lambda q: (-q["y"], q["x"])):
        px, py = ax.transData.transform((p["x"], p["y"]))
        dy = 4
        while any(abs(px - ox) < 90 and abs(py + dy - oy) < 11 for ox, oy in placed):
            dy -= 11
        placed.append((px, py + dy))
        ax.annotate(
            p["label"],
            (p["x"], p["y"]),
            textcoords="offset points",
            xytext=(6, dy),
            fontsize=8,
            color="black" if p["front"] else "#777777",
            gid=f"label:{p['key']}",
        )


def draw_front(ax, xy: list[tuple[float, float]], front: set[int], x: str, y: str) -> None:
    """The Pareto front as a dashed line through its points, and axis labels that say which way is better."""
    line = sorted(xy[i] for i in front)
    ax.plot([p[0] for p in line], [p[1] for p in line], color="black", lw=1, ls="--", zorder=2)
    ax.set_xlabel(f"{METRICS[x][0]} ({'higher' if METRICS[x][1] else 'lower'} is better)")
    ax.set_ylabel(f"{METRICS[y][0]} ({'higher' if METRICS[y][1] else 'lower'} is better)")


ENGINE_COLOURS = {"peft": "#4c72b0", "liger": "#dd8452", "unsloth": "#55a868"}


def plot_engines(path: Path, rows: list[Row], x: str = "gpu_allocated_gib_peak", y: str = "tokens_per_s") -> bool:
    """The engines of each method on the memory-vs-speed plane, one panel per (model, GPU, method), with the method's
    Pareto front. Drawn only when the results hold more than one engine."""
    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.values[x][0]) and not math.isnan(r.values[y][0])]
    if len({r.engine for r in ok}) < 2:
        return False
    panels = list(dict.fromkeys((r.facet, r.method) for r in ok))
    fig, axes = _axes(len(panels), width=7.0, height=3.4)
    for ax, (facet, method) in zip(axes, panels):
        pts = [r for r in ok if r.facet == facet and r.method == method]
        xy = [(r.values[x][0], r.values[y][0]) for r in pts]
        front = set(pareto_front(xy, METRICS[x][1], METRICS[y][1]))
        for i, (r, (px, py)) in enumerate(zip(pts, xy)):
            ax.scatter(
                [px],
                [py],
                color=ENGINE_COLOURS.get(r.engine, "C3"),
                s=70,
                zorder=3,
                edgecolor="black" if i in front else "none",
                label=r.engine,
            )
        annotate_apart(
            ax,
            [
                {"key": r.key, "label": r.name(True), "x": px, "y": py, "front": i in front}
                for i, (r, (px, py)) in enumerate(zip(pts, xy))
            ],
        )
        draw_front(ax, xy, front, x, y)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8, loc="best")
        ax.set_title(f"{method}: engines — {facet_title(facet)} (outlined: Pareto front)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.savefig(path)
    return True


def frontier_figure(rows: list[Row], x: str = "gpu_allocated_gib_peak", y: str = "tokens_per_s"):
    """Per method, every configuration measured on the memory-vs-speed plane (report_data.frontier_points), coloured
    by engine, the Pareto front drawn through its points, every point labelled with its own row (engine and plan
    included). None when no method has two configurations."""
    points = frontier_points(rows, x, y)
    if not points:
        return None
    panels = list(dict.fromkeys((p["facet"], p["method"]) for p in points))
    fig, axes = _axes(len(panels), width=9.0, height=3.8)
    for ax, (facet, method) in zip(axes, panels):
        pts = [p for p in points if (p["facet"], p["method"]) == (facet, method)]
        lo, hi = min(p["x"] for p in pts), max(p["x"] for p in pts)
        span = (hi - lo) or max(abs(hi), 1.0) * 0.1
        ax.set_xlim(lo - 0.08 * span, hi + 0.45 * span)  # room for the labels right of the points
        for p in pts:
            ax.scatter(
                [p["x"]],
                [p["y"]],
                color=ENGINE_COLOURS.get(p["engine"], "C3"),
                s=70,
                zorder=3,
                edgecolor="black" if p["front"] else "none",
                label=p["engine"],
                gid=f"point:{p['key']}",
            )
        annotate_apart(ax, pts)
        draw_front(ax, [(p["x"], p["y"]) for p in pts], {i for i, p in enumerate(pts) if p["front"]}, x, y)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8, loc="best", title="engine", title_fontsize=8)
        ax.set_title(
            f"{method}: speed–memory frontier, {facet_title(facet)}\n(outlined, dashed: the Pareto front)", fontsize=10
        )
        ax.grid(alpha=0.3)
    return fig


def plot_frontier(path: Path, rows: list[Row], x: str = "gpu_allocated_gib_peak", y: str = "tokens_per_s") -> bool:
    fig = frontier_figure(rows, x, y)
    if fig is None:
        return False
    fig.savefig(path)
    return True


def bar_layout(rows: list[Row], col: str) -> list[dict[str, Any]]:
    """The bars of one metric, per facet, smallest first: each keyed by its row's identity and carrying its own name
    and value text, so a label can only ever sit on its own bar. The PNG and the HTML bars draw from this list."""
    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.values[col][0]) and r.values[col][0] > 0]
    out = []
    for facet in dict.fromkeys(r.facet for r in ok):
        multi = several_engines(rows, facet)
        for pos, r in enumerate(sorted((r for r in ok if r.facet == facet), key=lambda r: r.values[col][0])):
            std = r.values[col][1]
            out.append(
                {
                    "key": r.key,
                    "facet": facet,
                    "pos": pos,
                    "name": r.name(multi),
                    "method": r.method,
                    "value": r.values[col][0],
                    "err": 0.0 if math.isnan(std) else std,
                    "text": fmt_cell(r, col),
                }
            )
    return out


def bar_figure(rows: list[Row], col: str, colours: dict[str, str], log: bool = False):
    bars = bar_layout(rows, col)
    if not bars:
        return None
    groups = list(dict.fromkeys(b["facet"] for b in bars))
    most = max(sum(b["facet"] == g for b in bars) for g in groups)
    fig, axes = _axes(len(groups), height=max(2.4, 0.38 * most + 1.2))
    for ax, facet in zip(axes, groups):
        mine = [b for b in bars if b["facet"] == facet]
        pos = [b["pos"] for b in mine]  # numeric positions: two bars with one method name never share a slot
        ax.barh(
            pos,
            [b["value"] for b in mine],
            xerr=[b["err"] for b in mine] if any(b["err"] for b in mine) else None,
            color=[colours.get(b["method"], "C0") for b in mine],
        )
        ax.set_yticks(pos, [b["name"] for b in mine], fontsize=8)
        if log:
            ax.set_xscale("log")
        top = max(b["value"] + b["err"] for b in mine)
        ax.set_xlim(right=top * (3 if log else 1.18))  # room for the value text after the longest bar
        for b in mine:
            ax.annotate(
                b["text"],
                (b["value"] + b["err"], b["pos"]),
                textcoords="offset points",
                xytext=(3, -3),
                fontsize=8,
                gid=f"value:{b['key']}",
            )
        ax.set_xlabel(METRICS[col][0] + (" (log scale)" if log else ""))
        ax.set_title(facet_title(facet), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return fig


def plot_bars(path: Path, rows: list[Row], col: str, colours: dict[str, str], log: bool = False) -> bool:
    fig = bar_figure(rows, col, colours, log)
    if fig is None:
        return False
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
        mine = [r for r in runs if (r["model"], r["gpu"]) == facet]
        multi = len({r["engine"] for r in mine}) > 1
        for run in mine:
            curve = by_id[run["run_id"]]["loss_curve"]
            name = f"{run['method_label']} · {run['engine']}" if multi else run["method_label"]
            label = name if name not in seen else None
            seen.add(name)
            ax.plot(
                [p[0] for p in curve],
                [p[1] for p in curve],
                label=label,
                lw=1.4,
                color=colours.get(run["method"], "C0"),
                ls="-" if run["quality_valid"] else "--",
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        if len(seen) <= 16:
            ax.set_title(f"Loss curves — {facet_title(facet)}", fontsize=10)
            ax.legend(fontsize=8, ncol=2)
        else:  # a legend of dozens of entries would squeeze the axes away; the HTML tables name every run
            ax.set_title(f"Loss curves — {facet_title(facet)} ({len(seen)} points; no legend)", fontsize=10)
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
        "frontier": lambda p: plot_frontier(p, rows, memory_col(rows), "tokens_per_s"),
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
