"""One sweep point, read top to bottom: validate -> load -> prepare method -> SFTTrainer(callback) -> record.

Every failure after the config composed becomes a record with a status (`invalid`, `oom`, `failed`; `skipped` when the
engine cannot run the point here, see engines.py), so a sweep keeps going and the table keeps the row.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import (
    __version__,
    base_row,
    checks,
    console,
    data,
    distributed,
    engines,
    errors,
    evaluate,
    gcpause,
    memory,
    methods,
    models,
    profiles,
    records,
    regional,
    validation,
)
from peftbench.point import Point, own_overrides, sft_config

log = logging.getLogger("peftbench")


def point_container(cfg: DictConfig) -> dict[str, Any]:
    """The point's config as records keep it: `method_overrides` holds only this method's entry (the family sweep's
    BitFit-only `add_biases` is not part of a LoRA point), so one point has one config whichever sweep ran it."""
    container = OmegaConf.to_container(cfg, resolve=True)
    if "method_overrides" in container:
        container["method_overrides"] = own_overrides(cfg)
    return container


def run_id_for(cfg: DictConfig) -> str:
    """Stable id from everything that changes the result, so a rerun of the same point finds its record.

    A point run alone (`method_overrides: {}`) keeps the id it always had; inside the family sweep it now gets the same
    one (before, the sweep's BitFit-only override entered every method's id)."""
    container = point_container(cfg)
    container.pop("run", None)
    if container.get("engine") == {"name": "peft"}:
        container.pop("engine")  # the default engine keeps the ids of records written before engines existed
    digest = hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg.method.name}-{cfg.model.name}-s{cfg.train.seed}-{digest}"


DEFAULT_THROUGHPUT_WARMUP = 2


def throughput_warmup(point: Point, steps: int | None) -> int:
    """run.warmup_steps, or by default 2 steps, fewer when the point trains fewer than 3 (at least one is measured).
    An explicit value that leaves no step is refused by validation rather than silently measuring every step."""
    if point.warmup_steps is not None:
        return point.warmup_steps
    return DEFAULT_THROUGHPUT_WARMUP if steps is None else max(0, min(DEFAULT_THROUGHPUT_WARMUP, steps - 1))


def base_record(point: Point, run_id: str) -> dict[str, Any]:
    cfg = point.cfg
    return {
        "run_id": run_id,
        "run_name": cfg.run.name,
        "status": "running",
        "method": cfg.method.name,
        "method_config": point.method_cfg,
        "engine": engines.name(cfg),
        "model": cfg.model.name,
        "model_source": cfg.model.name_or_path,
        "dataset": cfg.data.name,
        "seed": cfg.train.seed,
        "config": point_container(cfg),
        "peftbench_version": __version__,
        "world_size": distributed.world_size(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # the GPU a parallel sweep pinned it to
    }


def train_point(point: Point | DictConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Load, prepare, train and measure one (validated) point; fills and returns `record`. A composed config (the
    engine's child process) is resolved here, as run_point resolved it."""
    import torch
    from peft import get_peft_model

    from peftbench.callback import PeftBenchCallback
    from peftbench.trainer import follow_fused_head, sft_trainer_class

    point = point if isinstance(point, Point) else Point.resolve(point)
    cfg, method_cfg, method, engine = point.cfg, point.method_cfg, point.method, point.engine
    run_dir = Path(cfg.run.results_dir) / record["run_id"]
    torch.manual_seed(cfg.train.seed)
    distributed.use_local_gpu()
    if torch.cuda.is_available():  # what earlier points of this process left allocated is inside this point's peak
        record["gpu_allocated_at_start_gib"] = torch.cuda.memory_allocated() / memory.GIB
        record["gpu_total_gib"] = profiles.gpu_memory_gib()  # what a failed row's predicted peak is read against
        record["memory_cap_enforced_gib"] = profiles.enforce_budget(point.profile)  # before this point allocates

    t0 = time.perf_counter()
    seq_len, bf16_adapters = point.seq_len, point.bf16_adapters
    if engine.loads_model:  # unsloth's FastLanguageModel loads the model and sets up the adapter (engines.unsloth_load)
        model, tokenizer, engine_info = engines.unsloth_load(cfg, method_cfg, seq_len)
        record.update(engine_info)
    else:
        tokenizer = data.tokenizer_for(cfg)
        if not point.synthetic:  # the data is read, mapped and measured before the model loads
            train_set, eval_set, data_fields = load_data(point, tokenizer)
        model = models.load_model(cfg.model, methods.quantization_config(method_cfg), vocab_size=len(tokenizer))
    record.update(models.provenance(cfg.model, model))
    record["vocab_size"] = model.config.vocab_size
    if engine.loads_model or point.synthetic:
        train_set, eval_set, data_fields = load_data(point, tokenizer, model.config.vocab_size)
    record.update(data_fields)
    record["dataset_fingerprint"] = data.fingerprint(train_set)
    record["time_load_s"] = time.perf_counter() - t0

    if not engine.loads_model:
        record["method_info"] = methods.prepare_model(model, method_cfg)
        tokenizer_folder = (
            None
            if data.uses_stand_in_tokenizer(cfg)
            else models.local_folder(cfg.model.get("tokenizer") or cfg.model.name_or_path)
        )
        peft_config = methods.build_peft_config(method_cfg, tokenizer_folder)
        if peft_config is not None:
            record["adapter_dtype"] = "base (bf16)" if bf16_adapters else "float32"
            model = get_peft_model(model, peft_config, autocast_adapter_dtype=not bf16_adapters)
            folder = functools.partial(models.local_folder, cfg.model.name_or_path)
            record["method_info"].update(methods.initialise(model, method_cfg, folder))
    choices, profile_info = profiles.choose(point, model.config)
    record.update(profile_info)
    args = sft_config(point, run_dir / "checkpoints", choices)
    layers = profile_info["profile_choices"]  # `checkpointing_plan` (and `compile`): peftbench sets the layers itself
    plan = layers.get("checkpointing_plan")
    if plan is not None:
        record.update(
            regional.apply(
                model,
                layers["compile"],
                plan,
                layers.get("compile_backend", "inductor"),
                layers.get("compile_dynamic", False),
            )
        )
        record["engine_gradient_checkpointing"] = (
            f"peftbench plan {plan} (torch.utils.checkpoint, use_reentrant=False)"
            if record["checkpointed_layers"]
            else "off"
        )
    checkpointing = bool(args.gradient_checkpointing) if plan is None else memory.checkpoints_any(plan)
    if engine.modelled:  # the memory model describes stock PEFT (+ Liger); unsloth's offloading is not modelled
        record.update(
            methods.predict_memory(
                method_cfg,
                model.config,
                seq_len,
                args.per_device_train_batch_size,
                checkpointing,
                bool(args.use_liger_kernel),
                bf16_adapters,
                plan=record.get("checkpointing_plan"),
                compiled=profiles.compiles(point),
            )
        )
    optimizer = methods.build_optimizer(model, method_cfg, args.learning_rate, args.weight_decay)
    warmup = throughput_warmup(point, validation.planned_steps(args, len(train_set)))
    # The runner writes the record itself (with the recipe's identity), so the callback only measures.
    callback = PeftBenchCallback(
        run_id=record["run_id"], warmup_steps=warmup, write=False, log_to_trainer=False, reset_peaks=True
    )
    freezer = gcpause.FreezeAfterStep(1) if profiles.gc_freeze(point.profile) else None
    record["trl_step_metrics"] = point.trl_step_metrics
    record["profiled_steps"] = point.profile_steps  # profiled steps are slower: not for tokens/s
    record["memory_traced_steps"] = point.memory_trace_steps  # slower too
    trainer = sft_trainer_class(record["trl_step_metrics"])(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=[
            callback,
            *profiler_callbacks(record["profiled_steps"], warmup, run_dir, record["memory_traced_steps"]),
            *methods.trainer_callbacks(method_cfg),
            *([freezer] if freezer else []),
        ],
        optimizers=(optimizer, None),
    )
    if method.copies_forward:
        follow_fused_head(trainer.model)
    if record.get("gradient_checkpointing_off"):
        log.warning("%s: gradient checkpointing off: %s", record["run_id"], record["gradient_checkpointing_off"])
    record.update(
        {k: v for k, v in engines.trainer_settings(engine, trainer.args, trainer.model).items() if k not in record}
    )
    console.quiet_trainer(trainer)
    try:
        trainer.train()
    finally:
        if freezer is not None:
            freezer.release()  # a failed training too: nothing stays frozen in this process
    record.update(callback.record())  # first: the runner's own eval and save times below are after training
    if freezer is not None:
        record.update(freezer.fields())
    if record.get("compile") == "regional":  # the warm-up steps' compile, kept out of tokens/s (throughput_warmup)
        record["time_compile_s"] = regional.warmup_excess_s(callback.step_times, warmup)
        record.update(regional.compile_stats())
    if plan is not None:
        record["activation_offload_stats"] = regional.offload_stats(model)
        regional.remove(model)  # evaluation and saving run the layers' own forward
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    record["optimizer"] = f"{type(optimizer).__module__}.{type(optimizer).__name__}"

    if eval_set is not None:
        t1 = time.perf_counter()
        trainer.evaluate()
        record["time_eval_loss_s"] = time.perf_counter() - t1
    if cfg.run.save_adapter:
        from peftbench.callback import save_trained_weights

        t2 = time.perf_counter()
        record["adapter_bytes"] = save_trained_weights(trainer.model, run_dir / "adapter")
        record["time_save_s"] = time.perf_counter() - t2
    record["mergeable"] = method.mergeable
    record.update(evaluate.evaluate_trained(cfg, trainer.model, tokenizer, method))  # after saving: merging changes it
    return record


