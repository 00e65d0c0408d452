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
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Variables that libraries set in this process when a test first uses them, each to the value set here: lm_eval,
    # threadpoolctl, and joblib or scikit-learn on import, torch's inductor when it first compiles (its default cache
    # folder). Set from the start, the environment the tests hand their subprocesses is the same whichever tests ran
    # before in this process, and tests/warm_cli.py's launcher (started with it; each of these is read at import)
    # serves them all.
    os.environ.setdefault("HF_XET_HIGH_PERFORMANCE", "1")
    os.environ.setdefault("KMP_DUPLICATE_LIB_OK", "True")
    os.environ.setdefault("KMP_INIT_AT_FORK", "FALSE")
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        # xdist's controller runs no test: it only starts the workers (which inherit the variables above) and
        # each worker does the rest itself. Importing torch here held up every worker's start by about 5 s.
        return
    import torch
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(default_cache_dir()))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The longest tests (measured with `--durations=0` under `-n 2` on the 2-core machine, 2026-12-01, with the warm
# CLI launcher: from 38 s down to 5 s; a TOGETHER group below under its longest case), run first: with the scheduler
# below, a worker takes one test at a time as it frees up, so the short ones fill in around these and both workers
# finish together (in collection order the longest started late while the other worker ran out of tests). Ordering
# only: a name that no longer matches a test just keeps its place.
LONGEST_FIRST = (
    "tests/test_faults.py::test_kill_at_each_phase_then_resume_cleans_and_completes",
    "tests/test_scale.py::test_parallel_sweep_lands_in_one_table_with_exit_code",
    "tests/test_scale.py::test_two_rank_ddp_run_writes_one_aggregated_record",
    "tests/test_engines.py::test_sweep_with_an_unrunnable_point_writes_a_skipped_row_and_exits_3",
    "tests/test_callback.py::test_trl_sft_script_unchanged_under_peftbench_measure",
    "tests/test_bad_input.py::test_bad_input_names_the_field[unknown eval task]",
    "tests/test_gguf_cache.py::test_tokenizer_and_config_never_dequantize",
    "tests/test_scrub.py::test_secret_is_gone_from_record_table_logs_and_hydra_dumps",
    "tests/test_config.py::test_recipes_resolve_from_an_installed_wheel",
    "tests/test_reliability.py::test_two_concurrent_sweeps_into_one_folder_land_every_row_and_no_secret",
    "tests/test_console.py::test_two_point_sweep_console",
    "tests/test_evaluate.py::test_trained_point_is_scored_with_a_delta_over_the_cached_base_row",
    "tests/test_reliability.py::test_resume_skips_ok_reruns_failed_and_force_reruns",
    "tests/test_report.py::test_screenshot_script",
    "tests/test_report.py::test_html_filter_pick_and_sort_in_chromium",
    "tests/test_report.py::test_every_value_on_its_own_bar_and_point_in_chromium",
    "tests/test_gguf_cache.py::test_conversion_lock_serializes_and_clears_stale_temps",
    "tests/test_reliability.py::test_oom_mid_training_becomes_a_row_and_the_sweep_goes_on",
    "tests/test_faults.py::test_points_recorded_oom_or_invalid_run_again_and_a_failed_forced_rerun_is_recorded",
    "tests/test_evaluate.py::test_forgetting_check_scores_a_second_task_before_and_after",
)
# Tests that one worker runs one after another, because they share what is expensive to make once a process: the
# scrub cases' module fixture (two CLI runs), and lm-eval's whole task registry (about 16 s to index, cached once a
# process by evaluate.registry_task_names). A group is handed out as one unit, before the single tests.
TOGETHER = {
    "tests/test_scrub.py::test_secret_is_gone_from_record_table_logs_and_hydra_dumps[": "scrub runs",
    "tests/test_bad_input.py::test_bad_input_names_the_field[unknown eval task]": "lm-eval registry",
    "tests/test_evaluate.py::test_unknown_task_fails_before_any_model_loads": "lm-eval registry",
    "tests/test_evaluate.py::test_shape_only_point_validates_without_lm_eval_installed": "lm-eval registry",
}


def pytest_collection_modifyitems(config, items):
    """LONGEST_FIRST's tests first, in its order (a parametrized test: all its cases); the rest as collected."""

    def rank(item) -> int:
        for i, name in enumerate(LONGEST_FIRST):
            if item.nodeid == name or item.nodeid.startswith(name + "["):
                return i
        return len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: equal ranks keep their collection order


def pytest_xdist_make_scheduler(config, log):
    """Under `-n N` with xdist's default `--dist load`: one test (or one TOGETHER group) at a time to whichever worker
    has fewer than about two waiting, in the order above. xdist's own `load` sends the first quarter of the tests in
    two fixed blocks, and lets a module fixture be built on both workers. Another `--dist` keeps xdist's own."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneAtATime(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((group for prefix, group in TOGETHER.items() if nodeid.startswith(prefix)), nodeid)

    return OneAtATime(config, log)


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
