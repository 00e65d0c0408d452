"""Everything checkable before weights load, in one pass (`validate`): every problem of a point is listed with its
field and fix, as one ConfigError (a single library-typed error keeps its type), before any model loads.

Options and their ranges (checks.py), the results folder, model and tokenizer sources, the train group built into
TRL's SFTConfig, every row of local data files read and mapped, their token lengths against train.max_length
(`data_plan`, data.max_length_policy), warm-up and batch against the data, then whether the engine can run here.
The runner calls it at the start of every point; the sweep calls it on every point before the first one runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import checks, data, distributed, engines, errors, evaluate, methods, models, profiles
from peftbench.point import Point, train_options

INPUT_ERRORS = errors.InputError  # every module's input error derives from it: status `invalid`, its message alone


def train_group_errors(point: Point) -> tuple[list[str], Any]:
    """(errors, SFTConfig): the train group built into TRL's SFTConfig now, so its types and values are checked by
    the library before any model loads; TrainingArguments' ValueErrors are reported with the field they name."""
    import torch
    from trl import SFTConfig

    try:
        train = train_options(point)
    except methods.MethodError as exc:
        return [str(exc)], None
    errors = checks.train_type_errors(train, SFTConfig)
    if train.get("fp16") and not train.get("use_cpu") and not torch.cuda.is_available():
        errors.append(
            "train.fp16: true, but this machine has no CUDA GPU; accelerate would train in float32 without "
            "telling (fp16 autocast needs a GPU). Set train.fp16=false, or run on a GPU."
        )
    if errors:
        return errors, None
    try:  # output_dir is only stored: TrainingArguments creates nothing at construction
        args = SFTConfig(
            output_dir=str(Path(point.cfg.run.results_dir) / "_validate"),
            include_num_input_tokens_seen="non_padding",
            **train,
        )
    except (ValueError, TypeError) as exc:
        return [checks.library_error(exc, train)], None
    return errors, args


def planned_steps(args: Any, examples: int | None) -> int | None:
    """The optimizer steps a point trains: train.max_steps, or epochs x steps per epoch (None when unknown)."""
    import math

    if args.max_steps > 0:
        return int(args.max_steps)
    if not examples:
        return None
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * distributed.world_size()
    return math.ceil(examples / per_step) * math.ceil(args.num_train_epochs)


def step_errors(point: Point, args: Any, examples: int | None) -> list[str]:
    """Warm-up against the steps a point trains, and one optimizer step's examples against the data's size."""

    errors = []
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * distributed.world_size()
    if examples is not None and examples < per_step:
        errors.append(
            f"train.per_device_train_batch_size: one optimizer step takes {args.per_device_train_batch_size}"
            f" x {args.gradient_accumulation_steps} (gradient_accumulation_steps) x "
            f"{distributed.world_size()} (processes) = {per_step} examples, but only {examples} train. Lower "
            f"the batch size, or give more data."
        )
    steps = planned_steps(args, examples)
    warmup = point.warmup_steps
    compiled = profiles.compile_mode(point.profile, point.method, point.engine)[0] != "off"
    if compiled and (warmup == 0 or (warmup is None and steps is not None and steps < 2)):
        errors.append(
            "run.warmup_steps: no warm-up step with profile.compile=regional, so the first step's compile "
            "would count in tokens/s. Set run.warmup_steps=1 or more (and train.max_steps above it), or "
            "profile.compile=off."
        )
    if steps is not None and warmup is not None and warmup >= steps:
        errors.append(
            f"run.warmup_steps: {warmup} >= the {steps} optimizer steps this point trains, so no step would "
            f"be left to measure throughput on. Set run.warmup_steps below {steps} (e.g. "
            f"run.warmup_steps={min(2, steps - 1)}), or raise train.max_steps."
        )
    if steps is not None and args.warmup_steps >= 1 and args.warmup_steps >= steps:
        errors.append(
            f"train.warmup_steps: {args.warmup_steps:g} >= the {steps} optimizer steps this point trains, "
            f"so the learning rate would never reach its value. Set train.warmup_steps below {steps}."
        )
    return errors


def max_length_errors(point: Point, model_config: Any) -> list[str]:
    limit = getattr(model_config, "max_position_embeddings", None) if model_config is not None else None
    length = point.seq_len
    if limit and length is not None and length > limit:
        field = "data.seq_len" if point.synthetic else "train.max_length"
        return [
            f"{field}: {length} tokens, but the model's max_position_embeddings is {limit}. Set {field} to at "
            f"most {limit}."
        ]
    return []


_LENGTH_REPORTS: dict[str, dict[str, Any]] = {}


