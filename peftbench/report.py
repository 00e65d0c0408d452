"""Leaderboard report: a results folder -> report.md, report.html (self-contained) and the plots as PNG.

`python -m peftbench.report RESULTS_DIR [RESULTS_DIR ...] [--metric score] [--out DIR]`. It reads the JSON records
(the source of the table, and the only place the loss curves live), merges folders (deduplicated by run id), averages
the seeds of one point (mean ± std), ranks by a metric within each model × GPU, marks ties within the combined
standard error, and states the conditions the numbers hold under, all derived from the records. Failed,
out-of-memory, invalid and skipped points stay in as rows, with the options that set them apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peftbench import records
from peftbench.report_data import *  # noqa: F401,F403 - the report's data functions, importable as report.X
from peftbench.report_data import METRICS, leaderboard, load_runs, memory_metric, pick_metric, render_markdown


# -- entry points ---------------------------------------------------------------------------------------------------
def write_report(
    results_dir: str | Path | list, out: str | Path | None = None, metric: str = "score"
) -> dict[str, Path]:
    """Write report.md, report.html and the PNGs; returns their paths by name. Several folders merge into one."""
    from peftbench import report_html, report_plots

    folders = [Path(d) for d in (results_dir if isinstance(results_dir, (list, tuple)) else [results_dir])]
    if out is None and len(folders) > 1:
        raise SystemExit("peftbench-report: several results folders merge into one report: give --out DIR for it.")
    out = Path(out) if out else folders[0]
    out.mkdir(parents=True, exist_ok=True)
    frame, recs = load_runs(folders)
    metric, note = pick_metric(frame, metric)
    rows = leaderboard(frame, metric)
    pareto_x, pareto_y = default_axes(frame, metric)
    images = report_plots.write_plots(out, frame, rows, recs, x=pareto_x, y=pareto_y)
    paths = {"md": out / "report.md", "html": out / "report.html", **images}
    records.atomic_write_text(paths["md"], render_markdown(frame, rows, metric, note, images))
    html = report_html.render(frame, rows, recs, metric, note, images, x=pareto_x, y=pareto_y)
    records.atomic_write_text(paths["html"], html)
    if len(folders) > 1:  # a folder to publish as it is: index.html opens on any static host, the CSVs beside it
        paths["index"] = out / "index.html"
        records.atomic_write_text(paths["index"], html)
        paths["runs_csv"] = out / "runs.csv"
        records.atomic_write_text(paths["runs_csv"], frame.drop(columns=["variant"]).to_csv(index=False))
    for path in paths.values():
        path.chmod(0o644)  # a report is for sharing; the atomic write's temp file was private (0600)
    return paths


def default_axes(frame, metric: str) -> tuple[str, str]:
    """The Pareto plot's default axes: score vs peak memory, else the first pair some ok run has both of (a merged
    report whose scored runs are on a CPU and whose GPU runs have no score still gets a plot)."""
    ok = frame[frame["status"] == "ok"]
    memories = ("gpu_allocated_gib_peak", "gpu_nvml_used_gib_peak", "rss_gib_peak")
    for y in dict.fromkeys(("score", metric, "tokens_per_s")):
        for x in memories:
            if (ok[x].notna() & ok[y].notna()).any():
                return x, y
    return memory_metric(frame), "score" if frame["score"].notna().any() else metric


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peftbench-report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "results_dir",
        nargs="+",
        help="results folders sweeps wrote (hold */record.json); several "
        "merge into one leaderboard (deduplicated by run id, one section per model × GPU)",
    )
    parser.add_argument("--metric", default="score", choices=list(METRICS), help="rank by (default: score)")
    parser.add_argument(
        "--out",
        default=None,
        help="where to write the report (default: RESULTS_DIR; required with "
        "several folders): a static folder to publish as it is",
    )
    args = parser.parse_args(argv)
    for folder in args.results_dir:
        if not Path(folder).is_dir():
            parser.error(f"RESULTS_DIR {folder!r} is not a folder; give the folder a sweep wrote.")
    if len(args.results_dir) > 1 and not args.out:
        parser.error("several results folders merge into one report: give --out DIR for it")
    paths = write_report(args.results_dir, args.out, args.metric)
    print("\n".join(f"{name}: {path}" for name, path in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
