"""PeftBenchCallback: what is measured during training, inside any transformers.Trainer or TRL SFTTrainer.

    trainer = SFTTrainer(..., callbacks=[PeftBenchCallback()])   # or trainer.add_callback(PeftBenchCallback())
    trainer.train()   # writes <output_dir>/peftbench/<run_id>/record.json and that folder's table

It changes nothing the user configured. It counts tokens itself, from the batches the model receives (a forward
pre-hook: the attention mask's ones, or a packed batch's length), so `include_num_input_tokens_seen` can stay as the
job set it. Step times come from CUDA events at step ends (`step_clock.StepClock`), with no synchronize in the step it
measures, and every pause between steps (evaluation, checkpoint saving, logging, other callbacks) is timed apart and
left out of throughput. Process RSS is the kernel's high-water mark (`VmHWM`, reset when training begins); GPU peaks
are read and reset at every step end.

When training begins it moves itself to the front of the Trainer's callback list and puts a small `_PauseClock`
at the end, so that it can add its figures to the logs every other callback (TensorBoard, W&B, MLflow...) reports,
and so that the time the others take is seen as a pause. It also watches the training loop's calls, so a run that
raises still gets a record (`status: failed` or `oom`) before the exception goes on unchanged.

Under torchrun / `accelerate launch` every rank runs the callback: at the end of training the ranks' memory series
are gathered (peak per rank, and the maximum over ranks in the headline columns), throughput is global (token counts
are summed over ranks), and only rank 0 writes.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from peftbench import distributed, errors, gcpause, identity, metrics
from peftbench.step_clock import StepClock

log = logging.getLogger("peftbench")

# TrainingArguments worth keeping in a record (the rest are defaults nobody compares on).
HYPERPARAMETERS = [
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "optim",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "seed",
    "max_length",
    "packing",
    "padding_free",
    "completion_only_loss",
]
# The loop's calls a failure can come from, on the Trainer (and `step` on its optimizer): watched from on_train_begin,
# since a callback added with add_callback() hears of nothing earlier.
WATCHED = ["get_batch_samples", "training_step", "_maybe_log_save_evaluate"]
LOG_PREFIX = "peftbench/"


class PeftBenchCallback(TrainerCallback):
    """Measures one training run; `record()` returns the figures, and unless `write=False` the callback writes them.

    Every argument is optional:
    - `results_dir`: where records and the table go; default `$PEFTBENCH_RESULTS_DIR`, else `<output_dir>/peftbench`.
    - `run_id`: the record's folder; default `<method>-<model>-<output_dir name>`. An id whose folder already holds a
      record gets a `-2`, `-3`... suffix (and a log line) instead of replacing it, unless `overwrite=True`.
    - `warmup_steps`: steps left out of tokens/s and samples/s (compile and allocator warm-up).
    - `save_adapter`: save a PEFT adapter into the record's folder and measure it. Full weights are never copied:
      without an adapter, the trainable tensors' bytes are measured in memory (`trainable_tensor_bytes`).
    - `extra`: fields added to the record as they are.
    - `log_to_trainer`: add the headline figures to the Trainer's logs under `peftbench/` (so to every `report_to`).
    - `write=False`: measure only (peftbench's own runner writes the record itself).
    - `reset_peaks`: reset CUDA's peak-memory counters at every step end, for per-step peaks (the `_mean`/`_p99`
      columns, and an evaluation's peak apart from training's). Off by default: the reset would change what your
      job's own `torch.cuda.max_memory_allocated()` reads; the counters are reset once, when training begins.
    """

    def __init__(
        self,
        results_dir: str | Path | None = None,
        run_id: str | None = None,
        warmup_steps: int = 2,
        save_adapter: bool = True,
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
        log_to_trainer: bool = True,
        write: bool = True,
        reset_peaks: bool = False,
    ) -> None:
        self.results_dir = Path(results_dir) if results_dir else None
        self.run_id = run_id
        self.warmup_steps = warmup_steps
        self.save_adapter = save_adapter
        self.extra = dict(extra or {})
        self.overwrite = overwrite
        self.log_to_trainer = log_to_trainer
        self.write = write
        self.reset_peaks = reset_peaks
        self.adapter_dir: Path | None = None
        self.attached = "callbacks=[...]"  # replaced by what on_init_end / on_train_begin find
        self._trainer: Any = None
        self._reset()

    def _reset(self) -> None:
        self.kinds: list[str] = []  # what each clock mark ended: "step", or a pause ("eval", "save", "log", ...)
        self.step_tokens: list[Any] = []  # per step: real tokens (tensors until train end: no host read per step)
        self.step_samples: list[Any] = []
        self._tokens: list[Any] = []  # the current step's micro-batches
        self._samples: list[Any] = []
        self.step_times: list[float] = []
        self.pause_times: dict[str, float] = {}
        self.allocated: list[float] = []
        self.reserved: list[float] = []
        self.requested: list[float] = []
        self.nvml: list[float] = []
        self.rss: list[float] = []
        self.pause_allocated: list[float] = []
        self.loss_curve: list[list[float]] = []
        self.eval_losses: list[list[float]] = []
        self.summary: dict[str, Any] = {}
        self.unmeasured: dict[str, str] = {}
        self.ranks: list[dict[str, Any]] = []
        self.token_source: str | None = None
        self.trainer_train_loss: float | None = None
        self.checkpoint_weights: dict[str, int] = {}
        self.failure: dict[str, Any] | None = None
        self._hooks: list[Any] = []
        self._watched: list[tuple[Any, str]] = []
        self._finished = False
        self.clock: StepClock | None = None
        self._claimed: Path | None = None
        if getattr(self, "gc_pauses", None) is not None:
            self.gc_pauses.stop()
        self.gc_pauses = gcpause.Pauses()

    # -- attaching ---------------------------------------------------------------------------------------------------
    def on_init_end(self, args, state, control, **kwargs):
        trainer = _calling(_trainer_class())
        if trainer is not None:
            self.attached = "callbacks=[...]"
            self._watch_train(trainer)

    def _watch_train(self, trainer: Any) -> None:
        """Record a failure anywhere in `trainer.train()` (the constructor and `peftbench measure` paths, which hear
        of the trainer before training)."""
        self._trainer = trainer
        if "train" not in vars(trainer):
            self._watch(trainer, "train")

    def _watch(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def watched(*args, **kwargs):
            try:
                return original(*args, **kwargs)
            except BaseException as exc:
                self._failed(exc)
                raise

        setattr(owner, name, watched)  # an instance attribute: shadows the class's method for this object only
        self._watched.append((owner, name))

    def _unwatch(self, keep_train: bool = True) -> None:
        for owner, name in list(self._watched):
            if keep_train and name == "train" and owner is self._trainer:
                continue  # a later train() call on the same trainer is watched too
            vars(owner).pop(name, None)
            self._watched.remove((owner, name))

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, optimizer=None, **kwargs):
        watched_train = [(o, n) for o, n in self._watched if n == "train"]
        self._reset()
        self._watched = watched_train
        handler = _calling(_handler_class())
        trainer = _calling(_trainer_class())
        if self._trainer is None and trainer is not None:
            self.attached = "add_callback"
        self._trainer = trainer or self._trainer
        if handler is not None:
            # A new list, not an edit of the one call_event is iterating: this event goes on as it started.
            others = [c for c in handler.callbacks if c is not self and not isinstance(c, _PauseClock)]
            handler.callbacks = [self, *others, _PauseClock(self)]
        else:
            self.unmeasured["pauses"] = "the Trainer's callback handler was not found: pauses count as step time"
            self.unmeasured["tracker_logs"] = "the Trainer's callback handler was not found: nothing added to logs"
        if trainer is not None:
            for name in WATCHED:
                if hasattr(trainer, name):
                    self._watch(trainer, name)
            if getattr(trainer, "optimizer", None) is not None and hasattr(trainer.optimizer, "step"):
                self._watch(trainer.optimizer, "step")
        if model is not None:
            self._hooks.append(model.register_forward_pre_hook(self._count_batch, with_kwargs=True))
        else:
            self.unmeasured["real_tokens"] = "the Trainer passed no model to on_train_begin: tokens not counted"

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.summary["rss_gib_before_train"] = metrics.rss_high_water_gib()
        self.rss_scope = "train" if metrics.reset_rss_high_water() else "process"
        self.clock = StepClock(self.cuda)
        self.train_start = self.clock.origin
        self.gc_pauses.start()
        self._trainer_tokens_start = state.num_input_tokens_seen
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
            attached=self.attached,
        )
        if self.write:  # plugin mode: no recipe says what this run is, so read it off the model and the data
            dataset = getattr(train_dataloader, "dataset", None)
            self.identity = self._identity(args, model, dataset)

    def _identity(self, args, model, dataset) -> dict[str, Any]:
        from peftbench import __version__

        method, options = identity.infer_method(model)
        info = {
            "method": method,
            "method_config": {"name": method, **options},
            "engine": "peft" if identity.peft_adapter_config(model) is not None else "transformers",
        }
        info.update(identity.model_provenance(model))
        try:
            info.update(identity.dataset_fingerprint(dataset))
        except Exception as exc:  # a dataset whose rows cannot be read back: say so rather than fail the job
            info["dataset_fingerprint"] = None
            self.unmeasured["dataset_fingerprint"] = f"{type(exc).__name__}: {exc}"
        info["seed"] = args.seed
        info["peftbench_version"] = __version__
        info["output_dir"] = args.output_dir
        info["run_name"] = args.run_name or Path(args.output_dir).name
        # What defines the point, in the shape the report compares variants by (peftbench's recipes have this).
        info["config"] = {
            "method": info["method_config"],
            "model": {"name_or_path": info.get("model_source")},
            "train": self.summary["hyperparameters"],
        }
        return info

    # -- measuring ---------------------------------------------------------------------------------------------------
    def _count_batch(self, module, args, kwargs):
        if not (module.training and torch.is_grad_enabled()):
            return  # evaluation, generation: not training tokens
        inputs = dict(kwargs)
        if args and isinstance(args[0], torch.Tensor) and "input_ids" not in inputs:
            inputs["input_ids"] = args[0]
        tokens, samples, source = metrics.batch_counts(inputs)
        self._tokens.append(tokens)
        self._samples.append(samples)
        self.token_source = self.token_source or source

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock is None:
            self.unmeasured.setdefault("steps", "attached after training began: no step was timed")
            return
        self._mark("step")
        self.step_tokens.append(_total(self._tokens))
        self.step_samples.append(_total(self._samples))
        self._tokens, self._samples = [], []
        if self.cuda:
            allocated, reserved, requested = metrics.cuda_memory_gib()  # the peak since the last reset
            self.allocated.append(allocated)
            self.reserved.append(reserved)
            self.requested.append(requested)
            if self.reset_peaks:
                torch.cuda.reset_peak_memory_stats()
            used = metrics.nvml_used_gib()
            if used is not None:
                self.nvml.append(used)
        self.rss.append(metrics.rss_gib())

    def _mark(self, kind: str) -> None:
        self.clock.mark()
        self.kinds.append(kind)

    def _pause_ended(self, kind: str) -> None:
        """Called by the _PauseClock after every other callback had its turn."""
        if self.clock is None or self._finished:
            return
        self._mark(kind)
        if self.cuda and self.reset_peaks and kind in ("eval", "save"):  # an evaluation's is not a training step's
            self.pause_allocated.append(metrics.cuda_memory_gib()[0])
            torch.cuda.reset_peak_memory_stats()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs if logs is not None else {}
        if "loss" in logs:
            self.loss_curve.append([state.global_step, float(logs["loss"])])
        if "eval_loss" in logs:
            self.eval_losses.append([state.global_step, float(logs["eval_loss"])])
        if "train_loss" in logs:
            self.trainer_train_loss = float(logs["train_loss"])
        if self.log_to_trainer and self.clock is not None and ("loss" in logs or "train_loss" in logs):
            logs.update(self.headline())

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.checkpoint_weights = metrics.saved_weights_bytes(checkpoint) or self.checkpoint_weights

    def headline(self) -> dict[str, float]:
        """The figures so far, as scalars for the Trainer's logs (and so for TensorBoard, W&B, MLflow...)."""
        out: dict[str, float] = {}
        rate = self._rates()
        values = {
            "tokens_per_s": rate.get("tokens_per_s"),
            "real_tokens": rate.get("real_tokens"),
            "gpu_allocated_gib_peak": max(self.allocated, default=None),
            "gpu_reserved_gib_peak": max(self.reserved, default=None),
            "rss_gib_peak": metrics.rss_high_water_gib(),
            "trainable_pct": self.summary.get("trainable_pct"),
            "mfu": metrics.model_flops_utilisation(
                self.summary.get("non_embedding_params", 0),
                rate.get("tokens_per_s"),
                metrics.gpu_name(),
                devices=self.summary.get("world_size", 1),
            ),
        }
        for key, value in values.items():
            if value is not None:
                out[LOG_PREFIX + key] = float(value)
        return out

    def _rates(self, final: bool = False) -> dict[str, Any]:
        """Steady-state rates over the steps timed so far (resolving the clock waits for the GPU: at a logging step
        the Trainer has already waited for it to read the loss)."""
        times = self.clock.finish() if final else self.clock.resolved()
        kinds = self.kinds[: len(times)]
        steps, pauses = metrics.split_phases(kinds, times, self.train_start)
        tokens = _as_ints(self.step_tokens[: len(steps)])
        samples = _as_ints(self.step_samples[: len(steps)])
        world = max(self.summary.get("world_size", 1), 1)
        if world > 1:  # every rank counted its own batches: throughput is the job's
            tokens = [sum(t) for t in zip(*distributed.gather(tokens))] if final else [t * world for t in tokens]
            samples = [sum(s) for s in zip(*distributed.gather(samples))] if final else [s * world for s in samples]
        marks = metrics.training_marks(steps, tokens, samples)
        out = metrics.steady_state_rate(marks, self.warmup_steps)
        out["real_tokens"] = marks[-1][1]
        out["samples"] = marks[-1][2]
        if final:
            self.step_times, self.pause_times, self.marks = steps, pauses, marks
        return out

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.clock is None or self._finished:
            return
        self._finish(args, state, model)
        if self.write and state.is_world_process_zero:
            self._write(args, model, status="ok")

    def _finish(self, args, state, model, gather: bool = True) -> None:
        """Stop measuring: resolve the clock, unhook, and gather the ranks' series."""
        self._finished = True
        self.train_seconds = time.perf_counter() - self.train_start
        self.gc_pauses.stop()
        self.summary.update(self.gc_pauses.fields())
        self.rate = self._rates(final=True) if gather else self._rates_local()
        self.summary["rss_gib_peak_train"] = metrics.rss_high_water_gib()
        self.summary["rss_peak_scope"] = self.rss_scope
        if args.include_num_input_tokens_seen not in ("no", False, None):
            self.summary["trainer_num_input_tokens_seen"] = state.num_input_tokens_seen - self._trainer_tokens_start
            self.summary["trainer_tokens_mode"] = str(args.include_num_input_tokens_seen)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._unwatch()
        self.ranks = distributed.gather(self._own_series()) if gather else [self._own_series()]
        if self.write and self.save_adapter and model is not None and gather:
            if identity.peft_adapter_config(model) is not None:
                self.adapter_dir = self._run_dir(args) / "adapter"
                save_trained_weights(model, self.adapter_dir)
        if model is not None:
            self.summary["trainable_tensor_bytes"] = metrics.trainable_tensor_bytes(model)

    def _rates_local(self) -> dict[str, Any]:
        world, self.summary["world_size"] = self.summary.get("world_size", 1), 1  # no collective after a failure
        try:
            return self._rates(final=True)
        finally:
            self.summary["world_size"] = world

    def _failed(self, exc: BaseException) -> None:
        """A watched call raised: write the record with what was measured, once; the caller re-raises."""
        if self.failure is not None or self._finished or self.clock is None:
            return
        self.failure = errors.failure_fields(exc)
        trainer = self._trainer
        args, state = getattr(trainer, "args", None), getattr(trainer, "state", None)
        model = getattr(trainer, "model", None)
        try:
            self._finish(args, state, model, gather=False)
            if self.write and distributed.is_main():
                self._write(args, model, status=self.failure["status"])
        except Exception as inner:  # never hide the job's own exception behind ours
            log.warning("peftbench: could not write the record of the failed run: %s", inner)

    # -- results -----------------------------------------------------------------------------------------------------
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
            "rss_peak": self.summary.get("rss_gib_peak_train"),
        }

    def record(self, state=None, model=None) -> dict[str, Any]:
        """Everything measured, as one flat-ish dict (nested values are kept in the JSON, flattened in the table)."""
        rate = dict(
            getattr(self, "rate", None)
            or {"tokens_per_s": None, "samples_per_s": None, "steady_state_steps": 0, "real_tokens": 0, "samples": 0}
        )
        gpu = metrics.gpu_name()
        ranks = self.ranks or [self._own_series()]
        world = self.summary.get("world_size", 1)
        out: dict[str, Any] = {**self.summary, **rate}
        # Headline memory columns: the worst rank at each step (a single process: its own series).
        out.update(metrics.summarize(metrics.stepwise_max([r["allocated"] for r in ranks]), "gpu_allocated_gib"))
        out.update(metrics.summarize(metrics.stepwise_max([r["reserved"] for r in ranks]), "gpu_reserved_gib"))
        out["gpu_peak_scope"] = ("per step" if self.reset_peaks else "since training began") if self.cuda else None
        if not self.reset_peaks:  # a running peak: its mean and p99 over steps would mean nothing
            for key in (
                "gpu_allocated_gib_mean",
                "gpu_allocated_gib_p99",
                "gpu_reserved_gib_mean",
                "gpu_reserved_gib_p99",
            ):
                out[key] = None
        out["gpu_requested_gib_peak"] = max((max(r["requested"]) for r in ranks if r.get("requested")), default=None)
        out["gpu_nvml_used_gib_peak"] = max((max(r["nvml"]) for r in ranks if r["nvml"]), default=None)
        out["gpu_allocated_gib_peak_eval"] = max(self.pause_allocated, default=None)
        peaks = [r.get("rss_peak") or max(r["rss"], default=0) for r in ranks]
        out["rss_gib_peak"] = max(peaks, default=None) or None
        if len(ranks) > 1:
            out["per_rank"] = [metrics.rank_peaks(r) for r in ranks]
        out["tokens_per_s_per_gpu"] = out["tokens_per_s"] / world if out["tokens_per_s"] else None
        out["token_count_source"] = self.token_source
        out["steps"] = len(self.step_times)
        out["step_time_median_s"] = metrics.percentile(self.step_times, 50)
        out["time_steps_s"] = sum(self.step_times)
        # Every step's time, warm-up included: a steady rate well below the median step's says some steps stalled
        out["step_times_s"] = [round(t, 5) for t in self.step_times]
        out["pause_times_s"] = {k: self.pause_times.get(k, 0.0) for k in ("eval", "save", "log", "callbacks")}
        out["time_eval_s"] = out["pause_times_s"]["eval"]  # evaluation and checkpoints during training: never
        out["time_save_s"] = out["pause_times_s"]["save"]  # part of step times, tokens/s or samples/s
        out["mfu"] = metrics.model_flops_utilisation(
            out.get("non_embedding_params", 0), out["tokens_per_s"], gpu, devices=world
        )
        out["loss_curve"] = self.loss_curve
        out["last_logged_loss"] = self.loss_curve[-1][1] if self.loss_curve else None
        # The Trainer's own definition (the mean over every step, what trainer.train() returns); the last logged
        # loss where the Trainer never reported one (a run that failed part way).
        out["train_loss"] = self.trainer_train_loss if self.trainer_train_loss is not None else out["last_logged_loss"]
        out["eval_loss"] = self.eval_losses[-1][1] if self.eval_losses else None
        out["time_train_s"] = getattr(self, "train_seconds", None)
        out["warmup_steps_excluded"] = len(self.step_times) - rate["steady_state_steps"]  # 0 if too few steps
        if self.checkpoint_weights:
            out["checkpoint_weights_bytes"] = sum(self.checkpoint_weights.values())
        out.update(metrics.environment())
        out["gpu_count"] = world if gpu else 0  # GPUs this run used (one per process), not those on the host
        out["versions"] = metrics.library_versions()
        if self.steps_without_tokens(out):
            self.unmeasured["real_tokens"] = (
                "no training forward reached the model's forward hook (a Trainer subclass that bypasses the model's "
                "__call__?): real tokens and tokens/s not measured"
            )
            out["tokens_per_s"] = out["tokens_per_s_per_gpu"] = out["mfu"] = None
        out["unmeasured"] = dict(self.unmeasured)
        if self.run_id:
            out["run_id"] = self.run_id
        out.update(self.extra)
        return out

    def steps_without_tokens(self, out: dict[str, Any]) -> bool:
        return out["steps"] > 0 and not out["real_tokens"] and "real_tokens" not in self.unmeasured

    def _run_dir(self, args) -> Path:
        """The record's folder, claimed once: an existing record is never overwritten unless asked."""
        if self._claimed is not None:
            return self._claimed
        results = self.results_dir or Path(
            os.environ.get("PEFTBENCH_RESULTS_DIR") or Path(args.output_dir) / "peftbench"
        )
        wanted = self.run_id or default_run_id(self.identity, args)
        self._claimed = claim_run_dir(results, wanted, self.overwrite)
        if self._claimed.name != wanted:
            log.warning(
                "peftbench: %s already holds a record of another run; this one is %s", wanted, self._claimed.name
            )
        return self._claimed

    def _write(self, args, model, status: str) -> None:
        from peftbench.records import write_record

        run_dir = self._run_dir(args)
        record = {"run_id": run_dir.name, "status": status, **self.identity, **self.record()}
        record["run_id"] = run_dir.name
        if self.failure:
            record.update(self.failure)
        if self.adapter_dir is not None and self.adapter_dir.is_dir():
            weights = metrics.saved_weights_bytes(self.adapter_dir)
            record["adapter_bytes"] = sum(weights.values())
            record["adapter_files"] = weights
            config = self.adapter_dir / "adapter_config.json"
            record["adapter_config_bytes"] = config.stat().st_size if config.is_file() else None
            record["adapter_path"] = str(self.adapter_dir)
        record.update(self.extra)
        path = write_record(run_dir.parent, record)
        print(summary_line(record, path), flush=True)
        if self.unmeasured:
            print(f"peftbench: not measured: {'; '.join(f'{k}: {v}' for k, v in self.unmeasured.items())}", flush=True)


