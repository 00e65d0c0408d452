"""Predicted peak GPU memory of one training point, from bytes per parameter plus activations.

It reads a method's facts (the `Method` registry entry handed in), never its name.

Used twice: printed next to the measured peak (`predicted_peak_gib`), and by `profile=fast` to turn gradient
checkpointing off only when the prediction without it fits the GPU. Counts, in bytes:

- weights: 2 per bf16 parameter; a 4-bit NF4 linear weight 0.5, plus double quantization's constants (one 8-bit
  absmax per 64-weight block, one fp32 absmax per 256 such blocks: 1/64 + 4/16384 per weight);
- trainable parameters, counted by the caller (methods.predicted_trainable: the method set up on a meta-device
  build), times the bytes of the method's `states` fact (STATE_BYTES: fp32 adapters 16, bf16 ones 8, the model's own
  bf16 weights 6, 8-bit AdamW 4, GaLore/APOLLO's projected moments per linear);
- activations per token and decoder layer, Llama-style block (bf16, SDPA attention, SwiGLU MLP), counted from the
  tensors autograd saves: `ACT_H` bytes per hidden unit and `ACT_I` per MLP unit; with gradient checkpointing only
  each layer's input (2h) stays, plus one layer recomputed during backward;
- the loss: nothing; TRL's SFTTrainer projects through the LM head in tiles (`add_fused_lm_head`) and never holds
  the (tokens x vocabulary) logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024**3
ACT_H = 34  # per token per layer per hidden unit (norm inputs/outputs in fp32 and bf16, q/k/v/o, rotary, attention out)
ACT_I = 8  # per token per layer per MLP unit (gate, up, SiLU output, their product)
# With Liger's fused RMSNorm/RoPE/SwiGLU, which save their inputs only (no fp32 copies, no SiLU output). These two were
# read off one H100 run (run 2 in results/h100/README.md: prompt tuning and BitFit without checkpointing), not derived.
ACT_H_FUSED = 16
ACT_I_FUSED = 2
NF4_BYTES = 0.5 + 1 / 64 + 4 / 16384
ALLOCATOR_SLACK = 1.05  # fragmentation of PyTorch's caching allocator between the pieces above


@dataclass
class Shape:
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_hidden: int
    linear_params: int  # weights of the decoder blocks' linear layers
    other_params: int  # embeddings, lm_head, norms
    linear_shapes: list[tuple[int, int]]  # (in, out) of every block linear


def shape_of(model_config: Any) -> Shape:
    """Counted from a meta-device build of the architecture: exact, and free."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config)
    linears = [
        (m.in_features, m.out_features)
        for n, m in skeleton.named_modules()
        if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")
    ]
    linear_params = sum(i * o for i, o in linears)
    total = sum(p.numel() for p in skeleton.parameters())
    heads = model_config.num_attention_heads
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
    kv = getattr(model_config, "num_key_value_heads", None) or heads
    return Shape(
        layers=model_config.num_hidden_layers,
        hidden=model_config.hidden_size,
        intermediate=model_config.intermediate_size,
        vocab=model_config.vocab_size,
        kv_hidden=kv * head_dim,
        linear_params=linear_params,
        other_params=total - linear_params,
        linear_shapes=linears,
    )


def parse_optim_args(text: str | None) -> dict[str, str]:
    """TrainingArguments' `optim_args` string ("rank=128, update_proj_gap=200") as transformers parses it."""
    return dict(kv.strip().split("=", 1) for kv in (text or "").replace(" ", "").split(",") if kv)


def low_rank_states(shape: Shape, rank: int) -> float:
    """GaLore / APOLLO (transformers' `galore_*` / `apollo_*` optim over the block linears): every parameter keeps its
    bf16 gradient (2); each block linear (m x n) keeps its projector (rank x min(m, n)) and Adam's two moments of the
    projected gradient (rank x max(m, n)), all in the parameter's dtype (both libraries cast back to it); the other
    parameters (embeddings, head, norms) plain AdamW moments (4). The projector's SVD (GaLore) is a transient fp32
    copy of one matrix at a time during the optimizer step, after the backward's peak: not counted."""
    projected = sum(min(rank, i, o) * (2 * min(i, o) + 4 * max(i, o)) for i, o in shape.linear_shapes)
    return 2 * (shape.linear_params + shape.other_params) + projected + 4 * shape.other_params


