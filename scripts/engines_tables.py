"""The engines table of one or more engines_benchmark.sh output folders: method x engine (and profile=fast), with
engine=unsloth against unsloth driven directly (scripts/unsloth_direct.py) and profile=fast against unsloth.

    python scripts/engines_tables.py OUTDIR [OUTDIR...]   # prints markdown; later folders' rows win on repeats
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def peftbench_rows(out: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((out / "results" / "engines").glob("*/record.json")):
        rec = json.loads(path.read_text())
        profile = rec.get("profile") or rec.get("config", {}).get("profile", {}).get("name", "default")
        train = rec.get("config", {}).get("train", {})
        if (
            profile == "fast" and rec.get("engine_gradient_checkpointing", "off") != "off"
        ):  # the profile's GC choice overridden
            profile += " +gc" + (
                " offload" if (train.get("gradient_checkpointing_kwargs") or {}).get("offload") else ""
            )
        rows.append(
            {
                "method": rec["method"],
                "engine": rec.get("engine", "peft"),
                "profile": profile,
                "status": rec["status"],
                "tokens_per_s": rec.get("tokens_per_s"),
                "peak_alloc_gib": rec.get("gpu_allocated_gib_peak"),
                "peak_reserved_gib": rec.get("gpu_reserved_gib_peak"),
                "step_median_s": rec.get("step_time_median_s"),
                "steps": rec.get("steps"),
                "gc": rec.get("engine_gradient_checkpointing"),
                "kernels": rec.get("engine_kernels"),
                "engine_version": rec.get("engine_version"),
                "error": (rec.get("error") or "")[:120],
            }
        )
    return pd.DataFrame(rows)


def direct_rows(out: Path) -> pd.DataFrame:
    path = out / "direct.csv"
    if not path.exists():
        return pd.DataFrame()
    frame = pd.read_csv(path)
    return pd.DataFrame(
        {
            "method": frame.method,
            "engine": "unsloth direct",
            "profile": "-",
            "status": "ok",
            "tokens_per_s": frame.tokens_per_s,
            "peak_alloc_gib": frame.peak_allocated_gib,
            "peak_reserved_gib": frame.peak_reserved_gib,
            "step_median_s": frame.step_time_median_s,
            "steps": frame.steps,
            "gc": "unsloth",
            "kernels": "",
            "engine_version": frame.unsloth,
        }
    )


def main(outs: list[Path]) -> None:
    frames = [f for out in outs for f in (peftbench_rows(out), direct_rows(out)) if not f.empty]
    if not frames:
        print("no results")
        return
    table = pd.concat(frames).drop_duplicates(["method", "engine", "profile"], keep="last")
    order = {"lora": 0, "qlora": 1, "full": 2}
    table = table.sort_values(["method", "engine", "profile"], key=lambda c: c.map(order) if c.name == "method" else c)
    print("## Llama-2-7B shape, seq 2048, micro-batch 2, bf16: method x engine\n")
    print(
        table.drop(
            columns=["error"] if not table.get("error", pd.Series(dtype=str)).fillna("").any() else []
        ).to_markdown(index=False, floatfmt=".4g")
    )
    ok = table[table.status == "ok"].set_index(["method", "engine", "profile"])
    lines = ["", "## Ratios", "", "| method | ratio | value |", "|---|---|---|"]
    for method in order:

        def get(engine, profile, col="tokens_per_s"):
            try:
                return float(ok.loc[(method, engine, profile), col])  # noqa: B023 - called in this iteration only
            except KeyError:
                return None

        uns, direct = get("unsloth", "default"), get("unsloth direct", "-")
        peft = get("peft", "default")
        uns_mem = get("unsloth", "default", "peak_alloc_gib")
        if uns and direct:
            lines.append(f"| {method} | engine=unsloth / unsloth direct, tokens/s | {uns / direct:.3f} |")
            d_mem = get("unsloth direct", "-", "peak_alloc_gib")
            lines.append(f"| {method} | engine=unsloth / unsloth direct, peak allocated | {uns_mem / d_mem:.3f} |")
        if uns and peft:
            lines.append(f"| {method} | engine=unsloth / engine=peft, tokens/s | {uns / peft:.3f} |")
        liger = get("liger", "default")
        if liger and peft:
            lines.append(f"| {method} | engine=liger / engine=peft, tokens/s | {liger / peft:.3f} |")
        for variant in ("fast", "fast +gc", "fast +gc offload"):
            tok, mem = get("peft", variant), get("peft", variant, "peak_alloc_gib")
            if tok and uns:
                lines.append(f"| {method} | profile={variant} / engine=unsloth, tokens/s | {tok / uns:.3f} |")
                lines.append(f"| {method} | profile={variant} / engine=unsloth, peak allocated | {mem / uns_mem:.3f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]] or [Path(".")])
