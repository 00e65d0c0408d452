"""Points of one in-process sweep start from the same memory: what a finished point allocated is freed before the
next one (on the H200, run 20, the points after SHiRA and Super-Tuning started with 2.25 and 4.46 GiB allocated)."""

from __future__ import annotations

import gc

import pytest
import torch

from peftbench import trainer
from peftbench.runner import run_point

QUICK = ["eval=none", "train.max_steps=1", "run.save_adapter=false", "data.max_train_samples=4", "run.force=true"]


def live_tensor_bytes() -> int:
    """Bytes of every storage a live tensor holds, each storage once (counted off the garbage collector)."""
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@pytest.fixture
def bytes_at_train_start(monkeypatch):
    """Live tensor bytes when each point's trainer.train() begins (the model built, nothing trained yet)."""
    seen: list[int] = []
    build = trainer.sft_trainer_class

    def spying(step_metrics):
        class Spy(build(step_metrics)):
            def train(self, *args, **kwargs):
                seen.append(live_tensor_bytes())
                return super().train(*args, **kwargs)

        return Spy

    monkeypatch.setattr(trainer, "sft_trainer_class", spying)
    return seen


# PEFT's warn-once lru_cache keyed on the layer (models.clear_peft_caches). Every other registered method was probed
# the same way on the CPU (two points in one process) and leaves nothing behind.
# full_adamw8bit: transformers registers the embeddings with bitsandbytes' GlobalOptimManager singleton
# (models.reset_bnb_optimizer_overrides)
@pytest.mark.parametrize("name", ["shira", "supertuning", "full_adamw8bit"])
def test_the_second_point_starts_with_what_the_first_did(tiny_cfg, bytes_at_train_start, name):
    from tests.test_methods import TINY_OPTIONS

    options = [f"method.{k}={v}" for k, v in TINY_OPTIONS.get(name, {}).items()]
    before = live_tensor_bytes()  # what earlier tests of this process left alive, not this test's business
    for _ in range(2):
        record = run_point(tiny_cfg(f"method={name}", *options, *QUICK))
        assert record["status"] == "ok", record.get("error")
    first, second = bytes_at_train_start
    assert first > 0
    assert second == first, f"{second - first} bytes of the first point still alive at the second's start"
    assert live_tensor_bytes() - before < 1024  # after release_memory: nothing of either point (a few constants)
