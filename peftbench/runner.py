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
    __version__, checks, console, data, distributed, engines, errors, evaluate, memory, methods, models, profiles, records,
)

log = logging.getLogger("peftbench")

INPUT_ERRORS = errors.InputError  # every module's input error derives from it: status `invalid`, its message alone


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


def train_options(cfg: DictConfig, method_cfg: dict[str, Any], overrides: dict | None = None) -> dict[str, Any]:
    """The `train` group as SFTConfig keyword arguments; unknown keys fail with the closest valid one."""
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
    train.update(methods.train_args(method_cfg))  # a method's own Trainer options (GaLore's optim, ...)
    train.update(overrides or {})
    train["learning_rate"] = train.get("learning_rate") or method_cfg["learning_rate"]
    train.setdefault("report_to", "none")
    train.setdefault("save_strategy", "no")
    return train


def sft_config(cfg: DictConfig, method_cfg: dict[str, Any], output_dir: Path, overrides: dict | None = None):
    """TRL's SFTConfig from the `train` group (plus the profile's choices)."""
    from trl import SFTConfig

    train = train_options(cfg, method_cfg, overrides)
    return SFTConfig(output_dir=str(output_dir), include_num_input_tokens_seen="non_padding", **train)


def train_group_errors(cfg: DictConfig, method_cfg: dict[str, Any]) -> tuple[list[str], Any]:
    """(errors, SFTConfig): the train group built into TRL's SFTConfig now, so its types and values are checked by
    the library before any model loads; TrainingArguments' ValueErrors are reported with the field they name."""
    import torch
    from trl import SFTConfig

    try:
        train = train_options(cfg, method_cfg)
    except methods.MethodError as exc:
        return [str(exc)], None
    errors = checks.train_type_errors(train, SFTConfig)
    if train.get("fp16") and not train.get("use_cpu") and not torch.cuda.is_available():
        errors.append("train.fp16: true, but this machine has no CUDA GPU; accelerate would train in float32 without "
                      "telling (fp16 autocast needs a GPU). Set train.fp16=false, or run on a GPU.")  # fmt: skip
    if errors:
        return errors, None
    try:  # output_dir is only stored: TrainingArguments creates nothing at construction
        args = SFTConfig(output_dir=str(Path(cfg.run.results_dir) / "_validate"),
                         include_num_input_tokens_seen="non_padding", **train)  # fmt: skip
    except (ValueError, TypeError) as exc:
        return [checks.library_error(exc, train)], None
    return errors, args


DEFAULT_THROUGHPUT_WARMUP = 2


def planned_steps(args: Any, examples: int | None) -> int | None:
    """The optimizer steps a point trains: train.max_steps, or epochs x steps per epoch (None when unknown)."""
    import math

    if args.max_steps > 0:
        return int(args.max_steps)
    if not examples:
        return None
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * distributed.world_size()
    return math.ceil(examples / per_step) * math.ceil(args.num_train_epochs)


def throughput_warmup(cfg: DictConfig, steps: int | None) -> int:
    """run.warmup_steps, or by default 2 steps, fewer when the point trains fewer than 3 (at least one is measured).
    An explicit value that leaves no step is refused by validation rather than silently measuring every step."""
    value = cfg.run.get("warmup_steps")
    if value is not None:
        return int(value)
    return DEFAULT_THROUGHPUT_WARMUP if steps is None else max(0, min(DEFAULT_THROUGHPUT_WARMUP, steps - 1))


def step_errors(cfg: DictConfig, args: Any, examples: int | None) -> list[str]:
    """Warm-up against the steps a point trains, and one optimizer step's examples against the data's size."""

    errors = []
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * distributed.world_size()
    if examples is not None and examples < per_step:
        errors.append(f"train.per_device_train_batch_size: one optimizer step takes {args.per_device_train_batch_size}"
                      f" x {args.gradient_accumulation_steps} (gradient_accumulation_steps) x "
                      f"{distributed.world_size()} (processes) = {per_step} examples, but only {examples} train. Lower "
                      f"the batch size, or give more data.")  # fmt: skip
    steps = planned_steps(args, examples)
    warmup = cfg.run.get("warmup_steps")
    if steps is not None and warmup is not None and warmup >= steps:
        errors.append(f"run.warmup_steps: {warmup} >= the {steps} optimizer steps this point trains, so no step would "
                      f"be left to measure throughput on. Set run.warmup_steps below {steps} (e.g. "
                      f"run.warmup_steps={min(2, steps - 1)}), or raise train.max_steps.")  # fmt: skip
    if steps is not None and args.warmup_steps >= 1 and args.warmup_steps >= steps:
        errors.append(f"train.warmup_steps: {args.warmup_steps:g} >= the {steps} optimizer steps this point trains, "
                      f"so the learning rate would never reach its value. Set train.warmup_steps below {steps}.")
    return errors


