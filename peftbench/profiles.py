"""Profiles: how a point is run, orthogonal to what is run. `default` is the user's own job; `fast` trades nothing
in the result (same tokens per optimizer step, same loss) for speed: regional torch.compile of the decoder layers
(peftbench/regional.py; Liger's layer kernels off there, since Dynamo cannot trace them), a checkpointing plan
chosen against the memory model, fused AdamW, bf16 adapters.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from omegaconf import DictConfig

from peftbench import data, engines, memory, methods, regional
from peftbench.errors import InputError


class ProfileError(InputError):
    """A profile that cannot run here (a missing optional extra); raised before any model loads."""


def liger_applies(cfg: DictConfig) -> bool:
    """Whether the profile's Liger kernels would be applied: on, and the layers not compiled (or a kernel asked for
    by name in profile.liger_kernel_config)."""
    profile = cfg.get("profile") or {}
    if not profile.get("use_liger_kernel"):
        return False
    name = cfg.method.name
    compiled = name in methods.REGISTRY and compile_mode(cfg, {"name": name})[0] != "off"
    return not compiled or any(dict(profile.get("liger_kernel_config") or {}).values())


def check(cfg: DictConfig) -> None:
    profile = cfg.get("profile") or {}
    if liger_applies(cfg) and importlib.util.find_spec("liger_kernel") is None:  # engine=liger: engines.check
        raise ProfileError(
            f"profile={profile.get('name')}: use_liger_kernel needs the Liger kernels, which are not installed. "
            'Install them with `pip install "peftbench[liger]"` (liger-kernel), or set profile.use_liger_kernel=false.'
        )


def bf16_adapters(cfg: DictConfig, method_cfg: dict[str, Any]) -> bool:
    """Whether this point keeps its LoRA adapters in the base dtype (PEFT's `autocast_adapter_dtype=False`): methods
    whose registry entry says `bf16_adapters` (LoRA-type, B starts at zero and moves relative to its own scale; not
    DoRA's magnitude or IA3's scaling vectors, ~1.0, where a 1e-3 step is below bf16's resolution)."""
    profile = cfg.get("profile") or {}
    return bool(profile.get("bf16_lora_adapters")) and methods.get_method(method_cfg["name"]).bf16_adapters


def trl_step_metrics(cfg: DictConfig) -> bool:
    """Whether training runs TRL's step as it is: its entropy/token-accuracy logs and its fused head's gathering of
    labelled positions, each a host read (peftbench.trainer). An engine that patches the trainer (unsloth) keeps TRL's
    compute_loss."""
    profile = cfg.get("profile") or {}
    return bool(profile.get("trl_step_metrics", True)) or engines.get(cfg).keeps_trl_loss


def gpu_memory_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / memory.GIB


def compile_mode(cfg: DictConfig, method_cfg: dict[str, Any]) -> tuple[str, str | None]:
    """(profile.compile for this point, why it was skipped): `off` where the method's or the engine's registry entry
    says its layers cannot be compiled (`no_compile`), with that reason."""
    mode = regional.normalised((cfg.get("profile") or {}).get("compile") or "off")
    if mode == "off":
        return "off", None
    reason = methods.get_method(method_cfg["name"]).no_compile or engines.get(cfg).no_compile
    if reason:
        return "off", f"profile.compile={mode} skipped: {reason}"
    return str(mode), None


def liger_under_compile(cfg: DictConfig, model_config) -> tuple[dict[str, Any], str]:
    """(SFTConfig keys, the record's note) for Liger under regional compilation: its layer kernels are off
    (engines.LIGER_IN_LAYERS), except those named true in profile.liger_kernel_config, to measure one inside the
    compiled layers. TRL's chunked LM head stays the loss."""
    asked = {k: v for k, v in dict((cfg.get("profile") or {}).get("liger_kernel_config") or {}).items() if v}
    if not asked:
        return {}, f"off under profile.compile=regional: {engines.LIGER_IN_LAYERS}"
    flags = engines.liger_kernels(getattr(model_config, "model_type", ""), None)  # the apply function's defaults
    config = {**{k: False for k in flags}, **{k: True for k in asked}}
    return {"use_liger_kernel": True, "liger_kernel_config": config}, f"only {', '.join(sorted(asked))} (asked)"


def checkpointing_plan(cfg: DictConfig, method_cfg: dict[str, Any], model_config, compile: str,
                       liger: bool) -> tuple[str | None, dict[str, Any]]:
    """(the plan regional.apply sets, None for the train group's own transformers checkpointing; record fields).

    profile.checkpointing: a plan string as it is; `auto`: off when the memory model predicts the point fits in
    profile.memory_fraction of the GPU without checkpointing, else `all` (the planner, peftbench/planner.py, picks
    among every plan); null: train.gradient_checkpointing, as a plan when the layers are compiled."""
    profile = cfg.get("profile") or {}
    plan = regional.normalised(profile.get("checkpointing"))
    if plan is None:
        return (("all" if cfg.train.get("gradient_checkpointing") else "off") if compile != "off" else None), {}
    if plan != "auto":
        return str(plan), {}
    total = gpu_memory_gib()
    seq_len = data.sequence_length(cfg)
    batch = int(cfg.train.per_device_train_batch_size)
    predicted = methods.predict_memory(method_cfg, model_config, seq_len, batch, gradient_checkpointing=False,
                                       fused_kernels=liger, bf16_adapters=bf16_adapters(cfg, method_cfg))
    peak = predicted["predicted_peak_gib"]  # None: the method is not modelled, so checkpointing stays on
    fits = total is not None and peak is not None and peak <= float(profile.get("memory_fraction", 0.9)) * total
    return ("off" if fits else "all"), {"predicted_peak_without_checkpointing_gib": peak}


def compile_dynamic(cfg: DictConfig) -> bool:
    """profile.compile_dynamic, or by default: static shapes for fixed-length rows (synthetic data: one graph, no
    recompile), dynamic sequence length otherwise (rows padded to the batch's longest have a new length nearly every
    batch, and a static graph per length would run into Dynamo's recompile limit and fall back to eager)."""
    value = (cfg.get("profile") or {}).get("compile_dynamic")
    return bool(value) if value is not None else not data.is_synthetic(cfg.data)


def choose(cfg: DictConfig, method_cfg: dict[str, Any], model_config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the SFTConfig keys this profile sets for this point, what the record should say about the choice).

    `profile_choices` holds the SFTConfig keys and, where peftbench sets the layers itself (regional.apply), `compile`
    and `checkpointing_plan`; SFTConfig's gradient_checkpointing is then false (transformers' would checkpoint twice)."""
    profile = cfg.get("profile") or {}
    out: dict[str, Any] = {}
    info: dict[str, Any] = {"profile": profile.get("name", "default")}
    compile, skipped = compile_mode(cfg, method_cfg)
    extra: dict[str, Any] = {}
    if skipped:
        extra["compile_skipped"] = skipped
    if engines.uses_liger(cfg):  # profile=fast and engine=liger: the same switch, TRL's use_liger_kernel
        if compile == "off":
            out["use_liger_kernel"] = True
        else:
            liger, extra["liger_kernels"] = liger_under_compile(cfg, model_config)
            out.update(liger)
    if engines.get(cfg).own_checkpointing:  # set up with the model (unsloth: engine.gradient_checkpointing)
        info["profile_choices"] = dict(out)
        return out, info
    plan, fields = checkpointing_plan(cfg, method_cfg, model_config, compile, bool(out.get("use_liger_kernel")))
    info.update(fields)
    if plan is not None:
        out["gradient_checkpointing"] = False  # the plan is set layer by layer by peftbench (regional.apply)
        extra.update(compile=compile, checkpointing_plan=plan)
        if compile != "off":
            extra["compile_backend"] = str(profile.get("compile_backend") or "inductor")
            extra["compile_dynamic"] = compile_dynamic(cfg)
    info["profile_choices"] = {**out, **extra}
    return out, info
