"""Sweeps that survive a second writer, failures that become rows, and no secrets in results.

The concurrency test runs the real CLI (`python -m peftbench -m ...`) as subprocesses on a tiny random model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from peftbench import records, sweep
from peftbench.runner import run_point
from tests import warm_cli

REPO = Path(__file__).resolve().parents[1]
TINY_SWEEP = ["model=tiny_llama", "train=tiny", "data.max_train_samples=16", "data.max_eval_samples=4"]


def sweep_cmd(results: Path, methods: list[str], *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "peftbench",
        "-m",
        *TINY_SWEEP,
        f"run.results_dir={results}",
        f"method={','.join(methods)}",
        *extra,
    ]


def start(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return warm_cli.popen(
        cmd, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def assert_consistent(results: Path) -> list[dict]:
    """Whatever moment a sweep died at: every record on disk is complete JSON, and a table, if any, reads whole."""
    recs = []
    for path in results.glob("*/record.json"):
        rec = json.loads(path.read_text())  # a half-written record would fail to parse here
        assert rec["schema_version"] == records.SCHEMA_VERSION and rec["status"] in {"ok", "failed", "oom", "invalid"}
        if rec["status"] == "ok":  # a record implies its complete adapter
            adapter = path.parent / "adapter"
            assert rec["adapter_bytes"] == sum(p.stat().st_size for p in adapter.rglob("*.safetensors"))
        recs.append(rec)
    if (results / "table.parquet").exists():
        table = pd.read_parquet(results / "table.parquet")
        assert set(table["run_id"]) <= {r["run_id"] for r in recs}
        assert len(pd.read_csv(results / "table.csv")) == len(table)
    return recs


# SIGKILL at named phases, what each leaves on disk and the resume: tests/test_faults.py.


def test_two_concurrent_sweeps_into_one_folder_land_every_row_and_no_secret(tmp_path):
    """Sweeps A (lora, ia3) and B (ia3, bitfit) at once: three rows, the shared point run once, no token anywhere."""
    results = tmp_path / "results"
    secret = "hf_" + "Zq9" * 10
    quiet = "opaque-credential-4711"  # not token-shaped: masked because it is the value of a secret env variable
    env = {"HF_TOKEN": secret, "WANDB_API_KEY": quiet}
    # under `run`, which the run id leaves out, so A's and B's ia3 points stay the same point
    leaky = ["+run.comment=${oc.env:HF_TOKEN}", f"+run.hub_token={secret}", f"+run.note=key-{quiet}"]
    a = start(sweep_cmd(results, ["lora", "ia3"], *leaky), tmp_path, tmp_path / "a.log", env)
    b = start(sweep_cmd(results, ["ia3", "bitfit"]), tmp_path, tmp_path / "b.log", env)
    assert a.wait(timeout=400) == 0 and b.wait(timeout=400) == 0, (tmp_path / "a.log").read_text()[-3000:]

    recs = assert_consistent(results)
    table = records.read_table(results)
    assert sorted(table["method"]) == ["bitfit", "ia3", "lora"] and all(table["status"] == "ok")
    assert sorted(r["method"] for r in recs) == ["bitfit", "ia3", "lora"]
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    ia3 = next(r["run_id"] for r in recs if r["method"] == "ia3")
    assert logs.count(f"skipping {ia3}: finished") == 1, "the shared point ran in exactly one of the two sweeps"

    # HF_TOKEN from the environment, from the config, and a secret env value inside a string: none on disk
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".csv", ".yaml", ".log"} and path.name not in {"a.log", "b.log"}:
            text = path.read_text(errors="replace")
            assert secret not in text and quiet not in text, f"secret leaked into {path}"
    assert secret.encode() not in (results / "table.parquet").read_bytes()
    # each sweep has a Hydra folder of its own (started in the same second, they once shared one and the later
    # writer's dumps and status files replaced the other's); A's dumps kept its leaky overrides, masked
    sweep_dirs = sorted(p.parent for p in tmp_path.glob("outputs/*/*/multirun.yaml"))
    assert len(sweep_dirs) == 2, sweep_dirs
    assert all(len(list(d.glob(f"*/{sweep.STATUS_FILE}"))) == 2 for d in sweep_dirs)
    a_dumps = [d for d in sweep_dirs if "hub_token" in (d / "multirun.yaml").read_text()]
    assert len(a_dumps) == 1
    hydra_dumps = list(a_dumps[0].glob("*/.hydra/*.yaml")) + [a_dumps[0] / "multirun.yaml"]
    assert all("***" in p.read_text() for p in hydra_dumps if "hub_token" in p.read_text())
    assert "***" in (a_dumps[0] / "multirun.yaml").read_text()


def test_resume_skips_ok_reruns_failed_and_force_reruns(tiny_cfg, caplog):
    cfg = tiny_cfg("method=lora", "train.max_steps=1")
    first = run_point(cfg)
    assert first["status"] == "ok"
    caplog.set_level("INFO", logger="peftbench")
    again = run_point(cfg)
    assert f"skipping {first['run_id']}: finished" in caplog.text
    assert again["time_total_s"] == first["time_total_s"]  # the stored record, not a new run

    forced = run_point(tiny_cfg("method=lora", "train.max_steps=1", "run.force=true"))
    assert forced["run_id"] == first["run_id"] and forced["time_total_s"] != first["time_total_s"]

    # a failed record is not finished: the point runs again on resume
    path = Path(cfg.run.results_dir) / first["run_id"] / "record.json"
    records.atomic_write_text(path, json.dumps({**json.loads(path.read_text()), "status": "failed"}))
    rerun = run_point(cfg)
    assert rerun["status"] == "ok" and rerun["time_total_s"] != forced["time_total_s"]

    # an ok record whose adapter folder is gone (a fresh clone of committed results) is not complete either
    shutil.rmtree(path.parent / "adapter")
    cloned = run_point(cfg)
    assert cloned["status"] == "ok" and cloned["time_total_s"] != rerun["time_total_s"]
    assert (path.parent / "adapter").is_dir()


def test_oom_mid_training_becomes_a_row_and_the_sweep_goes_on(tiny_cfg, monkeypatch):
    """Fault injection: the callback raises torch's own OutOfMemoryError at step 2 of a real training loop (a CPU
    cannot run out of CUDA memory); a RuntimeError wrapping one is classified the same way."""
    from peftbench.callback import PeftBenchCallback

    original = PeftBenchCallback.on_step_end

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(PeftBenchCallback, "on_step_end", on_step_end)
    oom = run_point(tiny_cfg("method=lora"))
    assert oom["status"] == "oom" and "OutOfMemoryError" in oom["error"] and "traceback" in oom

    def wrapped(self, args, state, control, **kwargs):
        try:
            raise torch.OutOfMemoryError("CUDA out of memory.")
        except torch.OutOfMemoryError as exc:
            raise RuntimeError("step failed") from exc

    monkeypatch.setattr(PeftBenchCallback, "on_step_end", wrapped)
    assert run_point(tiny_cfg("method=ia3"))["status"] == "oom"

    monkeypatch.setattr(PeftBenchCallback, "on_step_end", original)
    ok = run_point(tiny_cfg("method=lora", "train.max_steps=1"))
    assert ok["status"] == "ok"
    table = records.read_table(Path(ok["config"]["run"]["results_dir"]))
    assert sorted(table["status"]) == ["ok", "oom", "oom"]


def test_exit_codes_say_whether_any_point_failed(tmp_path):
    """1: a point ran and ended invalid (BitFit without biases on Llama, a single run). 2: refused before any point
    ran (Hydra cannot compose an unknown model option); the message names the field."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [
        sys.executable,
        "-m",
        "peftbench",
        *TINY_SWEEP,
        "sweep=none",
        "train.max_steps=1",
        f"run.results_dir={tmp_path / 'r'}",
    ]
    done = warm_cli.run([*base, "method=bitfit"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert records.read_table(tmp_path / "r")["status"].tolist() == ["invalid"]
    typo = warm_cli.run([*base, "model=tiny_lama"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert typo.returncode == 2 and "Could not find 'model/tiny_lama'" in typo.stderr, typo.stderr[-2000:]


def test_secrets_in_config_and_env_never_reach_record_or_table(tiny_cfg, monkeypatch):
    secret = "hf_" + "abcXYZ012" * 3
    monkeypatch.setenv("HF_TOKEN", secret)
    rec = run_point(
        tiny_cfg("method=lora", "train.max_steps=1", "+model.token=${oc.env:HF_TOKEN}", f"+data.note=uses {secret}")
    )
    assert rec["status"] == "ok", rec.get("error")
    folder = Path(rec["config"]["run"]["results_dir"])
    assert secret not in (folder / rec["run_id"] / "record.json").read_text()
    assert secret not in (folder / "table.csv").read_text()
    assert secret.encode() not in (folder / "table.parquet").read_bytes()


def test_schema_migration_from_version_0_and_refusal_of_unknown_versions(tmp_path):
    v0 = {"run_id": "lora-old", "method": "lora", "tokens_per_s": 10.0}  # the pre-versioning layout
    (tmp_path / "lora-old").mkdir()
    (tmp_path / "lora-old" / "record.json").write_text(json.dumps(v0))
    (migrated,) = records.read_records(tmp_path)
    assert migrated["schema_version"] == records.SCHEMA_VERSION and migrated["status"] == "ok"
    assert records.write_table(tmp_path)["tokens_per_s"].tolist() == [10.0]

    for version, says in ((records.SCHEMA_VERSION + 1, "newer peftbench"), ("x", "no migration")):
        with pytest.raises(records.RecordVersionError, match=says):
            records.migrate({"run_id": "r", "schema_version": version}, "r/record.json")
    with pytest.raises(records.RecordVersionError, match="not a peftbench record"):
        records.migrate({"hello": 1}, "x/record.json")


def test_records_are_plain_json_and_nothing_unpickles():
    """Result files are JSON, CSV and parquet; no module of the package loads pickles."""
    source = "\n".join(p.read_text() for p in (REPO / "peftbench").rglob("*.py"))
    unpickling = r"import pickle|pickle\.loads?\(|torch\.load\(|joblib\.load|read_pickle|weights_only=False"
    assert not re.search(unpickling, source)


@pytest.mark.parametrize("model", sorted(p.stem for p in (REPO / "recipes" / "model").glob("*.yaml")))
def test_shipped_models_trust_no_remote_code_and_load_safetensors_only(model):
    from hydra import compose, initialize_config_dir

    from peftbench.paths import recipes_dir

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model}", "sweep=none"])
    assert cfg.model.trust_remote_code is False and cfg.model.use_safetensors is True
