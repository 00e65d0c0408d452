"""Shared fixtures: Hydra composition of the shipped recipes, and a scratch results folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from peftbench.paths import recipes_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PEFTBENCH_DATA", REPO.parent / "shared" / "data"))
TINY = ["model=tiny_llama", "train=tiny", "sweep=none", "data.max_train_samples=32", "data.max_eval_samples=8"]


def compose_recipe(*overrides: str):
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def tiny_cfg(tmp_path):
    """Compose a tiny, fast recipe writing into a temporary results folder."""

    def make(*overrides: str):
        return compose_recipe(*TINY, f"run.results_dir={tmp_path / 'results'}", *overrides)

    return make


def pytest_configure(config):
    """One compute thread a test process (and, through the environment, a child process): the tiny models' matmuls
    are too small to gain from threads, and a second thread only waits for a core on the 2-core CI machine, more so
    with two xdist workers there (`-n 2`). An OMP_NUM_THREADS set by the caller is kept."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_finish(session):
    """Move what collection imported (torch, transformers, TRL, PEFT, lm-eval: about half a million objects) out of
    the garbage collector's reach: a full collection, which the runner and accelerate's `free_memory` ask for after
    each point, then takes milliseconds instead of a second. Objects the tests make are collected as before."""
    import gc

    gc.collect()
    gc.freeze()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say how many bad-input cases ran (issue 5 asks for the count to be printed by the test run)."""
    reports = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])]
    cases = [r for r in reports if "test_bad_input_names_the_field" in r.nodeid and r.when == "call"]
    if cases:
        passed = sum(r.passed for r in cases)
        terminalreporter.write_line(f"bad-input cases: {len(cases)} ({passed} passed)")
