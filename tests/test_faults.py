"""Crashes placed exactly: the real CLI killed (SIGKILL, by `records.fault_point`) at named phases of a point, what
each leaves on disk, and a resume that cleans up and completes; reruns of oom/invalid points and run.force.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

from peftbench import records
from peftbench.runner import run_point
from tests import warm_cli

REPO = Path(__file__).resolve().parents[1]
SWEEP = [
    "-m",
    "model=tiny_llama",
    "train=tiny",
    "train.max_steps=1",
    "eval=none",
    "run.report=false",
    "data.max_train_samples=2",
    "data.max_eval_samples=2",
    "method=lora,ia3",
]


def cli(tmp_path: Path, results: Path, fault: str | None, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(records.FAULT_ENV, None)
    if fault:
        env[records.FAULT_ENV] = fault
    return warm_cli.run(
        [sys.executable, "-m", "peftbench", *SWEEP, f"run.results_dir={results}", *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def temps(results: Path) -> list[str]:
    return sorted(str(p.relative_to(results)) for p in results.rglob(f"*{records.TEMP_SUFFIX}"))


def run_dirs(results: Path) -> list[Path]:
    return sorted(p for p in results.iterdir() if p.is_dir()) if results.exists() else []


def killed(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == -signal.SIGKILL, f"not killed (rc {done.returncode}):\n{done.stderr[-3000:]}"


def weights_bytes(folder: Path) -> int:
    """The adapter's weight files on disk (what adapter_bytes measures; adapter_config.json is not the adapter)."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def adapter_complete(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return {"adapter_config.json", "adapter_model.safetensors"} <= names


def test_kill_at_each_phase_then_resume_cleans_and_completes(tmp_path):
    results = tmp_path / "results"

    # 1) inside the adapter save: its files are in the temp folder, nothing is published
    killed(cli(tmp_path, results, "adapter_save"))
    (lora_dir,) = run_dirs(results)
    assert lora_dir.name.startswith("lora-")
    (tmp_adapter,) = temps(results)
    assert tmp_adapter.startswith(f"{lora_dir.name}/.adapter.") and adapter_complete(results / tmp_adapter)
    assert not (lora_dir / "adapter").exists() and not (lora_dir / "record.json").exists()
    assert not (results / "table.parquet").exists()

    # 2) before the record: the resumed point removed the stale temp folder, trained, published its adapter
    killed(cli(tmp_path, results, "before_record"))
    assert run_dirs(results) == [lora_dir] and temps(results) == []
    assert adapter_complete(lora_dir / "adapter") and not (lora_dir / "record.json").exists()

    # 3) during the record's temp write: a complete temp copy, never the record itself
    killed(cli(tmp_path, results, "temp:record.json"))
    (tmp_record,) = temps(results)
    assert tmp_record.startswith(f"{lora_dir.name}/.record.json.")
    assert json.loads((results / tmp_record).read_text())["status"] == "ok"
    assert not (lora_dir / "record.json").exists() and adapter_complete(lora_dir / "adapter")

    # 4) between the record and the table: the record is complete, its row is not in any table yet
    killed(cli(tmp_path, results, "between_record_and_table"))
    assert temps(results) == [] and not (results / "table.parquet").exists()
    record_text = (lora_dir / "record.json").read_text()
    record = json.loads(record_text)
    assert record["status"] == "ok" and record["adapter_bytes"] == weights_bytes(lora_dir / "adapter") > 0

    # 5) during the table's csv write, on the resume that skips the finished point: parquet published, csv not
    done = cli(tmp_path, results, "temp:table.csv")
    killed(done)
    assert f"skipping {lora_dir.name}: finished" in done.stdout + done.stderr
    assert records.read_table(results)["run_id"].tolist() == [lora_dir.name]
    assert not (results / "table.csv").exists() and [t.split(".")[1:3] for t in temps(results)] == [["table", "csv"]]

    # 6) no fault: the finished point is skipped as it is, the other one runs, every leftover is gone
    final = cli(tmp_path, results, None)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert f"skipping {lora_dir.name}: finished" in final.stdout + final.stderr
    assert (lora_dir / "record.json").read_text() == record_text
    assert temps(results) == []
    dirs = run_dirs(results)
    assert [d.name.split("-")[0] for d in dirs] == ["ia3", "lora"]
    table = records.read_table(results)
    assert sorted(table["run_id"]) == [d.name for d in dirs] and (table["status"] == "ok").all()
    assert len(pd.read_csv(results / "table.csv")) == 2
    for d in dirs:
        rec = json.loads((d / "record.json").read_text())
        assert rec["adapter_bytes"] == weights_bytes(d / "adapter") > 0

    # 7) run.force=true killed before its new record: the old record stays, byte for byte, and still counts as
    # finished; the adapter folder is complete (the new one was renamed into place before the kill)
    killed(cli(tmp_path, results, "before_record", "run.force=true"))
    assert (lora_dir / "record.json").read_text() == record_text
    assert adapter_complete(lora_dir / "adapter") and temps(results) == []
    assert records.completed_record(results, lora_dir.name) is not None
    assert sorted(records.read_table(results)["run_id"]) == [d.name for d in dirs]


