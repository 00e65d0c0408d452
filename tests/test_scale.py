"""Scale-out on CPU: launcher configs compose, a parallel sweep lands in one table with the right exit code, and a
two-process (gloo) DDP run writes one record that aggregates both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from peftbench import distributed, gpu_slots, metrics
from peftbench.__main__ import exit_code, quiet_rank_overrides
from peftbench.paths import recipes_dir
from peftbench.records import read_records
from peftbench.sweep import STATUS_FILE, collect_statuses

from .conftest import REPO, TINY


def compose_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def run_cli(args: list[str], cwd: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) go before the overrides
    cmd = (launcher or [sys.executable]) + ["-m", "peftbench", *flags, *TINY, *[a for a in args if a not in flags]]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_slurm_launcher_config_composes():
    cfg = compose_hydra("+recipe=family_7b", "hydra/launcher=slurm_gpus", "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
    assert launcher.partition == "gpu"
    assert OmegaConf.select(cfg, "hydra.launcher.name") == "peftbench-family_7b"
    assert str(launcher.submitit_folder).startswith(str(cfg.hydra.sweep.dir))
    assert cfg.hydra.sweeper.params.method.count(",") == 6  # the family sweep fans out as 7 SLURM jobs


def test_local_gpus_launcher_config_composes():
    cfg = compose_hydra("hydra/launcher=local_gpus")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert launcher.n_jobs == gpu_slots.gpu_count() >= 1
    assert int(launcher.batch_size) == 1
    assert gpu_slots.is_local_parallel(cfg) and not gpu_slots.is_local_parallel(compose_hydra())


def test_fsdp_recipe_composes_and_is_refused_in_one_process(tiny_cfg):
    cfg = compose_hydra("+recipe=full_7b_fsdp", "model.init=random")
    assert cfg.train.fsdp is True and cfg.train.fsdp_config.version == 2 and cfg.method.name == "full"
    with pytest.raises(distributed.LaunchError, match="torchrun --nproc-per-node"):
        distributed.check_launch(cfg.train)


def test_cpu_processes_without_use_cpu_are_refused(monkeypatch, tiny_cfg):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(distributed.LaunchError, match="use_cpu"):
        distributed.check_launch(tiny_cfg().train)
    distributed.check_launch(tiny_cfg("+train.use_cpu=true").train)


def test_rank_aggregation_helpers():
    assert metrics.stepwise_max([[1.0, 5.0, 2.0], [3.0, 1.0, 2.5]]) == [3.0, 5.0, 2.5]
    assert metrics.stepwise_max([[1.0, 2.0]]) == [1.0, 2.0] and metrics.stepwise_max([[], []]) == []
    peaks = metrics.rank_peaks(
        {
            "rank": 1,
            "device": 1,
            "allocated": [1.0, 4.0],
            "reserved": [5.0],
            "nvml": [],
            "rss": [0.5],
            "requested": [3.5, 3.9],
        }
    )
    assert peaks["gpu_allocated_gib_peak"] == 4.0 and peaks["gpu_nvml_used_gib_peak"] is None
    assert peaks["gpu_requested_gib_peak"] == 3.9
    one = metrics.model_flops_utilisation(7e9, 1000.0, "NVIDIA H200")
    assert metrics.model_flops_utilisation(7e9, 2000.0, "NVIDIA H200", devices=2) == pytest.approx(one)


def test_only_rank_zero_writes_hydra_outputs():
    assert quiet_rank_overrides({"RANK": "0"}) == [] and quiet_rank_overrides({}) == []
    quiet = quiet_rank_overrides({"RANK": "1"})
    assert "hydra.output_subdir=null" in quiet and "hydra/job_logging=stdout" in quiet
    assert all("rank1" in o for o in quiet if o.startswith(("hydra.run.dir", "hydra.sweep.dir")))


def test_exit_code_leaves_invalid_to_rank_zero():
    assert exit_code(["ok", "ok"], {}) == 0 and exit_code(["ok", "invalid"], {}) == 1
    assert exit_code(["invalid"], {"RANK": "1"}) == 0 and exit_code(["oom"], {"RANK": "1"}) == 1


def test_statuses_of_this_multirun_only(tmp_path):
    for sub, token, status in [("0", "new", "ok"), ("1", "new", "oom"), ("7", "old", "failed")]:
        (tmp_path / sub).mkdir()
        (tmp_path / sub / STATUS_FILE).write_text(json.dumps({"token": token, "status": status}))
    assert sorted(collect_statuses(tmp_path, "new")) == ["ok", "oom"]


def test_parallel_sweep_lands_in_one_table_with_exit_code(tmp_path):
    """Two points through the joblib launcher, two workers each pinned to its own (pretend) GPU; BitFit on a model
    without biases is invalid, so the exit code must be 1 although the main process ran no point itself. The
    up-front sweep validation is switched off (it would refuse the sweep with exit 2 before any worker starts)."""
    results = tmp_path / "results"
    proc = run_cli(
        [
            "-m",
            "method=lora,bitfit",
            f"run.results_dir={results}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra/launcher=local_gpus",
            "hydra.launcher.n_jobs=2",
            "hydra.callbacks.gpu_slots.gpus=[0,1]",
            "~hydra.callbacks.validate",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["method"]: r for r in read_records(results)}
    assert rows["lora"]["status"] == "ok" and rows["bitfit"]["status"] == "invalid"
    assert sorted(pd.read_csv(results / "table.csv")["method"]) == ["bitfit", "lora"]
    assert {rows["lora"]["cuda_visible_devices"], rows["bitfit"]["cuda_visible_devices"]} == {"0", "1"}


def topics_tokens(rows: int, max_length: int = 64) -> int:
    """The test's own count of the real tokens of the first `rows` rows of the embedded task's train file, as TRL's
    SFTTrainer builds them for the recipe's prompt/completion mapping: the text with EOS appended, cut at
    train.max_length (the tokenizer's own files; SmolLM2 adds no BOS)."""
    from transformers import AutoTokenizer

    from peftbench.models import EMBEDDED_GGUF, local_folder

    tok = AutoTokenizer.from_pretrained(local_folder(EMBEDDED_GGUF))
    lines = (REPO / "peftbench" / "tasks" / "topics_train.jsonl").read_text().splitlines()[:rows]
    texts = [f"Sentence: {r['sentence']}\nTopic: {r['topic']}{tok.eos_token}" for r in map(json.loads, lines)]
    return sum(min(len(tok(t)["input_ids"]), max_length) for t in texts)


def test_two_rank_ddp_run_writes_one_aggregated_record(tmp_path):
    """torchrun, 2 CPU processes (gloo): one record, both ranks' peaks, tokens counted over both ranks. Independent
    counts: 12 rows at 2 ranks x 2 rows x 3 steps is exactly one epoch, so every row is trained on once and the real
    tokens are those of the 12 rows counted here from the data file; trainable parameters by LoRA's formula."""
    results = tmp_path / "results"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = run_cli(
        [
            f"run.results_dir={results}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "+train.use_cpu=true",
            "data.max_train_samples=12",
            "train.max_steps=3",
            "train.per_device_train_batch_size=2",
        ],
        cwd=tmp_path,
        launcher=torchrun,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = read_records(results)
    assert record["status"] == "ok" and record["world_size"] == 2 and record["strategy"] == "ddp"
    assert [r["rank"] for r in record["per_rank"]] == [0, 1]
    assert record["rss_gib_peak"] == max(r["rss_gib_peak"] for r in record["per_rank"])
    assert record["tokens_per_s_per_gpu"] == pytest.approx(record["tokens_per_s"] / 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hydra", "results"]  # rank 1 wrote nothing here
    assert record["samples"] == 12 and record["steps"] == 3
    assert record["real_tokens"] == topics_tokens(12) > 0
    # LoRA r=16 on every linear of tiny_llama (hidden 64, kv 32, intermediate 128, 2 layers): r * (in + out) each
    per_layer = 16 * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 2 * (64 + 128) + (128 + 64))
    assert record["trainable_params"] == 2 * per_layer == 32768


def test_cuda_memory_reads_allocated_reserved_and_requested_peaks(monkeypatch):
    """Allocated counts the allocator's blocks; requested, the bytes the tensors asked for (kept apart on purpose)."""
    gib = metrics.GIB
    stats = {
        "allocated_bytes": {"all": {"peak": 4 * gib, "current": 1}},
        "reserved_bytes": {"all": {"peak": 6 * gib}},
        "requested_bytes": {"all": {"peak": 3 * gib}},
    }
    monkeypatch.setattr(torch.cuda.memory, "memory_stats_as_nested_dict", lambda *a, **k: stats)
    assert metrics.cuda_memory_gib() == (4.0, 6.0, 3.0)
