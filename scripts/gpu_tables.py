"""Side-by-side tables of one gpu_benchmark.sh output folder: peftbench (default, fast) against the stock baseline.

python scripts/gpu_tables.py OUTDIR   # prints markdown; ratios are peftbench / stock from the same run
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def peftbench_table(out: Path, run: str) -> pd.DataFrame | None:
    path = out / "results" / run / "table.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path)
    keep = [
        "method",
        "status",
        "tokens_per_s",
        "gpu_allocated_gib_peak",
        "gpu_reserved_gib_peak",
        "predicted_peak_gib",
        "gpu_allocated_at_start_gib",
        "step_time_median_s",
        "hyperparameters.gradient_checkpointing",
        "error",
    ]
    return frame[[c for c in keep if c in frame.columns]].drop_duplicates("method", keep="last").set_index("method")


def fmt(frame: pd.DataFrame) -> str:
    return frame.to_markdown(floatfmt=".3g") if hasattr(frame, "to_markdown") else frame.to_string()


def main(out: Path) -> None:
    for workload, stock_file, runs in (
        ("A (synthetic 2048)", "stock_a.csv", ["a_default", "a_each", "a_fast"]),
        ("B (GSM8K)", "stock_b.csv", ["b_default"]),
    ):
        stock_path = out / stock_file
        if not stock_path.exists():
            continue
        stock = pd.read_csv(stock_path).drop_duplicates("method", keep="last").set_index("method")
        side = pd.DataFrame({"stock_tok_s": stock.tokens_per_s, "stock_peak_gib": stock.peak_allocated_gib})
        if "tokens_per_s_in_step" in stock:  # gaps between steps left out: shown, not used for the ratios
            side["stock_in_step_tok_s"] = stock.tokens_per_s_in_step
        for run in runs:
            table = peftbench_table(out, run)
            if table is None:
                continue
            name = run.split("_", 1)[1]
            side[f"{name}_tok_s"] = table.tokens_per_s
            side[f"{name}_peak_gib"] = table.gpu_allocated_gib_peak
            side[f"{name}_x_stock"] = table.tokens_per_s / stock.tokens_per_s
            side[f"{name}_mem_x_stock"] = table.gpu_allocated_gib_peak / stock.peak_allocated_gib
            if "gpu_allocated_at_start_gib" in table:  # left allocated by earlier points of the same process
                side[f"{name}_start_mib"] = 1024 * table.gpu_allocated_at_start_gib
            if "predicted_peak_gib" in table:
                side[f"{name}_predicted_gib"] = table.predicted_peak_gib
                side[f"{name}_pred_err_pct"] = 100 * (table.predicted_peak_gib / table.gpu_allocated_gib_peak - 1)
            if "hyperparameters.gradient_checkpointing" in table:
                side[f"{name}_gc"] = table["hyperparameters.gradient_checkpointing"]
        print(f"## Workload {workload}\n\n{side.to_string()}\n")
    for run in ("qlora7b_mb1", "qlora70b"):
        table = peftbench_table(out, run)
        if table is not None:
            print(f"## {run}\n\n{table.to_string()}\n")
    alternated(out)
    compiled(out)
    overhead = out / "stock_overhead.csv"
    if overhead.exists():
        frame = pd.read_csv(overhead)
        print(f"## callback overhead (LoRA, stock script, same process)\n\n{frame.to_string()}\n")
        arm = frame["arm"] if "arm" in frame else frame.with_callback.map({False: "none", True: "peftbench"})
        means = frame.groupby(arm).tokens_per_s.mean()
        for name in means.index.drop("none") if "none" in means else []:
            print(f"overhead {name} = {100 * (1 - means[name] / means['none']):+.2f}% of the tokens/s (mean per arm)\n")


def compiled(out: Path) -> None:
    """The `compile` section: one point per results folder (compile_<method>_<plan>[_<overrides>]), against the
    stock script's row of the same method from the same call (stock_a.csv)."""
    import json

    records = [json.loads(p.read_text()) for p in sorted((out / "results").glob("compile_*/*/record.json"))]
    if not records:
        return
    stock_path = out / "stock_a.csv"
    stock = (
        pd.read_csv(stock_path).drop_duplicates("method", keep="last").set_index("method")
        if stock_path.exists()
        else pd.DataFrame(columns=["tokens_per_s", "peak_allocated_gib"])
    )
    rows = []
    for rec in records:
        base = stock.loc[rec["method"]] if rec["method"] in stock.index else None
        tok, peak = rec.get("tokens_per_s"), rec.get("gpu_allocated_gib_peak")
        rows.append(
            {
                "point": Path(rec.get("config", {}).get("run", {}).get("results_dir", "")).name[len("compile_") :],
                "method": rec["method"],
                "status": rec["status"],
                "compile": rec.get("compile"),
                "plan": rec.get("checkpointing_plan"),
                "tok_s": tok,
                "peak_gib": peak,
                "predicted_gib": rec.get("predicted_peak_gib"),
                "x_stock": tok / base.tokens_per_s if base is not None and tok else None,
                "mem_x_stock": peak / base.peak_allocated_gib if base is not None and peak else None,
                "time_compile_s": rec.get("time_compile_s"),
                "graphs": rec.get("compile_graphs"),
                "breaks": rec.get("compile_graph_breaks"),
                "liger": rec.get("engine_kernels"),
                "error": (rec.get("error") or "")[:120],
            }
        )
    print(
        f"## Regional compile and checkpointing plans (workload A, one fresh process each)\n\n"
        f"{pd.DataFrame(rows).to_string(index=False, float_format='{:.3f}'.format)}\n"
    )


