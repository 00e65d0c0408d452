"""When each optimizer step ended, on the host's clock, without waiting for the GPU at every step.

A synchronize at each step end would empty the GPU's queue of launched work and leave the GPU idle while the host
prepares the next step, so the measurement would slow what it measures. On a GPU a CUDA event is recorded at the step
end instead and read once the GPU has passed it: its time is the moment the step's last kernel finished, on a clock
whose origin is taken right after one synchronize at the start. On CPU the host clock at the step end is that moment.
"""

from __future__ import annotations

import time
from collections import deque

import torch


class StepClock:
    """`mark()` at each step end; `finish()` returns every step's end time (perf_counter seconds)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.times: list[float | None] = []
        self._pending: deque[tuple[int, torch.cuda.Event]] = deque()
        if cuda:
            torch.cuda.synchronize()
            self._origin_event = torch.cuda.Event(enable_timing=True)
            self._origin_event.record()
        self.origin = time.perf_counter()

    def mark(self) -> None:
        if not self.cuda:
            self.times.append(time.perf_counter())
            return
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.times.append(None)
        self._pending.append((len(self.times) - 1, event))
        self._resolve(wait=False)  # events the GPU has passed: keeps the pending queue a step or two long

    def finish(self) -> list[float]:
        """Every mark's time. Waits for the GPU once, for the marks it has not passed yet."""
        self._resolve(wait=True)
        return [t for t in self.times if t is not None]

    resolved = finish  # marks may follow: finish() can be called again, and the times so far stay as they were

    def _resolve(self, wait: bool) -> None:
        while self._pending and (wait or self._pending[0][1].query()):
            index, event = self._pending.popleft()
            event.synchronize()
            self.times[index] = self.origin + self._origin_event.elapsed_time(event) / 1000
