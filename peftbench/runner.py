"""One sweep point, read top to bottom: validate -> load -> prepare method -> SFTTrainer(callback) -> record.

Every failure after the config composed becomes a record with a status (`invalid`, `oom`, `failed`; `skipped` when the
engine cannot run the point here, see engines.py), so a sweep keeps going and the table keeps the row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import __version__, checks, console, data, distributed, engines, evaluate, memory, methods, models, profiles, records

log = logging.getLogger("peftbench")

# Exceptions that mean "the input is wrong": reported as status `invalid`, with their message alone.
INPUT_ERRORS = (
    methods.MethodError, models.ModelSourceError, data.DataError, checks.ConfigError, evaluate.EvalError,
    distributed.LaunchError, profiles.ProfileError,
)


def own_overrides(cfg: DictConfig) -> dict[str, Any]:
    """`method_overrides` cut down to this point's method: another method's options are no part of this point."""
    overrides = cfg.get("method_overrides")
    overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
    name = cfg.method.name
    return {name: overrides[name]} if overrides.get(name) else {}


def method_config(cfg: DictConfig) -> dict[str, Any]:
    """The method's YAML plus the recipe's per-method overrides (e.g. the family sweep's BitFit biases)."""
    method = OmegaConf.to_container(cfg.method, resolve=True)
    return {**method, **(own_overrides(cfg).get(method["name"]) or {})}


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


def sft_config(cfg: DictConfig, method_cfg: dict[str, Any], output_dir: Path, overrides: dict | None = None):
    """TRL's SFTConfig from the `train` group (plus the profile's choices); unknown keys fail with the closest valid one."""
    import difflib
    from dataclasses import fields

    from trl import SFTConfig

    train = OmegaConf.to_container(cfg.train, resolve=True)
    valid = {f.name for f in fields(SFTConfig)}
    for key in train:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            raise methods.MethodError(
                f"train.{key}: not an SFTConfig option.{f' Did you mean `train.{close[0]}`?' if close else ''}"
            )
    train.update(overrides or {})
    train["learning_rate"] = train.get("learning_rate") or method_cfg["learning_rate"]
    train.setdefault("report_to", "none")
    train.setdefault("save_strategy", "no")
    return SFTConfig(output_dir=str(output_dir), include_num_input_tokens_seen="non_padding", **train)


def validate(cfg: DictConfig) -> Any:
    """Everything checkable before weights load; returns the architecture config it read on the way."""
    errors = checks.option_errors(cfg) + checks.model_errors(cfg) + checks.results_dir_errors(cfg.run.results_dir)
    if errors:
        raise checks.ConfigError("\n".join(errors))
    method_cfg = method_config(cfg)
    methods.get_method(method_cfg["name"])
    models.check_source(cfg.model.name_or_path)
    if cfg.model.get("tokenizer"):
        models.check_source(cfg.model.tokenizer, "model.tokenizer")
    data.check_local_files(cfg.data)
    evaluate.validate_point(cfg)
    distributed.check_launch(cfg.train)
    engines.check(cfg, method_cfg["name"])  # EngineUnavailable: the point is skipped, with the reason
    profiles.check(cfg)
    model_config = models.load_config(cfg.model)
    methods.validate(method_cfg, model_config, cfg.model.get("tokenizer") or cfg.model.name_or_path)
    sft_config(cfg, method_cfg, Path(cfg.run.results_dir) / "_validate")
    return model_config


def base_record(cfg: DictConfig, run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "run_name": cfg.run.name,
        "status": "running",
        "method": cfg.method.name,
        "method_config": method_config(cfg),
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


def train_point(cfg: DictConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Load, prepare, train and measure one point; fills and returns `record`."""
    import torch
    from peft import get_peft_model
    from peftbench.callback import PeftBenchCallback
    from peftbench.trainer import sft_trainer_class

    method_cfg = method_config(cfg)
    method = methods.get_method(method_cfg["name"])
    run_dir = Path(cfg.run.results_dir) / record["run_id"]
    torch.manual_seed(cfg.train.seed)
    distributed.use_local_gpu()
    if torch.cuda.is_available():  # what earlier points of this process left allocated is inside this point's peak
        record["gpu_allocated_at_start_gib"] = torch.cuda.memory_allocated() / memory.GIB
        record["gpu_total_gib"] = profiles.gpu_memory_gib()  # the capacity a failed row's predicted peak is read against

    t0 = time.perf_counter()
    unsloth = engines.name(cfg) == "unsloth"
    seq_len = data.sequence_length(cfg)
    bf16_adapters = profiles.bf16_adapters(cfg, method_cfg)
    if unsloth:  # FastLanguageModel loads the model and sets up the adapter (engines.unsloth_load)
        model, tokenizer, engine_info = engines.unsloth_load(cfg, method_cfg, seq_len)
        record.update(engine_info)
    else:
        tokenizer = data.tokenizer_for(cfg)
        model = models.load_model(cfg.model, methods.quantization_config(method_cfg), vocab_size=len(tokenizer))
    record.update(models.provenance(cfg.model, model))
    record["vocab_size"] = model.config.vocab_size
    train_set, eval_set = data.load_train_eval(cfg.data, model.config.vocab_size)
    record["dataset_fingerprint"] = data.fingerprint(train_set)
    record["train_examples"] = len(train_set)
    record["time_load_s"] = time.perf_counter() - t0

    if not unsloth:
        record["method_info"] = methods.prepare_model(model, method_cfg)
        tokenizer_folder = (
            None if data.uses_stand_in_tokenizer(cfg)
            else models.local_folder(cfg.model.get("tokenizer") or cfg.model.name_or_path)
        )
        peft_config = methods.build_peft_config(method_cfg, tokenizer_folder)
        if peft_config is not None:
            record["adapter_dtype"] = "base (bf16)" if bf16_adapters else "float32"
            model = get_peft_model(model, peft_config, autocast_adapter_dtype=not bf16_adapters)
    choices, profile_info = profiles.choose(cfg, method_cfg, model.config)
    record.update(profile_info)
    args = sft_config(cfg, method_cfg, run_dir / "checkpoints", choices)
    if not unsloth:  # the memory model describes stock PEFT (+ Liger); unsloth's offloading is not modelled
        record.update(memory.predict(model.config, method_cfg, seq_len, args.per_device_train_batch_size,
                                     bool(args.gradient_checkpointing), bool(args.use_liger_kernel),
                                     bf16_adapters))  # fmt: skip
    optimizer = methods.build_optimizer(model, method_cfg, args.learning_rate, args.weight_decay)
    callback = PeftBenchCallback(
        results_dir=None,
        run_id=record["run_id"],
        warmup_steps=cfg.run.warmup_steps,
        save_adapter=False,
    )
    record["trl_step_metrics"] = profiles.trl_step_metrics(cfg)
    record["profiled_steps"] = int(cfg.run.get("profile_steps") or 0)  # profiled steps are slower: not for tokens/s
    record["memory_traced_steps"] = int(cfg.run.get("memory_trace_steps") or 0)  # slower too
    trainer = sft_trainer_class(record["trl_step_metrics"])(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=[callback, *profiler_callbacks(record["profiled_steps"], int(cfg.run.warmup_steps), run_dir,
                                                 record["memory_traced_steps"])],
        optimizers=(optimizer, None),
    )
    record.update({k: v for k, v in engines.trainer_settings(cfg, trainer.args, trainer.model).items()
                   if k not in record})  # fmt: skip
    console.quiet_trainer(trainer)
    trainer.train()

    if eval_set is not None:
        t1 = time.perf_counter()
        trainer.evaluate()
        record["time_eval_loss_s"] = time.perf_counter() - t1
    if cfg.run.save_adapter:
        from peftbench.callback import save_trained_weights

        t2 = time.perf_counter()
        record["adapter_bytes"] = save_trained_weights(trainer.model, run_dir / "adapter")
        record["time_save_s"] = time.perf_counter() - t2
    record.update(callback.record())
    record["mergeable"] = method.mergeable
    record.update(evaluate.evaluate_trained(cfg, trainer.model, tokenizer, method))  # after saving: merging changes it
    return record


def profiler_callbacks(steps: int, warmup_steps: int, run_dir: Path, memory_trace_steps: int = 0) -> list:
    """run.profile_steps=N: torch.profiler over the N steps after the warm-up; run.memory_trace_steps=N: the tensors
    alive at the peak of the first N steps. Both into <point>/profile/."""
    from peftbench.profiling import PeakMemoryTrace, StepProfiler

    return ([StepProfiler(run_dir / "profile", start=warmup_steps, count=steps)] if steps else []) + (
        [PeakMemoryTrace(run_dir / "profile", memory_trace_steps)] if memory_trace_steps else []
    )


def failure_status(exc: BaseException) -> str:
    """`invalid` for input errors, `oom` for out-of-memory (also when wrapped by another exception), else `failed`."""
    import torch

    if isinstance(exc, engines.EngineUnavailable):
        return "skipped"
    if isinstance(exc, engines.EngineChildError):
        return exc.status
    if isinstance(exc, INPUT_ERRORS):
        return "invalid"
    seen: BaseException | None = exc
    for _ in range(16):  # a bounded walk down the cause/context chain
        if seen is None:
            break
        text = str(seen).lower()
        if isinstance(seen, torch.OutOfMemoryError) or "out of memory" in text or "cublas_status_alloc_failed" in text:
            return "oom"
        seen = seen.__cause__ or seen.__context__
    return "failed"


def run_point(cfg: DictConfig) -> dict[str, Any]:
    """Run one point and write its record; failures become records too. Returns the record.

    Resume: a point whose record says `ok` is skipped (unless run.force=true); a point with no record, or a
    failed/oom/invalid one, runs again, since its cause may be fixed. The point is held under a lock, so a second
    sweep into the same folder waits for it and then skips it.
    """
    run_id = run_id_for(cfg)
    results_dir = Path(cfg.run.results_dir)
    record = base_record(cfg, run_id)
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
            validate(cfg)
            base = evaluate.ensure_base(cfg)  # the untrained model's scores: evaluated once, then read from results_dir
            record = engines.train_in_child(cfg, record) if engines.needs_child(cfg) else train_point(cfg, record)
            record.update(evaluate.deltas(record, base))
            record["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - every failure is kept as a row, then the sweep goes on
            record["status"] = failure_status(exc)
            plain = record["status"] in ("invalid", "skipped") or isinstance(exc, engines.EngineChildError)
            record["error"] = str(exc) if plain else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, engines.EngineChildError):
                record["traceback"] = exc.child_traceback
            elif record["status"] not in ("invalid", "skipped"):
                record["traceback"] = traceback.format_exc(limit=8)
            log.error("%s: %s", run_id, records.scrub(record["error"]))
        record["time_total_s"] = time.perf_counter() - start
        if main_rank:
            records.write_record(results_dir, record)
    release_memory()
    return record


def release_memory() -> None:
    """Free the finished point's tensors before the next point of an in-process sweep."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
