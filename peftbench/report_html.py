"""report.html: one file that opens from disk with nothing else (no server, no network).

Static plots are the matplotlib PNGs as base64 data URIs; the Pareto plot, whose two axes the reader picks, is an
inline SVG drawn by ~150 lines of vanilla JS from JSON embedded in the page. Why no plotting library: inlining one
(plotly is ~3.5 MB) would buy little over a scatter, a frontier line and sortable tables, and could not break offline.
"""

from __future__ import annotations

import base64
import functools
import html
import importlib.resources
import json
import math
from pathlib import Path
from typing import Any

from peftbench.report_data import (
    METRICS,
    QUALITY,
    TIE_NOTE,
    Row,
    conditions,
    did_not_finish,
    facet_title,
    facets,
    fmt_cell,
    fmt_number,
    folklore,
    plain,
    rank_text,
    ranking_text,
    shown_columns,
    sources_text,
    status_text,
    what_wins,
)
from peftbench.report_plots import DOMINATED, bar_layout, error, method_colours, several_engines

FILTERS = (("model", "model"), ("gpu", "GPU"), ("method", "method"), ("engine", "engine"), ("status", "status"))
# Shown by default: what a reader compares first; the rest sit behind "all columns" so the table fits a laptop.
PRIMARY = ("score", "score_delta", "gpu_allocated_gib_peak", "tokens_per_s", "trainable_pct", "adapter_mb")
HELP = {
    "score": "the evaluation's score after training (higher is better)",
    "score_stderr": "the evaluation's standard error of the score (lm-eval's bootstrap/binomial stderr)",
    "score_delta": "score minus the untrained base model's score on the same tasks",
    "gpu_allocated_gib_peak": "peak memory held by tensors (torch.cuda.max_memory_allocated), GiB",
    "gpu_reserved_gib_peak": "peak memory PyTorch's caching allocator reserved, GiB",
    "gpu_nvml_used_gib_peak": "peak device memory NVML saw in use (includes the CUDA context), GiB",
    "rss_gib_peak": "peak resident host memory of the process, GiB",
    "tokens_per_s": "real (non-padding) tokens per second over the steady-state steps (warm-up left out)",
    "samples_per_s": "training examples per second over the steady-state steps",
    "step_time_median_s": "median wall time of one optimizer step",
    "mfu": "model FLOPs utilisation: 6·N·tokens/s over the GPU's peak bf16 FLOP/s",
    "trainable_pct": "trainable parameters as a % of all parameters",
    "trainable_params": "number of parameters the optimizer updates",
    "adapter_mb": "size on disk of what training saved (adapter, or the trained tensors), MB",
    "time_train_s": "wall time of trainer.train()",
    "train_loss": "training loss at the last logged step",
    "eval_loss": "loss on the held-out split after training",
}
CAPTIONS = {
    "pareto": "Pareto front, default axes (static PNG of the plot above)",
    "engines": "Engines per method on the memory-vs-speed plane (outlined: the method's Pareto front)",
    "frontier": "Speed–memory frontier per method: every configuration measured (profiles, checkpointing plans, "
    "engines), the Pareto front dashed",
    "loss_curves": "Training loss of every run (dashed: random-init weights)",
}
BARS = {
    "tokens_per_s": ("Throughput: real (non-padding) tokens per second over steady-state steps", False),
    "trainable_params": ("Trainable parameters (log scale)", True),
}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def num(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def row_attrs(model: str, gpu: str, method: str, engine: str, status: str, key: str = "") -> str:
    return (
        f'data-model="{esc(model)}" data-gpu="{esc(gpu)}" data-method="{esc(method)}" '
        f'data-engine="{esc(engine)}" data-status="{esc(status)}" data-key="{esc(key)}"'
    )


def td(text: str, sort: Any = None, cls: str = "") -> str:
    sort = text if sort is None else sort
    return f'<td{f" class={chr(34)}{cls}{chr(34)}" if cls else ""} data-v="{esc(sort)}">{esc(text)}</td>'


def th(text: str, col: str = "", cls: str = "") -> str:
    title = f' title="{esc(HELP[col])}"' if col in HELP else ""
    return (
        f'<th{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}{title} data-col="{esc(col or text)}">{esc(text)}</th>'
    )


def error_cell(text: str, span: int, error: str = "") -> str:
    """A run that did not finish has no numbers: what it was, and its message, span their columns."""
    return f'<td class="err" colspan="{span}" data-v="" title="{esc(error)}">{esc(text)}</td>'


def secondary(col: str) -> str:
    return "" if col in PRIMARY else "sec"


def csv_attr(values: list[Any]) -> str:
    return esc(json.dumps([v if not (isinstance(v, float) and math.isnan(v)) else None for v in values]))


BOARD_CSV_HEAD = ["rank", "model", "gpu", "method", "label", "engine", "status", "seeds"]


def leaderboard_table(rows: list[Row], cols: list[str], facet: tuple[str, str]) -> str:
    """One model × GPU's leaderboard. Every row carries its identity (data-key) and its raw values for the CSV."""
    head = [th("rank"), th("method"), th("engine"), th("status"), th("seeds")]
    head += [th(METRICS[c][0], c, secondary(c)) for c in cols] + [th("source", "", "sec")]
    csv_head = BOARD_CSV_HEAD + [p for c in cols for p in (c, f"{c}_std")] + ["error", "run_ids", "source"]
    out = [f'<table class="sortable board" data-csv-head="{csv_attr(csv_head)}"><thead><tr>']
    out += head + ["</tr></thead><tbody>"]
    for row in (r for r in rows if r.facet == facet):
        vals = [None if c in QUALITY and not row.quality_valid else v for c in cols for v in row.values[c]]
        raw = [
            rank_text(row),
            row.model,
            row.gpu,
            row.method,
            row.label,
            row.engine,
            row.status,
            row.n,
            *vals,
            row.error,
            " ".join(row.run_ids),
            "; ".join(row.sources),
        ]
        out.append(
            f'<tr class="st-{esc(row.status)}" '
            f"{row_attrs(row.model, row.gpu, row.method, row.engine, row.status, row.key)} "
            f'data-csv="{csv_attr(raw)}">'
        )
        tie = "tie" if row.tied_with is not None else ""
        out.append(td(rank_text(row), row.rank if row.rank else "", tie))
        out += [td(row.label, cls="label"), td(row.engine), td(status_text(row)), td(str(row.n), row.n)]
        if row.status != "ok":
            out.append(error_cell(did_not_finish(row), len([c for c in cols if not secondary(c)]), row.error))
            out += ['<td class="sec" data-v=""></td>' for c in cols if secondary(c)]
            out.append(td("; ".join(row.sources), cls="sec") + "</tr>")
            continue
        for col in cols:
            mean = row.values[col][0]
            hide = col in QUALITY and not row.quality_valid
            out.append(
                td(fmt_cell(row, col), "" if hide or math.isnan(mean) else mean, f"{secondary(col)} c-{col}".strip())
            )
        out.append(td("; ".join(row.sources), cls="sec") + "</tr>")
    return "".join(out) + "</tbody></table>"


def runs_table(frame, cols: list[str]) -> str:
    head = ["run id", "model", "GPU", "method", "engine", "seed", "status"] + [METRICS[c][0] for c in cols]
    out = ['<table id="runs" class="sortable"><thead><tr>']
    out += [th(h, c) for h, c in zip(head, [""] * 7 + cols)] + [th("source"), "</tr></thead><tbody>"]
    for _, run in frame.iterrows():
        out.append(
            f'<tr class="st-{esc(run["status"])}" '
            f"{row_attrs(run['model'], run['gpu'], run['method'], run['engine'], run['status'])}>"
        )
        seed = run.get("seed")
        seed = "" if seed is None or seed != seed else plain(seed)
        out += [td(run["run_id"]), td(run["model"]), td(run["gpu"]), td(run["method_label"]), td(run["engine"])]
        out += [td(seed), td(run["status"])]
        if run["status"] != "ok":
            error = str(run.get("error") or "") if run.get("error") == run.get("error") else ""
            text = (f"at {run['apart']} · " if run.get("apart") else "") + (
                error.strip().splitlines() or ["(no message recorded)"]
            )[0][:300]
            out.append(error_cell(text, len(cols), error) + td(run["source"]) + "</tr>")
            continue
        for col in cols:
            value = run[col]
            text = "n/a†" if col in QUALITY and not run["quality_valid"] else fmt_number(value, col)
            out.append(td(text, "" if value != value else value))
        out.append(td(run["source"]) + "</tr>")
    return "".join(out) + "</tbody></table>"


def filter_bar(frame) -> str:
    parts = ['<label>search <input id="query" type="search" placeholder="e.g. lora fast" size="16"></label>']
    for key, label in FILTERS:
        options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in sorted(set(frame[key].astype(str))))
        parts.append(
            f'<label>{esc(label)} <select data-filter="{key}"><option value="">all</option>{options}</select></label>'
        )
    parts.append('<label><input type="checkbox" id="allcols"> all columns</label>')
    return '<div class="filters">' + "".join(parts) + ' <span id="shown"></span></div>'


