"""Every method trains on a tiny random model; what trains is counted by PEFT and checked against the registry's
prediction (the memory model's trainable count); the callback's numbers are checked by independent counts."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import open_dict

from peftbench import methods, profiles
from peftbench.methods import FAMILY, REGISTRY
from peftbench.paths import recipes_dir
from peftbench.point import Point
from peftbench.runner import run_point

FAMILY_MODELS = {"bitfit": ["model=tiny_qwen2"]}  # Qwen2 has q/k/v biases: real BitFit, no added biases

# Options that fit the tiny model (hidden 64, kv 32, 2 layers) where a method's 7B-sized defaults do not; the 7B
# defaults themselves are refused on it at validation (test_defaults_that_do_not_fit_are_invalid_before_loading).
TINY_OPTIONS = {
    "adaption_prompt": {"adapter_layers": 1},
    "c3a": {"block_size": 32},
    "psoft": {"r": 16},
    "road": {"group_size": 16},
    "shira": {"r": 4},
    "vblora": {"vector_length": 32},
    "waveft": {"n_frequency": 500},
    "p_tuning": {"encoder_hidden_size": 64},
    "prompt_tuning": {"prompt_tuning_init": "RANDOM"},  # TEXT init needs a tokenizer: the family test covers it
    "bitfit": {"add_biases": True},
}


def method_cfg(name: str) -> dict:
    cfg = yaml.safe_load((recipes_dir() / "method" / f"{name}.yaml").read_text())
    return {**cfg, **TINY_OPTIONS.get(name, {})}


@pytest.fixture(scope="module")
def tiny():
    """The tiny Llama with a small vocabulary and untied embeddings (trainable tokens may then train the input
    embedding alone), built once; each method gets a copy."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from peftbench.models import SHIPPED_CONFIGS

    fields = json.loads((SHIPPED_CONFIGS / "tiny_llama.json").read_text())
    config = LlamaConfig(**{**fields, "vocab_size": 512, "tie_word_embeddings": False})
    torch.manual_seed(0)
    return config, AutoModelForCausalLM.from_config(config)


def peft_count(model) -> int:
    """PEFT's own count where PEFT wrapped the model, else the parameters with requires_grad."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.get_nb_trainable_parameters()[0]
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_method_trains_what_the_registry_predicts(tiny, name):
    """Set up as the runner does (prepare_model, then get_peft_model), two AdamW steps; PEFT's count of what trains
    equals the registry's prediction from a meta-device build, and a mergeable adapter merges to the same outputs."""
    from peft import PeftModel, get_peft_model

    config, base = tiny
    cfg = method_cfg(name)
    method = methods.get_method(name)
    if method.needs_cuda and not torch.cuda.is_available():
        with pytest.raises(
            methods.MethodError, match=r"CUDA (GPU|device) \(torch.cuda.is_available\(\) is False here\)"
        ):
            methods.validate(cfg, config)
        return
    methods.validate(cfg, config)
    model = copy.deepcopy(base)
    methods.prepare_model(model, cfg)
    peft_config = methods.build_peft_config(cfg)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    counted = peft_count(model)
    assert counted == sum(p.numel() for p in trained.values()) > 0
    predicted = methods.predicted_trainable(cfg, config)
    if method.trainable is methods._weights_dependent:
        assert predicted is None
        assert "depends on the weights" in methods.predict_memory(cfg, config, 16, 2, True)["memory_model"]
    else:
        assert predicted == counted

    ids = torch.randint(3, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    if name == "trainable_tokens":
        ids[:, :2] = torch.tensor(cfg["token_indices"])  # only these embedding rows train
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = dict(model.named_parameters())
    assert any(not torch.equal(after[n], before) for n, before in trained.items()), "no trainable tensor moved"

    if method.mergeable and isinstance(model, PeftModel):
        model.eval()
        with torch.no_grad():
            unmerged = model(input_ids=ids).logits
            merged = model.merge_and_unload()(input_ids=ids).logits
        torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)


def test_every_method_has_its_yaml_and_its_facts():
    yamls = {p.stem for p in (recipes_dir() / "method").glob("*.yaml")}
    assert yamls == set(REGISTRY)
    for name, method in REGISTRY.items():
        text = (recipes_dir() / "method" / f"{name}.yaml").read_text()
        assert yaml.safe_load(text)["name"] == name
        assert method.trains in ("adapter", "biases", "all")
        assert method.activations in (None, "none", "shared_inputs", "lora", "dora", "ia3")


def cfg_for(cfg, name: str):
    """`cfg` with its method group replaced by method `name`'s YAML (and its tiny-model options)."""
    from omegaconf import OmegaConf

    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.method = OmegaConf.create(method_cfg(name))
    return out