def max_length_errors(cfg: DictConfig, model_config: Any) -> list[str]:
    limit = getattr(model_config, "max_position_embeddings", None) if model_config is not None else None
    length = data.sequence_length(cfg)
    if limit and length > limit:
        field = "data.seq_len" if data.is_synthetic(cfg.data) else "train.max_length"
        return [f"{field}: {length} tokens, but the model's max_position_embeddings is {limit}. Set {field} to at "
                f"most {limit}."]  # fmt: skip
    return []


_LENGTH_REPORTS: dict[str, dict[str, Any]] = {}


def data_plan(cfg: DictConfig, args: Any, tokenizer: Any = None) -> tuple[Any, dict[str, Any]]:
    """(train dataset after data.max_length_policy, record fields): the rows read and mapped, their token lengths
    measured as SFTTrainer prepares them, and what train.max_length will do, as counts (data.apply_policy)."""
    from datasets import Dataset

    train = Dataset.from_dict(data.rendered_split(cfg.data, "train"))
    key = json.dumps([OmegaConf.to_container(cfg.data, resolve=True), str(cfg.model.get("tokenizer") or
                      cfg.model.name_or_path), args.max_length, args.truncation_mode, args.packing,
                      args.completion_only_loss], sort_keys=True, default=str)  # fmt: skip
    if key not in _LENGTH_REPORTS:  # a sweep's points share their data: measured once a process
        tokenizer = tokenizer if tokenizer is not None else data.measuring_tokenizer(cfg.model)
        _LENGTH_REPORTS.clear()
        _LENGTH_REPORTS[key] = data.length_report(train, tokenizer, args)
    report = _LENGTH_REPORTS[key]
    source = data.split_spec(cfg.data, "train")
    return data.apply_policy(train, report, cfg.data.get("max_length_policy") or "warn", f"`{source}`")


def model_config_checked(model_cfg: Any) -> Any:
    """models.load_config, with transformers' OSError (no config, unreachable hub) as an input error naming the field."""
    try:
        return models.load_config(model_cfg)
    except (OSError, ValueError) as exc:
        field = "model.config" if model_cfg.get("config") else "model.name_or_path"
        source = model_cfg.get("config") or model_cfg.name_or_path
        raise models.ModelSourceError(f"{field}: cannot read the model config of `{source}` ({type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else ''}). Give a folder with "
                                      f"config.json, a hub id that can be reached, or a shipped config.") from None


_CAUGHT: list[BaseException] = []  # the input errors of the validation in progress (one process validates at a time)


def _gather(errors: list[str], check: Any, *args: Any) -> Any:
    """Run one check; an input error becomes a line of `errors` (so one validation lists every problem)."""
    try:
        return check(*args)
    except INPUT_ERRORS as exc:
        _CAUGHT.append(exc)
        errors.extend(str(exc).split("\n") if isinstance(exc, (checks.ConfigError, data.DataError)) else [str(exc)])
        return None


def _refuse(errors: list[str]) -> None:
    """Raise every problem as one ConfigError; a single library-typed error (EvalError, MethodError...) keeps its type."""
    unique = list(dict.fromkeys(errors))
    if len(_CAUGHT) == 1 and unique == list(dict.fromkeys(str(_CAUGHT[0]).split("\n"))):
        raise _CAUGHT[0]
    raise checks.ConfigError("\n".join(unique))