def load_data(point: Point, tokenizer: Any, vocab_size: int | None = None):
    """(train, eval, record fields): synthetic rows, or the mapped rows after data.max_length_policy with the counts
    of what train.max_length does to them (`train_examples`, `train_examples_used`, `examples_truncated`,
    `examples_dropped`)."""
    cfg = point.cfg
    train_set, eval_set = data.load_train_eval(cfg.data, vocab_size)
    if point.synthetic:
        return train_set, eval_set, {"train_examples": len(train_set), "train_examples_used": len(train_set)}
    note = data.eval_file_spec(cfg.data)[1]
    if note:
        data.warn_once(f"peftbench: {note}")
    args = sft_config(point, Path(cfg.run.results_dir) / "_validate")
    train_set, fields = validation.data_plan(cfg.data, cfg.model, args, tokenizer)  # measured once, in validation
    if note:
        fields["eval_file_note"] = note
    return train_set, eval_set, fields


def profiler_callbacks(steps: int, warmup_steps: int, run_dir: Path, memory_trace_steps: int = 0) -> list:
    """run.profile_steps=N: torch.profiler over the N steps after the warm-up; run.memory_trace_steps=N: the tensors
    alive at the peak of the first N steps. Both into <point>/profile/."""
    from peftbench.profiling import PeakMemoryTrace, StepProfiler

    return ([StepProfiler(run_dir / "profile", start=warmup_steps, count=steps)] if steps else []) + (
        [PeakMemoryTrace(run_dir / "profile", memory_trace_steps)] if memory_trace_steps else []
    )


