"""Regional compilation and checkpointing plans (peftbench/regional.py) on tiny Llama models built in-process.

- each plan checkpoints exactly the layers it names: a checkpointed layer's forward runs twice in a training step
  (the backward's recompute), any other once; the layer sets are written out by hand;
- every plan gives the gradients of no checkpointing (eager, float32, CPU: the recompute is the same arithmetic);
- all_offload keeps each layer's input for the recompute in host memory, pinned only where CUDA exists;
- the compiled step (Inductor, bf16, LoRA adapters) gives eager's loss and gradients within bf16's own error: the
  distance of eager bf16 from a float32 reference is the yardstick.
"""

from __future__ import annotations

import gc

import pytest
import torch

from peftbench import regional

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def tiny_llama(layers: int, dtype=torch.float32, hidden: int = 32, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=128,
        max_position_embeddings=64,
        use_cache=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(dtype)


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)  # B starts random (init_lora_weights=False), so A's gradients are not all zero
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, config, autocast_adapter_dtype=False)


def batch(rows: int = 2, length: int = 16):
    ids = torch.randint(0, 128, (rows, length), generator=torch.Generator().manual_seed(2))
    return {"input_ids": ids, "labels": ids}


def train_step(model, inputs):
    model.train()
    model.zero_grad(set_to_none=True)
    loss = model(**inputs, use_cache=False).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}


def count_forwards(model) -> list[int]:
    """Count each decoder layer's forward calls (installed before regional.apply, which wraps what it finds)."""
    counts = [0] * len(regional.decoder_layers(model))
    for i, layer in enumerate(regional.decoder_layers(model)):

        def counted(*args, _i=i, _forward=layer.forward, **kwargs):
            counts[_i] += 1
            return _forward(*args, **kwargs)

        layer.forward = counted
    return counts


# Written out by hand for 5 layers: every_<n> checkpoints layer i when i % n == 0 (transformers' every_n_layers);
# all_but_<k> every layer but the top k.
PLAN_LAYERS = {
    "off": [],
    "every_2": [0, 2, 4],
    "every_3": [0, 3],
    "every_4": [0, 4],
    "all": [0, 1, 2, 3, 4],
    "all_offload": [0, 1, 2, 3, 4],
    "all_but_1": [0, 1, 2, 3],
    "all_but_3": [0, 1],
    "all_but_5": [],
    "all_but_2_offload": [0, 1, 2],
}


@pytest.mark.parametrize("plan", list(PLAN_LAYERS))
def test_each_plan_recomputes_exactly_its_layers_and_keeps_the_gradients(plan):
    reference = tiny_llama(5)
    loss_ref, grads_ref = train_step(reference, batch())
    model = tiny_llama(5)
    counts = count_forwards(model)
    info = regional.apply(model, "off", plan)
    loss, grads = train_step(model, batch())
    assert [i for i, c in enumerate(counts) if c == 2] == PLAN_LAYERS[plan]
    assert all(c in (1, 2) for c in counts), counts
    assert info["checkpointed_layers"] == len(PLAN_LAYERS[plan]) and info["decoder_layers"] == 5
    assert info["activation_offload"] is (plan.endswith("_offload") and bool(PLAN_LAYERS[plan]))
    torch.testing.assert_close(loss, loss_ref, rtol=0, atol=0)
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-6, atol=1e-7, msg=name)
    counts[:] = [0] * 5
    with torch.no_grad():  # no backward to come: nothing is checkpointed, every layer runs once
        model(**batch(), use_cache=False)
    assert counts == [1] * 5
    regional.remove(model)
    assert all("forward" not in layer.__dict__ for layer in regional.decoder_layers(model))


def test_all_offload_keeps_each_layer_input_in_host_memory_and_brings_the_next_back_ahead(monkeypatch):
    from peftbench import offload

    packed = []
    pack = offload.Offloader._pack

    def recording(self, group, tensor):  # what the pack hook keeps, as it keeps it
        out = pack(self, group, tensor)
        packed.append((tensor, group.host[out.index]))
        return out

    monkeypatch.setattr(offload.Offloader, "_pack", recording)
    model = tiny_llama(3, hidden=32)
    regional.apply(model, "off", "all_offload")
    offloader = regional.decoder_layers(model)[0].forward.args[2]
    assert regional.offload_stats(model) == {"packed": 0, "prefetched": 0, "fetched_on_demand": 0}
    train_step(model, batch(rows=2, length=16))
    # one tensor per layer: the layer's input hidden states (2 rows x 16 tokens x 32), each copied off the GPU
    assert [tuple(t.shape) for t, _ in packed] == [(2, 16, 32)] * 3
    assert all(kept.data_ptr() != t.data_ptr() and torch.equal(kept, t) for t, kept in packed)
    assert all(kept.is_pinned() is torch.cuda.is_available() for _, kept in packed)
    # the backward reaches the top layer first (fetched when asked), each layer below was brought back ahead
    assert offloader.stats == {"packed": 3, "prefetched": 2, "fetched_on_demand": 1}
    train_step(model, batch(rows=2, length=16))  # a second step: the first step's groups are not fetched again
    assert regional.offload_stats(model) == {"packed": 6, "prefetched": 4, "fetched_on_demand": 2}