class _PauseClock(TrainerCallback):
    """The last callback in the list: its marks end the pauses between steps, after every other callback ran."""

    def __init__(self, owner: PeftBenchCallback) -> None:
        self.owner = owner

    def on_step_end(self, args, state, control, **kwargs):
        self.owner._pause_ended("callbacks")

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.owner._pause_ended("eval" if any(k.startswith("eval_") for k in logs or {}) else "log")

    def on_evaluate(self, args, state, control, **kwargs):
        self.owner._pause_ended("eval")

    def on_save(self, args, state, control, **kwargs):
        self.owner._pause_ended("save")


def _trainer_class() -> type | None:
    module = sys.modules.get("transformers.trainer")
    return getattr(module, "Trainer", None)


def _handler_class() -> type | None:
    module = sys.modules.get("transformers.trainer_callback")
    return getattr(module, "CallbackHandler", None)


def _calling(cls: type | None, depth: int = 12) -> Any:
    """The nearest `self` of class `cls` up the call stack: the Trainer (or its callback handler) that is calling
    this callback. Callbacks are handed neither, and add_callback() tells a callback nothing, so this is the one way
    to reach them whichever way the callback was attached."""
    if cls is None:
        return None
    frame = inspect.currentframe()
    for _ in range(depth):
        frame = frame.f_back if frame is not None else None
        if frame is None:
            return None
        obj = frame.f_locals.get("self")
        if isinstance(obj, cls):
            return obj
    return None


