"""Predicted peak GPU memory of one training point, from bytes per parameter plus activations.

Used twice: printed next to the measured peak (`predicted_peak_gib`), and by `profile=fast` to turn gradient
checkpointing off only when the prediction without it fits the GPU. Counts, in bytes:

- weights: 2 per bf16 parameter; a 4-bit NF4 linear weight 0.5, plus double quantization's constants (one 8-bit
  absmax per 64-weight block, one fp32 absmax per 256 such blocks: 1/64 + 4/16384 per weight);
- trainable parameters: adapters are kept in fp32 by PEFT (4 weight + 4 grad + 8 Adam moments = 16; QLoRA's are cast
  to bf16 by TRL: 8), a model's own
  bf16 parameters trained in place (full, BitFit) add 2 grad + 4 Adam (fused AdamW keeps moments in the param dtype);
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


def trainable_params(shape: Shape, method_cfg: dict[str, Any]) -> int:
    name = method_cfg["name"]
    r = int(method_cfg.get("r", 16) or 16)
    if name in ("lora", "qlora", "rslora", "pissa", "loraplus"):
        return sum(r * (i + o) for i, o in shape.linear_shapes)
    if name == "dora":
        return sum(r * (i + o) + o for i, o in shape.linear_shapes)
    if name == "ia3":  # PEFT's Llama default: k, v (out features) and down_proj (in features)
        return shape.layers * (2 * shape.kv_hidden + shape.intermediate)
    if name == "prompt_tuning":
        return int(method_cfg.get("num_virtual_tokens", 16)) * shape.hidden
    if name == "bitfit":
        return sum(o for _, o in shape.linear_shapes)
    if name == "full":
        return shape.linear_params + shape.other_params
    return 0


def extra_saved_per_token_layer(shape: Shape, name: str) -> float:
    """Bytes autograd saves per token and layer beyond a frozen base: the bf16 inputs of trained linears."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_hidden
    shared_inputs = 2 * (3 * h + i)  # one bf16 input per group of linears: q/k/v, o, gate/up, down
    if name == "qlora":  # bf16 adapters (TRL): lora_A saves the very tensor the group shares
        return shared_inputs
    if name in ("lora", "rslora", "pissa", "loraplus", "vera"):
        return 2 * (6 * h + i)  # fp32 adapters: autocast makes one bf16 copy of the input per adapter
    if name == "dora":  # and DoRA rescales each base output in fp32: q, k, v, o, down (h) and gate, up (i)
        return 2 * (6 * h + i) + 4 * (5 * h + 2 * i)
    if name == "ia3":
        return 2 * (2 * kv + i)  # the scaled k, v outputs and the down_proj input
    if name == "full":
        return shared_inputs  # weight gradients need the linears' inputs
    return 0.0


def predict(
    model_config: Any,
    method_cfg: dict[str, Any],
    seq_len: int,
    micro_batch: int,
    gradient_checkpointing: bool,
    fused_kernels: bool = False,
    bf16_adapters: bool = False,
) -> dict[str, float]:
    """The pieces of the predicted peak, in GiB, and their sum `predicted_peak_gib`."""
    s = shape_of(model_config)
    name = method_cfg["name"]
    trainable = trainable_params(s, method_cfg)
    bf16_lora = name == "qlora" or (bf16_adapters and name in ("lora", "rslora", "pissa", "loraplus"))
    if name == "qlora":
        weights = s.linear_params * NF4_BYTES + s.other_params * 2
    else:
        weights = (s.linear_params + s.other_params) * 2
    if name == "full":
        states = trainable * (2 + 4)
    elif name == "bitfit":
        states = trainable * (2 + 2 + 4)  # the added bf16 biases themselves, their grads, Adam moments
    else:
        states = trainable * (8 if bf16_lora else 16)  # bf16 adapters: TRL casts QLoRA's; profile=fast LoRA's
    tokens = seq_len * micro_batch
    if name == "prompt_tuning":
        tokens += int(method_cfg.get("num_virtual_tokens", 16)) * micro_batch
    act_h, act_i = (ACT_H_FUSED, ACT_I_FUSED) if fused_kernels else (ACT_H, ACT_I)
    per_layer = tokens * (act_h * s.hidden + act_i * s.intermediate + extra_saved_per_token_layer(s, "qlora" if bf16_lora else name))
    if gradient_checkpointing:
        activations = s.layers * tokens * 2 * s.hidden + per_layer
    else:
        activations = s.layers * per_layer
    parts = {"weights": weights, "trainable_states": states, "activations": activations}
    out = {f"predicted_{k}_gib": v / GIB for k, v in parts.items()}
    out["predicted_peak_gib"] = sum(parts.values()) * ALLOCATOR_SLACK / GIB
    return out
