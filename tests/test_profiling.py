"""run.profile_steps: a torch.profiler trace and op tables of the steps after the warm-up, written beside the record."""

from __future__ import annotations

import json
from pathlib import Path

from peftbench.runner import run_point


def test_profile_steps_write_a_trace_and_a_summary_of_those_steps(tiny_cfg):
    cfg = tiny_cfg("method=lora", "eval=none", "run.warmup_steps=1", "run.profile_steps=2", "train.max_steps=4")
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["profiled_steps"] == 2
    folder = Path(cfg.run.results_dir) / record["run_id"] / "profile"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["wall_s_per_step"] > 0 and summary["cpu_ops_per_step"] > 0
    assert "aten::mm" in (folder / "ops_by_cpu_time.txt").read_text()  # the model's matmuls were recorded
    assert (folder / "trace.json.gz").stat().st_size > 0


def test_profiling_is_off_by_default(tiny_cfg):
    cfg = tiny_cfg("method=lora", "eval=none", "train.max_steps=2")
    record = run_point(cfg)
    assert record["profiled_steps"] == 0
    assert not (Path(cfg.run.results_dir) / record["run_id"] / "profile").exists()
