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


def test_peak_composition_replays_the_allocator_history_to_its_largest_total():
    from peftbench.profiling import peak_composition

    events = [
        {"action": "alloc", "addr": 1, "size": 512},
        {"action": "alloc", "addr": 2, "size": 4096},
        {"action": "free_requested", "addr": 9, "size": 1024},  # allocated before training began
        {"action": "free_completed", "addr": 9, "size": 1024},
        {"action": "alloc", "addr": 3, "size": 512},
        {"action": "free_requested", "addr": 2, "size": 4096},
        {"action": "alloc", "addr": 4, "size": 2048},
    ]
    out = peak_composition(events, baseline=10_000)
    # totals: 10512, 14608 (peak), 13584, 13584, 14096, 10000, 12048
    assert out["peak_requested_bytes"] == 14_608 and out["peak_event_index"] == 1
    assert out["at_peak_from_before_training"] == 10_000
    assert out["at_peak_tensors_by_size"] == {"4096": 1, "512": 1}
