"""Profiles: how a point is run, orthogonal to what is run. `default` is the user's own job; `fast` trades nothing
in the result (same tokens per optimizer step, same loss) for speed: regional torch.compile of the decoder layers
(peftbench/regional.py; Liger's layer kernels off there, since Dynamo cannot trace them), a checkpointing plan
chosen against the memory model, fused AdamW, bf16 adapters.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from peftbench import memory, methods, regional
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
    if liger_applies(profile, method, engine) and importlib.util.find_spec("liger_kernel") is None:  # engine=liger: engines.check
        raise ProfileError(
            f"profile={profile.get('name')}: use_liger_kernel needs the Liger kernels, which are not installed. "
            'Install them with `pip install "peftbench[liger]"` (liger-kernel), or set profile.use_liger_kernel=false.'
        )


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


def checkpointing_plan(point: Any, model_config, compile: str, liger: bool) -> tuple[str | None, dict[str, Any]]:
    """(the plan regional.apply sets, None for the train group's own transformers checkpointing; record fields).

    profile.checkpointing: a plan string as it is; `auto`: off when the memory model predicts the point fits in
    profile.memory_fraction of the GPU without checkpointing, else `all` (the planner, peftbench/planner.py, picks
    among every plan); null: train.gradient_checkpointing, as a plan when the layers are compiled."""
    profile = point.profile
    plan = regional.normalised(profile.get("checkpointing"))
    if plan is None:
        return (("all" if point.cfg.train.get("gradient_checkpointing") else "off") if compile != "off" else None), {}
    if plan != "auto":
        return str(plan), {}
    total = gpu_memory_gib()
    batch = int(point.cfg.train.per_device_train_batch_size)
    predicted = methods.predict_memory(point.method_cfg, model_config, point.seq_len, batch,
                                       gradient_checkpointing=False, fused_kernels=liger,
                                       bf16_adapters=point.bf16_adapters)  # fmt: skip
    peak = predicted["predicted_peak_gib"]  # None: the method is not modelled, so checkpointing stays on
    fits = total is not None and peak is not None and peak <= float(profile.get("memory_fraction", 0.9)) * total
    return ("off" if fits else "all"), {"predicted_peak_without_checkpointing_gib": peak}


def choose(point: Any, model_config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the SFTConfig keys this profile sets for this point, what the record should say about the choice), for a
    resolved point (peftbench.point.Point: its profile, engine, the choices above, sequence length, method options).

    `profile_choices` holds the SFTConfig keys and, where peftbench sets the layers itself (regional.apply), `compile`
    and `checkpointing_plan`; SFTConfig's gradient_checkpointing is then false (transformers' would checkpoint twice)."""
    profile = point.profile
    out: dict[str, Any] = {}
    info: dict[str, Any] = {"profile": point.profile_name}
    compile, skipped = compile_mode(profile, point.method, point.engine)
    extra: dict[str, Any] = {}
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
    checkpoints = (regional.parse_plan(plan)[0] > 0 if plan is not None
                   else out.get("gradient_checkpointing", point.cfg.train.get("gradient_checkpointing")))  # fmt: skip
    if reason and checkpoints:  # the method cannot train with it: off in every profile, and said so
        out["gradient_checkpointing"] = False
        plan = "off" if plan is not None else None
        info["gradient_checkpointing_off"] = f"method={point.method_cfg['name']} cannot train with it: {reason}"
    if plan is not None:
        out["gradient_checkpointing"] = False  # the plan is set layer by layer by peftbench (regional.apply)
        extra.update(compile=compile, checkpointing_plan=plan)
        if compile != "off":
            extra["compile_backend"] = str(profile.get("compile_backend") or "inductor")
            extra["compile_dynamic"] = compile_dynamic(profile, point.synthetic)
    info["profile_choices"] = {**out, **extra}
    return out, info