def test_points_recorded_oom_or_invalid_run_again_and_a_failed_forced_rerun_is_recorded(tiny_cfg, monkeypatch, caplog):
    """(`failed`, run.force=true and a missing adapter: tests/test_reliability.py.)"""
    from peftbench import runner

    overrides = ("method=lora", "train.max_steps=1", "eval=none", "run.report=false")
    cfg = tiny_cfg(*overrides)
    previous = run_point(cfg)
    assert previous["status"] == "ok"
    path = Path(cfg.run.results_dir) / previous["run_id"] / "record.json"
    caplog.set_level("INFO", logger="peftbench")
    for status in ("oom", "invalid"):
        records.atomic_write_text(path, json.dumps({**json.loads(path.read_text()), "status": status, "error": "x"}))
        assert records.completed_record(cfg.run.results_dir, previous["run_id"]) is None
        again = run_point(cfg)
        assert again["status"] == "ok" and "error" not in again, status
        assert again["time_total_s"] != previous["time_total_s"], f"a point recorded {status} was not run again"
        assert json.loads(path.read_text())["status"] == "ok"
        previous = again
    assert "skipping" not in caplog.text
    assert records.read_table(cfg.run.results_dir)["status"].tolist() == ["ok"]

    def broken(cfg, record):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "train_point", broken)
    failed = run_point(tiny_cfg(*overrides, "run.force=true"))
    assert f"rerunning {previous['run_id']}: run.force=true" in caplog.text
    assert failed["status"] == "failed" and "RuntimeError: boom" in failed["error"]
    assert adapter_complete(path.parent / "adapter")  # the old adapter stays until a new one replaces it
    assert records.read_table(cfg.run.results_dir)["status"].tolist() == ["failed"]
    assert records.completed_record(cfg.run.results_dir, previous["run_id"]) is None  # so a resume runs it again


def test_fault_point_does_nothing_unless_named(monkeypatch):
    monkeypatch.delenv(records.FAULT_ENV, raising=False)
    records.fault_point("before_record")
    monkeypatch.setenv(records.FAULT_ENV, "temp:table.csv")
    records.fault_point("temp:record.json")
    records.fault_point("before_record")


def test_malformed_command_line_exits_2(tmp_path):
    """README, exit codes: 2 when the command line is malformed (an unknown flag, an override Hydra cannot parse)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in (["--no-such-flag"], ["-m", "method=lora,", "model=tiny_llama"]):
        done = warm_cli.run(
            [sys.executable, "-m", "peftbench", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, (args, done.stderr[-2000:])
    assert not (tmp_path / "outputs").exists()
