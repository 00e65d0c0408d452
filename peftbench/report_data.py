"""The leaderboard's data: records -> runs table -> ranked rows with ties, labels by identity, conditions, what wins,
folklore, number formats. Pure functions of the records; `report` writes the files, `report_html` and
`report_plots` draw from what this module computes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
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
}
# Meaningless on random-init weights (quality_valid=False): blanked, never shown as numbers.
QUALITY = ("score", "score_stderr", "score_delta", "train_loss", "eval_loss")
# The ranking metric when the asked-for one has no values (e.g. no evaluation ran yet).
FALLBACK = ("score", "eval_loss", "tokens_per_s", "time_train_s")
STATUS_ORDER = {"ok": 0, "oom": 1, "failed": 2, "invalid": 3, "skipped": 4}
GROUP_KEYS = ("model", "gpu", "engine", "method", "variant")


@dataclass
class Row:
    """One leaderboard line: the seeds of one point averaged, or one run that did not finish ok.

    `key` is the point's identity (model, GPU, engine, method, config hash): every table row, bar and plotted point
    carries it, so a label is always looked up by identity, never placed by position. `label` is the method name plus
    what sets this point apart from the other points of that method in its facet (`lora (profile=fast)`).
    """

    model: str
    gpu: str
    engine: str
    method: str  # the method's registry name (lora, qlora, ...)
    status: str
    n: int
    values: dict[str, tuple[float, float]]  # column -> (mean, std over seeds; nan with one seed)
    quality_valid: bool = True
    rank: int | None = None
    error: str = ""
    run_ids: list[str] = field(default_factory=list)
    label: str = ""  # the display name: method plus the options that differ
    key: str = ""
    tied_with: int | None = None  # rank of the row this one is statistically tied with (its group's best)
    apart: str = ""  # for a row that did not finish: the options that set it apart from its facet's other runs
    predicted_peak_gib: float = float("nan")
    gpu_capacity_gib: float = float("nan")
    sources: list[str] = field(default_factory=list)  # results folders (and run names) the row's runs came from
    ranked_by: str = ""  # the metric its section ranks by (the asked-for one, or a fallback where it has no values)
    seeds: list[str] = field(default_factory=list)
    plan: str = ""  # the checkpointing plan it ran with (checkpointing_plan), "" where the record cannot say

    def __post_init__(self) -> None:
        self.label = self.label or self.method
        self.key = self.key or "|".join((self.model, self.gpu, self.engine, self.label))

    @property
    def facet(self) -> tuple[str, str]:
        return (self.model, self.gpu)

    def name(self, engines: bool) -> str:
        """The label a plot shows: with the engine when its facet holds several (two `lora` points, two engines)."""
        return f"{self.label} · {self.engine}" if engines else self.label


# -- loading --------------------------------------------------------------------------------------------------------
UNKNOWN_DEVICE = "device not recorded"
NO_ENGINE = "—"  # the base row trains nothing, so it has no engine


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


def point_config(rec: dict[str, Any]) -> dict[str, Any]:
    """The record's config as the point's identity: its own method options merged in, other methods' left out.

    Records written before `runner.point_container` carried the whole `method_overrides` of their sweep (the family
    sweep's BitFit-only `add_biases` inside every LoRA record); the merged `method_config` the run used is the truth.
    """
    config = dict(rec.get("config") or {})
    config.pop("method_overrides", None)
    if isinstance(rec.get("method_config"), dict):
        config["method"] = rec["method_config"]
    # Records from before the engine and profile groups ran the stock engine / the profile their record names.
    if "engine" not in config and rec.get("method") != "base":
        config["engine"] = {"name": rec.get("engine") or "peft"}
    if "profile" not in config and isinstance(rec.get("profile"), str):
        config["profile"] = {"name": rec["profile"]}
    return config


def checkpointing_plan(rec: dict[str, Any]) -> str:
    """The checkpointing plan a run trained with, from its record: the planner's `checkpointing_plan`; for records
    written before it, an engine's own checkpointing (`unsloth`) or the Trainer's flag (`all` / `off`)."""
    choices = rec.get("profile_choices") or {}
    if choices.get("checkpointing_plan") or rec.get("checkpointing_plan"):
        return str(choices.get("checkpointing_plan") or rec.get("checkpointing_plan"))
    own = rec.get("engine_gradient_checkpointing")
    if isinstance(own, str) and own and own != "off" and not own.startswith("transformers"):
        return own
    flag = choices.get(
        "gradient_checkpointing", ((rec.get("config") or {}).get("train") or {}).get("gradient_checkpointing")
    )
    return "" if flag is None else "all" if flag else "off"


def variant_configs(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record's config without what does not define the point (seed, run options): seeds of one point match."""
    out = []
    for rec in recs:
        flat = flatten(point_config(rec))
        # an option set to null and an option absent (a record from before it existed) mean the same point
        out.append({k: v for k, v in flat.items() if not k.startswith("run.") and k != "train.seed" and v != "null"})
    return out


def read_folders(results_dirs: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of every folder, deduplicated by run id (the first folder given wins), with where each came from."""
    seen: dict[str, int] = {}
    recs, sources = [], []
    for folder in results_dirs:
        for rec in records.read_records(folder):
            where = f"{folder}" + (f" ({rec['run_name']})" if rec.get("run_name") else "")
            if rec["run_id"] in seen:
                sources[seen[rec["run_id"]]] += f"; duplicate in {where}"
                continue
            seen[rec["run_id"]] = len(recs)
            recs.append(rec)
            sources.append(where)
    return recs, sources


def load_runs(results_dirs: str | Path | list):
    """The runs table (one row per record) with the columns the report needs, and the records (loss curves).

    Several folders (written on other machines, by other people) merge into one table: a run id met twice is one
    run, kept from the first folder; `source` says where every row came from."""
    import pandas as pd

    folders = [Path(d) for d in (results_dirs if isinstance(results_dirs, (list, tuple)) else [results_dirs])]
    recs, sources = read_folders(folders)
    duplicates = sum(s.count("; duplicate in ") for s in sources)
    if not recs:
        raise SystemExit(
            f"peftbench-report: no records under {', '.join(map(str, folders))} (expected */{records.RECORD}). "
            "Give the results folder a sweep wrote, e.g. results/embedded-default."
        )
    frame = records.to_frame(recs).reset_index(drop=True)
    frame["source"] = sources
    frame["method_r"] = [(rec.get("method_config") or {}).get("r") for rec in recs]  # LoRA's rank, for the folklore
    frame["checkpointing_plan"] = [checkpointing_plan(rec) for rec in recs]
    for col in ("status", "method", "engine", "model"):
        if col not in frame:
            frame[col] = "ok" if col == "status" else "?"
        frame[col] = frame[col].fillna(NO_ENGINE if col == "engine" else "?").astype(str)  # base rows train no engine
    for col in list(METRICS) + [
        "predicted_peak_gib",
        "gpu_total_gib",
        "steps",
        "steady_state_steps",
        "warmup_steps_excluded",
    ]:
        frame[col] = pd.to_numeric(frame[col], errors="coerce") if col in frame else float("nan")
    frame["gpu"] = [
        gpu_label(n, c)
        for n, c in zip(frame.get("gpu_name", [None] * len(frame)), frame.get("gpu_count", [None] * len(frame)))
    ]
    fill_device(frame)
    valid = frame["quality_valid"] if "quality_valid" in frame else pd.Series([True] * len(frame))
    frame["quality_valid"] = [v is not False and v == v and str(v).lower() != "false" for v in valid]
    frame.loc[~frame["quality_valid"], list(QUALITY)] = float("nan")
    fill_delta(frame)
    configs = variant_configs(recs)
    frame["variant"] = [hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:6] for c in configs]
    frame["method_label"] = variant_labels(frame, configs)
    frame["apart"] = set_apart(frame, configs)
    frame.attrs.update(folders=[str(f) for f in folders], duplicates=duplicates)
    return frame, recs


def fill_device(frame) -> None:
    """A run that failed before training has no device in its record; it ran where the rest of its sweep ran (or,
    failing that, where every other run of its model in these folders ran)."""
    for key in ("run_name", "model"):
        if key not in frame:
            continue
        for _, idx in frame.groupby(key).groups.items():
            known = set(frame.loc[idx, "gpu"]) - {UNKNOWN_DEVICE}
            if len(known) == 1:
                frame.loc[[i for i in idx if frame.at[i, "gpu"] == UNKNOWN_DEVICE], "gpu"] = known.pop()


def fill_delta(frame) -> None:
    """score_delta from the `base` row of the same model, where the evaluation did not write it."""
    base = frame[(frame["method"] == "base") & frame["score"].notna()].groupby("model")["score"].mean()
    if base.empty:
        return
    missing = frame["score_delta"].isna() & frame["score"].notna() & frame["model"].isin(base.index)
    frame.loc[missing, "score_delta"] = frame.loc[missing, "score"] - frame.loc[missing, "model"].map(base).astype(
        float
    )


def shown_value(configs: list[dict[str, Any]], i: int, key: str) -> str:
    return plain(json.loads(configs[i][key])) if key in configs[i] else "-"


def option_name(key: str, named: bool) -> str:
    """`profile` for a group's choice (profile.name), else the option's last part (`r`,
    `per_device_train_batch_size`)."""
    return key.split(".")[0] if named else key.split(".")[-1]


def schema_drift(configs: list[dict[str, Any]], idx: list[int], key: str) -> bool:
    """An option some of these records lack while the rest hold one value for it: added to the recipes after the
    older runs, at its default. It tells no setups apart, so it names no variant (not `enforce_budget=False` against
    `enforce_budget=-`): such variants get their config hash instead."""
    present = {configs[i][key] for i in idx if key in configs[i]}
    return len(present) == 1 and any(key not in configs[i] for i in idx)


def variant_labels(frame, configs: list[dict[str, Any]], most: int = 4) -> list[str]:
    """`lora`, or `lora (r=32)` when one method ran with several configs on one model and GPU: name what differs.

    A group's choice (`profile=fast`) is named first; then, one at a time, the option that tells the most variants
    apart, until every variant has a label of its own (at most `most` options; past that the config hash is added).
    Engines are a column of their own (and in plot labels), so what differs is looked for within one engine."""
    labels = list(frame["method"])
    for _, idx in frame.groupby(["model", "gpu", "engine", "method"]).groups.items():
        idx = list(idx)
        variants = {frame.at[i, "variant"]: i for i in idx}
        if len(variants) < 2:
            continue
        keys = sorted({k for i in idx for k in configs[i]})
        differ = [k for k in keys if len({configs[i].get(k) for i in idx}) > 1 and not schema_drift(configs, idx, k)]
        told = lambda chosen: len({tuple(configs[i].get(k) for k in chosen) for i in variants.values()})  # noqa: E731, B023 - used in this iteration only
        chosen = [k for k in differ if k.endswith(".name")]  # a group's choice (profile=fast) says it first
        while told(chosen) < len(variants) and len(chosen) < most:
            rest = [k for k in differ if k not in chosen]
            if not rest:
                break
            # most variants told apart; then an option every record has (one absent in older records is schema drift)
            chosen.append(
                max(rest, key=lambda k: (told(chosen + [k]), all(k in configs[i] for i in idx), -rest.index(k)))
            )
        unique = told(chosen) == len(variants)
        for i in idx:
            parts = [f"{option_name(k, k.endswith('.name'))}={shown_value(configs, i, k)}" for k in chosen]
            if not unique:
                parts.append(f"config {frame.at[i, 'variant']}")
            labels[i] = f"{frame.at[i, 'method']} ({', '.join(parts)})"
    return labels


def set_apart(frame, configs: list[dict[str, Any]]) -> list[str]:
    """For each run that did not finish: the options where it differs from the ok runs of its method in its facet
    (or of its facet, when its method has none), e.g. `per_device_train_batch_size=512`. Empty for ok runs."""
    out = [""] * len(frame)
    for i in range(len(frame)):
        if frame.at[i, "status"] == "ok":
            continue
        same_facet = [
            j
            for j in range(len(frame))
            if j != i
            and frame.at[j, "status"] == "ok"
            and frame.at[j, "model"] == frame.at[i, "model"]
            and frame.at[j, "gpu"] == frame.at[i, "gpu"]
        ]
        peers = [j for j in same_facet if frame.at[j, "method"] == frame.at[i, "method"]] or same_facet
        if not peers:
            continue
        own_method = frame.at[peers[0], "method"] == frame.at[i, "method"]
        differ = [
            f"{option_name(k, k.endswith('.name'))}={shown_value(configs, i, k)}"
            for k in sorted(configs[i])
            if (own_method or not k.startswith("method.")) and configs[i][k] not in {configs[j].get(k) for j in peers}
        ]
        out[i] = ", ".join(differ[:4])
    return out


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


def capacity_gib(gpu_name: Any, recorded: Any) -> float:
    """The GPU's memory: as the run recorded it (gpu_total_gib), else read off a name that states it (`80GB`)."""
    import re

    if isinstance(recorded, (int, float)) and recorded == recorded:
        return float(recorded)
    match = re.search(r"(\d+)\s*GB", str(gpu_name or ""))
    return int(match.group(1)) * 1e9 / 2**30 if match else float("nan")  # a card's "80GB" is decimal gigabytes


def standard_error(row: Row, metric: str) -> float:
    """The uncertainty of a row's mean: the evaluation's own stderr for score (averaged over seeds, shrunk by √n),
    else the spread of its seeds over √n; nan with one seed and no stderr."""
    if metric in ("score", "score_delta") and not math.isnan(row.values["score_stderr"][0]):
        return row.values["score_stderr"][0] / math.sqrt(row.n)
    std = row.values[metric][1]
    return std / math.sqrt(row.n) if row.n > 1 and not math.isnan(std) else float("nan")


def mark_ties(ranked: list[Row], metric: str) -> None:
    """Rows whose means differ from their group's best by less than the combined standard error √(se₁² + se₂²) are
    tied with it: one group, walked down the ranking, each starting at the first row not tied with the one above."""
    leader: Row | None = None
    for row in ranked:
        if leader is not None:
            se = math.hypot(standard_error(leader, metric), standard_error(row, metric))
            if not math.isnan(se) and abs(leader.values[metric][0] - row.values[metric][0]) < se:
                row.tied_with = leader.rank
                leader.tied_with = leader.rank
                continue
        leader = row


def leaderboard(frame, metric: str) -> list[Row]:
    """Seeds of a point averaged; within each (model, GPU), ranked by `metric`, ties marked; runs not ok listed
    after, one each, with the options that set them apart and the memory model's prediction beside the GPU's size."""
    rows: list[Row] = []
    ok = frame[frame["status"] == "ok"]
    for keys, group in ok.groupby(list(GROUP_KEYS), sort=False):
        values = {c: (float(group[c].mean()), float(group[c].std(ddof=1))) for c in METRICS}
        first = group.iloc[0]
        rows.append(
            Row(
                keys[0],
                keys[1],
                keys[2],
                keys[3],
                "ok",
                len(group),
                values,
                bool(group["quality_valid"].all()),
                run_ids=list(group["run_id"]),
                label=first["method_label"],
                sources=list(dict.fromkeys(group["source"])),
                seeds=[plain(v) for v in group.get("seed", [])],
                predicted_peak_gib=float(group["predicted_peak_gib"].mean()),
                gpu_capacity_gib=capacity_gib(keys[1], first.get("gpu_total_gib")),
                plan=str(first["checkpointing_plan"]),
            )
        )
    for _, run in frame[frame["status"] != "ok"].iterrows():
        values = {c: (float(run[c]), float("nan")) for c in METRICS}
        error = str(run.get("error") or "") if run.get("error") == run.get("error") else ""
        rows.append(
            Row(
                run["model"],
                run["gpu"],
                run["engine"],
                run["method"],
                run["status"],
                1,
                values,
                bool(run["quality_valid"]),
                error=error,
                run_ids=[run["run_id"]],
                label=run["method_label"],
                key="|".join((run["model"], run["gpu"], run["engine"], run["method_label"], run["run_id"])),
                apart=run["apart"],
                sources=[run["source"]],
                seeds=[plain(run.get("seed"))],
                predicted_peak_gib=float(run["predicted_peak_gib"]),
                gpu_capacity_gib=capacity_gib(run["gpu"], run.get("gpu_total_gib")),
            )
        )
    facet_metric = {facet: facet_metric_for(rows, facet, metric) for facet in dict.fromkeys(r.facet for r in rows)}

    def order(row: Row):
        col = facet_metric[row.facet]
        mean = row.values[col][0]
        has = row.status == "ok" and not math.isnan(mean)
        return (
            row.facet,
            STATUS_ORDER.get(row.status, 9),
            not has,
            -mean if has and METRICS[col][1] else mean if has else 0,
        )

    rows.sort(key=order)
    for facet, col in facet_metric.items():
        ranked = [r for r in rows if r.facet == facet and r.status == "ok" and not math.isnan(r.values[col][0])]
        for i, row in enumerate(ranked, 1):
            row.rank = i
            row.ranked_by = col
        mark_ties(ranked, col)
    return rows


def facet_metric_for(rows: list[Row], facet: tuple[str, str], metric: str) -> str:
    """The metric one model × GPU section ranks by: the asked-for one, else (no run there has it, e.g. random
    weights beside a scored section in a merged report) the first fallback it has values for."""
    mine = [r for r in rows if r.facet == facet and r.status == "ok"]
    for col in (metric, *FALLBACK):
        if any(not math.isnan(r.values[col][0]) for r in mine):
            return col
    return metric


def rank_text(row: Row) -> str:
    """`1`, or `=1` for every row of a tie group (the group's best included): read `=2` as "tied with rank 2"."""
    if row.rank is None:
        return ""
    return f"={row.tied_with}" if row.tied_with is not None else str(row.rank)


def shown_columns(rows: list[Row]) -> list[str]:
    """Metric columns with at least one value, in METRICS order."""
    return [c for c in METRICS if any(not math.isnan(r.values[c][0]) for r in rows)]


# -- formatting -----------------------------------------------------------------------------------------------------
GIB_COLUMNS = {c for c in METRICS if c.endswith("_gib_peak")}


def fmt_number(value: float, col: str = "") -> str:
    """Readable numbers: thousands separators, integers as integers, GiB with 2 decimals, never `1.296e+04`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if col == "trainable_params":
        for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g} {unit}"
        return f"{value:,.0f}"
    if col in GIB_COLUMNS:
        return f"{value:,.2f}"
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) < 1e-3:
        return f"{value:.2g}" if abs(value) >= 1e-6 else f"{value:.1e}"
    return f"{value:.4g}" if abs(value) < 1 else f"{value:.3g}"


def fmt_cell(row: Row, col: str) -> str:
    """`mean ± std` over seeds, the value alone with one seed, `n/a†` for quality on random-init weights."""
    mean, std = row.values[col]
    if col in QUALITY and not row.quality_valid:
        return "n/a†"
    text = fmt_number(mean, col)
    if text and row.n > 1 and not math.isnan(std):
        spread = fmt_number(std, col) if col in GIB_COLUMNS or col == "trainable_params" or std >= 100 else f"{std:.2g}"
        text += f" ± {spread}"
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
    found = [
        f"{label} {distinct(frame, col)}"
        for col, label in (
            ("model_revision", "revision"),
            ("model_file_sha256", "file sha256"),
            ("model_folder_sha256", "folder sha256"),
            ("model_config_sha256", "config sha256"),
        )
        if distinct(frame, col) != "not recorded"
    ]
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


def timed_steps(run) -> str:
    """What one record says was timed: its steps, the steady-state ones that throughput counts, and so how many were
    really left out as warm-up (a run shorter than its warm-up is timed over every step: none were)."""
    steps, steady = run.get("steps"), run.get("steady_state_steps")
    if steps != steps or steps is None:
        return "not recorded"
    steps = int(steps)
    if steady != steady or steady is None:
        return f"{steps:,} steps (throughput window not recorded)"
    left_out = steps - int(steady)
    if left_out <= 0:
        asked = run.get("warmup_steps_excluded")
        why = f" (shorter than its {int(asked)}-step warm-up)" if asked == asked and asked and asked >= steps else ""
        return f"{steps:,} steps, every one timed{why}"
    return f"{steps:,} steps, throughput over the last {int(steady):,} (first {left_out:,} left out as warm-up)"


def steps_text(frame) -> str:
    """The timed steps as the records say them: one statement when every run agrees, else each with its methods."""
    ran = frame[frame["steps"].notna()] if "steps" in frame else frame.iloc[0:0]
    if ran.empty:
        return f"{distinct(frame, 'hyperparameters.max_steps')} (max_steps; no run recorded its steps)"
    texts = [timed_steps(run) for _, run in ran.iterrows()]
    by_text: dict[str, list[str]] = {}
    for text, label in zip(texts, ran["method_label"]):
        by_text.setdefault(text, [])
        if label not in by_text[text]:
            by_text[text].append(label)
    if len(by_text) == 1:
        return texts[0]
    return "; ".join(f"{text} ({', '.join(sorted(labels))})" for text, labels in by_text.items())


def conditions(frame) -> list[tuple[str, str]]:
    """What the numbers in one (model, GPU) section hold under, as (label, text) pairs: from its ok runs' records
    (a run that did not finish is listed with its error instead, and says nothing about the conditions)."""
    if (frame["status"] == "ok").any():
        frame = frame[frame["status"] == "ok"]
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
    libs = ", ".join(
        f"{c[len('versions.') :]} {distinct(frame, c)}" for c in versions if distinct(frame, c) != "not recorded"
    )
    gpu = distinct(frame, "gpu")
    if gpu == "CPU" and "host_cpu_count" in frame:
        gpu = f"none: CPU ({distinct(frame, 'host_cpu_count')} cores)"
    return [
        ("Model", f"{model} from {source}; weights: {init}; {provenance(frame)}"),
        (
            "Data",
            f"{distinct(frame, 'dataset')} ({distinct(frame, 'train_examples')} training examples, "
            f"fingerprint {distinct(frame, 'dataset_fingerprint')})",
        ),
        ("Sequence length", distinct(frame, f"{hp}max_length")),
        ("Batch", batch),
        ("Steps", f"{steps_text(frame)}; seeds {distinct(frame, 'seed')}"),
        ("Learning rate", per_method(frame, f"{hp}learning_rate")),
        ("Precision", per_method(frame, "precision")),
        ("GPU", gpu),
        ("Parallelism", parallelism(frame)),
        ("Libraries", f"peftbench {distinct(frame, 'peftbench_version')}; {libs or 'not recorded'}"),
    ]


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


def facet_ranking(rows: list[Row], facet: tuple[str, str], metric: str) -> str:
    """A line when this section ranks by another metric than the report's (it has no values for that one)."""
    used = next((r.ranked_by for r in rows if r.facet == facet and r.ranked_by), metric)
    if used == metric:
        return ""
    label, higher = METRICS[used]
    better = "higher" if higher else "lower"
    return f"Ranked here by {label} ({better} is better): no run in this section has {METRICS[metric][0]}."


def did_not_finish(row: Row) -> str:
    """A failed/OOM row in one line: status, what set it apart, the memory model beside the GPU's size, the error."""
    parts = [status_text(row)]
    if row.apart:
        parts.append(f"at {row.apart}")
    if not math.isnan(row.predicted_peak_gib):
        cap = f" vs {row.gpu_capacity_gib:,.2f} GiB on the GPU" if not math.isnan(row.gpu_capacity_gib) else ""
        parts.append(f"memory model predicted {row.predicted_peak_gib:,.2f} GiB{cap}")
    elif not math.isnan(row.gpu_capacity_gib) and row.status == "oom":
        parts.append(f"GPU has {row.gpu_capacity_gib:,.2f} GiB (no prediction recorded: it failed before loading)")
    first = next((line.strip() for line in row.error.splitlines() if line.strip()), "")
    parts.append(first[:240] if first else "(no message recorded)")
    return " · ".join(parts)


# -- the speed-memory frontier: per method, every configuration measured (profiles, plans, engines) ------------------
def frontier_label(row: Row) -> str:
    """A frontier point's name: the row's label, its engine, its checkpointing plan (`lora (profile=fast) · peft ·
    ckpt every_2`), so unsloth's and Liger's points say so on the plot."""
    return f"{row.name(True)} · ckpt {row.plan}" if row.plan else row.name(True)


def frontier_points(
    rows: list[Row], x: str = "gpu_allocated_gib_peak", y: str = "tokens_per_s"
) -> list[dict[str, Any]]:
    """Per (model, GPU, method) with two or more measured configurations: each one's peak memory (`x`) and tokens/s
    (`y`), keyed by its row's identity, and whether it is on the method's Pareto front (no other configuration of
    the method uses no more memory and runs no slower, and is better on one). report_plots draws these."""
    ok = [r for r in rows if r.status == "ok" and not math.isnan(r.values[x][0]) and not math.isnan(r.values[y][0])]
    out = []
    for facet, method in dict.fromkeys((r.facet, r.method) for r in ok):
        pts = [r for r in ok if r.facet == facet and r.method == method]
        if len(pts) < 2:
            continue
        xy = [(r.values[x][0], r.values[y][0]) for r in pts]
        front = set(pareto_indices(xy, METRICS[x][1], METRICS[y][1]))
        for i, (r, (px, py)) in enumerate(zip(pts, xy)):
            out.append(
                {
                    "key": r.key,
                    "facet": facet,
                    "method": method,
                    "engine": r.engine,
                    "plan": r.plan,
                    "label": frontier_label(r),
                    "x": px,
                    "y": py,
                    "front": i in front,
                }
            )
    return out


def pareto_indices(points: list[tuple[float, float]], higher_x: bool, higher_y: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (at least as good on both, better on one)."""
    sx, sy = (1 if higher_x else -1), (1 if higher_y else -1)
    return [
        i
        for i, (px, py) in enumerate(points)
        if not any(
            sx * ox >= sx * px and sy * oy >= sy * py and (sx * ox > sx * px or sy * oy > sy * py)
            for j, (ox, oy) in enumerate(points)
            if j != i
        )
    ]


def frontier_markdown(rows: list[Row], x: str = "gpu_allocated_gib_peak") -> list[str]:
    """The frontier as text: per method, the configurations on its front from least memory to most, then the rest."""
    points = frontier_points(rows, x)
    if not points:
        return []
    lines = [
        "",
        "## Speed–memory frontier",
        "",
        f"Per method, every configuration measured (profiles, checkpointing "
        f"plans, engines): tokens/s against {METRICS[x][0]}. On the front: no other configuration of the method "
        "uses no more memory and runs no slower.",
        "",
    ]
    for facet, method in dict.fromkeys((p["facet"], p["method"]) for p in points):
        mine = sorted(
            (p for p in points if (p["facet"], p["method"]) == (facet, method)), key=lambda p: (p["x"], -p["y"])
        )
        text = lambda p: f"{p['label']} ({fmt_number(p['y'], 'tokens_per_s')} tok/s, {fmt_number(p['x'], x)} GiB)"  # noqa: E731
        front = "; ".join(text(p) for p in mine if p["front"])
        rest = "; ".join(text(p) for p in mine if not p["front"])
        lines.append(f"- **{method}** ({facet_title(facet)}): front {front}" + (f"; dominated: {rest}" if rest else ""))
    return lines


def what_wins(rows: list[Row], facet: tuple[str, str]) -> str:
    """One paragraph per model × GPU, read off the leaderboard rows: best score (and what ties with it), fastest,
    smallest peak memory, best score per GiB. Says nothing it has no rows for."""
    ok = [r for r in rows if r.facet == facet and r.status == "ok"]
    mem = next(
        (
            c
            for c in ("gpu_allocated_gib_peak", "gpu_nvml_used_gib_peak", "rss_gib_peak")
            if any(not math.isnan(r.values[c][0]) for r in ok)
        ),
        None,
    )
    has = lambda r, c: c is not None and not math.isnan(r.values[c][0])  # noqa: E731
    names = lambda rs: ", ".join(f"**{r.name(multi)}**" for r in rs)  # noqa: E731
    multi = len({r.engine for r in ok} - {NO_ENGINE}) > 1
    out = []
    scored = sorted((r for r in ok if has(r, "score") and r.quality_valid), key=lambda r: -r.values["score"][0])
    if scored:
        best = scored[0]
        ties = [r for r in scored[1:] if r.tied_with is not None and r.tied_with == best.rank]
        se = standard_error(best, "score")
        out.append(
            f"Best score: {names([best])} ({fmt_cell(best, 'score')}"
            + (f", stderr {se:.2g}" if not math.isnan(se) else "")
            + ")"
            + (f", statistically tied with {names(ties)}" if ties else "")
            + "."
        )
    fast = sorted((r for r in ok if has(r, "tokens_per_s")), key=lambda r: -r.values["tokens_per_s"][0])
    if fast:
        top = fast[0]
        times = top.values["tokens_per_s"][0] / fast[-1].values["tokens_per_s"][0]
        ratio = f", {times:.2f}× the slowest ({names([fast[-1]])})" if len(fast) > 1 else ""
        out.append(f"Fastest: {names([top])} at {fmt_cell(top, 'tokens_per_s')} tokens/s{ratio}.")
    if mem:
        small = sorted((r for r in ok if has(r, mem)), key=lambda r: r.values[mem][0])
        if small:
            out.append(
                f"Smallest {METRICS[mem][0]}: {names([small[0]])} at {fmt_number(small[0].values[mem][0], mem)} GiB"
                + (
                    f" (largest: {names([small[-1]])}, {fmt_number(small[-1].values[mem][0], mem)} GiB)"
                    if len(small) > 1
                    else ""
                )
                + "."
            )
        per = sorted(
            ((r.values["score"][0] / r.values[mem][0], r) for r in scored if has(r, mem) and r.values[mem][0] > 0),
            key=lambda t: -t[0],
        )
        if per:
            out.append(f"Best score per GiB: {names([per[0][1]])} ({per[0][0]:.3g} per GiB).")
    if not scored and ok:
        out.append("No quality score here (random weights or no evaluation): compare memory and speed only.")
    bad = [r for r in rows if r.facet == facet and r.status != "ok"]
    if bad:
        out.append(
            f"{len(bad)} run(s) did not finish: "
            + "; ".join(f"{r.label} ({status_text(r)}" + (f" at {r.apart}" if r.apart else "") + ")" for r in bad)
            + "."
        )
    return " ".join(out)


# -- folklore -------------------------------------------------------------------------------------------------------
# (claim, usual figure, where it comes from, test on the facet's rows -> what the rows say, or None without rows)
SEVEN_B = (6e9, 8.5e9)


def _param_count(frame, row: Row) -> float:
    sub = frame[frame["run_id"].isin(row.run_ids)]
    return float(sub["total_params"].mean()) if "total_params" in sub else float("nan")


def _peaks(frame, rows: list[Row], method: str, params: tuple[float, float], r: int | None = None) -> list[str]:
    out = []
    for row in rows:
        if row.status != "ok" or row.method != method or math.isnan(row.values["gpu_allocated_gib_peak"][0]):
            continue
        n = _param_count(frame, row)
        if not (params[0] <= n <= params[1]):
            continue
        if r is not None and r not in set(frame[frame["run_id"].isin(row.run_ids)]["method_r"]):
            continue
        gb = row.values["gpu_allocated_gib_peak"][0] * 2**30 / 1e9
        out.append(
            f"{row.name(True)} on {row.gpu}: {gb:,.1f} GB peak allocated ({n / 1e9:.2f} B params, "
            f"{row_batch(frame, row)})"
        )
    return out


def row_batch(frame, row: Row) -> str:
    sub = frame[frame["run_id"].isin(row.run_ids)]
    bs = distinct(sub, "hyperparameters.per_device_train_batch_size")
    seq = distinct(sub, "hyperparameters.max_length")
    return f"batch {bs}" + (f" × {seq} tokens" if seq != "not recorded" else "")


def folklore(frame, rows: list[Row]) -> list[tuple[str, str, str, list[str]]]:
    """The textbook claims beside this folder's rows: (claim, usual figure, source, what the rows say), only the claims
    some row here speaks to."""
    claims = []
    full = _peaks(frame, rows, "full", SEVEN_B)
    if full:
        claims.append(
            (
                "Full fine-tuning of a 7B model needs ~84-112 GB of GPU memory",
                "12-16 bytes per parameter (weights, gradients, Adam states) × 7 B",
                'the usual rule of thumb; e.g. Hugging Face Transformers docs, "Model training anatomy" '
                "(mixed-precision AdamW: 18 bytes per parameter before activations)",
                full,
            )
        )
    lora = _peaks(frame, rows, "lora", SEVEN_B, r=16)
    if lora:
        claims.append(
            (
                "LoRA r=16 on a 7B model needs ~16-18 GB",
                "bf16 weights (~14 GB) + adapter states + activations",
                "common guidance in fine-tuning guides (bf16 base weights at 2 bytes per parameter)",
                lora,
            )
        )
    qlora = _peaks(frame, rows, "qlora", SEVEN_B)
    if qlora:
        claims.append(
            (
                "QLoRA on a 7B model needs ~6 GB",
                "4-bit NF4 weights (~3.5-4 GB) + adapter + activations",
                "Dettmers et al. 2023, QLoRA (arXiv:2305.14314), and guides built on it",
                qlora,
            )
        )
    big = _peaks(frame, rows, "qlora", (6e10, 8e10))
    if big:
        claims.append(
            (
                "QLoRA fits a 65-70B model on one 48 GB GPU",
                "≤ 48 GB",
                'Dettmers et al. 2023, QLoRA (arXiv:2305.14314): "finetune a 65B parameter model on a single 48GB GPU"',
                big,
            )
        )
    quality = []
    for facet in dict.fromkeys(r.facet for r in rows):
        ok = {
            r.method: r
            for r in rows
            if r.facet == facet
            and r.status == "ok"
            and r.quality_valid
            and not math.isnan(r.values["score"][0])
            and r.label == r.method
        }
        if "lora" in ok and "full" in ok:
            lo, fu = ok["lora"], ok["full"]
            delta = lo.values["score"][0] - fu.values["score"][0]
            se = math.hypot(standard_error(lo, "score"), standard_error(fu, "score"))
            verdict = (
                "within one combined stderr: tied"
                if not math.isnan(se) and abs(delta) < se
                else "beyond one combined stderr"
            )
            quality.append(
                f"{facet_title(facet)}: LoRA trains {fmt_number(lo.values['trainable_pct'][0])}% of the weights; "
                f"score {fmt_cell(lo, 'score')} vs full {fmt_cell(fu, 'score')}, Δ {delta:+.3f}"
                + (f" ± {se:.3f} ({verdict})" if not math.isnan(se) else "")
            )
    if quality:
        claims.append(
            (
                "LoRA trains under 1% of the weights for about the same quality as full fine-tuning",
                "< 1% trainable, quality on par",
                'Hu et al. 2021, LoRA (arXiv:2106.09685): "performs on-par '
                'or better than fine-tuning in model quality" on RoBERTa, DeBERTa, GPT-2 and GPT-3',
                quality,
            )
        )
    sizes = [
        r
        for r in rows
        if r.status == "ok" and r.method not in ("full", "base") and not math.isnan(r.values["adapter_mb"][0])
    ]
    if sizes:
        lo = min(sizes, key=lambda r: r.values["adapter_mb"][0])
        hi = max(sizes, key=lambda r: r.values["adapter_mb"][0])
        said = [
            f"{len(sizes)} adapter(s) here: {fmt_number(lo.values['adapter_mb'][0])} MB ({lo.name(True)}, {lo.model}) "
            f"to {fmt_number(hi.values['adapter_mb'][0])} MB ({hi.name(True)}, {hi.model})"
        ]
        claims.append(
            (
                "An adapter is a few MB",
                "a few MB (vs GBs for the model)",
                "PEFT's README (\"checkpoints "
                'only a few MBs"); LoRA paper: GPT-3 175B checkpoint 350 GB → 35 MB at r=4',
                said,
            )
        )
    return claims


def render_markdown(frame, rows: list[Row], metric: str, note: str, images: dict[str, str]) -> str:
    cols = shown_columns(rows)
    lines = [
        "# peftbench leaderboard",
        "",
        f"{len(frame)} runs from {sources_text(frame)}; {ranking_text(metric, note)}. "
        "Several seeds of one point are shown as mean ± std (sample std). "
        f"{TIE_NOTE} Runs that did not finish ok are listed with their status and error, never dropped.",
    ]
    if (~frame["quality_valid"]).any():
        lines += ["", "† random-init weights: score and losses measure nothing about quality, so they are left out."]
    for facet in facets(frame):
        sub = frame[(frame["model"] == facet[0]) & (frame["gpu"] == facet[1])]
        lines += ["", f"## {facet_title(facet)}", "", f"**What wins here.** {what_wins(rows, facet)}", ""]
        lines += [f"{facet_ranking(rows, facet, metric)}", ""] if facet_ranking(rows, facet, metric) else []
        lines += [f"- **{k}**: {v}" for k, v in conditions(sub)]
        header = ["rank", "method", "engine", "status", "seeds"] + [METRICS[c][0] for c in cols] + ["error"]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in (r for r in rows if r.facet == facet):
            cells = [rank_text(row), row.label, row.engine, status_text(row), str(row.n)]
            cells += [fmt_cell(row, c) if row.status == "ok" else "" for c in cols]
            cells.append(did_not_finish(row) if row.status != "ok" else "")
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += frontier_markdown(rows, memory_metric(frame))
    claims = folklore(frame, rows)
    if claims:
        lines += [
            "",
            "## Folklore, measured",
            "",
            "Common claims beside what this folder's rows say (only the claims "
            "some row here speaks to; peak allocated memory in GB = 10⁹ bytes, as the claims count).",
            "",
        ]
        for claim, figure, source, said in claims:
            lines += [f"- **{claim}** (usual figure: {figure}; source: {source}). Here:"]
            lines += [f"  - {s}" for s in said]
    if images:
        lines += ["", "## Plots", ""] + [f"![{name}]({Path(path).name})" for name, path in images.items()]
    lines += ["", "Interactive version (sortable, filterable, any two metrics on the Pareto plot): `report.html`.", ""]
    return "\n".join(lines)


TIE_NOTE = (
    "A rank written `=k` is tied with rank k: their means differ by less than the combined standard error "
    "√(se₁² + se₂²) (the evaluation's stderr for score; the seeds' spread over √n otherwise)."
)


def sources_text(frame) -> str:
    """`embedded-default` for one folder; for several, how many were merged and how many duplicate runs were dropped."""
    folders = frame.attrs.get("folders") or list(dict.fromkeys(s.split(" (")[0] for s in frame["source"]))
    if len(folders) == 1:
        return f"`{distinct(frame, 'run_name')}`"
    dropped = frame.attrs.get("duplicates", 0)
    return (
        f"{len(folders)} results folders merged by run id ({dropped} duplicate run(s) counted once; each row's "
        f"`source` names its folder): {', '.join(f'`{f}`' for f in folders)}"
    )