def validate(cfg: DictConfig) -> Any:
    """Everything checkable before weights load, in one pass: every problem is listed with its field and fix.

    Options and their ranges, the results folder, model and tokenizer sources, the train group built into TRL's
    SFTConfig, every row of local data files read and mapped, their token lengths against train.max_length
    (data.max_length_policy), warm-up and batch against the data, then whether the engine can run here (a point it
    cannot run is `skipped`, raised last). Returns the architecture config it read on the way."""
    _CAUGHT.clear()
    model_errors = checks.model_errors(cfg)
    _gather(model_errors, models.check_source, cfg.model.name_or_path)
    sources_ok = not model_errors
    errors = checks.option_errors(cfg) + model_errors + checks.results_dir_errors(cfg.run.results_dir)
    method_cfg = method_config(cfg)
    _gather(errors, methods.get_method, method_cfg["name"])
    if cfg.model.get("tokenizer"):
        _gather(errors, models.check_source, cfg.model.tokenizer, "model.tokenizer")
    if not data.is_synthetic(cfg.data):
        _gather(errors, data.check_local_files, cfg.data)
    for note in filter(None, [data.eval_file_spec(cfg.data)[1]] if not data.is_synthetic(cfg.data) else []):
        data.warn_once(f"peftbench: {note}")
    _gather(errors, evaluate.validate_point, cfg)
    _gather(errors, distributed.check_launch, cfg.train)
    _gather(errors, profiles.check, cfg)
    train_errors, args = train_group_errors(cfg, method_cfg)
    errors += train_errors
    model_config = None
    if sources_ok and not [e for e in errors if e.startswith(("model.", "method"))]:
        model_config = _gather(errors, model_config_checked, cfg.model)
        if model_config is not None:
            _gather(errors, methods.validate, method_cfg, model_config, cfg.model.get("tokenizer") or cfg.model.name_or_path)
            _gather(errors, methods.check_model, method_cfg, cfg.model)
            errors += max_length_errors(cfg, model_config)
    examples = None
    if args is not None and data.is_synthetic(cfg.data):
        examples = int(cfg.data.num_samples)
    elif args is not None and data.split_file(cfg.data, "train") is not None and not [
            e for e in errors if e.startswith(("data.", "model.tokenizer", "model.name_or_path"))]:  # fmt: skip
        plan = _gather(errors, data_plan, cfg, args)
        examples = plan[1]["train_examples_used"] if plan else None
    if args is not None:
        errors += step_errors(cfg, args, examples)
    try:
        engines.check(cfg, method_cfg["name"])  # EngineUnavailable: the point is skipped, with the reason
    except INPUT_ERRORS as exc:
        errors.append(str(exc))
    except engines.EngineUnavailable:
        if errors:
            _refuse(errors)
        raise
    if errors:
        _refuse(errors)
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
        record["memory_budget_enforced_gib"] = profiles.enforce_budget(cfg)  # before any allocation of this point

    t0 = time.perf_counter()
    engine = engines.get(cfg)
    seq_len = data.sequence_length(cfg)
    bf16_adapters = profiles.bf16_adapters(cfg, method_cfg)
    if engine.loads_model:  # unsloth's FastLanguageModel loads the model and sets up the adapter (engines.unsloth_load)
        model, tokenizer, engine_info = engines.unsloth_load(cfg, method_cfg, seq_len)
        record.update(engine_info)
    else:
        tokenizer = data.tokenizer_for(cfg)
        if not data.is_synthetic(cfg.data):  # the data is read, mapped and measured before the model loads
            train_set, eval_set, data_fields = load_data(cfg, method_cfg, tokenizer)
        model = models.load_model(cfg.model, methods.quantization_config(method_cfg), vocab_size=len(tokenizer))
    record.update(models.provenance(cfg.model, model))
    record["vocab_size"] = model.config.vocab_size
    if engine.loads_model or data.is_synthetic(cfg.data):
        train_set, eval_set, data_fields = load_data(cfg, method_cfg, tokenizer, model.config.vocab_size)
    record.update(data_fields)
    record["dataset_fingerprint"] = data.fingerprint(train_set)
    record["time_load_s"] = time.perf_counter() - t0

    if not engine.loads_model:
        record["method_info"] = methods.prepare_model(model, method_cfg)
        tokenizer_folder = (
            None if data.uses_stand_in_tokenizer(cfg)
            else models.local_folder(cfg.model.get("tokenizer") or cfg.model.name_or_path)
        )
        peft_config = methods.build_peft_config(method_cfg, tokenizer_folder)
        if peft_config is not None:
            record["adapter_dtype"] = "base (bf16)" if bf16_adapters else "float32"
            model = get_peft_model(model, peft_config, autocast_adapter_dtype=not bf16_adapters)
            folder = functools.partial(models.local_folder, cfg.model.name_or_path)
            record["method_info"].update(methods.initialise(model, method_cfg, folder))
    choices, profile_info = profiles.choose(cfg, method_cfg, model.config)
    record.update(profile_info)
    args = sft_config(cfg, method_cfg, run_dir / "checkpoints", choices)
    if engine.modelled:  # the memory model describes stock PEFT (+ Liger); unsloth's offloading is not modelled
        record.update(methods.predict_memory(method_cfg, model.config, seq_len, args.per_device_train_batch_size,
                                             bool(args.gradient_checkpointing), bool(args.use_liger_kernel),
                                             bf16_adapters, plan=profile_info.get("checkpointing_plan"),
                                             compiled=profiles.compiled(cfg)))  # fmt: skip
    optimizer = methods.build_optimizer(model, method_cfg, args.learning_rate, args.weight_decay)
    warmup = throughput_warmup(cfg, planned_steps(args, len(train_set)))
    # The runner writes the record itself (with the recipe's identity), so the callback only measures.
    callback = PeftBenchCallback(run_id=record["run_id"], warmup_steps=warmup, write=False, log_to_trainer=False,
                                 reset_peaks=True)  # fmt: skip
    record["trl_step_metrics"] = profiles.trl_step_metrics(cfg)
    record["profiled_steps"] = int(cfg.run.get("profile_steps") or 0)  # profiled steps are slower: not for tokens/s
    record["memory_traced_steps"] = int(cfg.run.get("memory_trace_steps") or 0)  # slower too
    trainer = sft_trainer_class(record["trl_step_metrics"])(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=[callback, *profiler_callbacks(record["profiled_steps"], warmup, run_dir,
                                                 record["memory_traced_steps"]), *methods.trainer_callbacks(method_cfg)],
        optimizers=(optimizer, None),
    )
    record.update({k: v for k, v in engines.trainer_settings(cfg, trainer.args, trainer.model).items()
                   if k not in record})  # fmt: skip
    console.quiet_trainer(trainer)
    trainer.train()
    record.update(callback.record())  # first: the runner's own eval and save times below are after training
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