def test_plans_and_modes_are_checked():
    plans = ("off", "all", "all_offload", "every_2", "every_16", "all_but_3", "all_but_12_offload")
    assert [tuple(regional.parse_plan(p)) for p in plans] == [
        (None, False, 0),
        (1, False, 0),
        (1, True, 0),
        (2, False, 0),
        (16, False, 0),
        (1, False, 3),
        (1, True, 12),
    ]
    for bad in ("every_1", "every_0", "every_x", "some", "every-2", "all_but_0", "all_but_x", "all_but_2_offlaod"):
        with pytest.raises(regional.PlanError, match="profile.checkpointing"):
            regional.parse_plan(bad)
    with pytest.raises(regional.PlanError, match="profile.compile"):
        regional.apply(tiny_llama(1), "whole", "off")
    assert regional.normalised(False) == "off"  # YAML reads a bare `off` as false


def test_warmup_excess_is_the_warmup_steps_time_above_the_steady_step():
    # steps 1-2 warm-up (10.0 s and 1.5 s), steady steps 1.0, 1.2, 0.8 s: median 1.0, excess 9.0 + 0.5
    assert regional.warmup_excess_s([10.0, 1.5, 1.0, 1.2, 0.8], 2) == pytest.approx(9.5)
    assert regional.warmup_excess_s([10.0, 0.5, 1.0], 2) == pytest.approx(9.0)  # a fast warm-up step counts 0
    assert regional.warmup_excess_s([10.0, 1.0], 0) is None and regional.warmup_excess_s([10.0], 1) is None


@pytest.mark.parametrize("plan", ["every_2", "all_but_1_offload"])
def test_compiled_step_equals_eager_within_bf16_error(plan):
    """Inductor on the CPU (C++ code generation through gcc). Two layers, plan every_2 (or all_but_1_offload: the
    same layers, layer 0's input through the offload hooks): layer 0 compiled and checkpointed (the recompute runs
    the compiled forward), layer 1 compiled alone; one graph serves both."""
    reference = with_lora(tiny_llama(2, torch.float32))
    loss_ref, grads_ref = train_step(reference, batch())
    eager = with_lora(tiny_llama(2, torch.bfloat16))
    loss_eager, grads_eager = train_step(eager, batch())
    model = with_lora(tiny_llama(2, torch.bfloat16))
    model.enable_input_require_grads()  # layer 0's input requires grad as layer 1's does: one graph for both
    info = regional.apply(model, "regional", plan, backend="inductor", dynamic=False)
    loss, grads = train_step(model, batch())
    stats = regional.compile_stats()
    assert info["compiled_layers"] == 2 and info["checkpointed_layers"] == 1
    if plan.endswith("_offload"):
        assert regional.offload_stats(model) == {"packed": 1, "prefetched": 0, "fetched_on_demand": 1}
    assert stats["compile_graphs"] == 1 and stats["compile_graph_breaks"] == 0

    def error(got: dict, name: str) -> float:
        return ((got[name] - grads_ref[name]).abs().max() / grads_ref[name].abs().max()).item()

    assert grads.keys() == grads_ref.keys() == grads_eager.keys() and len(grads) == 2 * 7 * 2  # A and B, 7 linears
    bf16_eps = 2.0**-8
    assert abs(loss - loss_ref) <= 2 * abs(loss_eager - loss_ref) + bf16_eps * abs(loss_ref)
    for name in grads_ref:
        assert error(grads, name) <= 2 * error(grads_eager, name) + bf16_eps, (
            name,
            error(grads, name),
            error(grads_eager, name),
        )


def test_a_point_with_regional_compile_records_its_plan_and_compile_time(tiny_cfg):
    """Through the runner: profile=fast with Dynamo alone (backend `eager`: the tracing, no code generation, to keep
    it fast; the Inductor test above checks the numbers), fixed-length synthetic rows, plan every_2 on 2 layers."""
    from peftbench.runner import run_point

    cfg = tiny_cfg(
        "profile=fast",
        "profile.compile_backend=eager",
        "profile.checkpointing=every_2",
        "data=synthetic",
        "data.seq_len=32",
        "data.num_samples=8",
        "eval=none",
        "train.max_steps=3",
        "run.warmup_steps=1",
    )
    record = run_point(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["profile_choices"]["checkpointing_plan"] == "every_2" and record["compile"] == "regional"
    assert record["compiled_layers"] == 2 and record["checkpointed_layers"] == 1
    assert record["compile_dynamic"] is False  # fixed-length rows: static shapes
    assert record["engine_gradient_checkpointing"].startswith("peftbench plan every_2")
    assert record["hyperparameters"]["gradient_checkpointing"] is False  # transformers' own stays off under a plan
    # layer 0's input does not require grad (frozen embeddings), layer 1's does: two graphs, no break
    assert record["compile_graphs"] == 2 and record["compile_graph_breaks"] == 0
    assert record["warmup_steps_excluded"] == 1 and record["time_compile_s"] > 0
    assert record["adapter_bytes"] > 0  # saved after the layers got their own forward back
    # the fast profile froze the collector's heap after step 1, and released it when training ended
    assert record["profile_choices"]["gc_freeze"].startswith("after step 1")
    assert record["gc_frozen_after_step"] == 1 and record["gc_frozen_objects"] > 10_000
    assert gc.get_freeze_count() == 0
    # the callback's measure of the collector: the freeze's own full collection at least, inside training
    assert record["gc_full_collections"] >= 1 and record["gc_pause_s"] >= record["gc_freeze_collect_s"] * 0.5
