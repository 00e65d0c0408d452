"""StepProfiler: torch.profiler over a few optimizer steps of any Trainer job, to see where a step's time goes.

    python -m peftbench ... run.profile_steps=2        # the 2 steps after the warm-up, into <point>/profile/

Writes `trace.json.gz` (open it in Perfetto or chrome://tracing), the op tables sorted by GPU and by CPU time, and
`summary.json`: the profiled wall time, the GPU's busy time (kernels and copies) and the kernels (memsets included)
per step.
A step whose GPU is busy for much less than its wall time is bound by the host (Python, kernel launches, syncs).
Profiled steps run slower than unprofiled ones, so a point that profiles is for diagnosis, not for its tokens/s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


class StepProfiler(TrainerCallback):
    """Profiles optimizer steps `start + 1` to `start + count` (global_step counts finished steps)."""

    def __init__(self, folder: str | Path, start: int, count: int) -> None:
        self.folder, self.start, self.count = Path(folder), start, count
        self.profiler: torch.profiler.profile | None = None
        self.done, self.t0 = False, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.profiler is None and not self.done and state.global_step == self.start:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is None or state.global_step < self.start + self.count:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - self.t0
        self.profiler.__exit__(None, None, None)
        self.write(wall, state.global_step - self.start)
        self.profiler, self.done = None, True

    def write(self, wall_s: float, steps: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        prof = self.profiler
        events = prof.key_averages()
        (self.folder / "ops_by_gpu_time.txt").write_text(events.table(sort_by="self_device_time_total", row_limit=40))
        (self.folder / "ops_by_cpu_time.txt").write_text(events.table(sort_by="self_cpu_time_total", row_limit=40))
        device = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        summary = {
            "steps": steps,
            "wall_s_per_step": wall_s / steps,
            "gpu_busy_s_per_step": sum(e.device_time_total for e in device) / 1e6 / steps,
            "kernels_per_step": sum(1 for e in device if e.name and not e.name.startswith("Memcpy")) / steps,
            "cpu_ops_per_step": sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CPU) / steps,
        }
        summary["gpu_busy_fraction"] = summary["gpu_busy_s_per_step"] / summary["wall_s_per_step"]
        (self.folder / "summary.json").write_text(json.dumps(summary, indent=1))
        prof.export_chrome_trace(str(self.folder / "trace.json.gz"))


class PeakMemoryTrace(TrainerCallback):
    """Which tensors are alive at a training's peak: the CUDA caching allocator's history from the start of training
    to the end of step `steps`, replayed to the moment the bytes its tensors requested were largest.

    The history records requested bytes (what each tensor asked for), not the allocator's block sizes, so the replay
    compares the tensors of two jobs whatever each allocator had cached. Writes `memory_peak.json`: the peak, what was
    already requested when training began, and the tensors alive at the peak grouped by requested size (two jobs
    whose peaks differ show the difference as a size with a different count). No stack traces: recording Python frames
    fails inside the autograd engine's recomputation (torch 2.11, H100 run 14). Diagnosis only."""

    MAX_EVENTS = 1_000_000  # the allocator keeps the last N events; a history that filled it has lost its start

    def __init__(self, folder: str | Path, steps: int) -> None:
        self.folder, self.steps = Path(folder), steps
        self.baseline: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.baseline = torch.cuda.memory.memory_stats_as_nested_dict()["requested_bytes"]["all"]["current"]
            torch.cuda.memory._record_memory_history(context=None, max_entries=self.MAX_EVENTS)

    def on_step_end(self, args, state, control, **kwargs):
        if self.baseline is None or state.global_step < self.steps:
            return
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        events = snapshot["device_traces"][torch.cuda.current_device()]
        summary = peak_composition(events, self.baseline)
        summary.update(steps=state.global_step, history_complete=len(events) < self.MAX_EVENTS)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "memory_peak.json").write_text(json.dumps(summary, indent=1))
        self.baseline = None


def peak_composition(events: list[dict], baseline: int) -> dict:
    """Replays allocator events (requested bytes) from a total of `baseline`: the peak, and the tensors alive at it
    by size."""
    total = peak = baseline
    peak_index = -1
    for i, event in enumerate(events):
        if event["action"] == "alloc":
            total += event["size"]
        elif event["action"] == "free_requested":
            total -= event["size"]
        if total > peak:
            peak, peak_index = total, i
    live: dict[int, int] = {}
    for event in events[: peak_index + 1]:
        if event["action"] == "alloc":
            live[event["addr"]] = event["size"]
        elif event["action"] == "free_requested":
            live.pop(event["addr"], None)
    sizes: dict[int, int] = {}
    for size in live.values():
        sizes[size] = sizes.get(size, 0) + 1
    return {
        "peak_requested_bytes": peak,
        "requested_at_train_begin": baseline,
        "at_peak_from_before_training": peak - sum(live.values()),
        "at_peak_tensors_by_size": {str(size): count for size, count in sorted(sizes.items(), reverse=True)},
        "peak_event_index": peak_index,
        "events": len(events),
    }