def pareto_controls(cols: list[str], x: str, y: str) -> str:
    def select(axis: str, chosen: str) -> str:
        opts = "".join(
            f'<option value="{c}"{" selected" if c == chosen else ""}>{esc(METRICS[c][0])}</option>' for c in cols
        )
        return (
            f'<label>{axis} <select id="pareto-{axis}">{opts}</select></label> '
            f'<label><input type="checkbox" id="pareto-log{axis}"> log</label> '
        )

    return '<div class="filters">' + select("x", x) + select("y", y) + "</div>"


def page_data(frame, rows: list[Row], cols: list[str]) -> dict[str, Any]:
    """What the page's plots read: one point per ok leaderboard row (keyed by identity, with its own label, values,
    error bars and value texts), the bars of each bar chart, and each metric's label and direction."""
    colours = method_colours(set(frame["method"]))
    points = []
    for row in rows:
        if row.status != "ok":
            continue
        shown = [c for c in cols if not (c in QUALITY and not row.quality_valid)]
        points.append(
            {
                "key": row.key,
                "label": row.name(several_engines(rows, row.facet)),
                "model": row.model,
                "gpu": row.gpu,
                "method": row.method,
                "engine": row.engine,
                "status": row.status,
                "facet": facet_title(row.facet),
                "colour": colours.get(row.method, "#1f77b4"),
                "n": row.n,
                "values": {c: num(row.values[c][0]) for c in shown},
                "errs": {c: error(row, c) for c in shown},
                "texts": {c: fmt_cell(row, c) for c in shown},
            }
        )
    bars = {}
    for col in BARS:
        bars[col] = [
            {**b, "facet": facet_title(b["facet"]), "colour": colours.get(b["method"], "#1f77b4")}
            for b in bar_layout(rows, col)
        ]
    metrics = {c: {"label": METRICS[c][0], "higher": METRICS[c][1]} for c in cols}
    return {
        "points": points,
        "bars": bars,
        "metrics": metrics,
        "dominated": DOMINATED,
        "barTitles": {c: t for c, (t, _) in BARS.items()},
        "barLog": {c: log for c, (_, log) in BARS.items()},
    }