failure_status = errors.failure_status  # skipped / the child's status / invalid / oom / failed


def predicted_fit(point: Point, record: dict[str, Any], model_config: Any) -> None:
    """Before the model loads: a point whose chosen checkpointing plan is predicted not to fit the GPU's budget (or
    profile.memory_budget_gib) is flagged with the predicted peak and the plan that would fit; with
    run.skip_predicted_oom=true it becomes a `skipped` row instead of loading and dying with CUDA out of memory."""
    if model_config is None:
        return
    choice = profiles.plan_point(point, model_config, profiles.gpu_memory_gib(), profiles.local_gpu_name())
    message = choice.warning()
    if message is None:
        return
    record.update(profiles.plan_fields(choice))
    record["predicted_peak_gib"] = choice.predicted_peak_gib
    if point.cfg.run.get("skip_predicted_oom"):
        raise errors.Skipped(f"run.skip_predicted_oom: {message}")
    console.say(f"warning: {record['run_id']}: {message} (run.skip_predicted_oom=true skips such a point)")


def run_point(cfg: DictConfig) -> dict[str, Any]:
    """Run one point and write its record; failures become records too. Returns the record.

    Resume: a point whose record says `ok` is skipped (unless run.force=true); a point with no record, or a
    failed/oom/invalid one, runs again, since its cause may be fixed. The point is held under a lock, so a second
    sweep into the same folder waits for it and then skips it.
    """
    point = Point.resolve(cfg)  # the point read once; every step below takes it (or its parts), not cfg re-derived
    run_id = run_id_for(cfg)
    results_dir = Path(cfg.run.results_dir)
    record = base_record(point, run_id)
    folder_errors = checks.results_dir_errors(results_dir)
    if folder_errors:  # no row can be written into this folder, so the point reports and stops here
        record.update(status="invalid", error="\n".join(folder_errors))
        log.error("%s: %s", run_id, record["error"])
        return record
    # Under torchrun every rank runs the point together; rank 0 alone holds the lock and writes (a lock per rank
    # would serialize the ranks and deadlock their collectives).
    main_rank = distributed.is_main()
    lock = records.point_lock(results_dir, run_id) if main_rank else contextlib.nullcontext(results_dir / run_id)
    with lock as run_dir:
        done = records.completed_record(results_dir, run_id)
        if done is not None:
            if not cfg.run.get("force", False):
                log.info("skipping %s: finished", run_id)
                records.write_table(results_dir)  # a sweep killed between record and table left the table behind
                return done
            log.info("rerunning %s: run.force=true", run_id)
        elif main_rank:
            shutil.rmtree(run_dir / "adapter", ignore_errors=True)  # from an attempt that never wrote an ok record
        start = time.perf_counter()
        try:
            model_config = validation.validate(point, folder_errors)  # the folder was checked above
            predicted_fit(point, record, model_config)
            base = base_row.ensure_base(cfg)  # the untrained model's scores: evaluated once, then read from results_dir
            child = engines.needs_child(point.engine)
            record = engines.train_in_child(cfg, record) if child else train_point(point, record)
            record.update(base_row.deltas(record, base))
            record["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is kept as a row, then the sweep goes on
            record.update(errors.failure_fields(exc))
            log.error("%s: %s", run_id, records.scrub(record["error"]))
        record["time_total_s"] = time.perf_counter() - start
        if main_rank:
            records.fault_point("before_record")
            records.write_record(results_dir, record)
    models.release_memory()
    return record
