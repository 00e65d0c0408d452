"""Profiles: how a point is run, orthogonal to what is run. `default` is the user's own job; `fast` trades nothing
in the result (same tokens per optimizer step, same loss) for speed: Liger's fused kernels, and gradient
checkpointing off when the memory model says the point fits without it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from omegaconf import DictConfig

from peftbench import data, engines, memory, methods
from peftbench.errors import InputError


class ProfileError(InputError):
    """A profile that cannot run here (a missing optional extra); raised before any model loads."""


def check(cfg: DictConfig) -> None:
    profile = cfg.get("profile") or {}
    if profile.get("use_liger_kernel") and importlib.util.find_spec("liger_kernel") is None:  # engine=liger: engines.check
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


def choose(cfg: DictConfig, method_cfg: dict[str, Any], model_config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the SFTConfig keys this profile sets for this point, what the record should say about the choice)."""
    profile = cfg.get("profile") or {}
    out: dict[str, Any] = {}
    info: dict[str, Any] = {"profile": profile.get("name", "default")}
    if engines.uses_liger(cfg):  # profile=fast and engine=liger: the same switch, TRL's use_liger_kernel
        out["use_liger_kernel"] = True
    if engines.get(cfg).own_checkpointing:  # set up with the model (unsloth: engine.gradient_checkpointing)
        info["profile_choices"] = dict(out)
        return out, info
    if profile.get("gradient_checkpointing") == "auto":
        total = gpu_memory_gib()
        seq_len = data.sequence_length(cfg)
        batch = int(cfg.train.per_device_train_batch_size)
        predicted = methods.predict_memory(method_cfg, model_config, seq_len, batch, gradient_checkpointing=False,
                                           fused_kernels=engines.uses_liger(cfg),
                                           bf16_adapters=bf16_adapters(cfg, method_cfg))
        peak = predicted["predicted_peak_gib"]  # None: the method is not modelled, so checkpointing stays on
        fits = total is not None and peak is not None and peak <= float(profile.get("memory_fraction", 0.9)) * total
        out["gradient_checkpointing"] = not fits
        info["predicted_peak_without_checkpointing_gib"] = predicted["predicted_peak_gib"]
    reason = methods.get_method(method_cfg["name"]).no_checkpointing
    if reason and out.get("gradient_checkpointing", cfg.train.get("gradient_checkpointing")):
        out["gradient_checkpointing"] = False  # the method cannot train with it: off in every profile, and said so
        info["gradient_checkpointing_off"] = f"method={method_cfg['name']} cannot train with it: {reason}"
    info["profile_choices"] = dict(out)
    return out, info
