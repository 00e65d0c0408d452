"""Leaderboard report: a results folder -> report.md, report.html (self-contained) and the plots as PNG.

`python -m peftbench.report RESULTS_DIR [--metric score] [--out DIR]`. It reads the JSON records (the source of the
table, and the only place the loss curves live), averages the seeds of one point (mean ± std), ranks by a metric and
states the conditions the numbers hold under. Failed, out-of-memory, invalid and skipped points stay in as rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench import records

log = logging.getLogger("peftbench")

# column -> (label, higher is better). The order is the leaderboard's column order.
METRICS: dict[str, tuple[str, bool]] = {
    "score": ("score", True),
    "score_stderr": ("score stderr", False),
    "score_delta": ("Δ score vs base", True),
    "gpu_allocated_gib_peak": ("peak GPU alloc (GiB)", False),
    "gpu_reserved_gib_peak": ("peak GPU reserved (GiB)", False),
    "gpu_nvml_used_gib_peak": ("peak GPU device (GiB)", False),
    "rss_gib_peak": ("peak RSS (GiB)", False),
    "tokens_per_s": ("tokens/s", True),
    "samples_per_s": ("samples/s", True),
    "step_time_median_s": ("median step (s)", False),
    "mfu": ("MFU", True),
    "trainable_pct": ("trainable %", False),
    "trainable_params": ("trainable params", False),
    "adapter_mb": ("adapter (MB)", False),
    "time_train_s": ("train time (s)", False),
    "train_loss": ("train loss", False),
    "eval_loss": ("eval loss", False),
}  # fmt: skip
# Meaningless on random-init weights (quality_valid=False): blanked, never shown as numbers.
QUALITY = ("score", "score_stderr", "score_delta", "train_loss", "eval_loss")
# The ranking metric when the asked-for one has no values (e.g. no evaluation ran yet).
FALLBACK = ("score", "eval_loss", "tokens_per_s", "time_train_s")
STATUS_ORDER = {"ok": 0, "oom": 1, "failed": 2, "invalid": 3, "skipped": 4}
GROUP_KEYS = ("model", "gpu", "engine", "method", "variant")


@dataclass
class Row:
    """One leaderboard line: the seeds of one point averaged, or one run that did not finish ok."""

    model: str
    gpu: str
    engine: str
    method: str  # display label: the method name, plus what differs when one method ran in several variants
    status: str
    n: int
    values: dict[str, tuple[float, float]]  # column -> (mean, std over seeds; nan with one seed)
    quality_valid: bool = True
    rank: int | None = None
    error: str = ""
    run_ids: list[str] = field(default_factory=list)

    @property
    def facet(self) -> tuple[str, str]:
        return (self.model, self.gpu)


# -- loading --------------------------------------------------------------------------------------------------------
UNKNOWN_DEVICE = "device not recorded"


def gpu_label(name: Any, count: Any) -> str:
    if not isinstance(name, str) or not name:
        recorded = isinstance(count, (int, float)) and count == count
        return "CPU" if recorded else UNKNOWN_DEVICE
    count = int(count) if isinstance(count, (int, float)) and count == count and count else 1
    return f"{name} ×{count}" if count > 1 else name


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(value, sort_keys=True, default=str)}


def variant_configs(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record's config without what does not define the point (seed, run options): seeds of one point match."""
    out = []
    for rec in recs:
        flat = flatten(rec.get("config") or {})
        out.append({k: v for k, v in flat.items() if not k.startswith("run.") and k != "train.seed"})
    return out


def load_runs(results_dir: str | Path):
    """The runs table (one row per record) with the columns the report needs, and the records (loss curves)."""
    import pandas as pd

    recs = records.read_records(results_dir)
    if not recs:
        raise SystemExit(
            f"peftbench-report: no records under {results_dir} (expected */{records.RECORD}). "
            "Give the results folder a sweep wrote, e.g. results/embedded-default."
        )
    frame = records.to_frame(recs).reset_index(drop=True)
    for col in ("status", "method", "engine", "model"):
        if col not in frame:
            frame[col] = "ok" if col == "status" else "?"
        frame[col] = frame[col].fillna("—" if col == "engine" else "?").astype(str)  # base rows train no engine
    for col in METRICS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame else float("nan")
    frame["gpu"] = [
        gpu_label(n, c) for n, c in zip(frame.get("gpu_name", [None] * len(frame)), frame.get("gpu_count", [None] * len(frame)))
    ]
    fill_device(frame)
    valid = frame["quality_valid"] if "quality_valid" in frame else pd.Series([True] * len(frame))
    frame["quality_valid"] = [v is not False and v == v and str(v).lower() != "false" for v in valid]
    frame.loc[~frame["quality_valid"], list(QUALITY)] = float("nan")
    fill_delta(frame)
    configs = variant_configs(recs)
    frame["variant"] = [hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:6] for c in configs]
    frame["method_label"] = variant_labels(frame, configs)
    return frame, recs


