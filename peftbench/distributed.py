"""Multi-process awareness: which rank this is, which strategy accelerate chose, and gathering small values.

torchrun / `accelerate launch` start one process per GPU, each running the whole recipe. Trainer and accelerate own
the process group and the wrapping (DDP or FSDP); this module only reads what they set up, so the callback can
aggregate across ranks and the runner can let rank 0 alone write.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from peftbench.errors import InputError


class LaunchError(InputError):
    """A recipe that needs another launch than the one it got (e.g. FSDP in a single process)."""


def check_launch(train_cfg: Any) -> None:
    """Launches that accelerate would quietly run otherwise than asked, refused before any weights load: several
    CPU processes without use_cpu (each would train alone on the whole data), FSDP in one process or on CPUs (it
    would train unsharded)."""
    cpu_asked = bool(train_cfg.get("use_cpu")) or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    if world_size() > 1 and not torch.cuda.is_available() and not cpu_asked:
        raise LaunchError(
            f"{world_size()} processes were launched on a machine without GPUs, but accelerate joins CPU processes "
            "only when asked: add `+train.use_cpu=true` (or `accelerate launch --cpu ...`)."
        )
    if not train_cfg.get("fsdp"):
        return
    if world_size() < 2 or not torch.cuda.is_available():
        raise LaunchError(
            f"train.fsdp is set but this is {'a single process' if world_size() < 2 else 'a CPU-only launch'}: "
            "accelerate shards only over several GPU processes. Launch one process per GPU "
            "(`torchrun --nproc-per-node N -m peftbench ...` or `accelerate launch --multi_gpu --num_processes N "
            "-m peftbench ...`), or use train=gpu for one GPU."
        )


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Processes in the job: the process group's size, else the launcher's WORLD_SIZE (before the group exists)."""
    if _dist_ready():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if _dist_ready():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int | None:
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None else None


def use_local_gpu() -> None:
    """Make `cuda` mean this rank's GPU before any weights are created (models.load_model builds on 'cuda')."""
    index = local_rank()
    if index is not None and torch.cuda.is_available():
        torch.cuda.set_device(index)


def strategy() -> str:
    """'fsdp' | 'deepspeed' | 'ddp' | 'single', as accelerate's state (set up by the Trainer) says."""
    from accelerate.state import AcceleratorState, PartialState

    if PartialState._shared_state == {}:  # nothing set up yet: a plain single process
        return "single" if world_size() == 1 else "ddp"
    state = AcceleratorState() if AcceleratorState._shared_state else None
    if state is not None and getattr(state, "fsdp_plugin", None) is not None:
        return "fsdp"
    if state is not None and getattr(state, "deepspeed_plugin", None) is not None:
        return "deepspeed"
    return "ddp" if world_size() > 1 else "single"


def fsdp_version() -> int | None:
    from accelerate.state import AcceleratorState

    if not AcceleratorState._shared_state:
        return None
    plugin = getattr(AcceleratorState(), "fsdp_plugin", None)
    return getattr(plugin, "fsdp_version", None) if plugin is not None else None


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (a one-item list in a single process). A collective: all ranks call it."""
    if not _dist_ready() or torch.distributed.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def is_sharded(model: torch.nn.Module) -> bool:
    """True for an FSDP2-wrapped model (parameters are DTensors); its full weights need a collective to read."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def clean_name(name: str) -> str:
    """A parameter name without the activation-checkpoint wrapper's prefix, as torch's state-dict helpers write it."""
    return name.replace("_checkpoint_wrapped_module.", "")


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The unsharded state dict on rank 0 (empty on other ranks) for an FSDP model; None for an unsharded one.

    torch's own `get_model_state_dict` does the all-gather and strips wrapper prefixes; a collective.
    """
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