def test_the_memory_model_says_not_modelled_and_the_fast_profile_keeps_checkpointing(tiny, tiny_cfg, monkeypatch):
    """Every method the memory model does not cover keeps checkpointing under profile=fast, however much memory there
    is, except a method that cannot train with it (`no_checkpointing`): off in both profiles, and the record says
    why."""
    cfg = tiny_cfg("profile=fast", "train.gradient_checkpointing=true")
    default = tiny_cfg("train.gradient_checkpointing=true")
    config, _ = tiny
    monkeypatch.setattr(profiles, "gpu_memory_gib", lambda: 1e6)  # everything would fit
    not_modelled = [n for n, m in REGISTRY.items() if not m.modelled]
    assert len(not_modelled) > 30 and "loha" in not_modelled
    for name in not_modelled:
        choices, info = profiles.choose(Point.resolve(cfg_for(cfg, name)), config)
        cannot = REGISTRY[name].no_checkpointing is not None
        # the fast profile's plan is peftbench's, layer by layer: transformers' own checkpointing is off under it
        assert info["profile_choices"]["checkpointing_plan"] == ("off" if cannot else "all"), name
        assert choices["gradient_checkpointing"] is False, name
        assert ("gradient_checkpointing_off" in info) is cannot, name
        default_choices = profiles.choose(Point.resolve(cfg_for(default, name)), config)[0]
        assert default_choices.get("gradient_checkpointing", True) is not cannot, name
    assert {n for n, m in REGISTRY.items() if m.no_checkpointing} == {"prefix_tuning", "cartridge"}  # PEFT's list
    lora = profiles.choose(Point.resolve(cfg_for(cfg, "lora")), config)[1]
    assert lora["profile_choices"]["checkpointing_plan"] == "off"


def test_optimizer_states_at_the_7b_shape():
    """Llama-2-7B's shapes written out by hand: 32 layers of q/k/v/o (4096 x 4096), gate/up (4096 -> 11008), down
    (11008 -> 4096); embeddings and head 32000 x 4096 each, 65 RMSNorm vectors of 4096."""
    from omegaconf import OmegaConf

    from peftbench import memory, models

    config = models.load_config(OmegaConf.create({"config": "llama2_7b", "name_or_path": "x"}))
    total, other = 6_738_415_616, 2 * 32000 * 4096 + 65 * 4096
    gib = memory.GIB

    def states(name):
        return methods.predict_memory(method_cfg(name), config, 2048, 2, True)["predicted_trainable_states_gib"] * gib

    assert states("full") == pytest.approx(total * 6)
    assert states("full_adamw8bit") == pytest.approx(total * (2 + 2 + 8 / 256))
    assert states("full_paged_adamw") == pytest.approx(total * 2)
    square = 128 * (2 * 4096 + 4 * 4096)  # projector 128 x 4096 and two moments 128 x 4096, bf16
    wide = 128 * (2 * 4096 + 4 * 11008)  # projector 128 x 4096 and two moments 128 x 11008
    projected = 32 * (4 * square + 3 * wide)
    for name in ("full_galore", "full_apollo"):
        assert states(name) == pytest.approx(2 * total + projected + 4 * other)


def test_every_method_is_modelled_or_says_not_modelled(tiny):
    config, _ = tiny
    for name, method in REGISTRY.items():
        out = methods.predict_memory(method_cfg(name), config, 16, 2, True)
        if method.modelled and out["predicted_trainable_params"] is not None:
            assert out["memory_model"] == "modelled" and out["predicted_peak_gib"] > 0, name
        else:
            assert out["memory_model"].startswith("not modelled") and out["predicted_peak_gib"] is None, name


@pytest.mark.parametrize("method", FAMILY)
def test_every_family_method_trains_and_is_measured(tiny_cfg, method):
    cfg = tiny_cfg(f"method={method}", *FAMILY_MODELS.get(method, []))
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["steps"] == 3
    assert 0 < record["trainable_params"] <= record["total_params"]
    assert record["trainable_params"] == record["predicted_trainable_params"]
    assert record["real_tokens"] > 0 and record["tokens_per_s"] > 0
    assert len(record["loss_curve"]) == 3
    # adapter size equals the weights on disk (config and README apart), counted here file by file
    adapter = Path(cfg.run.results_dir) / record["run_id"] / "adapter"
    on_disk = sum(p.stat().st_size for p in adapter.rglob("*.safetensors"))
    assert record["adapter_bytes"] == on_disk > 0
    # and what those files hold is what trained: safetensors' own reader, tensor by tensor, counts the parameters
    from safetensors import safe_open

    saved_params = 0
    for path in adapter.rglob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            saved_params += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert saved_params == record["trainable_params"], method
    saved = json.loads((Path(cfg.run.results_dir) / record["run_id"] / "record.json").read_text())
    assert saved["status"] == "ok" and saved["run_id"] == record["run_id"]


QUICK = ["eval=none", "train.max_steps=2", "run.save_adapter=false", "data.max_train_samples=8"]


