"""What a sweep prints: one progress line and one result line per point, a ranked final table, and no library noise.

Library noise is filtered where it starts (warning filters and the libraries' log levels), never by filtering
output: peftbench's own messages and every error still print. The final table is the report's leaderboard (same
ranks, ties and number formats), drawn with `rich` so its columns line up whatever the terminal.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

LAST: dict[str, Any] = {}  # the record of the point this process ran last (set by __main__.app)
PREFIX = "peftbench"

# (category, message regex): deprecation notices about the libraries' own internals, which a user cannot act on
NOISE = [
    (
        FutureWarning,
        r".*is deprecated and will be removed in (v|version )\d",
    ),  # transformers 5 renames (gradient_checkpointing, past_key_values)
    (DeprecationWarning, r".*"),
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator is found"),  # torch DataLoader on a CPU
    (UserWarning, r".*torch_dtype.* is deprecated"),
]
QUIET_LOGGERS = (
    "transformers",
    "trl",
    "lm_eval",
    "lm-eval",
    "datasets",
    "accelerate",
    "peft",
    "urllib3",
    "filelock",
    "huggingface_hub",
    "sqlitedict",
    "evaluate",
)


def quiet_libraries() -> None:
    """Warning filters and log levels for the libraries peftbench drives: their warnings and errors still show."""
    for category, message in NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # transformers keeps its own verbosity beside its logger's level
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
        if not sys.stderr.isatty():  # off a terminal a bar is a line per update: "Loading weights", datasets' maps
            import datasets

            hf_logging.disable_progress_bar()
            datasets.disable_progress_bars()
    except ImportError:
        pass


def say(message: str) -> None:
    """One line of peftbench's own, on stdout, flushed (so it lands in order with everything else). Through
    records.scrub, as every other output: a point's error line can quote a secret typed into an option."""
    from peftbench.records import scrub

    print(f"{PREFIX}: {scrub(message)}", flush=True)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def result_line(record: dict[str, Any]) -> str:
    """status, score, tokens/s, peak memory and time of one point; or its status and error."""
    from peftbench.report_data import fmt_number

    status = record.get("status", "?")
    name = record.get("method", "?") + (f" [{record['engine']}]" if record.get("engine") not in (None, "peft") else "")
    if status != "ok":
        error = next((ln.strip() for ln in str(record.get("error") or "").splitlines() if ln.strip()), "no message")
        return f"{name}: {status.upper() if status == 'oom' else status} · {error[:300]}"
    parts = [f"{name}: ok"]
    score = record.get("score")
    if record.get("quality_valid") is False:
        parts.append("score n/a (random weights)")
    elif isinstance(score, (int, float)):
        stderr = record.get("score_stderr")
        parts.append(f"score {score:.4g}" + (f" ± {stderr:.2g}" if isinstance(stderr, (int, float)) else ""))
    if isinstance(record.get("tokens_per_s"), (int, float)):
        parts.append(f"{fmt_number(record['tokens_per_s'], 'tokens_per_s')} tokens/s")
    for col, where in (("gpu_allocated_gib_peak", "GPU"), ("rss_gib_peak", "RSS")):
        value = record.get(col)
        if isinstance(value, (int, float)) and not math.isnan(value):
            parts.append(f"peak {value:,.2f} GiB {where}")
            break
    if isinstance(record.get("time_total_s"), (int, float)):
        parts.append(f"{record['time_total_s']:.1f} s")
    return " · ".join(parts)


