"""One GPU per parallel sweep job: Hydra's joblib launcher runs the points, this pins each worker to its own GPU.

joblib's loky workers are long-lived processes that run one job after another, and a process can choose its GPU only
before CUDA starts in it (CUDA reads CUDA_VISIBLE_DEVICES once). So the slot belongs to the worker, not to the job
number: at its first job a worker takes the first free GPU by locking `<sweep dir>/.gpu_slots/gpu<N>.lock` (an
fcntl lock, released by the OS if the worker dies) and keeps it for the rest of its life. With `n_jobs` equal to the
number of GPUs, every worker holds a different GPU. The lock is ours because no launcher plugin assigns devices to
local jobs (submitit's local executor does, and is left alone).

The resolver `${peftbench.gpu_count:}` (the launcher config's n_jobs) counts the GPUs this process may use.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("peftbench")

_HELD: dict[str, Any] = {}  # this process's slot: {"gpu": "1", "fh": open lock file}


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_count() -> int:
    """At least 1, so that a CPU machine runs the sweep one point at a time."""
    return max(len(visible_gpus()), 1)


if not OmegaConf.has_resolver("peftbench.gpu_count"):
    OmegaConf.register_new_resolver("peftbench.gpu_count", gpu_count)


def slot_path(slots_dir: Path, gpu: str) -> Path:
    return slots_dir / f"gpu{re.sub(r'[^A-Za-z0-9_-]', '_', gpu)}.lock"


def claim(gpus: list[str], slots_dir: Path, job_num: int) -> str:
    """Pin this process to one of `gpus` (held until the process exits) and return it."""
    if "gpu" in _HELD:
        return _HELD["gpu"]
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError(
            "CUDA started in this sweep worker before a GPU was assigned to it, so CUDA_VISIBLE_DEVICES cannot take "
            "effect. Keep CUDA work out of module imports, or run the sweep without hydra/launcher=local_gpus."
        )
    slots_dir.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        fh = open(slot_path(slots_dir, gpu), "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        return _hold(gpu, fh)
    # More workers than GPUs (n_jobs raised by hand): share, waiting for the job number's GPU.
    gpu = gpus[job_num % len(gpus)]
    fh = open(slot_path(slots_dir, gpu), "w")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return _hold(gpu, fh)


def _hold(gpu: str, fh) -> str:
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    _HELD.update(gpu=gpu, fh=fh)
    log.info("sweep worker %d pinned to GPU %s", os.getpid(), gpu)
    return gpu


def is_local_parallel(config: DictConfig) -> bool:
    return "joblib" in str(config.hydra.launcher.get("_target_", "")).lower()


class OneGpuPerJob(Callback):
    """Hydra callback: with the joblib launcher, each worker takes a GPU of its own before its first job.

    `gpus`: null = every GPU the sweep's process may use (read once, in the launching process); or a list.
    """

    def __init__(self, gpus: list[Any] | None = None) -> None:
        self.gpus = [str(g) for g in gpus] if gpus else None
        self.slots_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_local_parallel(config):
            return
        self.gpus = self.gpus or visible_gpus()
        self.slots_dir = Path(str(config.hydra.sweep.dir)).resolve() / ".gpu_slots"
        log.info("one GPU per sweep worker: %s", ",".join(self.gpus) or "none (CPU)")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.slots_dir is not None and self.gpus:
            claim(self.gpus, self.slots_dir, int(config.hydra.job.num))