@pytest.mark.parametrize(
    ("method", "optimizer"),
    [
        ("loha", "torch.optim.adamw.AdamW"),
        ("adalora", "torch.optim.adamw.AdamW"),
        ("vera", "torch.optim.adamw.AdamW"),
        ("prefix_tuning", "torch.optim.adamw.AdamW"),
        ("full_galore", "galore_torch.adamw.AdamW"),
        ("full_apollo", "apollo_torch.apollo.AdamW"),
        ("full_adamw8bit", "bitsandbytes.optim.adamw.AdamW"),
    ],
)
def test_methods_run_through_the_runner_with_their_optimizer(tiny_cfg, method, optimizer):
    """The runner's own path (SFTTrainer, the callback): PEFT's count equals the prediction, and the optimizer is the
    one the method's train_args ask transformers for."""
    record = run_point(tiny_cfg(f"method={method}", *QUICK))
    assert record["status"] == "ok", record.get("error")
    assert record["trainable_params"] == record["predicted_trainable_params"]
    assert record["optimizer"] == optimizer


def test_adalora_reallocates_its_rank_budget(tiny):
    """The callback the runner adds for AdaLoRA calls PEFT's update_and_allocate after each optimizer step, with the
    gradients still there: past tinit the budget is masked and PEFT records the rank pattern; without it, none."""
    from types import SimpleNamespace

    from peft import get_peft_model

    config, base = tiny
    cfg = {**method_cfg("adalora"), "tinit": 1, "tfinal": 1, "total_step": 6, "deltaT": 1}
    (callback,) = methods.trainer_callbacks(cfg)
    patterns = []
    for with_callback in (True, False):
        model = get_peft_model(copy.deepcopy(base), methods.build_peft_config(cfg))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        ids = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
        for step in range(1, 4):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            if with_callback:
                callback.on_optimizer_step(None, SimpleNamespace(global_step=step), None, model=model)
            optimizer.zero_grad()
        patterns.append(model.peft_config["default"].rank_pattern)
    assert patterns[0] and patterns[1] is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=vblora"], "`in_features` 64 must be divisible by `vector_length` 256"),
        (["method=c3a"], "block size should be a factor"),
        (["method=shira"], "more shira params than the total number of params"),
        (["method=trainable_tokens"], "TRL's SFTTrainer refuses"),  # tiny_llama ties its embeddings
        (["method=full_paged_adamw"], "needs a CUDA GPU"),
        (["method=qlora_loftq"], "computes on a CUDA device"),
        (["method=full_galore", "+method.train_args.optimm=x"], "Did you mean `method.train_args.optim`"),
        (["method=full_galore", "method.train_args.optim=galore_adam"], "transformers has no optimizer"),
    ],
)
def test_methods_that_cannot_apply_are_invalid_before_loading(tiny_cfg, overrides, message):
    if "CUDA" in message and torch.cuda.is_available():  # there they are not refused
        pytest.skip("a CUDA GPU is here")
    record = run_point(tiny_cfg(*overrides, *QUICK))
    assert record["status"] == "invalid" and message in record["error"], record.get("error")
    assert "time_load_s" not in record  # refused before any weights loaded


def test_loftq_on_a_random_init_model_is_refused_with_the_fix():
    from omegaconf import OmegaConf

    with pytest.raises(methods.MethodError, match="model.init=random has no checkpoint"):
        methods.check_model(method_cfg("qlora_loftq"), OmegaConf.create({"init": "random"}))
    methods.check_model(method_cfg("qlora_loftq"), OmegaConf.create({"init": "pretrained"}))


def test_trainable_parameters_match_an_independent_count(tiny_cfg):
    """LoRA r=4 on all linear layers of the tiny Llama: r*(in+out) per layer, counted from the config by hand."""
    from peftbench.models import SHIPPED_CONFIGS

    record = run_point(tiny_cfg("method=lora", "method.r=4", "train.max_steps=1"))
    c = json.loads((SHIPPED_CONFIGS / "tiny_llama.json").read_text())
    h, i, kv = (
        c["hidden_size"],
        c["intermediate_size"],
        c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"],
    )
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


def test_sweep_peft_all_is_the_whole_registry_and_the_default_keeps_the_seven():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from peftbench.sweep import sweep_point_overrides

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        every = compose("config", overrides=["sweep=peft_all"], return_hydra_config=True)
        default = compose("config", return_hydra_config=True)
        jobs = sweep_point_overrides(every, GlobalHydra.instance().config_loader())  # the basic sweeper's expansion
    points = [o.split("=", 1)[1] for job in jobs for o in job if o.startswith("method=")]
    assert len(points) == len(jobs) and sorted(points) == sorted(REGISTRY)  # every method once, one a point
    assert every.method_overrides.bitfit.add_biases is True
    assert (
        default.hydra.sweeper.params.method.split(",")
        == FAMILY
        == ["lora", "qlora", "dora", "ia3", "prompt_tuning", "bitfit", "full"]
    )