def alternated(out: Path) -> None:
    """The `ab` section: stock and peftbench's profiles in fresh processes, alternated round by round."""
    stock_path = out / "stock_ab.csv"
    if not stock_path.exists():
        return
    stock = pd.read_csv(stock_path)
    stock["round"] = stock.groupby("method").cumcount() + 1  # rows are appended in the order they ran
    # peak_gib: the allocator's blocks (max_memory_allocated); requested_gib: the bytes the tensors asked for
    stock["requested_gib"] = stock.get("peak_requested_gib")
    rows = [
        stock.assign(side="stock")[
            ["method", "round", "side", "tokens_per_s", "peak_allocated_gib", "requested_gib"]
        ].rename(columns={"peak_allocated_gib": "peak_gib"})
    ]
    for table_path in sorted((out / "results").glob("ab_*_r*/table.csv")):
        side, rnd = table_path.parent.name[len("ab_") :].rsplit("_r", 1)
        table = pd.read_csv(table_path)
        rows.append(
            pd.DataFrame(
                {
                    "method": table.method,
                    "round": int(rnd),
                    "side": side,
                    "tokens_per_s": table.tokens_per_s,
                    "peak_gib": table.gpu_allocated_gib_peak,
                    "requested_gib": table.get("gpu_requested_gib_peak"),
                }
            )
        )
    runs = pd.concat(rows, ignore_index=True)
    print(
        f"## Alternated fresh processes (workload A)\n\n"
        f"{runs.sort_values(['method', 'round', 'side']).to_string(index=False, float_format='{:.6f}'.format)}\n"
    )
    means = runs.groupby(["method", "side"]).tokens_per_s.agg(["mean", "min", "max", "count"])
    means["spread_pct"] = 100 * (means["max"] - means["min"]) / means["mean"]
    stock_mean = means.xs("stock", level="side")["mean"]
    means["x_stock"] = means["mean"] / stock_mean.reindex(means.index.get_level_values("method")).to_numpy()
    print(
        "mean per side (x_stock: mean over rounds / stock's mean; spread: max-min over rounds)\n\n"
        f"{means.to_string()}\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