# Bytes held per trainable parameter beyond the frozen weights, by a method's `states` fact (BF16: its adapters in bf16).
STATE_BYTES = {
    "adapter": 16,  # fp32 adapter (PEFT's default): weight 4, grad 4, Adam moments 8
    "adapter_bf16": 8,  # bf16 adapter (QLoRA through TRL, profile=fast LoRA): weight 2, grad 2, moments 4
    "adamw_bf16": 6,  # the model's own bf16 weights trained in place: grad 2, moments 4 (AdamW keeps the param dtype)
    "added_bf16": 8,  # BitFit: the added bf16 biases themselves, their grads, Adam moments
    "adamw_8bit": 2 + 2 + 2 * 4 / 256,  # bitsandbytes AdamW8bit: grad 2, two uint8 moments, an fp32 absmax per 256
    "paged": 2,  # bitsandbytes paged AdamW: grad 2; its states live in CUDA managed memory, outside PyTorch's allocator
}


def state_bytes(shape: Shape, method: Any, method_cfg: dict[str, Any], trainable: int, bf16_adapters: bool) -> float:
    if method.states in ("galore", "apollo"):
        optim_args = parse_optim_args((method_cfg.get("train_args") or {}).get("optim_args"))
        return low_rank_states(shape, int(optim_args.get("rank", 128)))  # 128: transformers' default for both
    key = "adapter_bf16" if method.states == "adapter" and bf16_adapters else method.states
    return trainable * STATE_BYTES[key]


def extra_saved_per_token_layer(shape: Shape, pattern: str) -> float:
    """Bytes autograd saves per token and layer beyond a frozen base, by a method's `activations` fact."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_hidden
    shared_inputs = 2 * (3 * h + i)  # one bf16 input per group of linears: q/k/v, o, gate/up, down
    return {
        "none": 0.0,
        "shared_inputs": shared_inputs,  # bf16 adapters or trained linears: the very input the group shares
        "lora": 2 * (6 * h + i),  # fp32 adapters: autocast makes one bf16 copy of the input per adapter
        # DoRA also rescales each base output in fp32: q, k, v, o, down (h) and gate, up (i)
        "dora": 2 * (6 * h + i) + 4 * (5 * h + 2 * i),
        "ia3": 2 * (2 * kv + i),  # the scaled k, v outputs and the down_proj input
    }[pattern]


def predict(
    model_config: Any,
    method: Any,
    method_cfg: dict[str, Any],
    trainable: int,
    seq_len: int,
    micro_batch: int,
    gradient_checkpointing: bool,
    fused_kernels: bool = False,
    bf16_adapters: bool = False,
) -> dict[str, Any]:
    """The pieces of the predicted peak, in GiB, and their sum `predicted_peak_gib`.

    `method` is the registry entry (its facts: `quantize_4bit`, `states`, `activations`, `adds_tokens`), `trainable`
    its predicted trainable count. A method with no `activations` fact is not modelled: the weights, states and
    trainable count are still given, `predicted_peak_gib` is None and `memory_model` says why."""
    if trainable is None:
        return {"predicted_trainable_params": None, "predicted_peak_gib": None,
                "memory_model": f"not modelled: what method={method.name} trains depends on the weights' values"}
    s = shape_of(model_config)
    bf16 = method.quantize_4bit or (bf16_adapters and method.bf16_adapters)  # TRL casts QLoRA's adapters to bf16
    weights = s.linear_params * NF4_BYTES + s.other_params * 2 if method.quantize_4bit else (s.linear_params + s.other_params) * 2
    states = state_bytes(s, method, method_cfg, trainable, bf16)
    out: dict[str, Any] = {"predicted_trainable_params": trainable}
    parts = {"weights": weights, "trainable_states": states}
    if method.activations is None:
        out.update({f"predicted_{k}_gib": v / GIB for k, v in parts.items()})
        out["predicted_peak_gib"] = None
        out["memory_model"] = f"not modelled: no measured activation pattern for method={method.name}"
        return out
    tokens = seq_len * micro_batch
    if method.adds_tokens:
        tokens += int(method_cfg.get("num_virtual_tokens", 16)) * micro_batch
    act_h, act_i = (ACT_H_FUSED, ACT_I_FUSED) if fused_kernels else (ACT_H, ACT_I)
    pattern = "shared_inputs" if bf16 and method.activations == "lora" else method.activations
    per_layer = tokens * (act_h * s.hidden + act_i * s.intermediate + extra_saved_per_token_layer(s, pattern))
    if gradient_checkpointing:
        activations = s.layers * tokens * 2 * s.hidden + per_layer
    else:
        activations = s.layers * per_layer
    parts["activations"] = activations
    out.update({f"predicted_{k}_gib": v / GIB for k, v in parts.items()})
    out["predicted_peak_gib"] = sum(parts.values()) * ALLOCATOR_SLACK / GIB
    out["memory_model"] = "modelled"
    return out
