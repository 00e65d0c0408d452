"""Engines (issue 9) on a CPU: the `engine` group composes; an engine that cannot run a point here (extra missing,
no GPU, a method it has no path for, versions outside its pins) is refused before any model loads with the fix named;
in a sweep such a point is a `skipped` row and the sweep exits 3; the report draws engines per method."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from peftbench import engines, records
from peftbench.__main__ import exit_code
from peftbench.report import write_report
from peftbench.runner import run_id_for, run_point
from peftbench.validation import validate
from tests import warm_cli

from .test_report import H100, fake

REPO = Path(__file__).resolve().parents[1]
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_engine_group_composes_for_every_engine(tiny_cfg, engine):
    cfg = tiny_cfg(f"engine={engine}", "method=lora")
    assert engines.name(cfg) == engine
    assert cfg.engine.name == engine
    if engine == "unsloth":
        assert cfg.engine.gradient_checkpointing == "unsloth" and cfg.engine.check_versions is True


def test_default_engine_keeps_run_ids_and_unknown_engine_is_invalid(tiny_cfg):
    """engine=peft hashes like a record written before engines existed; another engine is another point."""
    from omegaconf import open_dict

    cfg = tiny_cfg("method=lora")
    old = cfg.copy()
    with open_dict(old):
        del old["engine"]
    assert run_id_for(cfg) == run_id_for(old) != run_id_for(tiny_cfg("method=lora", "engine=liger"))
    with open_dict(cfg):
        cfg.engine.name = "vllm"
    with pytest.raises(Exception, match="`vllm` is not an engine. Choose one of peft, liger, unsloth"):
        validate(cfg)


@needs_no_gpu
@pytest.mark.parametrize("engine", ["unsloth", "liger"])
def test_cpu_only_machine_gets_the_documented_error_and_a_skipped_row(tiny_cfg, engine):
    rec = run_point(tiny_cfg(f"engine={engine}", "method=lora"))
    assert rec["status"] == "skipped" and rec["engine"] == engine
    assert f"engine={engine}:" in rec["error"] and "a CUDA GPU, and this machine has none" in rec["error"]
    assert "engine=peft" in rec["error"]
    assert "time_load_s" not in rec and "traceback" not in rec  # refused before any model loaded
    assert records.read_table(rec["config"]["run"]["results_dir"])["status"].tolist() == ["skipped"]


@pytest.mark.parametrize("engine,module", [("liger", "liger_kernel"), ("unsloth", "unsloth")])
def test_missing_extra_names_the_pip_command(tiny_cfg, monkeypatch, engine, module):
    """Past the GPU check (as on a GPU machine), a missing package is named with its extra."""
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    monkeypatch.setattr(engines, "has_gpu", lambda: True)
    with pytest.raises(engines.EngineUnavailable, match=rf'pip install "peftbench\[{engine}\]"'):
        validate(tiny_cfg(f"engine={engine}", "method=lora"))


@pytest.mark.parametrize("method", ["ia3", "prompt_tuning", "bitfit", "vera", "prefix_tuning"])
def test_unsloth_refuses_methods_it_has_no_path_for(tiny_cfg, method):
    reason = engines.unavailable_reason(tiny_cfg("engine=unsloth", f"method={method}"), method)
    assert reason.startswith(f"engine=unsloth cannot run method={method}") and "engine=peft" in reason


def test_unsloth_runs_lora_family_and_full_but_not_with_the_fast_profile(tiny_cfg):
    unsloth = engines.REGISTRY["unsloth"]
    assert all(
        engines.runs_method(unsloth, m) for m in ("lora", "qlora", "dora", "rslora", "pissa", "loraplus", "full")
    )
    reason = engines.unavailable_reason(tiny_cfg("engine=unsloth", "method=lora", "profile=fast"), "lora")
    assert "profile=fast" in reason and "profile=default" in reason


def test_version_conflicts_read_the_engine_metadata(tmp_path, monkeypatch):
    """An installed distribution whose pins exclude the installed transformers is reported with both versions."""
    import transformers

    info = tmp_path / "fake_engine-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-engine\nVersion: 1.0\n"
        "Requires-Dist: transformers<=4.0.0\nRequires-Dist: trl>=0.1\n"
        'Requires-Dist: datasets<1.0; extra == "x"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    conflicts = engines.version_conflicts("fake-engine")
    assert conflicts == [f"fake-engine 1.0 requires transformers<=4.0.0, installed {transformers.__version__}"]


def test_exit_code_for_skipped_points():
    assert exit_code(["ok", "skipped"], {}) == 3 and exit_code(["skipped"], {}) == 3
    assert exit_code(["failed", "skipped"], {}) == 1 and exit_code(["ok", "ok"], {}) == 0
    assert exit_code(["skipped"], {"RANK": "1"}) == 0


@needs_no_gpu
def test_sweep_with_an_unrunnable_point_writes_a_skipped_row_and_exits_3(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "peftbench",
        "-m",
        "model=tiny_llama",
        "train=tiny",
        "sweep=none",
        "eval=none",
        "data.max_train_samples=16",
        "data.max_eval_samples=4",
        "train.max_steps=1",
        "method=lora,ia3",
        "engine=peft,unsloth",
        f"run.results_dir={tmp_path / 'r'}",
        f"hydra.sweep.dir={tmp_path / 'h'}",
    ]
    done = warm_cli.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-3000:]
    table = records.read_table(tmp_path / "r").set_index(["method", "engine"])
    assert table.loc[("lora", "peft"), "status"] == "ok" and table.loc[("ia3", "peft"), "status"] == "ok"
    assert table.loc[("ia3", "unsloth"), "status"] == "skipped"
    assert "cannot run method=ia3" in table.loc[("ia3", "unsloth"), "error"]
    assert table.loc[("lora", "unsloth"), "status"] == "skipped"
    assert "needs a CUDA GPU" in table.loc[("lora", "unsloth"), "error"]
    assert "will be skipped" in done.stdout + done.stderr  # said before the first point ran
    assert "skipped" in (tmp_path / "r" / "report.md").read_text()


def test_report_draws_engines_per_method_only_when_engines_differ(tmp_path):
    results = tmp_path / "results"
    for engine, tok, mem in (("peft", 6600.0, 15.3), ("liger", 8300.0, 15.0), ("unsloth", 10000.0, 13.9)):
        rec = fake("lora", 0, H100, engine=engine, tokens_per_s=tok, gpu_allocated_gib_peak=mem)
        rec["run_id"] += f"-{engine}"
        rec["config"]["engine"] = {"name": engine}
        records.write_record(results, rec, rebuild=False)
    records.write_table(results)
    paths = write_report(results)
    assert "engines" in paths and paths["engines"].stat().st_size > 0
    assert "| lora | unsloth |" in paths["md"].read_text()
    single = tmp_path / "single"
    records.write_record(single, fake("lora", 0, H100), rebuild=False)
    records.write_table(single)
    assert "engines" not in write_report(single)
