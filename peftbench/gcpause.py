"""Python's garbage collector during training: its pauses measured, and the fast profile's freeze after step 1.

A full collection (generation 2) walks every container object the process holds. After torch.compile has traced the
decoder layers (FX graphs, guards, sympy expressions, Inductor's kernels) that is millions of objects, and one full
collection took 0.40-0.54 s on the H200's host, once in 9 steady LoRA steps of 0.37 s: the steady rate fell 11-15%
below what the median step gives (results/h200 run 37). `gc.freeze()` moves every object alive at that moment into a
generation the collector never walks again (CPython's advice for long-lived processes; vLLM freezes after its
warm-up the same way); later collections walk only what training itself keeps.

- `Pauses`: every collection's time while it is started (gc.callbacks), for the callback's `gc_*` record fields, so a
  job's steady rate can be read beside what the collector took of it.
- `FreezeAfterStep`: a Trainer callback that collects once and freezes at the end of step `step` (the first: where
  compilation happens), inside the warm-up steps throughput leaves out.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from transformers import TrainerCallback


class Pauses:
    """Collections and their time between `start()` and `stop()`; `fields()` gives the record's figures."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]  # collections per generation
        self.total_s = 0.0
        self.max_s = 0.0
        self._began: float | None = None
        self._on = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began is not None:
            took = time.perf_counter() - self._began
            self._began = None
            self.count[info.get("generation", 2)] += 1
            self.total_s += took
            self.max_s = max(self.max_s, took)

    def start(self) -> None:
        if not self._on:
            gc.callbacks.append(self._callback)
            self._on = True

    def stop(self) -> None:
        if self._on:
            if self._callback in gc.callbacks:
                gc.callbacks.remove(self._callback)
            self._on = False

    def fields(self) -> dict[str, Any]:
        return {
            "gc_pause_s": self.total_s,  # every collection during training, warm-up steps included
            "gc_pause_max_s": self.max_s,
            "gc_full_collections": self.count[2],
        }


class FreezeAfterStep(TrainerCallback):
    """At the end of optimizer step `step`: one full collection, then `gc.freeze()`; `release()` (at the training's
    end, and by the runner whatever happened) unfreezes, so what the training left behind can be collected again.
    `fields()`: what it did."""

    def __init__(self, step: int = 1) -> None:
        self.step = step
        self.collect_s: float | None = None
        self.frozen: int | None = None
        self._holding = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.frozen is None and state.global_step >= self.step:
            began = time.perf_counter()
            gc.collect()
            gc.freeze()
            self.collect_s = time.perf_counter() - began
            self.frozen = gc.get_freeze_count()
            self._holding = True

    def on_train_end(self, args, state, control, **kwargs):
        self.release()

    def release(self) -> None:
        if self._holding:
            gc.unfreeze()
            self._holding = False

    def fields(self) -> dict[str, Any]:
        return {
            "gc_frozen_after_step": self.step if self.frozen is not None else None,
            "gc_frozen_objects": self.frozen,
            "gc_freeze_collect_s": self.collect_s,
        }
