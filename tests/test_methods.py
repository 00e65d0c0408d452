"""Every method trains a few steps on a tiny random model; the callback's numbers are checked by independent counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.methods import FAMILY, REGISTRY
from peftbench.runner import run_point

FAMILY_MODELS = {"bitfit": ["model=tiny_qwen2"]}  # Qwen2 has q/k/v biases: real BitFit, no added biases


@pytest.mark.parametrize("method", FAMILY)
def test_every_family_method_trains_and_is_measured(tiny_cfg, method):
    cfg = tiny_cfg(f"method={method}", *FAMILY_MODELS.get(method, []))
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["steps"] == 3
    assert 0 < record["trainable_params"] <= record["total_params"]
    assert record["real_tokens"] > 0 and record["tokens_per_s"] > 0
    assert len(record["loss_curve"]) == 3
    # adapter size equals the weights on disk (config and README apart), counted here file by file
    adapter = Path(cfg.run.results_dir) / record["run_id"] / "adapter"
    on_disk = sum(p.stat().st_size for p in adapter.rglob("*.safetensors"))
    assert record["adapter_bytes"] == on_disk > 0
    saved = json.loads((Path(cfg.run.results_dir) / record["run_id"] / "record.json").read_text())
    assert saved["status"] == "ok" and saved["run_id"] == record["run_id"]


@pytest.mark.parametrize("method", sorted(set(REGISTRY) - set(FAMILY)))
def test_extra_methods_train(tiny_cfg, method):
    record = run_point(tiny_cfg(f"method={method}", "train.max_steps=2"))
    assert record["status"] == "ok", record.get("error")


def test_trainable_parameters_match_an_independent_count(tiny_cfg):
    """LoRA r=4 on all linear layers of the tiny Llama: r*(in+out) per layer, counted from the config by hand."""
    from peftbench.models import SHIPPED_CONFIGS

    record = run_point(tiny_cfg("method=lora", "method.r=4", "train.max_steps=1"))
    c = json.loads((SHIPPED_CONFIGS / "tiny_llama.json").read_text())
    h, i, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"]
    per_layer = 4 * ((h + h) + (h + kv) + (h + kv) + (h + h) + (h + i) + (h + i) + (i + h))
    assert record["trainable_params"] == per_layer * c["num_hidden_layers"]


def test_bitfit_trains_only_biases(tiny_cfg):
    record = run_point(tiny_cfg("method=bitfit", "model=tiny_qwen2"))
    from peftbench.models import SHIPPED_CONFIGS

    c = json.loads((SHIPPED_CONFIGS / "tiny_qwen2.json").read_text())
    kv = c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"]
    assert record["trainable_params"] == c["num_hidden_layers"] * (c["hidden_size"] + 2 * kv)


def test_bitfit_with_added_biases_on_a_bias_free_model(tiny_cfg):
    record = run_point(tiny_cfg("method=bitfit", "+method_overrides.bitfit.add_biases=true"))
    assert record["status"] == "ok", record.get("error")
    assert record["method_info"]["biases_added"] == 7 * 2 + 1  # 7 linear layers per block, plus lm_head
