"""Small pure functions behind the callback's numbers: memory, throughput, FLOPs, sizes, versions."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

GIB = 1024**3

# Dense bf16 tensor-core peaks from the vendors' datasheets (FLOP/s), for model FLOPs utilisation.
PEAK_BF16_FLOPS = {
    "H200": 989.4e12,
    "H100 80GB HBM3": 989.4e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "RTX 4090": 165e12,
}

VERSIONED = ["torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "lm_eval", "hydra-core"]


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), without pulling numpy into the hot path."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: list[float], prefix: str) -> dict[str, float | None]:
    """Peak, mean and 99th percentile of a per-step series."""
    return {
        f"{prefix}_peak": max(values) if values else None,
        f"{prefix}_mean": statistics.fmean(values) if values else None,
        f"{prefix}_p99": percentile(values, 99),
    }


def steady_state_rate(marks: list[tuple[float, int, int]], warmup_steps: int) -> dict[str, float | None]:
    """Tokens/s and samples/s from the end of the warm-up steps to the end of the last step.

    `marks[0]` is (time, tokens, samples) at the start of training and `marks[i]` the same at the end of step i.
    A run too short for its warm-up is timed over every step, and `steady_state_steps` says how many counted.
    """
    if len(marks) < 2:
        return {"tokens_per_s": None, "samples_per_s": None, "steady_state_steps": 0}
    start = warmup_steps if warmup_steps < len(marks) - 1 else 0
    (t0, tok0, s0), (t1, tok1, s1) = marks[start], marks[-1]
    elapsed = t1 - t0
    return {
        "tokens_per_s": (tok1 - tok0) / elapsed if elapsed > 0 else None,
        "samples_per_s": (s1 - s0) / elapsed if elapsed > 0 else None,
        "steady_state_steps": len(marks) - 1 - start,
    }


def peak_flops(gpu_name: str | None) -> float | None:
    if not gpu_name:
        return None
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in gpu_name:
            return flops
    return None


def model_flops_utilisation(
    non_embedding_params: int, tokens_per_s: float | None, gpu_name: str | None, devices: int = 1
):
    """PaLM-style MFU: 6 FLOPs per parameter per token over the dense bf16 peak of the `devices` GPUs that produced
    `tokens_per_s` (frozen weights included)."""
    peak = peak_flops(gpu_name)
    if not peak or not tokens_per_s:
        return None
    return 6 * non_embedding_params * tokens_per_s / (peak * max(devices, 1))


def stepwise_max(series: list[list[float]]) -> list[float]:
    """Per step, the largest value over ranks (ranks run the same steps; a shorter series ends the comparison)."""
    series = [s for s in series if s]
    if len(series) <= 1:
        return list(series[0]) if series else []
    return [max(values) for values in zip(*series)]


def rank_peaks(series: dict[str, Any]) -> dict[str, Any]:
    """One rank's peaks, for the record's `per_rank` list."""
    return {
        "rank": series["rank"],
        "device": series["device"],
        "gpu_allocated_gib_peak": max(series["allocated"], default=None),
        "gpu_reserved_gib_peak": max(series["reserved"], default=None),
        "gpu_requested_gib_peak": max(series.get("requested", []), default=None),
        "gpu_nvml_used_gib_peak": max(series["nvml"], default=None),
        "rss_gib_peak": series.get("rss_peak") or max(series["rss"], default=None),  # the kernel's mark where read
    }


def folder_size(path: str | Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total); PEFT's own count where it applies, since it knows 4-bit packing and shared weights."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def non_embedding_parameters(model: torch.nn.Module) -> int:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "num_parameters"):
        return base.num_parameters(exclude_embeddings=True)
    return sum(p.numel() for p in base.parameters())


def precision_regime(model: torch.nn.Module, bf16: bool, fp16: bool) -> str:
    """e.g. '4-bit NF4 base (bf16 compute), float32 trainable, bf16 autocast'."""
    base = "4-bit NF4 base" if getattr(model, "is_loaded_in_4bit", False) else None
    frozen = {str(p.dtype).replace("torch.", "") for p in model.parameters() if not p.requires_grad}
    trainable = {str(p.dtype).replace("torch.", "") for p in model.parameters() if p.requires_grad}
    parts = [base or (f"{'/'.join(sorted(frozen))} frozen" if frozen else None)]
    parts.append(f"{'/'.join(sorted(trainable))} trainable" if trainable else "nothing trainable")
    parts.append("bf16 autocast" if bf16 else "fp16 autocast" if fp16 else "no autocast")
    return ", ".join(p for p in parts if p)


def gpu_name() -> str | None:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def cuda_memory_gib() -> tuple[float, float, float]:
    """(peak allocated, peak reserved, peak requested) since the last reset, in GiB. Allocated counts the caching
    allocator's blocks, whose sizes depend on what it had cached (a reused block is not split below 1 MiB of
    remainder); requested counts the bytes the tensors asked for, the same for the same tensors in any process."""
    stats = torch.cuda.memory.memory_stats_as_nested_dict()
    return tuple(stats[key]["all"]["peak"] / GIB for key in ("allocated_bytes", "reserved_bytes", "requested_bytes"))


def nvml_used_gib() -> float | None:
    """Device-level memory in use (all processes, CUDA context included), through NVML when installed."""
    handle = nvml_handle(torch.cuda.current_device())
    if handle is None:
        return None
    import pynvml

    try:
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / GIB
    except Exception:  # the driver stopped answering: the record leaves the column empty
        return None


@functools.cache
def nvml_handle(index: int) -> Any:
    """NVML's handle for CUDA device `index`, looked up once per process (the callback reads memory every step), or
    None without NVML. NVML numbers all GPUs of the host, so under CUDA_VISIBLE_DEVICES it is found by UUID."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            uuid = str(torch.cuda.get_device_properties(index).uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception:
            if os.environ.get("CUDA_VISIBLE_DEVICES"):
                return None  # the index would name another GPU: leave the column empty rather than wrong
            return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # no NVML library or no driver
        return None