def fill_device(frame) -> None:
    """A run that failed before training has no device in its record; it ran where the rest of its sweep ran."""
    if "run_name" not in frame:
        return
    for _, idx in frame.groupby("run_name").groups.items():
        known = set(frame.loc[idx, "gpu"]) - {UNKNOWN_DEVICE}
        if len(known) == 1:
            frame.loc[[i for i in idx if frame.at[i, "gpu"] == UNKNOWN_DEVICE], "gpu"] = known.pop()


def fill_delta(frame) -> None:
    """score_delta from the `base` row of the same model, where the evaluation did not write it."""
    base = frame[(frame["method"] == "base") & frame["score"].notna()].groupby("model")["score"].mean()
    if base.empty:
        return
    missing = frame["score_delta"].isna() & frame["score"].notna() & frame["model"].isin(base.index)
    frame.loc[missing, "score_delta"] = frame.loc[missing, "score"] - frame.loc[missing, "model"].map(base).astype(float)


def variant_labels(frame, configs: list[dict[str, Any]]) -> list[str]:
    """`lora`, or `lora (r=32)` when one method ran with several configs on one model: name what differs."""
    labels = list(frame["method"])
    for _, idx in frame.groupby(["model", "gpu", "engine", "method"]).groups.items():
        idx = list(idx)
        if len({frame.at[i, "variant"] for i in idx}) < 2:
            continue
        keys = sorted({k for i in idx for k in configs[i]})
        differ = [k for k in keys if len({configs[i].get(k) for i in idx}) > 1]
        named = [k for k in differ if k.endswith(".name")]  # a group's choice (profile=fast) says it first
        same_name = {}  # variants the named keys alone do not tell apart: add what else differs among them
        for i in idx:
            same_name.setdefault(tuple(configs[i].get(k) for k in named), []).append(i)
        extra = [k for k in differ if k not in named
                 and any(len({configs[i].get(k) for i in group}) > 1 for group in same_name.values())]  # fmt: skip
        shown = (named + extra)[:3] if named else differ[:3]
        for i in idx:
            parts = [f"{k.split('.')[0] if k in named else k.split('.')[-1]}="
                     f"{json.loads(configs[i][k]) if k in configs[i] else '-'}" for k in shown]  # fmt: skip
            labels[i] = f"{frame.at[i, 'method']} ({', '.join(parts) or frame.at[i, 'variant']})"
    return labels


# -- ranking --------------------------------------------------------------------------------------------------------
def pick_metric(frame, metric: str) -> tuple[str, str]:
    """The metric to rank by, and a note when it had to fall back because the asked-for one has no values."""
    if metric not in METRICS:
        raise SystemExit(f"--metric {metric!r}: not a report metric. Choose one of: {', '.join(METRICS)}.")
    if frame[metric].notna().any():
        return metric, ""
    for other in FALLBACK:
        if frame[other].notna().any():
            return other, f"no run has a value for {METRICS[metric][0]}"
    return metric, f"not ranked: no run has a value for {METRICS[metric][0]} or any of {', '.join(FALLBACK)}"


def memory_metric(frame) -> str:
    for col in ("gpu_allocated_gib_peak", "gpu_nvml_used_gib_peak", "rss_gib_peak"):
        if frame[col].notna().any():
            return col
    return "gpu_allocated_gib_peak"


def leaderboard(frame, metric: str) -> list[Row]:
    """Seeds of a point averaged; within each (model, GPU), ranked by `metric`; runs not ok listed after, one each."""
    rows: list[Row] = []
    ok = frame[frame["status"] == "ok"]
    for keys, group in ok.groupby(list(GROUP_KEYS), sort=False):
        values = {c: (float(group[c].mean()), float(group[c].std(ddof=1))) for c in METRICS}
        first = group.iloc[0]
        rows.append(
            Row(keys[0], keys[1], keys[2], first["method_label"], "ok", len(group), values,
                bool(group["quality_valid"].all()), run_ids=list(group["run_id"]))
        )  # fmt: skip
    for _, run in frame[frame["status"] != "ok"].iterrows():
        values = {c: (float(run[c]), float("nan")) for c in METRICS}
        error = str(run.get("error") or "") if run.get("error") == run.get("error") else ""
        rows.append(
            Row(run["model"], run["gpu"], run["engine"], run["method_label"], run["status"], 1, values,
                bool(run["quality_valid"]), error=error, run_ids=[run["run_id"]])
        )  # fmt: skip
    higher = METRICS[metric][1]

    def order(row: Row):
        mean = row.values[metric][0]
        has = row.status == "ok" and not math.isnan(mean)
        return (row.facet, STATUS_ORDER.get(row.status, 9), not has, -mean if has and higher else mean if has else 0)

    rows.sort(key=order)
    for facet in dict.fromkeys(r.facet for r in rows):
        ranked = [r for r in rows if r.facet == facet and r.status == "ok" and not math.isnan(r.values[metric][0])]
        for i, row in enumerate(ranked, 1):
            row.rank = i
    return rows