def folklore_html(frame, rows: list[Row]) -> str:
    claims = folklore(frame, rows)
    if not claims:
        return ""
    items = []
    for claim, figure, source, said in claims:
        here = "".join(f"<li>{esc(s)}</li>" for s in said)
        items.append(
            f"<li><b>{esc(claim)}</b> <span class='muted'>(usual figure: {esc(figure)}; source: "
            f"{esc(source)})</span>. Here:<ul>{here}</ul></li>"
        )
    return (
        "<h2>Folklore, measured</h2><p class='muted'>Common claims beside what these rows say, only the claims some "
        "row here speaks to (GB = 10⁹ bytes, as the claims count).</p><ul class='folk'>" + "".join(items) + "</ul>"
    )


def ranked_note(rows: list[Row], facet: tuple[str, str]) -> str:
    used = next((r.ranked_by for r in rows if r.facet == facet and r.ranked_by), "")
    if not used:
        return "Not ranked: no run here has a value to rank by."
    label, higher = METRICS[used]
    return f"Ranked by {label} ({'higher' if higher else 'lower'} is better); =k: tied with rank k."


def facet_section(frame, rows: list[Row], cols: list[str], facet: tuple[str, str]) -> str:
    sub = frame[(frame["model"] == facet[0]) & (frame["gpu"] == facet[1])]
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in conditions(sub))
    summary = esc(what_wins(rows, facet)).replace("**", "")
    return (
        f"<section class='facet' data-facet='{esc(facet_title(facet))}'><h3>{esc(facet_title(facet))}</h3>"
        f"<p class='wins'><b>What wins here.</b> {summary}</p>"
        + f"<p class='muted'>{esc(ranked_note(rows, facet))}</p>"
        f"<div class='scroll'>{leaderboard_table(rows, cols, facet)}</div>"
        f"<details class='cond'><summary>Conditions these numbers hold under</summary><dl>{items}</dl></details>"
        "</section>"
    )


