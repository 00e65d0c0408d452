"""Regional compilation and checkpointing plans, applied to the decoder layers of a (PEFT-wrapped) model.

**Regional compilation** (PyTorch's recipe "Reducing torch.compile cold start compilation time with regional
compilation"): `torch.compile` of each decoder layer, not of the whole model. The layers are instances of one class
with the same shapes, and Dynamo keeps parameters as graph inputs (`torch._dynamo.config.inline_inbuilt_nn_modules`),
so the layer's code is compiled once and every layer runs that graph: compile time is one layer's, whatever the depth.
Inductor then fuses the small elementwise kernels around each matmul (LoRA's scale-and-add, norms, SwiGLU, RoPE).
transformers' own `TrainingArguments.torch_compile` is not used: the Trainer compiles the whole model
(`torch.compile(model)`), so every layer is traced, the PEFT wrapper, TRL's fused LM head and the loss with them.

**Checkpointing plans** (the contract with the planner, peftbench/planner.py): `off`; `every_<n>` (n >= 2: layers
0, n, 2n, ... are checkpointed, the others keep their activations, as transformers' `every_n_layers` counts);
`all`; `all_but_<k>` (all but the top k layers); `all_offload` and `all_but_<k>_offload` (the inputs each
checkpointed layer keeps for its recompute held in pinned host memory, as transformers' `offload=True`, copied on a
side stream and brought back a layer ahead: peftbench/offload.py). peftbench sets the plan layer by layer
itself with `torch.utils.checkpoint(use_reentrant=False)`, because transformers checkpoints at a different place by
version (5.17: in the layer's `__call__`, outside a compiled forward; 5.24: in its `forward`, inside it), and the
Trainer can pass neither `every_n_layers` nor `offload`.

The checkpoint is **outside** the compiled region: `checkpoint(compiled_layer, ...)`. Checkpointed and plain layers
then run the same compiled graph (one compilation), the backward's recompute is the compiled forward run again, and
the offload hooks around the checkpoint offload exactly what the checkpoint keeps, each layer's inputs (what the
compiled forward saves is the checkpoint's, dropped and recomputed). tests/test_regional.py checks each plan's
recomputations and where its saved tensors live.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from peftbench import memory
from peftbench.errors import InputError

if TYPE_CHECKING:
    from torch import nn

COMPILE_MODES = ("regional", "off")


class PlanError(InputError):
    """A checkpointing plan or compile mode that is not one peftbench knows; raised before any model loads."""


def parse_plan(plan: str, field: str = "profile.checkpointing") -> memory.PlanSpec:
    """The one grammar of memory.parse_plan, with the field named in the error."""
    try:
        return memory.parse_plan(plan)
    except memory.PlanError as exc:
        raise PlanError(f"{field}: {exc}.") from None


def normalised(value: object) -> object:
    """YAML reads a bare `off` as false: `profile.compile: off` and `profile.checkpointing: off` mean "off"."""
    return "off" if value is False else value


checkpointed_layers = memory.checkpointed_layers  # transformers' every_n_layers rule, one copy


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model (its `_no_split_modules` classes; else the checkpointable
    GradientCheckpointingLayer instances), outermost only, in model order; through a PEFT wrapper too."""
    base = model
    while hasattr(base, "get_base_model") and base.get_base_model() is not base:  # PeftModel -> the transformers model
        base = base.get_base_model()
    names = set(getattr(base, "_no_split_modules", None) or [])
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # pragma: no cover - transformers < 4.52
        GradientCheckpointingLayer = ()  # noqa: N806

    def is_block(module: nn.Module) -> bool:
        return type(module).__name__ in names if names else isinstance(module, GradientCheckpointingLayer)

    found: list[nn.Module] = []
    inside: set[int] = set()
    for module in base.modules():
        if id(module) in inside:
            continue
        if is_block(module):
            found.append(module)
            inside.update(id(m) for m in module.modules())
    return found


