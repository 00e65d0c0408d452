"""The pieces the GPU benchmark rests on, checked on the CPU with tiny models: meta-device random init (with block-wise
4-bit quantization), the synthetic fixed-length workload, the memory model, and the fast profile's checks."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from omegaconf import OmegaConf

from peftbench import memory, models, profiles
from peftbench.methods import REGISTRY
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
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "liger_kernel" else real(name, *a)
    )
    record = run_point(tiny_cfg("profile=fast", "profile.compile=off"))  # compiled layers run without Liger
    assert record["status"] == "invalid"
    assert "peftbench[liger]" in record["error"] and "time_load_s" not in record


def test_fast_profile_turns_checkpointing_off_only_when_the_prediction_fits(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("profile=fast", "train.gradient_checkpointing=true")
    config = models.load_config(cfg.model)
    monkeypatch.setattr(profiles, "gpu_memory_gib", lambda: 80.0)
    plan = lambda: profiles.choose(Point.resolve(cfg), config)[1]["profile_choices"]["checkpointing_plan"]  # noqa: E731
    assert plan() == "off"
    monkeypatch.setattr(profiles, "gpu_memory_gib", lambda: 1e-6)
    out, info = profiles.choose(Point.resolve(cfg), config)
    # nothing fits: the plan with the smallest predicted peak. On this 2-layer model every_4 checkpoints layer 0
    # alone, one input plus one layer's activations, as much as all_offload keeps on the GPU: the faster plan wins the
    # tie. The plan is peftbench's, layer by layer: transformers' own checkpointing stays off under it either way
    assert plan() == "every_4" and info["predicted_plan_fits"] is False
    assert info["predicted_plans"]["every_4"] == info["predicted_plans"]["all_offload"]
    assert out["gradient_checkpointing"] is False


# Workload A (`+recipe=family_7b_synthetic`: train=gpu, its gradient checkpointing, bf16, the default profile's lean
# step, fixed-length synthetic rows) on the tiny model: only sizes shrink, and `use_cpu` lets bf16 run on a CPU.
WORKLOAD_A_ON_CPU = [
    "+recipe=family_7b_synthetic",
    "model=tiny_llama",
    "sweep=none",
    "data.seq_len=32",
    "data.num_samples=8",
    "train.max_steps=3",
    "run.warmup_steps=1",
    "train.dataloader_num_workers=0",
    "+train.use_cpu=true",
    "eval=none",
]
# The methods whose registry facts change the runner's path (a tuner that copies the forward TRL patches, a KV prefix
# that checkpointed layers drop); both failed on the H200 in run 20 and passed the plain-PEFT test of test_methods.py.
PATH_FACT_METHODS = sorted(n for n, m in REGISTRY.items() if m.copies_forward or m.no_checkpointing)


@pytest.mark.parametrize("name", PATH_FACT_METHODS)
def test_methods_with_path_facts_train_at_workload_a_settings(tmp_path, name):
    """Through the runner at workload A's settings: the point trains (finite losses, what trains is what was
    predicted); a method that cannot checkpoint trains without it and the record says why."""
    from tests.conftest import compose_recipe
    from tests.test_methods import TINY_OPTIONS

    options = [
        f"+method.{k}={v}"
        if k not in OmegaConf.to_container(compose_recipe(f"method={name}").method)
        else f"method.{k}={v}"
        for k, v in TINY_OPTIONS.get(name, {}).items()
    ]
    cfg = compose_recipe(*WORKLOAD_A_ON_CPU, f"method={name}", *options, f"run.results_dir={tmp_path}")
    assert cfg.train.gradient_checkpointing is True and cfg.train.bf16 is True and cfg.profile.name == "default"
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["trainable_params"] == record["predicted_trainable_params"] > 0
    assert len(record["loss_curve"]) == 3 and all(0 < loss < 20 for _, loss in record["loss_curve"])
    method = REGISTRY[name]
    assert record["hyperparameters"]["gradient_checkpointing"] is (method.no_checkpointing is None)
    if method.no_checkpointing:
        assert record["gradient_checkpointing_off"].startswith(f"method={name} cannot train with it: PEFT")
    else:
        assert "gradient_checkpointing_off" not in record