def shown_columns(rows: list[Row]) -> list[str]:
    """Metric columns with at least one value, in METRICS order."""
    return [c for c in METRICS if any(not math.isnan(r.values[c][0]) for r in rows)]


# -- formatting -----------------------------------------------------------------------------------------------------
def fmt_number(value: float, col: str = "") -> str:
    if value is None or math.isnan(value):
        return ""
    if col == "trainable_params":
        for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
        return f"{value:.0f}"
    return f"{value:.4g}"


def fmt_cell(row: Row, col: str) -> str:
    """`mean ± std` over seeds, the value alone with one seed, `n/a†` for quality on random-init weights."""
    mean, std = row.values[col]
    if col in QUALITY and not row.quality_valid:
        return "n/a†"
    text = fmt_number(mean, col)
    if text and row.n > 1 and not math.isnan(std):
        text += f" ± {fmt_number(std, col) if col == 'trainable_params' else f'{std:.2g}'}"
    return text


def plain(value: Any) -> str:
    """A table cell as text; whole floats (integer columns that pandas widened around a missing value) as integers."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def distinct(frame, col: str) -> str:
    if col not in frame:
        return "not recorded"
    values = [plain(v) for v in dict.fromkeys(frame[col].dropna()) if str(v) not in ("", "None", "nan")]
    return " | ".join(values) if values else "not recorded"


def provenance(frame) -> str:
    """Whichever identity the runs recorded: hub revision, GGUF file hash, local folder hash, or config hash."""
    found = [f"{label} {distinct(frame, col)}" for col, label in (
        ("model_revision", "revision"), ("model_file_sha256", "file sha256"),
        ("model_folder_sha256", "folder sha256"), ("model_config_sha256", "config sha256"),
    ) if distinct(frame, col) != "not recorded"]  # fmt: skip
    return "; ".join(found) or "not recorded"


def parallelism(frame) -> str:
    """GPUs per run and how they were used (accelerate's strategy: single, ddp, fsdp)."""
    gpus, strategy = distinct(frame, "gpu_count"), distinct(frame, "strategy")
    if gpus in ("0", "not recorded"):
        return f"1 process ({strategy})" if strategy != "not recorded" else "1 process"
    return f"{gpus} GPU(s), {strategy}"


def per_method(frame, col: str) -> str:
    """One value, or `value: methods; ...` when methods differ (learning rate, precision regime)."""
    if col not in frame or frame[col].isna().all():
        return "not recorded"
    pairs = frame[["method_label", col]].dropna().astype(str).drop_duplicates()
    if pairs[col].nunique() == 1:
        return pairs[col].iloc[0]
    by_value = pairs.groupby(col, sort=False)["method_label"].apply(lambda m: ", ".join(sorted(m)))
    return "; ".join(f"{value} ({methods})" for value, methods in by_value.items())


def conditions(frame) -> list[tuple[str, str]]:
    """What the numbers in one (model, GPU) section hold under, as (label, text) pairs."""
    hp = "hyperparameters."
    model = distinct(frame, "model")
    source = distinct(frame, "model_source")
    init = distinct(frame, "model_init")
    if "random" in init:
        init += " (random weights: memory and speed only; quality columns n/a†)"
    batch = "not recorded"
    if f"{hp}per_device_train_batch_size" in frame:
        per_dev = distinct(frame, f"{hp}per_device_train_batch_size")
        accum = distinct(frame, f"{hp}gradient_accumulation_steps")
        world = distinct(frame, "world_size")
        batch = f"{per_dev} per device × {accum} accumulation × {world if world != 'not recorded' else '1'} process(es)"
    versions = [c for c in frame.columns if c.startswith("versions.")]
    libs = ", ".join(f"{c[len('versions.'):]} {distinct(frame, c)}" for c in versions if distinct(frame, c) != "not recorded")
    warmup = distinct(frame, "warmup_steps_excluded")
    warmup = f" (first {warmup} left out of throughput)" if warmup != "not recorded" else ""
    gpu = distinct(frame, "gpu")
    if gpu == "CPU" and "host_cpu_count" in frame:
        gpu = f"none: CPU ({distinct(frame, 'host_cpu_count')} cores)"
    return [
        ("Model", f"{model} from {source}; weights: {init}; {provenance(frame)}"),
        ("Data", f"{distinct(frame, 'dataset')} ({distinct(frame, 'train_examples')} training examples, "
                 f"fingerprint {distinct(frame, 'dataset_fingerprint')})"),
        ("Sequence length", distinct(frame, f"{hp}max_length")),
        ("Batch", batch),
        ("Steps", f"{distinct(frame, f'{hp}max_steps')}{warmup}; seeds {distinct(frame, 'seed')}"),
        ("Learning rate", per_method(frame, f"{hp}learning_rate")),
        ("Precision", per_method(frame, "precision")),
        ("GPU", gpu),
        ("Parallelism", parallelism(frame)),
        ("Libraries", f"peftbench {distinct(frame, 'peftbench_version')}; {libs or 'not recorded'}"),
    ]  # fmt: skip


def facets(frame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(frame["model"], frame["gpu"])))


