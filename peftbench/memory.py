"""Predicted peak GPU memory of one training point, from bytes per parameter plus activations.

It reads a method's facts (the `Method` registry entry handed in), never its name.

Used three ways: printed next to the measured peak (`predicted_peak_gib`), by the planner (peftbench.planner) to
pick the fastest checkpointing plan that fits the memory budget, and by `peftbench plan` before any GPU is used.
Counts, in bytes:

- weights: 2 per bf16 parameter; a 4-bit NF4 linear weight 0.5, plus double quantization's constants (one 8-bit
  absmax per 64-weight block, one fp32 absmax per 256 such blocks: 1/64 + 4/16384 per weight);
- trainable parameters, counted by the caller (methods.predicted_trainable: the method set up on a meta-device
  build), times the bytes of the method's `states` fact (STATE_BYTES: fp32 adapters 16, bf16 ones 8, the model's own
  bf16 weights 6, 8-bit AdamW 4, GaLore/APOLLO's projected moments per linear);
- activations per token and decoder layer, Llama-style block (bf16, SDPA attention, SwiGLU MLP), counted from the
  tensors autograd saves: `ACT_H` bytes per hidden unit and `ACT_I` per MLP unit (a layer's "full activations");
- a checkpointing plan (PLANS; `plan_activations`) decides which layers keep them:
  - `off`: every layer keeps its full activations;
  - `every_<n>`: layers 0, n, 2n, ... (ceil(layers / n) of them, transformers' `every_n_layers` rule
    `layer_index % n == 0`) keep only their bf16 input (2h bytes a token); the others keep full activations. The
    backward walks down from the top: at its start every uncheckpointed layer holds its activations; when it reaches
    the topmost checkpointed layer j, the layers above j are freed and j is recomputed (one layer's full activations)
    beside the uncheckpointed layers below j. The peak is the larger of the two:
    inputs + full x max(uncheckpointed layers, uncheckpointed layers below j + 1);
  - `all`: every layer keeps only its input, plus one layer recomputed (the same formula, j the top layer);
  - `all_but_<k>`: every layer but the top k checkpointed (the same formula: no uncheckpointed layer below j, so
    inputs + full x max(k, 1): the top layer's activations cost the same kept as recomputed, its recompute is saved);
  - `all_offload`, `all_but_<k>_offload`: as `all` / `all_but_<k>`, but the checkpointed layers' inputs are copied
    to pinned host memory as they are saved (peftbench.offload: on a side CUDA stream, brought back one layer ahead
    of the backward); on the GPU stay the full activations above, one layer's recompute and one layer input in
    flight; the inputs on the host (layers x 2h a token) are given apart as `predicted_host_pinned_gib`, never
    counted in the GPU peak;
- gradients and activations never whole together: the backward makes a layer's gradients as it frees that layer's
  activations, so the peak counts the larger of the two (`predicted_gradients_gib`, within the states), not their
  sum; it matters for full fine-tuning, whose 6.7 G bf16 gradients are as large as its activations;
- compiled decoder layers (regional torch.compile, `compiled=True`) are counted with the fused coefficients
  (ACT_H_FUSED, ACT_I_FUSED): Inductor's partitioner saves the inputs of its fused regions and recomputes the
  pointwise ops, as Liger's kernels do. Checked against 59 measured peaks (tests/fixtures/measured_peaks.csv: H100
  runs, H200 runs 19-36, 24 of them compiled, every plan): -8.4% (IA³ off with Liger) to +6.3% (QLoRA all);
- the loss: nothing; TRL's SFTTrainer projects through the LM head in tiles (`add_fused_lm_head`) and never holds
  the (tokens x vocabulary) logits.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

GIB = 1024**3
ACT_H = 34  # per token per layer per hidden unit (norm inputs/outputs in fp32 and bf16, q/k/v/o, rotary, attention out)
ACT_I = 8  # per token per layer per MLP unit (gate, up, SiLU output, their product)
# With Liger's fused RMSNorm/RoPE/SwiGLU, which save their inputs only (no fp32 copies, no SiLU output). These two were
# read off one H100 run (run 2 in results/h100/README.md: prompt tuning and BitFit without checkpointing), not derived.
ACT_H_FUSED = 16
ACT_I_FUSED = 2
NF4_BYTES = 0.5 + 1 / 64 + 4 / 16384
ALLOCATOR_SLACK = 1.05  # fragmentation of PyTorch's caching allocator between the pieces above
# Checkpointing plans, fastest first by default (planner.fastest_first reorders them where a calibration measured
# otherwise). `every_<n>` with any n >= 2 is a valid plan; these are the ones `profile.checkpointing=auto` tries.
PLANS = ("off", "every_4", "every_2", "all", "all_offload")


class PlanError(ValueError):
    """A checkpointing plan string that is not one of the plans (the caller raises it as an input error)."""


class PlanSpec(NamedTuple):
    """A parsed checkpointing plan."""

    every: int | None  # checkpoint every n-th layer (1: all of them), None: none
    offload: bool  # the checkpointed layers' saved inputs held in pinned host memory
    top_plain: int = 0  # `all_but_<k>`: the top k decoder layers are not checkpointed


ALL_BUT = re.compile(r"all_but_(\d+)(_offload)?")


def parse_plan(plan: str) -> PlanSpec:
    """The one grammar of checkpointing plans: off, every_<n> (n >= 2), all, all_but_<k> (k >= 1), and all or
    all_but_<k> with `_offload`."""
    text = str(plan)
    if text == "off":
        return PlanSpec(None, False)
    if text == "all":
        return PlanSpec(1, False)
    if text == "all_offload":
        return PlanSpec(1, True)
    if text.startswith("every_") and text[6:].isdigit() and int(text[6:]) >= 2:
        return PlanSpec(int(text[6:]), False)
    if (m := ALL_BUT.fullmatch(text)) and int(m[1]) >= 1:
        return PlanSpec(1, bool(m[2]), int(m[1]))
    same = {"every_1": "all", "all_but_0": "all", "all_but_0_offload": "all_offload"}.get(text)
    hint = f" ({text} is `{same}`)" if same else ""
    raise PlanError(
        f"`{text}` is not a checkpointing plan{hint}: use off, every_<n> (n >= 2: every n-th decoder layer "
        f"checkpointed), all, all_but_<k> (k >= 1: all but the top k layers), or all_offload / all_but_<k>_offload "
        f"(with the checkpointed layers' saved inputs in pinned host memory)"
    )


def checkpoints_any(plan: str) -> bool:
    """Whether a plan checkpoints any decoder layer: every plan but `off` (an all_but_<k> of the model's depth or more,
    which would checkpoint none, is refused before the model loads: planner.check_depth)."""
    return parse_plan(plan).every is not None


def checkpointed_layers(plan: str, layers: int) -> list[int]:
    """Indices of the decoder layers a plan checkpoints: transformers' every_n_layers rule, `index % n == 0`; for
    `all_but_<k>` every layer below the top k (the top ones are the first the backward reaches, so keeping their
    activations costs no more at the backward's start than recomputing the topmost, and saves its recompute)."""
    every, _, top_plain = parse_plan(plan)
    return [] if every is None else [i for i in range(layers - top_plain) if i % every == 0]


def candidate_plans(layers: int) -> tuple[str, ...]:
    """The plans `profile.checkpointing=auto` tries for a model of `layers` decoder layers, fastest first by default:
    fewer recomputed layers first (off; all_but_<k> from k = layers - 1 down, every_4 and every_2 ahead of the
    all_but plan that recomputes as many layers; all), each plan's `_offload` twin right after it. The host copies
    run on a side stream beside the compute (peftbench.offload) and cost no measurable time: on one H200 (runs
    34-36) LoRA's all_offload ran within the process-to-process spread of `all` (means of four processes each: 9,786
    and 9,816 tok/s), and prompt tuning's all_but_7_offload above the rate its recompute count gave; so an offloading
    plan stands with the plans that recompute as many layers, after them."""

    def rank(plan: str) -> tuple[int, bool]:
        return len(checkpointed_layers(plan, layers)), parse_plan(plan).offload

    plans = [*PLANS, *(f"all_but_{k}{tail}" for k in range(1, layers) for tail in ("", "_offload"))]
    return tuple(sorted(plans, key=rank))  # stable: off, every_4, every_2 keep their places before their twins


def plan_activations(plan: str, layers: int, per_layer: float, layer_input: float) -> tuple[float, float]:
    """(GPU activation bytes, pinned host bytes) of a plan, from one layer's full activations and its input."""
    offload = parse_plan(plan).offload
    ckpt = checkpointed_layers(plan, layers)
    if not ckpt:
        return layers * per_layer, 0.0
    top = ckpt[-1]
    below_top = top - (len(ckpt) - 1)  # uncheckpointed layers under the topmost checkpointed one
    full = per_layer * max(layers - len(ckpt), below_top + 1)
    if offload:  # the checkpointed layers' inputs on the host; on the GPU one in flight (the copy to or from it)
        return full + layer_input, len(ckpt) * layer_input
    return len(ckpt) * layer_input + full, 0.0


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
    """Counted from a meta-device build of the architecture: exact, and free (cached per architecture: a planner
    asks once per plan)."""
    return _shape_of(model_config.to_json_string())


@functools.lru_cache(maxsize=8)
def _shape_of(config_json: str) -> Shape:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = json.loads(config_json)
    fields.pop("quantization_config", None)  # a loaded 4-bit model's settings: the shapes are those of a plain build
    model_config = AutoConfig.for_model(**fields)
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


# Bytes held per trainable parameter beyond the frozen weights, by a method's `states` fact (bf16: its adapters in
# bf16).
STATE_BYTES = {
    "adapter": 16,  # fp32 adapter (PEFT's default): weight 4, grad 4, Adam moments 8
    "adapter_bf16": 8,  # bf16 adapter (QLoRA through TRL, profile=fast LoRA): weight 2, grad 2, moments 4
    "adamw_bf16": 6,  # the model's own bf16 weights trained in place: grad 2, moments 4 (AdamW keeps the param dtype)
    "added_bf16": 8,  # BitFit: the added bf16 biases themselves, their grads, Adam moments
    "adamw_8bit": 2 + 2 + 2 * 4 / 256,  # bitsandbytes AdamW8bit: grad 2, two uint8 moments, an fp32 absmax per 256
    "paged": 2,  # bitsandbytes paged AdamW: grad 2; its states live in CUDA managed memory, outside PyTorch's allocator
}


# Of those, the gradient's bytes (the one part the backward makes as it frees activations; see `predict`).
GRAD_BYTES = {"adapter": 4, "adapter_bf16": 2, "adamw_bf16": 2, "added_bf16": 2, "adamw_8bit": 2, "paged": 2}


def states_key(method: Any, bf16_adapters: bool) -> str:
    """The STATE_BYTES / GRAD_BYTES row of a method's `states` fact: an adapter trained in bf16 has its own."""
    return "adapter_bf16" if method.states == "adapter" and bf16_adapters else method.states


def state_bytes(shape: Shape, method: Any, method_cfg: dict[str, Any], trainable: int, bf16_adapters: bool) -> float:
    if method.states in ("galore", "apollo"):
        optim_args = parse_optim_args((method_cfg.get("train_args") or {}).get("optim_args"))
        return low_rank_states(shape, int(optim_args.get("rank", 128)))  # 128: transformers' default for both
    return trainable * STATE_BYTES[states_key(method, bf16_adapters)]


def gradient_bytes(shape: Shape, method: Any, trainable: int, bf16_adapters: bool) -> float:
    """The gradients within `state_bytes`: GaLore/APOLLO keep every parameter's bf16 gradient (low_rank_states)."""
    if method.states in ("galore", "apollo"):
        return 2 * (shape.linear_params + shape.other_params)
    return trainable * GRAD_BYTES[states_key(method, bf16_adapters)]


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
    plan: str | None = None,
    compiled: bool = False,
) -> dict[str, Any]:
    """The pieces of the predicted peak, in GiB, and their sum `predicted_peak_gib`.

    `plan` (PLANS, `every_<n>`) is the checkpointing plan; None reads `gradient_checkpointing` as `all` or `off`.
    `method` is the registry entry (its facts: `quantize_4bit`, `states`, `activations`, `adds_tokens`), `trainable`
    its predicted trainable count. A method with no `activations` fact is not modelled: the weights, states and
    trainable count are still given, `predicted_peak_gib` is None and `memory_model` says why."""
    if trainable is None:
        return {
            "predicted_trainable_params": None,
            "predicted_peak_gib": None,
            "memory_model": f"not modelled: what method={method.name} trains depends on the weights' values",
        }
    s = shape_of(model_config)
    bf16 = method.quantize_4bit or (bf16_adapters and method.bf16_adapters)  # TRL casts QLoRA's adapters to bf16
    weights = (
        s.linear_params * NF4_BYTES + s.other_params * 2
        if method.quantize_4bit
        else (s.linear_params + s.other_params) * 2
    )
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
    act_h, act_i = (ACT_H_FUSED, ACT_I_FUSED) if fused_kernels or compiled else (ACT_H, ACT_I)
    pattern = "shared_inputs" if bf16 and method.activations == "lora" else method.activations
    per_layer = tokens * (act_h * s.hidden + act_i * s.intermediate + extra_saved_per_token_layer(s, pattern))
    plan = plan if plan is not None else ("all" if gradient_checkpointing else "off")
    activations, host = plan_activations(plan, s.layers, per_layer, tokens * 2 * s.hidden)
    parts["activations"] = activations
    gradients = gradient_bytes(s, method, trainable, bf16)
    out.update({f"predicted_{k}_gib": v / GIB for k, v in parts.items()})
    out["predicted_gradients_gib"] = gradients / GIB
    # The backward makes each layer's gradients as it frees that layer's activations (zero_grad leaves none from the
    # step before), so the peak holds the larger of the two, not their sum: at the backward's start the activations
    # and no gradients, at its end the gradients and no activations. It matters where both are large (full
    # fine-tuning without checkpointing: 6.7 G bf16 gradients, 12.6 GiB, beside 16 GiB of activations).
    overlap = min(activations, gradients)
    out["predicted_peak_gib"] = (sum(parts.values()) - overlap) * ALLOCATOR_SLACK / GIB
    out["predicted_host_pinned_gib"] = host / GIB
    out["memory_model"] = "modelled"
    return out
