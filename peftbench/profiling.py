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