def facet_title(facet: tuple[str, str]) -> str:
    return f"{facet[0]} on {facet[1]}"


def status_text(row: Row) -> str:
    if row.status == "ok":
        return "ok" if row.n == 1 else f"ok ({row.n} seeds)"
    return row.status.upper() if row.status == "oom" else row.status


def ranking_text(metric: str, note: str) -> str:
    if note.startswith("not ranked"):
        return note
    label, higher = METRICS[metric]
    text = f"ranked by {label} ({'higher' if higher else 'lower'} is better) within each model and GPU"
    return text + (f" ({note})" if note else "")


def render_markdown(frame, rows: list[Row], metric: str, note: str, images: dict[str, str]) -> str:
    label, higher = METRICS[metric]
    cols = shown_columns(rows)
    lines = [
        "# peftbench leaderboard",
        "",
        f"{len(frame)} runs from `{distinct(frame, 'run_name')}`; {ranking_text(metric, note)}. "
        "Several seeds of one point are shown as mean ± std (sample std). Runs that did not finish ok are listed with their status and error, never dropped.",
    ]  # fmt: skip
    if (~frame["quality_valid"]).any():
        lines += ["", "† random-init weights: score and losses measure nothing about quality, so they are left out."]
    for facet in facets(frame):
        sub = frame[(frame["model"] == facet[0]) & (frame["gpu"] == facet[1])]
        lines += ["", f"## {facet_title(facet)}", ""]
        lines += [f"- **{k}**: {v}" for k, v in conditions(sub)]
        header = ["rank", "method", "engine", "status", "seeds"] + [METRICS[c][0] for c in cols] + ["error"]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in (r for r in rows if r.facet == facet):
            cells = [str(row.rank or ""), row.method, row.engine, status_text(row), str(row.n)]
            cells += [fmt_cell(row, c) for c in cols]
            cells.append(row.error.splitlines()[0][:160] if row.error else "")
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if images:
        lines += ["", "## Plots", ""] + [f"![{name}]({Path(path).name})" for name, path in images.items()]
    lines += ["", "Interactive version (sortable, filterable, any two metrics on the Pareto plot): `report.html`.", ""]
    return "\n".join(lines)


# -- entry points ---------------------------------------------------------------------------------------------------
def write_report(results_dir: str | Path, out: str | Path | None = None, metric: str = "score") -> dict[str, Path]:
    """Write report.md, report.html and the PNGs; returns their paths by name."""
    from peftbench import report_html, report_plots

    results_dir = Path(results_dir)
    out = Path(out) if out else results_dir
    out.mkdir(parents=True, exist_ok=True)
    frame, recs = load_runs(results_dir)
    metric, note = pick_metric(frame, metric)
    rows = leaderboard(frame, metric)
    pareto_y = "score" if frame["score"].notna().any() else metric  # default: score vs peak memory
    images = report_plots.write_plots(out, frame, rows, recs, x=memory_metric(frame), y=pareto_y)
    paths = {"md": out / "report.md", "html": out / "report.html", **images}
    records.atomic_write_text(paths["md"], render_markdown(frame, rows, metric, note, images))
    html = report_html.render(frame, rows, recs, metric, note, images, x=memory_metric(frame), y=pareto_y)
    records.atomic_write_text(paths["html"], html)
    for path in (paths["md"], paths["html"]):
        path.chmod(0o644)  # a report is for sharing; the atomic write's temp file was private (0600)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peftbench-report", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", help="a results folder a sweep wrote (holds */record.json)")
    parser.add_argument("--metric", default="score", choices=list(METRICS), help="rank by (default: score)")
    parser.add_argument("--out", default=None, help="where to write the report (default: RESULTS_DIR)")
    args = parser.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        parser.error(f"RESULTS_DIR {args.results_dir!r} is not a folder; give the folder a sweep wrote.")
    paths = write_report(args.results_dir, args.out, args.metric)
    print("\n".join(f"{name}: {path}" for name, path in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