def _total(values: list[Any]) -> Any:
    """Sum of a step's micro-batch counts; device tensors stay on the device."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    plain = sum(v for v in values if not isinstance(v, torch.Tensor))
    if not tensors:
        return plain
    return torch.stack([t.to(torch.int64).reshape(()) for t in tensors]).sum() + plain


def _as_ints(values: list[Any]) -> list[int]:
    """One host read for all steps' counts (tensors to ints)."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return [int(v) for v in values]
    read = iter(torch.stack([t.reshape(()) for t in tensors]).tolist())
    return [int(next(read)) if isinstance(v, torch.Tensor) else int(v) for v in values]


def default_run_id(info: dict[str, Any], args) -> str:
    parts = [info.get("method") or "run", info.get("model") or "", Path(args.output_dir).name]
    return "-".join(safe_name(p) for p in parts if p)


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text)).strip("._") or "run"


def claim_run_dir(results_dir: Path, run_id: str, overwrite: bool = False) -> Path:
    """`results_dir/run_id`, or the first `run_id-N` whose folder holds no record yet. mkdir is atomic, so two jobs
    starting at once never claim the same folder."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        folder = results_dir / (run_id if n == 1 else f"{run_id}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            if overwrite:
                return folder
    raise RuntimeError(f"peftbench: no free run folder for {run_id} under {results_dir}")


def summary_line(record: dict[str, Any], path: Path) -> str:
    """The one line the callback prints when a run ends: where the record went and its headline figures."""
    parts = [f"peftbench: {record['status']} -> {path}"]
    for key, fmt in (
        ("tokens_per_s", "{:,.0f} tok/s"),
        ("gpu_allocated_gib_peak", "GPU peak {:.2f} GiB"),
        ("rss_gib_peak", "RSS peak {:.2f} GiB"),
        ("trainable_pct", "trainable {:.3g}%"),
        ("train_loss", "train loss {:.4g}"),
    ):
        if record.get(key) is not None:
            parts.append(fmt.format(record[key]))
    if record.get("error"):
        parts.append(str(record["error"])[:200])
    return " | ".join(parts)


def save_trained_weights(model: torch.nn.Module, folder: Path) -> int | None:
    """Save what training produced (a PEFT adapter, or the trainable tensors) and return its size on disk in bytes.

    Written into a temp folder, fsynced, then renamed into place, so `folder` never holds a half-written adapter.
    Every rank calls it: an FSDP model's weights are gathered first (a collective); rank 0 alone writes, the other
    ranks return None.
    """
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
    return sum(metrics.saved_weights_bytes(folder).values())  # the weights; adapter_config.json is not the adapter
