"""Profiles: how a point is run, orthogonal to what is run. `default` is the user's own job; `fast` trades nothing
in the result (same tokens per optimizer step, same loss) for speed: regional torch.compile of the decoder layers
(peftbench/regional.py; Liger's layer kernels off there, since Dynamo cannot trace them), a checkpointing plan
chosen against the memory model (the fastest that fits the memory budget, peftbench.planner), fused AdamW, bf16
adapters.

Planner keys: `checkpointing` (`auto`, or a plan: off, every_<n>, all, all_but_<k>, all_offload, all_but_<k>_offload;
absent: the train group's gradient_checkpointing), `memory_budget_gib` (null: the GPU's memory x `memory_fraction`),
`enforce_budget` (cap this process's CUDA memory at memory_budget_gib / memory_fraction,
torch.cuda.set_per_process_memory_fraction, so `memory_budget_gib=21.6` behaves as a 24 GiB card on a larger GPU).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from peftbench import memory, planner, regional
from peftbench.errors import InputError


class ProfileError(InputError):
    """A profile that cannot run here (a missing optional extra); raised before any model loads."""


def compile_mode(profile: dict[str, Any], method: Any, engine: Any) -> tuple[str, str | None]:
    """(profile.compile for this point, why it was skipped): `off` where the method's or the engine's registry entry
    says its layers cannot be compiled (`no_compile`), with that reason."""
    mode = regional.normalised(profile.get("compile") or "off")
    if mode == "off":
        return "off", None
    reason = (method is not None and method.no_compile) or (engine is not None and engine.no_compile)
    if reason:
        return "off", f"profile.compile={mode} skipped: {reason}"
    return str(mode), None


def liger_applies(profile: dict[str, Any], method: Any = None, engine: Any = None) -> bool:
    """Whether the profile's Liger kernels would be applied: on, and the layers not compiled (or a kernel asked for
    by name in profile.liger_kernel_config)."""
    if not profile.get("use_liger_kernel"):
        return False
    compiled = compile_mode(profile, method, engine)[0] != "off"
    return not compiled or any(dict(profile.get("liger_kernel_config") or {}).values())


def check(profile: dict[str, Any], method: Any = None, engine: Any = None) -> None:
    """The profile group (as composed, {} for none): the extras of what it applies to this point must be installed."""
    if (
        liger_applies(profile, method, engine) and importlib.util.find_spec("liger_kernel") is None
    ):  # engine=liger: engines.check
        raise ProfileError(
            f"profile={profile.get('name')}: use_liger_kernel needs the Liger kernels, which are not installed. "
            'Install them with `pip install "peftbench[liger]"` (liger-kernel), or set profile.use_liger_kernel=false.'
        )
    check_plan_options(profile)


def check_plan_options(profile: dict[str, Any]) -> None:
    """profile.checkpointing, memory_budget_gib, memory_fraction, enforce_budget: in range (what `peftbench plan`
    checks too; it plans for another machine, so installed extras are not asked for)."""
    requested = requested_plan(profile)
    if requested not in (None, "auto"):
        planner.check_plan(requested)
    budget = profile.get("memory_budget_gib")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise ProfileError(
            f"profile.memory_budget_gib: got {budget!r}; expected a positive number of GiB, or null for "
            f"the GPU's memory x profile.memory_fraction. Set it with profile.memory_budget_gib=24."
        )
    fraction = profile.get("memory_fraction", 0.9)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ProfileError(
            f"profile.memory_fraction: got {fraction!r}; expected a number in (0, 1]. Set it with "
            f"profile.memory_fraction=0.9."
        )
    for key in ("enforce_budget", "gc_freeze"):
        value = profile.get(key, False)
        if not isinstance(value, bool):
            raise ProfileError(f"profile.{key}: got {value!r}; expected true or false, e.g. profile.{key}=false.")
    enforce = profile.get("enforce_budget", False)
    total = gpu_memory_gib()
    cap = enforce_cap_gib(profile) if enforce and budget is not None else None
    if cap is not None and total is not None and cap > total:
        raise ProfileError(
            f"profile.enforce_budget: the cap memory_budget_gib / memory_fraction = {cap:.2f} GiB is more "
            f"than this GPU's {total:.2f} GiB, so it cannot be enforced. Lower profile.memory_budget_gib, "
            f"or set profile.enforce_budget=false."
        )


def requested_plan(profile: dict[str, Any]) -> str | None:
    """`auto`, a plan string, or None (the train group decides): profile.checkpointing, or the older
    `profile.gradient_checkpointing: auto`."""
    value = profile.get("checkpointing")
    if value is None and profile.get("gradient_checkpointing") == "auto":
        return "auto"
    if value is False:  # YAML reads a bare `off` as false
        return "off"
    return None if value is None else str(value)


def bf16_adapters(profile: dict[str, Any], method: Any) -> bool:
    """Whether this point keeps its LoRA adapters in the base dtype (PEFT's `autocast_adapter_dtype=False`): methods
    whose registry entry says `bf16_adapters` (LoRA-type, B starts at zero and moves relative to its own scale; not
    DoRA's magnitude or IA3's scaling vectors, ~1.0, where a 1e-3 step is below bf16's resolution)."""
    return bool(profile.get("bf16_lora_adapters")) and method is not None and method.bf16_adapters


def trl_step_metrics(profile: dict[str, Any], engine: Any) -> bool:
    """Whether training runs TRL's step as it is: its entropy/token-accuracy logs and its fused head's gathering of
    labelled positions, each a host read (peftbench.trainer). An engine that patches the trainer (unsloth) keeps TRL's
    compute_loss."""
    return bool(profile.get("trl_step_metrics", True)) or bool(engine is not None and engine.keeps_trl_loss)


def gc_freeze(profile: dict[str, Any]) -> bool:
    """Whether the training freezes Python's garbage collector's heap after its first step (peftbench.gcpause)."""
    return bool(profile.get("gc_freeze", False))


def uses_liger(profile: dict[str, Any], engine: Any) -> bool:
    """Liger kernels for this point: engine=liger, or a profile that asks for them (profile=fast): one code path."""
    return bool(engine is not None and engine.liger) or bool(profile.get("use_liger_kernel"))


def gpu_memory_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / memory.GIB


def liger_under_compile(profile: dict[str, Any], model_config) -> tuple[dict[str, Any], str]:
    """(SFTConfig keys, the record's note) for Liger under regional compilation: its layer kernels are off
    (engines.LIGER_IN_LAYERS), except those named true in profile.liger_kernel_config, to measure one inside the
    compiled layers. TRL's chunked LM head stays the loss."""
    from peftbench import engines

    asked = {k: v for k, v in dict(profile.get("liger_kernel_config") or {}).items() if v}
    if not asked:
        return {}, f"off under profile.compile=regional: {engines.LIGER_IN_LAYERS}"
    flags = engines.liger_kernels(getattr(model_config, "model_type", ""), None)  # the apply function's defaults
    config = {**{k: False for k in flags}, **{k: True for k in asked}}
    return {"use_liger_kernel": True, "liger_kernel_config": config}, f"only {', '.join(sorted(asked))} (asked)"


def compile_dynamic(profile: dict[str, Any], synthetic: bool) -> bool:
    """profile.compile_dynamic, or by default: static shapes for fixed-length rows (synthetic data: one graph, no
    recompile), dynamic sequence length otherwise (rows padded to the batch's longest have a new length nearly every
    batch, and a static graph per length would run into Dynamo's recompile limit and fall back to eager)."""
    value = profile.get("compile_dynamic")
    return bool(value) if value is not None else not synthetic


def compiles(point: Any) -> bool:
    """Whether this point's decoder layers are compiled (compile_mode: profile.compile, unless a registry entry says
    no_compile): the memory model counts compiled layers with the fused coefficients."""
    return compile_mode(point.profile, point.method, point.engine)[0] != "off"


def setup_of(point: Any, model_config, compiled_layers: bool | None = None, liger: bool | None = None) -> planner.Setup:
    """A resolved point's facts the memory model and the calibration read (`compiled_layers`, `liger`: as the
    profile resolved them for this point, where the caller knows better than the config's switches)."""
    cfg, engine = point.cfg, point.engine
    return planner.Setup(
        method_cfg=point.method_cfg,
        model_config=model_config,
        model=str(cfg.model.get("config") or cfg.model.name),
        engine=engine.name,
        seq_len=int(point.seq_len),
        micro_batch=int(cfg.train.per_device_train_batch_size),
        liger=(point.uses_liger and not compiles(point)) if liger is None else liger,
        bf16_adapters=point.bf16_adapters,
        compiled=compiles(point) if compiled_layers is None else compiled_layers,
        synthetic=point.synthetic,
        modelled_engine=engine.modelled,
        own_checkpointing=engine.own_checkpointing,
    )


def budget_gib(profile: dict[str, Any], total_gib: float | None) -> float | None:
    return planner.budget(profile.get("memory_budget_gib"), total_gib, profile.get("memory_fraction", 0.9))


def plan_point(
    point: Any,
    model_config,
    total_gib: float | None,
    gpu_name: str | None = None,
    compiled_layers: bool | None = None,
    liger: bool | None = None,
) -> planner.Choice:
    """The checkpointing plan of a resolved point on a GPU of `total_gib` (None: no GPU), as training chooses it."""
    return planner.choose(
        setup_of(point, model_config, compiled_layers, liger),
        requested_plan(point.profile),
        budget_gib(point.profile, total_gib),
        bool(point.cfg.train.get("gradient_checkpointing")),
        gpu_name,
    )


def local_gpu_name() -> str | None:
    """The planner's name of this machine's GPU (for the calibration), or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    found = planner.find_gpu(torch.cuda.get_device_name(0))
    return found.name if found else None


def plan_fields(choice: planner.Choice) -> dict[str, Any]:
    """What the record says about the plan (beside profile_choices' checkpointing_plan)."""
    return {
        "checkpointing_plan": choice.plan,
        "checkpointing_chosen_by": choice.how,
        "memory_budget_gib": choice.budget_gib,
        "predicted_plans": dict(choice.predicted_plans),
        "predicted_plan_fits": choice.fits,
        "plan_that_fits": choice.fitting,
        "planner_note": choice.note,
    }


def checkpointing_plan(
    point: Any, model_config, compile: str = "off", liger: bool = False
) -> tuple[str | None, dict[str, Any]]:
    """(the plan peftbench sets on the layers, None where the Trainer's own checkpointing runs as the train group
    says, or the engine's own; the record's fields about the choice: planner.Choice through plan_fields).

    profile.checkpointing `auto`: the planner's fastest plan predicted to fit the budget; a plan string: kept (and
    flagged where it is predicted not to fit); absent: train.gradient_checkpointing, the user's own job, left to the
    Trainer unless the layers are compiled (`compile` other than `off`), when it is a plan peftbench sets."""
    choice = plan_point(point, model_config, gpu_memory_gib(), local_gpu_name(), compile != "off", liger)
    fields = plan_fields(choice)
    if choice.how == "engine" or (choice.how == "train" and compile == "off"):
        return None, fields
    return choice.plan, fields


def choose(point: Any, model_config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the SFTConfig keys this profile sets for this point, what the record should say about the choice), for a
    resolved point (peftbench.point.Point: its profile, engine, the choices above, sequence length, method options).

    `profile_choices` holds the SFTConfig keys and, where peftbench sets the layers itself (regional.apply), `compile`
    and `checkpointing_plan`; SFTConfig's gradient_checkpointing is then false (transformers' would checkpoint
    twice)."""
    profile = point.profile
    out: dict[str, Any] = {}
    info: dict[str, Any] = {"profile": point.profile_name}
    compile, skipped = compile_mode(profile, point.method, point.engine)
    extra: dict[str, Any] = {}
    if gc_freeze(profile):
        extra["gc_freeze"] = "after step 1 (peftbench.gcpause: full collections no longer walk what step 1 left)"
    if skipped:
        extra["compile_skipped"] = skipped
    if point.uses_liger:  # profile=fast and engine=liger: the same switch, TRL's use_liger_kernel
        if compile == "off":
            out["use_liger_kernel"] = True
        else:
            liger, extra["liger_kernels"] = liger_under_compile(profile, model_config)
            out.update(liger)
    if point.engine.own_checkpointing:  # set up with the model (unsloth: engine.gradient_checkpointing)
        info["profile_choices"] = {**out, **extra}
        return out, info
    plan, fields = checkpointing_plan(point, model_config, compile, bool(out.get("use_liger_kernel")))
    info.update(fields)
    reason = point.method.no_checkpointing
    checkpoints = (
        memory.checkpoints_any(plan)
        if plan is not None
        else out.get("gradient_checkpointing", point.cfg.train.get("gradient_checkpointing"))
    )
    if reason and checkpoints:  # the method cannot train with it: off in every profile, and said so
        out["gradient_checkpointing"] = False
        plan = "off" if plan is not None else None
        info["gradient_checkpointing_off"] = f"method={point.method_cfg['name']} cannot train with it: {reason}"
    # the plan it runs: peftbench's, or the Trainer's own flag as a plan (the record's checkpointing_plan)
    info["checkpointing_plan"] = (
        plan
        if plan is not None
        else ("all" if out.get("gradient_checkpointing", point.cfg.train.get("gradient_checkpointing")) else "off")
    )
    if plan is not None:
        out["gradient_checkpointing"] = False  # the plan is set layer by layer by peftbench (regional.apply)
        extra.update(compile=compile, checkpointing_plan=plan)
        if compile != "off":
            extra["compile_backend"] = str(profile.get("compile_backend") or "inductor")
            extra["compile_dynamic"] = compile_dynamic(profile, point.synthetic)
    info["profile_choices"] = {**out, **extra}
    return out, info


def enforce_cap_gib(profile: dict[str, Any]) -> float | None:
    """The CUDA memory cap profile.enforce_budget sets: the card the budget stands for, memory_budget_gib /
    memory_fraction (21.6 -> 24 GiB at 0.9), so the budget keeps the same headroom for the caching allocator's
    fragmentation on the big GPU as on that card (the cap counts reserved memory; the prediction, allocated). None:
    not asked, or no explicit budget (the budget is then the GPU's own, which needs no cap)."""
    budget = profile.get("memory_budget_gib")
    if not profile.get("enforce_budget") or budget is None:
        return None
    return float(budget) / float(profile.get("memory_fraction", 0.9))


def enforce_budget(profile: dict[str, Any]) -> float | None:
    """profile.enforce_budget=true on a GPU: cap this process's CUDA memory at enforce_cap_gib (PyTorch's own
    set_per_process_memory_fraction: an allocation past it raises CUDA out of memory as the smaller card would).
    Returns the cap in GiB, or None (and lifts an earlier point's cap in this process)."""
    import torch

    if not torch.cuda.is_available():
        return None
    total = gpu_memory_gib()
    cap = enforce_cap_gib(profile)
    torch.cuda.set_per_process_memory_fraction(1.0 if cap is None else min(1.0, cap / total), 0)
    return cap
