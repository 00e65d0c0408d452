"""Summarise scripts/multigpu_benchmark.sh's work folder as Markdown: the FSDP record's per-rank memory and global
throughput, and the two sweeps' walls (2 GPUs in parallel vs 1 GPU) with the GPU each point ran on.

    python scripts/multigpu_summary.py WORKDIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/record.json"))]


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def distributed_section(title: str, recs: list[dict]) -> list[str]:
    lines = [f"## {title}", ""]
    if not recs:
        return lines + ["no record (see its log)", ""]
    for r in recs:
        lines.append(
            f"- {r['run_id']}: status **{r['status']}**, strategy **{r.get('strategy')}** "
            f"(FSDP version {fmt(r.get('fsdp_version'))}), world_size **{r.get('world_size')}**, "
            f"gpu_count {r.get('gpu_count')}, GPU {r.get('gpu_name')}"
        )
        lines.append(
            f"- global tokens/s **{fmt(r.get('tokens_per_s'))}** ({fmt(r.get('tokens_per_s_per_gpu'))} per GPU; "
            f"{r.get('real_tokens')} real tokens over {r.get('steps')} steps, {r.get('steady_state_steps')} timed), "
            f"median step {fmt(r.get('step_time_median_s'))} s, MFU {fmt(r.get('mfu'))}, "
            f"precision {r.get('precision')}, trainable {r.get('trainable_params')} of {r.get('total_params')}"
        )
        lines.append(
            f"- headline peak (max over ranks): allocated {fmt(r.get('gpu_allocated_gib_peak'))} GiB, reserved "
            f"{fmt(r.get('gpu_reserved_gib_peak'))} GiB, NVML {fmt(r.get('gpu_nvml_used_gib_peak'))} GiB"
        )
        lines += [
            "",
            "| rank | device | allocated GiB peak | reserved GiB peak | NVML used GiB peak | RSS GiB peak |",
            "|---|---|---|---|---|---|",
        ]
        for p in r.get("per_rank") or []:
            lines.append(
                f"| {p['rank']} | {p['device']} | {fmt(p['gpu_allocated_gib_peak'])} | "
                f"{fmt(p['gpu_reserved_gib_peak'])} | {fmt(p['gpu_nvml_used_gib_peak'])} | {fmt(p['rss_gib_peak'])} |"
            )
        if r.get("adapter_bytes") is not None:
            lines.append(f"\nsaved weights: {r['adapter_bytes']} bytes")
        if r.get("error"):
            lines.append(f"\nerror: {r['error']}")
        lines.append("")
    return lines


def sweep_section(work: Path) -> list[str]:
    lines = ["## Four-point sweep: 2 GPUs in parallel vs 1 GPU", ""]
    walls = {}
    for name in ("sweep2", "sweep1"):
        f = work / f"wall_{name}"
        wall = f.read_text().strip() if f.exists() else "not run"
        walls[name] = wall
        walls[name + "_text"] = f"{wall} s" if wall.replace(".", "", 1).isdigit() else wall
    lines.append(f"- wall, 2 GPUs (hydra/launcher=local_gpus): **{walls['sweep2_text']}**")
    lines.append(f"- wall, 1 GPU (default launcher, CUDA_VISIBLE_DEVICES=0): **{walls['sweep1_text']}**")
    try:
        lines.append(f"- speed-up: **{float(walls['sweep1']) / float(walls['sweep2']):.2f}x**")
    except ValueError:
        pass
    lines += [
        "",
        "| sweep | method | r | status | CUDA_VISIBLE_DEVICES | tokens/s | time_train_s | time_total_s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("sweep2", "sweep1"):
        for r in records(work / "results" / name):
            lines.append(
                f"| {name} | {r['method']} | {r['method_config'].get('r')} | {r['status']} | "
                f"{r.get('cuda_visible_devices')} | {fmt(r.get('tokens_per_s'))} | {fmt(r.get('time_train_s'))} | "
                f"{fmt(r.get('time_total_s'))} |"
            )
    return lines + [""]


def main() -> None:
    work = Path(sys.argv[1])
    lines = ["# peftbench multi-GPU benchmark", ""]
    lines += distributed_section("full_7b with FSDP over 2 GPUs", records(work / "results" / "fsdp7b"))
    lines += sweep_section(work)
    lines += distributed_section("LoRA 7B with DDP over 2 GPUs", records(work / "results" / "ddp"))
    lines += distributed_section("tiny FSDP full fine-tune with saving", records(work / "results" / "fsdpsave"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