def rss_gib() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / GIB


def rss_high_water_gib() -> float | None:
    """The kernel's own high-water mark of this process's resident memory (Linux `VmHWM`): a sampler at step ends
    misses peaks inside a step, the kernel does not. None where /proc has no VmHWM (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return None


def reset_rss_high_water() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0: `5` into /proc/self/clear_refs), so the next read is
    this run's peak and not the process's. False where the kernel does not allow it: then the peak is the process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def batch_counts(inputs: dict[str, Any]) -> tuple[Any, Any, str]:
    """(real tokens, rows, what they were read from) of one batch as the model receives it. Tensors stay on their
    device (a `.item()` here would make the host wait for the GPU at every micro-batch).

    Real tokens are the attention mask's ones whatever the Trainer's `include_num_input_tokens_seen`; a padding-free
    (packed) batch has no mask and no padding, so its tokens are all real and its rows are the sequences that start
    at position 0. Without either, every input id counts."""
    mask = inputs.get("attention_mask")
    ids = inputs.get("input_ids")
    if ids is None:
        ids = inputs.get("inputs_embeds")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask.sum(), mask.shape[0], "attention_mask"
    positions = inputs.get("position_ids")
    if isinstance(positions, torch.Tensor):
        positions = positions[0] if positions.dim() == 3 else positions  # multimodal RoPE: (3, batch, seq)
        return positions.numel(), (positions == 0).sum(), "position_ids"
    if isinstance(ids, torch.Tensor):
        return ids.shape[0] * ids.shape[1] if ids.dim() >= 2 else ids.numel(), ids.shape[0], "input_ids"
    return 0, 0, "none"


def split_phases(kinds: list[str], times: list[float], origin: float) -> tuple[list[float], dict[str, float]]:
    """Training steps' durations and the time spent in each kind of pause between them.

    `times[i]` is when mark `i` was passed and `kinds[i]` what ended there: "step" for an optimizer step's end, or
    the pause that ended there ("eval", "save", "log", "callbacks"). Each interval belongs to the mark that ends it,
    so a step runs from the last mark before it (the previous step or the pause after it) to its own end: evaluation,
    checkpoint saving, logging and other callbacks' work are never training time, data loading is."""
    steps: list[float] = []
    pauses: dict[str, float] = {}
    previous = origin
    for kind, t in zip(kinds, times):
        if kind == "step":
            steps.append(t - previous)
        else:
            pauses[kind] = pauses.get(kind, 0.0) + (t - previous)
        previous = t
    return steps, pauses


def training_marks(steps: list[float], tokens: list[int], samples: list[int]) -> list[tuple[float, int, int]]:
    """`steady_state_rate`'s cumulative marks on a clock that runs during training steps only."""
    marks = [(0.0, 0, 0)]
    for duration, tok, rows in zip(steps, tokens, samples):
        t, tok0, rows0 = marks[-1]
        marks.append((t + duration, tok0 + tok, rows0 + rows))
    return marks


def trainable_tensor_bytes(model: torch.nn.Module) -> int:
    """Bytes of the trainable tensors in their own dtype: what a file of them holds, without writing one."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def saved_weights_bytes(folder: str | Path) -> dict[str, int]:
    """Weight files in a saved model or adapter folder and their sizes (configs, tokenizers, optimizer and
    scheduler states left out)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    names = ("*.safetensors", "pytorch_model*.bin", "adapter_model.bin")
    return {p.name: p.stat().st_size for pattern in names for p in sorted(folder.glob(pattern)) if p.is_file()}


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    return versions


def environment() -> dict[str, Any]:
    return {
        "gpu_name": gpu_name(),
        "gpu_count": torch.cuda.device_count(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "host_cpu_count": os.cpu_count(),
    }
