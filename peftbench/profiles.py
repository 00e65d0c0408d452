"""Profiles: how a point is run, orthogonal to what is run. `default` is the user's own job; `fast` trades nothing
in the result (same tokens per optimizer step, same loss) for speed: Liger's fused kernels, and gradient
checkpointing off when the memory model says the point fits without it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from peftbench import memory, methods
from peftbench.errors import InputError


class ProfileError(InputError):
    """A profile that cannot run here (a missing optional extra); raised before any model loads."""


def check(profile: dict[str, Any]) -> None:
    """The profile group (as composed, {} for none): its extras must be installed."""
    if profile.get("use_liger_kernel") and importlib.util.find_spec("liger_kernel") is None:  # engine=liger: engines.check
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


def choose(point: Any, model_config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the SFTConfig keys this profile sets for this point, what the record should say about the choice), for a
    resolved point (peftbench.point.Point: its profile, engine, the choices above, sequence length, method options)."""
    profile = point.profile
    out: dict[str, Any] = {}
    info: dict[str, Any] = {"profile": point.profile_name}
    if point.uses_liger:  # profile=fast and engine=liger: the same switch, TRL's use_liger_kernel
        out["use_liger_kernel"] = True
    if point.engine.own_checkpointing:  # set up with the model (unsloth: engine.gradient_checkpointing)
        info["profile_choices"] = dict(out)
        return out, info
    if profile.get("gradient_checkpointing") == "auto":
        total = gpu_memory_gib()
        batch = int(point.cfg.train.per_device_train_batch_size)
        predicted = methods.predict_memory(point.method_cfg, model_config, point.seq_len, batch,
                                           gradient_checkpointing=False, fused_kernels=point.uses_liger,
                                           bf16_adapters=point.bf16_adapters)  # fmt: skip
        peak = predicted["predicted_peak_gib"]  # None: the method is not modelled, so checkpointing stays on
        fits = total is not None and peak is not None and peak <= float(profile.get("memory_fraction", 0.9)) * total
        out["gradient_checkpointing"] = not fits
        info["predicted_peak_without_checkpointing_gib"] = predicted["predicted_peak_gib"]
    reason = point.method.no_checkpointing
    if reason and out.get("gradient_checkpointing", point.cfg.train.get("gradient_checkpointing")):
        out["gradient_checkpointing"] = False  # the method cannot train with it: off in every profile, and said so
        info["gradient_checkpointing_off"] = f"method={point.method_cfg['name']} cannot train with it: {reason}"
    info["profile_choices"] = dict(out)
    return out, info
