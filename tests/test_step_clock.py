"""StepClock: step ends timed by events the GPU passes, read without waiting, and all of them by finish().

No GPU here, so torch.cuda's Event and synchronize are replaced by a GPU that completes events when told to: what is
under test is the bookkeeping (order, which marks wait, the origin), not CUDA itself (the H100 runs check that)."""

from __future__ import annotations

import time

import pytest
import torch

from peftbench.step_clock import StepClock


class FakeGpu:
    def __init__(self):
        self.recorded: list[FakeEvent] = []
        self.done = 0  # events the GPU has passed, in recording order
        self.waits = 0

    def synchronize(self):
        self.waits += 1
        self.done = len(self.recorded)


class FakeEvent:
    gpu: FakeGpu

    def __init__(self, enable_timing=False):
        assert enable_timing

    def record(self):
        self.index = len(self.gpu.recorded)
        self.gpu.recorded.append(self)

    def query(self):
        return self.index < self.gpu.done

    def synchronize(self):
        if not self.query():
            self.gpu.synchronize()

    def elapsed_time(self, end):
        return 250.0 * (end.index - self.index)  # every event 0.25 s after the one before, in ms


@pytest.fixture
def gpu(monkeypatch):
    fake = FakeGpu()
    FakeEvent.gpu = fake
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", fake.synchronize)
    return fake


def test_marks_are_read_once_the_gpu_passed_them_and_never_waited_for(gpu):
    clock = StepClock(cuda=True)
    assert gpu.waits == 1  # the origin: one synchronize at the start
    clock.mark()
    clock.mark()
    assert clock.times == [None, None] and gpu.waits == 1  # the GPU has not passed them: nothing waited
    gpu.done = 2  # it passed the origin and the first mark
    clock.mark()
    assert clock.times[0] == pytest.approx(clock.origin + 0.25) and clock.times[1:] == [None, None]
    assert gpu.waits == 1
    ends = clock.finish()  # waits once for the rest
    assert gpu.waits == 2
    assert ends == pytest.approx([clock.origin + 0.25, clock.origin + 0.5, clock.origin + 0.75])


def test_on_cpu_the_host_clock_is_the_step_end():
    clock = StepClock(cuda=False)
    clock.mark()
    time.sleep(0.01)
    clock.mark()
    ends = clock.finish()
    assert clock.origin <= ends[0] < ends[1] and ends[1] - ends[0] >= 0.01
