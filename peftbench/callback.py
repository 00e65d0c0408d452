"""PeftBenchCallback: what is measured during training, inside any transformers.Trainer or TRL SFTTrainer.

    trainer.add_callback(PeftBenchCallback(results_dir="results/my-job"))

Token counts come from the Trainer itself (`include_num_input_tokens_seen="non_padding"`, which sums the attention
mask), so throughput counts real tokens, not padding. Memory is sampled per optimizer step: each step's CUDA peak
(allocated and reserved, reset after reading), NVML's device-level use, and the process RSS on CPU. None of it waits
for the GPU: the caching allocator counts on the host as work is launched, and step ends are timed with CUDA events
(`step_clock.StepClock`), so the callback adds no synchronize to the step it measures.

Under torchrun / `accelerate launch` every rank runs the callback: at the end of training the ranks' memory series
are gathered (peak per rank, and the maximum over ranks in the headline columns), throughput is global (the Trainer
already gathers `num_input_tokens_seen` over ranks), and only rank 0 writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from peftbench import distributed, metrics
from peftbench.step_clock import StepClock

# TrainingArguments worth keeping in a record (the rest are defaults nobody compares on).
HYPERPARAMETERS = [
    "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lr_scheduler_type", "warmup_steps", "weight_decay", "optim", "bf16", "fp16", "gradient_checkpointing", "seed",
    "max_length", "packing", "padding_free", "completion_only_loss",
]  # fmt: skip


class PeftBenchCallback(TrainerCallback):
    """Collects one run's measurements; `record()` returns them, and `results_dir` makes it write them too."""

    def __init__(
        self,
        results_dir: str | Path | None = None,
        run_id: str | None = None,
        warmup_steps: int = 2,
        save_adapter: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.results_dir = Path(results_dir) if results_dir else None
        self.run_id = run_id
        self.warmup_steps = warmup_steps
        self.save_adapter = save_adapter
        self.extra = dict(extra or {})
        self.adapter_dir: Path | None = None
        self._reset()

    def _reset(self) -> None:
        self.marks: list[tuple[float, int, int]] = []  # (time, tokens, samples): at the start, then at each step end
        self.counts: list[tuple[int, int]] = []  # (tokens, samples) at each step end, until its time is known
        self.step_times: list[float] = []  # from one step's end to the next's: the gap between steps is part of a step
        self.allocated: list[float] = []
        self.reserved: list[float] = []
        self.requested: list[float] = []
        self.nvml: list[float] = []
        self.rss: list[float] = []
        self.loss_curve: list[list[float]] = []
        self.eval_losses: list[list[float]] = []
        self.summary: dict[str, Any] = {}
        self.ranks: list[dict[str, Any]] = []  # every rank's own series, gathered at the end of training
        self._samples = 0

    # -- events -----------------------------------------------------------------------------------------------------
    def on_init_end(self, args, state, control, **kwargs):
        if args.include_num_input_tokens_seen in ("no", False, None):
            args.include_num_input_tokens_seen = "non_padding"

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._reset()
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self._samples_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self._samples_per_step *= max(args.world_size, 1)
        self.clock = StepClock(self.cuda)
        self.train_start = self.clock.origin
        self._start_tokens = state.num_input_tokens_seen
        trainable, total = metrics.count_parameters(model)
        self.summary.update(
            world_size=max(args.world_size, 1),
            strategy=distributed.strategy(),
            fsdp_version=distributed.fsdp_version(),
            trainable_params=trainable,
            total_params=total,
            trainable_pct=100.0 * trainable / total if total else None,
            non_embedding_params=metrics.non_embedding_parameters(model),
            precision=metrics.precision_regime(model, args.bf16, args.fp16),
            hyperparameters={k: getattr(args, k) for k in HYPERPARAMETERS if hasattr(args, k)},
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.mark()
        if self.cuda:
            allocated, reserved, requested = metrics.cuda_memory_gib()
            self.allocated.append(allocated)
            self.reserved.append(reserved)
            self.requested.append(requested)
            torch.cuda.reset_peak_memory_stats()
            used = metrics.nvml_used_gib()
            if used is not None:
                self.nvml.append(used)
        self.rss.append(metrics.rss_gib())
        self._samples += self._samples_per_step
        self.counts.append((state.num_input_tokens_seen - self._start_tokens, self._samples))

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.loss_curve.append([state.global_step, float(logs["loss"])])
        if "eval_loss" in logs:
            self.eval_losses.append([state.global_step, float(logs["eval_loss"])])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        ends = self.clock.finish()
        self.train_seconds = time.perf_counter() - self.train_start
        self.marks = [(self.train_start, 0, 0)] + [(t, *count) for t, count in zip(ends, self.counts)]
        self.step_times = [b[0] - a[0] for a, b in zip(self.marks, self.marks[1:])]
        self.ranks = distributed.gather(self._own_series())  # a collective: every rank gets here
        if self.save_adapter and model is not None:
            self.adapter_dir = Path(args.output_dir) / "adapter"
            if self.results_dir and self.run_id:
                self.adapter_dir = self.results_dir / self.run_id / "adapter"
            self.summary["adapter_bytes"] = save_trained_weights(model, self.adapter_dir)
            self.summary["adapter_path"] = str(self.adapter_dir)
        if self.results_dir and state.is_world_process_zero:
            from peftbench.records import write_record

            write_record(self.results_dir, self.record(state=state, model=model))

    # -- results ----------------------------------------------------------------------------------------------------
    def _own_series(self) -> dict[str, Any]:
        cuda = getattr(self, "cuda", False)
        return {
            "rank": distributed.rank(),
            "device": torch.cuda.current_device() if cuda else "cpu",
            "allocated": self.allocated,
            "reserved": self.reserved,
            "requested": self.requested,
            "nvml": self.nvml,
            "rss": self.rss,
        }

    def record(self, state=None, model=None) -> dict[str, Any]:
        """Everything measured, as one flat-ish dict (nested values are kept in the JSON, flattened in the table)."""
        rate = metrics.steady_state_rate(self.marks, self.warmup_steps)
        gpu = metrics.gpu_name()
        ranks = self.ranks or [self._own_series()]
        world = self.summary.get("world_size", 1)
        out: dict[str, Any] = {**self.summary, **rate}
        # Headline memory columns: the worst rank at each step (a single process: its own series).
        out.update(metrics.summarize(metrics.stepwise_max([r["allocated"] for r in ranks]), "gpu_allocated_gib"))
        out.update(metrics.summarize(metrics.stepwise_max([r["reserved"] for r in ranks]), "gpu_reserved_gib"))
        out["gpu_requested_gib_peak"] = max((max(r["requested"]) for r in ranks if r.get("requested")), default=None)
        out["gpu_nvml_used_gib_peak"] = max((max(r["nvml"]) for r in ranks if r["nvml"]), default=None)
        out["rss_gib_peak"] = max((max(r["rss"]) for r in ranks if r["rss"]), default=None)
        if len(ranks) > 1:
            out["per_rank"] = [metrics.rank_peaks(r) for r in ranks]
        out["tokens_per_s_per_gpu"] = out["tokens_per_s"] / world if out["tokens_per_s"] else None
        out["real_tokens"] = self.marks[-1][1] if self.marks else 0
        out["steps"] = len(self.step_times)
        out["step_time_median_s"] = metrics.percentile(self.step_times, 50)
        out["mfu"] = metrics.model_flops_utilisation(
            out.get("non_embedding_params", 0), out["tokens_per_s"], gpu, devices=world
        )
        out["loss_curve"] = self.loss_curve
        out["train_loss"] = self.loss_curve[-1][1] if self.loss_curve else None
        out["eval_loss"] = self.eval_losses[-1][1] if self.eval_losses else None
        out["time_train_s"] = getattr(self, "train_seconds", None)
        out["warmup_steps_excluded"] = self.warmup_steps
        out.update(metrics.environment())
        out["gpu_count"] = world if gpu else 0  # GPUs this run used (one per process), not those on the host
        out["versions"] = metrics.library_versions()
        if model is not None and state is not None and "model" not in self.extra:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            out["model"] = getattr(base.config, "_name_or_path", None) or type(base).__name__
        if self.run_id:
            out["run_id"] = self.run_id
        out.update(self.extra)
        return out


def save_trained_weights(model: torch.nn.Module, folder: Path) -> int | None:
    """Save what training produced (a PEFT adapter, or the trainable tensors) and return its size on disk in bytes.

    Written into a temp folder, fsynced, then renamed into place, so `folder` never holds a half-written adapter.
    Every rank calls it: an FSDP model's weights are gathered first (a collective); rank 0 alone writes, the other
    ranks return None.
    """
    import os
    import shutil

    from safetensors.torch import save_file

    from peftbench.methods import trainable_state_dict
    from peftbench.records import TEMP_SUFFIX, fsync_dir, sync_tree

    full = distributed.full_state_dict(model)
    if not distributed.is_main():
        return None
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}{TEMP_SUFFIX}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(tmp, state_dict=full)
    elif full is None:
        save_file(trainable_state_dict(model), str(tmp / "trained.safetensors"))
    else:
        trainable = {distributed.clean_name(n) for n, p in model.named_parameters() if p.requires_grad}
        save_file({k: v.contiguous() for k, v in full.items() if k in trainable}, str(tmp / "trained.safetensors"))
    sync_tree(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    fsync_dir(folder.parent)
    return metrics.folder_size(folder)