def data_plan(data_cfg: Any, model_cfg: Any, args: Any, tokenizer: Any = None) -> tuple[Any, dict[str, Any]]:
    """(train dataset after data.max_length_policy, record fields): the rows read and mapped, their token lengths
    measured as SFTTrainer prepares them, and what train.max_length will do, as counts (data.apply_policy)."""
    from datasets import Dataset

    train = Dataset.from_dict(data.rendered_split(data_cfg, "train"))
    key = json.dumps(
        [
            OmegaConf.to_container(data_cfg, resolve=True),
            str(model_cfg.get("tokenizer") or model_cfg.name_or_path),
            args.max_length,
            args.truncation_mode,
            args.packing,
            args.completion_only_loss,
        ],
        sort_keys=True,
        default=str,
    )
    if key not in _LENGTH_REPORTS:  # a sweep's points share their data: measured once a process
        tokenizer = tokenizer if tokenizer is not None else data.measuring_tokenizer(model_cfg)
        _LENGTH_REPORTS.clear()
        _LENGTH_REPORTS[key] = data.length_report(train, tokenizer, args)
    report = _LENGTH_REPORTS[key]
    source = data.split_spec(data_cfg, "train")
    return data.apply_policy(train, report, data_cfg.get("max_length_policy") or "warn", f"`{source}`")


def model_config_checked(model_cfg: Any) -> Any:
    """models.load_config, with transformers' OSError (no config, unreachable hub) as an input error naming the
    field."""
    try:
        return models.load_config(model_cfg)
    except (OSError, ValueError) as exc:
        field = "model.config" if model_cfg.get("config") else "model.name_or_path"
        source = model_cfg.get("config") or model_cfg.name_or_path
        raise models.ModelSourceError(
            f"{field}: cannot read the model config of `{source}` ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Give a folder with "
            f"config.json, a hub id that can be reached, or a shipped config."
        ) from None


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
    """Raise every problem as one ConfigError; a single library-typed error (EvalError, MethodError...) keeps its
    type."""
    unique = list(dict.fromkeys(errors))
    if len(_CAUGHT) == 1 and unique == list(dict.fromkeys(str(_CAUGHT[0]).split("\n"))):
        raise _CAUGHT[0]
    raise checks.ConfigError("\n".join(unique))


def validate(point: Point | DictConfig, folder_errors: list[str] | None = None) -> Any:
    """Everything checkable before weights load, in one pass: every problem is listed with its field and fix.

    Options and their ranges, the results folder, model and tokenizer sources, the train group built into TRL's
    SFTConfig, every row of local data files read and mapped, their token lengths against train.max_length
    (data.max_length_policy), warm-up and batch against the data, then whether the engine can run here (a point it
    cannot run is `skipped`, raised last). Range checks read the resolved values (the method's options with the
    sweep's overrides). Takes the resolved point (a composed config is resolved here) and, where the caller has
    checked the results folder already, its `folder_errors` (each check reads every record). Returns the
    architecture config it read on the way."""
    point = point if isinstance(point, Point) else Point.resolve(point)
    cfg, method_cfg = point.cfg, point.method_cfg
    _CAUGHT.clear()
    model_errors = checks.model_errors(cfg)
    _gather(model_errors, models.check_source, cfg.model.name_or_path)
    sources_ok = not model_errors
    if folder_errors is None:
        folder_errors = checks.results_dir_errors(cfg.run.results_dir)
    errors = checks.option_errors(cfg, method_cfg) + model_errors + folder_errors
    _gather(errors, methods.get_method, method_cfg["name"])
    if cfg.model.get("tokenizer"):
        _gather(errors, models.check_source, cfg.model.tokenizer, "model.tokenizer")
    if not point.synthetic:
        _gather(errors, data.check_local_files, cfg.data)
    for note in filter(None, [data.eval_file_spec(cfg.data)[1]] if not point.synthetic else []):
        data.warn_once(f"peftbench: {note}")
    _gather(errors, evaluate.validate_point, cfg)
    _gather(errors, distributed.check_launch, cfg.train)
    _gather(errors, profiles.check, point.profile, point.method, point.engine)
    train_errors, args = train_group_errors(point)
    errors += train_errors
    model_config = None
    if sources_ok and not [e for e in errors if e.startswith(("model.", "method"))]:
        model_config = _gather(errors, model_config_checked, cfg.model)
        if model_config is not None:
            tokenizer = cfg.model.get("tokenizer") or cfg.model.name_or_path
            _gather(errors, methods.validate, method_cfg, model_config, tokenizer)
            _gather(errors, methods.check_model, method_cfg, cfg.model)
            errors += max_length_errors(point, model_config)
    examples = None
    if args is not None and point.synthetic:
        examples = int(cfg.data.num_samples)
    elif (
        args is not None
        and data.split_file(cfg.data, "train") is not None
        and not [e for e in errors if e.startswith(("data.", "model.tokenizer", "model.name_or_path"))]
    ):
        plan = _gather(errors, data_plan, cfg.data, cfg.model, args)
        examples = plan[1]["train_examples_used"] if plan else None
    if args is not None:
        errors += step_errors(point, args, examples)
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
