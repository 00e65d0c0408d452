"""What a sweep prints: progress and result lines per point, a ranked aligned table, and no library noise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from peftbench.console import clock, result_line
from tests import warm_cli

REPO = Path(__file__).resolve().parents[1]


def test_result_line_ok_and_failed():
    ok = {
        "method": "lora",
        "engine": "peft",
        "status": "ok",
        "score": 0.9567,
        "score_stderr": 0.0118,
        "tokens_per_s": 12963.2,
        "gpu_allocated_gib_peak": 29.316,
        "time_total_s": 14.78,
    }
    assert result_line(ok) == "lora: ok · score 0.9567 ± 0.012 · 12,963 tokens/s · peak 29.32 GiB GPU · 14.8 s"
    oom = {"method": "full", "engine": "unsloth", "status": "oom", "error": "\nOutOfMemoryError: CUDA out of memory."}
    assert result_line(oom) == "full [unsloth]: OOM · OutOfMemoryError: CUDA out of memory."
    assert clock(3725) == "1:02:05"


def test_two_point_sweep_console(tmp_path):
    """A real two-point tiny sweep, its whole console read as a user reads it (stdout and stderr together)."""
    cmd = [
        sys.executable,
        "-m",
        "peftbench",
        "-m",
        "model=tiny_llama",
        "train=tiny",
        "sweep=none",
        "method=lora,ia3",
        "data.max_train_samples=16",
        "data.max_eval_samples=4",
        "train.max_steps=2",
        f"run.results_dir={tmp_path / 'results'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    done = warm_cli.run(
        cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(lines[-40:])
    assert [ln.split(" · ")[0] for ln in lines if ln.startswith("peftbench: point 1 of 2:")] == [
        "peftbench: point 1 of 2: method=lora"
    ]
    assert any(ln.startswith("peftbench: point 2 of 2: method=ia3 · elapsed ") and " · ETA " in ln for ln in lines)
    results = [ln for ln in lines if " ✓ " in ln]
    assert [ln.split(" ✓ ")[1].split(" · ")[0] for ln in results] == ["lora: ok", "ia3: ok"]
    assert all("tokens/s" in ln and "GiB" in ln for ln in results)
    header = next(i for i, ln in enumerate(lines) if ln.startswith("rank ") and "┃" in ln)
    table = lines[header : header + 4]
    first_bar = {min(ln.index(c) for c in "┃│╇" if c in ln) for ln in table}
    assert len(first_bar) == 1, table  # header, rule and rows: the column borders line up
    assert [ln.split("│")[0].strip() for ln in table[2:4]] == ["1", "2"]  # ranked, not sorted by name
    foreign = [
        ln
        for ln in lines
        if ln.strip()
        and not ln.startswith(("peftbench", "["))
        and not set(ln) & set("┃│━╇")
        and not ln.startswith(("tiny_llama on", "ranked by"))
    ]
    assert not [ln for ln in foreign if "Warning" in ln or "warn(" in ln], foreign  # no library warnings
    assert len(foreign) <= 3, foreign
