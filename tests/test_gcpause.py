"""peftbench.gcpause: the collector's pauses as measured, and the fast profile's freeze after step 1."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from peftbench import gcpause, profiles
from peftbench.errors import InputError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_pauses_count_each_collection_and_its_time_while_started():
    pauses = gcpause.Pauses()
    gc.collect()  # before start: not counted
    pauses.start()
    pauses.start()  # twice: one callback, not two
    began = time.perf_counter()
    gc.collect()
    gc.collect(0)
    took = time.perf_counter() - began
    pauses.stop()
    gc.collect()  # after stop: not counted
    fields = pauses.fields()
    assert fields["gc_full_collections"] == 1 and pauses.count[0] >= 1
    assert 0 < fields["gc_pause_max_s"] <= fields["gc_pause_s"] <= took
    assert pauses._callback not in gc.callbacks


def test_freeze_after_step_freezes_once_at_that_step_and_release_unfreezes(unfrozen):
    freezer = gcpause.FreezeAfterStep(step=2)
    args = control = None
    freezer.on_step_end(args, SimpleNamespace(global_step=1), control)
    assert gc.get_freeze_count() == 0 and freezer.fields()["gc_frozen_after_step"] is None
    freezer.on_step_end(args, SimpleNamespace(global_step=2), control)
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # a process that imported torch holds far more than that
    fields = freezer.fields()
    assert fields["gc_frozen_after_step"] == 2 and abs(fields["gc_frozen_objects"] - frozen) < 100
    assert fields["gc_freeze_collect_s"] > 0
    kept = [[] for _ in range(1000)]  # made after the freeze: not frozen, and a later step does not freeze again
    freezer.on_step_end(args, SimpleNamespace(global_step=3), control)
    assert abs(gc.get_freeze_count() - frozen) < 100 and kept
    freezer.on_train_end(args, SimpleNamespace(global_step=3), control)
    assert gc.get_freeze_count() == 0
    freezer.release()  # idempotent
    assert gc.get_freeze_count() == 0


def test_a_frozen_heap_makes_a_full_collection_walk_only_what_came_after(unfrozen):
    """What the freeze is for: a full collection's time grows with the tracked objects it walks, and frozen ones are
    not walked (the compiled process's millions of objects, scaled down to what pytest holds and 300,000 lists)."""
    heap = [[] for _ in range(300_000)]

    def full_collection_s() -> float:
        began = time.perf_counter()
        gc.collect()
        return time.perf_counter() - began

    walked = min(full_collection_s() for _ in range(2))
    freezer = gcpause.FreezeAfterStep(step=1)
    freezer.on_step_end(None, SimpleNamespace(global_step=1), None)
    frozen = min(full_collection_s() for _ in range(2))
    freezer.release()
    assert frozen < walked / 4, (frozen, walked)
    del heap


def test_the_fast_profile_freezes_and_the_default_profile_does_not():
    fast = OmegaConf.to_container(OmegaConf.load(RECIPES / "profile" / "fast.yaml"))
    default = OmegaConf.to_container(OmegaConf.load(RECIPES / "profile" / "default.yaml"))
    assert profiles.gc_freeze(fast) is True and profiles.gc_freeze(default) is False


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_gc_freeze_must_be_true_or_false(value):
    with pytest.raises(
        InputError, match=r"profile\.gc_freeze: got .*expected true or false, e\.g\. profile\.gc_freeze=false"
    ):
        profiles.check_plan_options({"name": "fast", "gc_freeze": value})