def load_data(cfg: DictConfig, method_cfg: dict[str, Any], tokenizer: Any, vocab_size: int | None = None):
    """(train, eval, record fields): synthetic rows, or the mapped rows after data.max_length_policy with the counts
    of what train.max_length does to them (`train_examples`, `train_examples_used`, `examples_truncated`,
    `examples_dropped`)."""
    train_set, eval_set = data.load_train_eval(cfg.data, vocab_size)
    if data.is_synthetic(cfg.data):
        return train_set, eval_set, {"train_examples": len(train_set), "train_examples_used": len(train_set)}
    note = data.eval_file_spec(cfg.data)[1]
    if note:
        data.warn_once(f"peftbench: {note}")
    args = sft_config(cfg, method_cfg, Path(cfg.run.results_dir) / "_validate")
    train_set, fields = data_plan(cfg, args, tokenizer)
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


def predicted_fit(cfg: DictConfig, record: dict[str, Any], model_config: Any) -> None:
    """Before the model loads: a point whose chosen checkpointing plan is predicted not to fit the GPU's budget (or
    profile.memory_budget_gib) is flagged with the predicted peak and the plan that would fit; with
    run.skip_predicted_oom=true it becomes a `skipped` row instead of loading and dying with CUDA out of memory."""
    if model_config is None:
        return
    choice = profiles.plan_point(cfg, method_config(cfg), model_config, profiles.gpu_memory_gib(),
                                 profiles.local_gpu_name())  # fmt: skip
    message = choice.warning()
    if message is None:
        return
    record.update(profiles.plan_fields(choice))
    record["predicted_peak_gib"] = choice.predicted_peak_gib
    if cfg.run.get("skip_predicted_oom"):
        raise errors.Skipped(f"run.skip_predicted_oom: {message}")
    console.say(f"warning: {record['run_id']}: {message} (run.skip_predicted_oom=true skips such a point)")


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
            model_config = validate(cfg)
            predicted_fit(cfg, record, model_config)
            base = evaluate.ensure_base(cfg)  # the untrained model's scores: evaluated once, then read from results_dir
            record = engines.train_in_child(cfg, record) if engines.needs_child(cfg) else train_point(cfg, record)
            record.update(evaluate.deltas(record, base))
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
