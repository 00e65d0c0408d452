"""Bad input is refused before any model loads, with an error that names the field (and, where it can, the fix).

Each case composes the tiny recipe with overrides (Hydra's own composition errors count: their text names the field)
and runs `runner.validate`, which reads configs and file headers only. conftest.py prints how many cases ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from peftbench.runner import validate

REPO = Path(__file__).resolve().parents[1]


def _future_record(tmp: Path) -> list[str]:
    (tmp / "results" / "old-run").mkdir(parents=True)
    (tmp / "results" / "old-run" / "record.json").write_text(json.dumps({"run_id": "old-run", "schema_version": 99}))
    return []


def _file_as_folder(tmp: Path) -> list[str]:
    (tmp / "a-file").write_text("x")
    return [f"run.results_dir={tmp / 'a-file' / 'results'}"]


def _csv_without_column(tmp: Path) -> list[str]:
    (tmp / "d.csv").write_text("question,solution\nq,s\n")
    return [f"data.path={tmp / 'd.csv'}", "~data.eval_file"]


def _txt_file(tmp: Path) -> list[str]:
    (tmp / "d.txt").write_text("hello\n")
    return [f"data.path={tmp / 'd.txt'}", "~data.eval_file"]


def _pickle_only_model(tmp: Path) -> list[str]:
    folder = tmp / "pickled-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    return [f"model.name_or_path={folder}", "model.init=pretrained", "model.config=null", "model.tokenizer=null"]


# (id, overrides or a function of tmp_path returning them, text the error must contain)
CASES = [
    ("unknown method option", ["method=lorra"], "method"),
    ("unknown model option", ["model=tiny_lama"], "model"),
    ("unknown data option", ["data=gsm9k"], "data"),
    ("train key typo (struct)", ["train.max_stpes=3"], "train.max_stpes"),
    ("method key typo (struct)", ["method.lora_alpah=3"], "method.lora_alpah"),
    ("appended train key typo", ["+train.max_stpes=3"], "train.max_stpes"),
    ("appended method key typo", ["+method.lora_alpah=3"], "method.lora_alpah"),
    ("model path missing", ["model.name_or_path=/no/such/model"], "model.name_or_path"),
    ("tokenizer path missing", ["model.tokenizer=/no/such/tokenizer"], "model.tokenizer"),
    ("data file missing", ["data.path=/no/such/train.jsonl"], "data.path"),
    ("eval file missing", ["data.eval_file=/no/such/test.jsonl"], "data.eval_file"),
    ("mapping names a missing column", ["data.mapping.prompt='Q: {questoin}'"], "data.mapping.prompt"),
    ("completion mapping missing column", ["data.mapping.completion=' {answer}'"], "data.mapping.completion"),
    ("csv header lacks the column", _csv_without_column, "data.mapping.prompt"),
    ("unsupported data file type", _txt_file, "data.path"),
    ("bitfit on a model without biases", ["method=bitfit"], "method=bitfit"),
    ("max_steps zero", ["train.max_steps=0"], "train.max_steps"),
    ("max_steps not a number", ["train.max_steps=abc"], "train.max_steps"),
    ("batch size zero", ["train.per_device_train_batch_size=0"], "train.per_device_train_batch_size"),
    ("gradient accumulation zero", ["train.gradient_accumulation_steps=0"], "train.gradient_accumulation_steps"),
    ("negative learning rate", ["train.learning_rate=-0.1"], "train.learning_rate"),
    ("max_length zero", ["train.max_length=0"], "train.max_length"),
    ("lora rank zero", ["method.r=0"], "method.r"),
    ("lora dropout out of range", ["method.lora_dropout=1.5"], "method.lora_dropout"),
    ("method learning rate zero", ["method.learning_rate=0"], "method.learning_rate"),
    ("max_train_samples zero", ["data.max_train_samples=0"], "data.max_train_samples"),
    ("unknown init", ["model.init=randm"], "model.init"),
    ("unknown dtype", ["model.dtype=float33"], "model.dtype"),
    ("trust_remote_code not a bool", ["model.trust_remote_code=maybe"], "model.trust_remote_code"),
    ("pickle-only weights without opting out", _pickle_only_model, "model.use_safetensors"),
    ("results folder not writable", _file_as_folder, "run.results_dir"),
    ("record from a newer schema in the folder", _future_record, "run.results_dir"),
]


@pytest.mark.parametrize("name,overrides,field", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_field(tiny_cfg, tmp_path, name, overrides, field):
    if callable(overrides):
        overrides = overrides(tmp_path)
    with pytest.raises((ValueError, HydraException, OmegaConfBaseException)) as info:
        validate(tiny_cfg(*overrides))
    message = str(info.value)
    assert field in message, f"{name}: the error does not name `{field}`:\n{message}"
    assert len(message) > len(field) + 20, f"{name}: the error says nothing beyond the field name:\n{message}"


def test_cli_sweep_refused_before_any_model_loads(tmp_path):
    """A multirun with a bad option in some points is refused as a whole (exit 2), every bad point listed."""
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "peftbench", "-m", "model=tiny_llama", "train=tiny", f"run.results_dir={results}",
           "method=lora,ia3", "method.lora_dropout=1.5", "train.max_steps=0"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing the sweep" in done.stderr
    assert done.stderr.count("train.max_steps: got 0") == 1  # ia3 fails composing (no lora_dropout key) first
    assert "method.lora_dropout" in done.stderr and "Could not override 'method.lora_dropout'" in done.stderr
    assert not list(results.glob("*/record.json")), "a refused sweep must not run or record any point"
