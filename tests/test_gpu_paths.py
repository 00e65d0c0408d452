"""The pieces the GPU benchmark rests on, checked on the CPU with tiny models: meta-device random init (with block-wise
4-bit quantization), the synthetic fixed-length workload, the memory model, and the fast profile's checks."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from omegaconf import OmegaConf

from peftbench import memory, models, profiles
from peftbench.point import Point
from peftbench.runner import run_point

TINY_MODEL = OmegaConf.create({"config": "tiny_llama", "name_or_path": "tiny_llama"})


def test_random_init_builds_every_tensor_and_keeps_rotary_buffers():
    config = models.load_config(TINY_MODEL)
    model = models.random_init_model(config, torch.float32, "cpu", seed=0)
    assert not any(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_config(config)
    # inv_freq is computed at construction and is in no state dict: it must equal a normal build's
    for (name, buf), (_, ref) in zip(model.named_buffers(), plain.named_buffers()):
        assert torch.equal(buf, ref), name
    std = config.initializer_range
    weight = model.model.layers[0].mlp.up_proj.weight
    assert abs(weight.std().item() - std) < 0.2 * std
    assert torch.all(model.model.norm.weight == 1)
    ids = torch.randint(0, config.vocab_size, (1, 8))
    assert torch.isfinite(model(input_ids=ids).logits).all()


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_random_init_quantizes_every_block_linear_but_not_lm_head():
    import bitsandbytes as bnb

    from peftbench.methods import quantization_config

    config = models.load_config(TINY_MODEL)
    qconfig = quantization_config({"name": "qlora"})
    model = models.random_init_model(config, torch.bfloat16, "cpu", qconfig, seed=0)
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]
    assert linears and all(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    assert type(model.lm_head) is torch.nn.Linear and model.is_loaded_in_4bit
    assert torch.isfinite(model(input_ids=torch.randint(0, config.vocab_size, (1, 8))).logits.float()).all()


def test_synthetic_workload_trains_without_a_tokenizer_and_counts_every_token(tiny_cfg):
    cfg = tiny_cfg("data=synthetic", "data.seq_len=24", "data.num_samples=8", "model.tokenizer=null")
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    # no padding anywhere: real tokens = steps x micro-batch x sequence length
    assert record["real_tokens"] == 3 * cfg.train.per_device_train_batch_size * 24
    assert record["predicted_peak_gib"] > 0


def test_memory_model_counts_bytes_per_parameter():
    from peftbench.methods import predict_memory

    config = models.load_config(OmegaConf.create({"config": "llama2_7b", "name_or_path": "x"}))
    shape = memory.shape_of(config)
    # by hand: 32 x (4 x 4096^2 + 3 x 4096 x 11008) block linears; 2 x 32000 x 4096 embeddings + head, 65 x 4096 norms
    assert (shape.linear_params, shape.other_params) == (6_476_005_376, 262_410_240)
    lora = predict_memory({"name": "lora"}, config, 2048, 2, gradient_checkpointing=True)
    qlora = predict_memory({"name": "qlora"}, config, 2048, 2, gradient_checkpointing=True)
    full = predict_memory({"name": "full"}, config, 2048, 2, gradient_checkpointing=True)
    gib = memory.GIB
    assert lora["predicted_weights_gib"] == pytest.approx(6_738_415_616 * 2 / gib)
    # NF4 linears 6_476_005_376 x (1/2 + 1/64 + 4/16384) = 3_340_771_328 bytes, the rest bf16: 2 x 262_410_240
    assert qlora["predicted_weights_gib"] == pytest.approx((3_340_771_328 + 524_820_480) / gib)
    assert full["predicted_trainable_states_gib"] == pytest.approx(6_738_415_616 * 6 / gib)
    no_gc = predict_memory({"name": "lora"}, config, 2048, 2, gradient_checkpointing=False)
    # 32 layers x 4096 tokens x (34 x 4096 + 8 x 11008 + 2 x (6 x 4096 + 11008)) bytes without checkpointing; with it,
    # the 32 layer inputs (2 x 4096 bytes a token) and one of those layers (tests/test_memory_model.py has the parts)
    assert no_gc["predicted_activations_gib"] == pytest.approx(32 * 1_222_639_616 / gib)
    assert lora["predicted_activations_gib"] == pytest.approx((32 * 4096 * 2 * 4096 + 1_222_639_616) / gib)


def test_fast_profile_without_liger_is_a_clear_error_before_loading(tiny_cfg, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real(name, *a))
    record = run_point(tiny_cfg("profile=fast"))
    assert record["status"] == "invalid"
    assert "peftbench[liger]" in record["error"] and "time_load_s" not in record


def test_fast_profile_turns_checkpointing_off_only_when_the_prediction_fits(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("profile=fast", "train.gradient_checkpointing=true")
    config = models.load_config(cfg.model)
    monkeypatch.setattr(profiles, "gpu_memory_gib", lambda: 80.0)
    assert profiles.choose(Point.resolve(cfg), config)[0]["gradient_checkpointing"] is False
    monkeypatch.setattr(profiles, "gpu_memory_gib", lambda: 1e-6)
    out, info = profiles.choose(Point.resolve(cfg), config)
    # nothing fits: the plan with the smallest predicted peak. On this 2-layer model every_4 checkpoints layer 0
    # alone, one input plus one layer's activations, as much as all_offload keeps on the GPU: the faster plan wins the
    # tie. peftbench.regional applies it to the layers (the Trainer's own flag stays off so it does not redo it)
    assert info["profile_choices"]["checkpointing_plan"] == "every_4" and info["predicted_plan_fits"] is False
    assert info["predicted_plans"]["every_4"] == info["predicted_plans"]["all_offload"]
    assert out["gradient_checkpointing"] is False