def page_title(frame) -> str:
    folders = frame.attrs.get("folders") or list(dict.fromkeys(str(v).split(" (")[0] for v in frame["source"]))
    if len(folders) > 1:
        return f"{len(folders)} results folders merged"
    return ", ".join(dict.fromkeys(frame.get("run_name", frame["model"]).fillna("?").astype(str)))


def render(frame, rows: list[Row], recs, metric: str, note: str, images: dict[str, Path], x: str, y: str) -> str:
    cols = shown_columns(rows)
    plot_cols = [c for c in cols if c != "score_stderr"]
    x = x if x in plot_cols else (plot_cols[0] if plot_cols else x)
    y = y if y in plot_cols else (plot_cols[-1] if plot_cols else y)
    runs_csv = frame.drop(columns=["variant"]).to_csv(index=False).encode()
    data = json.dumps(page_data(frame, rows, plot_cols), allow_nan=False).replace("</", "<\\/")
    boards = "".join(facet_section(frame, rows, cols, facet) for facet in facets(frame))
    imgs = []
    for name in ("frontier", "engines", "loss_curves"):
        if name in images:
            src = data_uri(Path(images[name]).read_bytes(), "image/png")
            imgs.append(
                f'<figure><img alt="{esc(name)}" src="{src}"><figcaption>{esc(CAPTIONS[name])}</figcaption></figure>'
            )
    missing = [n for n in ("pareto", "throughput", "trainable_params", "loss_curves") if n not in images]
    static_pareto = ""
    if "pareto" in images:
        src = data_uri(Path(images["pareto"]).read_bytes(), "image/png")
        static_pareto = (
            f'<details><summary>static PNG of the default axes</summary><img alt="pareto" src="{src}"></details>'
        )
    random_note = ""
    if (~frame["quality_valid"]).any():
        random_note = (
            "<p>† random-init weights: score and losses measure nothing about quality, so they are left out.</p>"
        )
    bar_svgs = "".join(
        f'<figure><svg class="bars" id="bars-{c}" width="100%" role="img" aria-label="{esc(t)}"></svg>'
        f"<figcaption>{esc(t)}</figcaption></figure>"
        for c, (t, _) in BARS.items()
    )
    return template("report.html").format(
        title=esc(f"peftbench leaderboard — {page_title(frame)}"),
        n_runs=len(frame),
        sources=esc(sources_text(frame).replace("`", "")),
        ranking=esc(ranking_text(metric, note)),
        tie_note=esc(TIE_NOTE),
        random_note=random_note,
        filters=filter_bar(frame),
        runs_csv=data_uri(runs_csv, "text/csv"),
        boards=boards,
        folklore=folklore_html(frame, rows),
        runs=runs_table(frame, cols),
        pareto_controls=pareto_controls(plot_cols, x, y),
        static_pareto=static_pareto,
        bars=bar_svgs,
        plots="".join(imgs),
        missing=esc(f"No data for: {', '.join(missing)}." if missing else ""),
        data=data,
        css=template("report.css"),
        js=template("report.js"),
    )


@functools.cache
def template(name: str) -> str:
    """A file of peftbench/templates/ (shipped in the wheel as package data): the page, its stylesheet, its script."""
    return importlib.resources.files("peftbench").joinpath("templates").joinpath(name).read_text(encoding="utf-8")
