"""Bad input gets a one-paragraph error that names the field and the fix, before any model is loaded."""

from __future__ import annotations

import os
import sys

import pytest

from peftbench import models
from peftbench.runner import run_point
from tests import warm_cli
from tests.conftest import REPO


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr(models, "load_model", refuse)


CASES = [
    (["method=bitfit"], "method=bitfit", "has none"),  # tiny Llama: no biases
    (["+method.lora_alpah=8"], "method.lora_alpah", "lora_alpha"),
    (["model.name_or_path=/nope/model.gguf"], "model.name_or_path", "/nope/model.gguf"),
    (["data.path=/nope/train.jsonl"], "data.path", "/nope/train.jsonl"),
    (["data.mapping.prompt='Q: {questoin}'"], "data.mapping.prompt", "questoin"),
    (["+train.max_stepz=3"], "train.max_stepz", "max_steps"),
]


@pytest.mark.parametrize("overrides,field,detail", CASES, ids=[c[1] for c in CASES])
def test_bad_input_becomes_an_invalid_row_before_loading(tiny_cfg, no_model_loads, overrides, field, detail):
    record = run_point(tiny_cfg(*overrides))
    assert record["status"] == "invalid"
    assert field in record["error"] and detail in record["error"]


def test_bitfit_error_says_why_and_what_to_use(tiny_cfg, no_model_loads):
    error = run_point(tiny_cfg("method=bitfit"))["error"]
    assert "zero parameters" in error and "method=ia3" in error and "method.add_biases=true" in error


@pytest.mark.parametrize(
    "args,needle",
    [
        (["method=lorra", "sweep=none"], "lorra"),
        (["+recipe=qlora7b"], "qlora7b"),
        (["train.max_stepz=3", "sweep=none"], "max_stepz"),
    ],
)
def test_cli_typos_fail_with_hydra_naming_the_key(args, needle):
    """Unknown method or recipe names and recipe key typos stop at composition, before anything runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = warm_cli.run([sys.executable, "-m", "peftbench", *args], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and needle in out.stderr, out.stderr[-2000:]  # README: 2, refused before any point ran