def _checkpointed(layer: nn.Module, forward: Any, offloader: Any, *args: Any, **kwargs: Any) -> Any:
    """The layer's (compiled) forward under torch.utils.checkpoint; its kept inputs in host memory through
    `offloader` (peftbench.offload.Offloader) when the plan offloads. Without a backward to come (eval, no_grad) the
    layer runs as it is."""
    import torch
    from torch.utils.checkpoint import checkpoint

    if not (layer.training and torch.is_grad_enabled()):
        return forward(*args, **kwargs)
    if offloader is not None:
        with offloader.layer():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply(
    model: nn.Module, compile: str = "off", plan: str = "off", backend: str = "inductor", dynamic: bool | None = None
) -> dict[str, Any]:
    """Compile each decoder layer (`compile="regional"`) and checkpoint the layers `plan` names, in place.

    Each layer gets an instance `forward`: its own forward, compiled, under the checkpoint where the plan says so.
    `dynamic`: torch.compile's (False: static shapes, for fixed-length batches; True: a symbolic sequence length, for
    batches padded to their longest row; None: torch's automatic choice). Returns what the record says about it.
    `remove` undoes it."""
    import torch

    compile, plan = normalised(compile), normalised(plan)
    if compile not in COMPILE_MODES:
        raise PlanError(f"profile.compile: `{compile}` is not a compile mode. Use `regional` or `off`.")
    spec = parse_plan(plan)
    layers = decoder_layers(model)
    if not layers and (compile != "off" or spec.every):
        raise PlanError(
            f"{type(model).__name__} names no repeated decoder layer (`_no_split_modules`), so there is "
            f"nothing to compile or checkpoint layer by layer. Set profile.compile=off and "
            f"profile.checkpointing=null (the train group's gradient_checkpointing)."
        )
    if compile == "regional":
        from torch._dynamo.utils import compilation_time_metrics, counters

        torch._dynamo.reset()  # an earlier point of this process compiled other layers: start from an empty cache
        counters.clear()  # and count this point's graphs, breaks and compile seconds only (reset keeps them)
        compilation_time_metrics.clear()
    chosen = set(checkpointed_layers(plan, len(layers)))
    offloader = None
    if spec.offload and chosen:
        from peftbench.offload import Offloader

        offloader = Offloader()
    for i, layer in enumerate(layers):
        forward = layer.forward
        if compile == "regional":
            forward = torch.compile(forward, backend=backend, dynamic=dynamic)
        if i in chosen:
            forward = functools.partial(_checkpointed, layer, forward, offloader)
        if forward is not layer.forward:
            layer.forward = forward  # an instance attribute: nn.Module.__call__ runs it, hooks and all
    return {
        "compile": compile,
        "compile_backend": backend if compile == "regional" else None,
        "compile_dynamic": dynamic if compile == "regional" else None,
        "compiled_layers": len(layers) if compile == "regional" else 0,
        "checkpointing_plan": str(plan),
        "checkpointed_layers": len(chosen),
        "decoder_layers": len(layers),
        "activation_offload": offloader is not None,
    }


def offload_stats(model: nn.Module) -> dict[str, int] | None:
    """The offloader's counts (tensors packed; layers whose copy back was prefetched or fetched on demand) where the
    plan offloads, else None: the record shows the copies back ran ahead of the backward."""
    for layer in decoder_layers(model):
        forward = layer.__dict__.get("forward")
        if isinstance(forward, functools.partial) and forward.args[2] is not None:
            return dict(forward.args[2].stats)
    return None


def remove(model: nn.Module) -> None:
    """Give every decoder layer its own forward back (eager, no checkpoint): evaluation and merging after training."""
    for layer in decoder_layers(model):
        layer.__dict__.pop("forward", None)


def compile_stats() -> dict[str, Any]:
    """Dynamo's own counts since the last reset: graphs compiled, graph breaks, and its compile seconds (Dynamo's
    tracing plus the backend's forward compile; the backward's compile at the first backward is in time_compile_s)."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    return {
        "compile_graphs": int(counters["stats"]["unique_graphs"]),
        "compile_graph_breaks": int(sum(counters["graph_break"].values())),
        "dynamo_compile_s": float(sum(compilation_time_metrics.get("_compile.compile_inner", []))),
    }


def warmup_excess_s(step_times: list[float], warmup_steps: int) -> float | None:
    """`time_compile_s`: what the warm-up steps took above the steady step (median of the steps after them), i.e. the
    first steps' compile and first-call costs. None without a steady step to compare with."""
    import statistics

    steady = step_times[warmup_steps:]
    if not warmup_steps or not steady:
        return None
    median = statistics.median(steady)
    return float(sum(max(0.0, t - median) for t in step_times[:warmup_steps]))