def final_table(results_dir: Path, file=None) -> None:
    """The report's leaderboard as an aligned terminal table: ranked, ties marked `=k`, failures with their error."""
    from rich.console import Console
    from rich.table import Table

    from peftbench import report_data as report

    frame, _ = report.load_runs(results_dir)
    metric, note = report.pick_metric(frame, "score")
    rows = report.leaderboard(frame, metric)
    cols = [
        c
        for c in (
            "score",
            "score_delta",
            "gpu_allocated_gib_peak",
            "rss_gib_peak",
            "tokens_per_s",
            "trainable_pct",
            "adapter_mb",
            "time_train_s",
        )
        if c in report.shown_columns(rows)
    ]
    console = Console(file=file or sys.stdout, width=160, highlight=False, soft_wrap=False)
    console.print(report.ranking_text(metric, note))
    for facet in report.facets(frame):
        mine = [r for r in rows if r.facet == facet]
        failed = any(r.status != "ok" for r in mine)
        table = Table(show_edge=False, pad_edge=False)
        for name in ("rank", "method", "engine", "status"):
            table.add_column(name, no_wrap=True)
        for col in cols:
            table.add_column(report.METRICS[col][0], justify="right", no_wrap=True)
        if failed:
            table.add_column("why it did not finish", overflow="fold", max_width=70)
        for row in mine:
            cells = [report.fmt_cell(row, c) if row.status == "ok" else "" for c in cols]
            if failed:
                cells.append(report.did_not_finish(row).split(" · ", 1)[-1] if row.status != "ok" else "")
            table.add_row(report.rank_text(row), row.label, row.engine, report.status_text(row), *cells)
        console.print(f"\n{report.facet_title(facet)}")
        console.print(table)
    if any(r.tied_with is not None for r in rows):
        console.print(report.TIE_NOTE)


def quiet_trainer(trainer) -> None:
    """Off a terminal (a log file, CI, a SLURM job) the Trainer's tqdm bars and printed log dicts are noise: drop its
    progress callback; the progress and result lines above say how far the sweep is. On a terminal they stay."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if not sys.stderr.isatty():
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)


def plan_lines(rows: list[dict[str, Any]], where: str) -> list[str]:
    """The planner's block: per point, the predicted peak of each checkpointing plan (GiB; `*` the chosen one), the
    budget, whether the chosen plan fits (else the plan that would), and the measured tokens/s of the chosen plan
    where the calibration has one (peftbench.calibration). `peftbench plan` prints it; so does a sweep on a GPU."""
    from peftbench.memory import PLANS

    if not rows:
        return []
    first = rows[0]
    lines = [
        f"{PREFIX}: plan for {where}; {first['model']}, seq {first['seq_len']} x micro-batch {first['micro_batch']}"
        f" (predicted peak GiB per checkpointing plan, * = chosen)"
    ]
    plans = list(dict.fromkeys([*PLANS, *(r["choice"].plan for r in rows if r["choice"].plan)]))
    width = max(len("point"), *(len(r["label"]) for r in rows))
    cell = {p: max(11, len(p) + 1) for p in plans}  # a column as wide as its plan's name
    chosen_width = max(11, *(len(r["choice"].plan or "engine's") for r in rows))
    header = (
        f"  {'point':<{width}}  "
        + "  ".join(f"{p:>{cell[p]}}" for p in plans)
        + f"   budget  {'chosen':<{chosen_width}}  fits  tokens/s"
    )
    lines.append(header)
    for row in rows:
        choice = row["choice"]
        cells = []
        for plan in plans:
            value = choice.every_plan.get(plan, choice.predicted_plans.get(plan))
            text = "-" if value is None else f"{value:.2f}" + ("*" if plan == choice.plan else " ")
            cells.append(f"{text:>{cell[plan]}}")
        budget = "-" if choice.budget_gib is None else f"{choice.budget_gib:.2f}"
        fits = {True: "yes", False: "NO", None: "n/a"}[choice.fits]
        chosen = choice.plan or "engine's"
        if row["rate"] is not None:
            rate = f"{row['rate'].tokens_per_s:,.0f} (measured, results/{row['rate'].source})"
        else:
            rate = "no calibration"
        lines.append(
            f"  {row['label']:<{width}}  "
            + "  ".join(cells)
            + f"  {budget:>7}  {chosen:<{chosen_width}}  {fits:>4}  {rate}"
        )
        if choice.fits is False:
            lines.append(f"  {'':<{width}}  -> {choice.warning()}")
        elif choice.fits is None:
            lines.append(f"  {'':<{width}}  -> {choice.note}")
    return lines
