"""One sweep point, read top to bottom: validate -> load -> prepare method -> SFTTrainer(callback) -> record.

Every failure after the config composed becomes a record with a status (`invalid`, `oom`, `failed`), so a sweep keeps
going and the table keeps the row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import __version__, data, methods, models, records

log = logging.getLogger("peftbench")

# Exceptions that mean "the input is wrong": reported as status `invalid`, with their message alone.
INPUT_ERRORS = (methods.MethodError, models.ModelSourceError, data.DataError)


def method_config(cfg: DictConfig) -> dict[str, Any]:
    """The method's YAML plus the recipe's per-method overrides (e.g. the family sweep's BitFit biases)."""
    method = OmegaConf.to_container(cfg.method, resolve=True)
    overrides = cfg.get("method_overrides")
    overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
    return {**method, **(overrides.get(method["name"]) or {})}


def run_id_for(cfg: DictConfig) -> str:
    """Stable id from everything that changes the result, so a rerun of the same point finds its record."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("run", None)
    digest = hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg.method.name}-{cfg.model.name}-s{cfg.train.seed}-{digest}"


def sft_config(cfg: DictConfig, method_cfg: dict[str, Any], output_dir: Path):
    """TRL's SFTConfig from the `train` group; unknown keys fail with the closest valid one named."""
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
    train["learning_rate"] = train.get("learning_rate") or method_cfg["learning_rate"]
    train.setdefault("report_to", "none")
    train.setdefault("save_strategy", "no")
    return SFTConfig(output_dir=str(output_dir), include_num_input_tokens_seen="non_padding", **train)


def validate(cfg: DictConfig) -> Any:
    """Everything checkable before weights load; returns the architecture config it read on the way."""
    method_cfg = method_config(cfg)
    methods.get_method(method_cfg["name"])
    models.check_source(cfg.model.name_or_path)
    if cfg.model.get("tokenizer"):
        models.check_source(cfg.model.tokenizer, "model.tokenizer")
    data.check_local_files(cfg.data)
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
        "engine": cfg.get("engine", {}).get("name", "peft") if cfg.get("engine") else "peft",
        "model": cfg.model.name,
        "model_source": cfg.model.name_or_path,
        "dataset": cfg.data.name,
        "seed": cfg.train.seed,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "peftbench_version": __version__,
    }


def train_point(cfg: DictConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Load, prepare, train and measure one point; fills and returns `record`."""
    import torch
    from peft import get_peft_model
    from trl import SFTTrainer

    from peftbench.callback import PeftBenchCallback

    method_cfg = method_config(cfg)
    method = methods.get_method(method_cfg["name"])
    run_dir = Path(cfg.run.results_dir) / record["run_id"]
    torch.manual_seed(cfg.train.seed)

    t0 = time.perf_counter()
    tokenizer = models.load_tokenizer(cfg.model)
    model = models.load_model(cfg.model, methods.quantization_config(method_cfg), vocab_size=len(tokenizer))
    record.update(models.provenance(cfg.model, model))
    train_set, eval_set = data.load_train_eval(cfg.data)
    record["dataset_fingerprint"] = data.fingerprint(train_set)
    record["train_examples"] = len(train_set)
    record["time_load_s"] = time.perf_counter() - t0

    record["method_info"] = methods.prepare_model(model, method_cfg)
    tokenizer_folder = models.local_folder(cfg.model.get("tokenizer") or cfg.model.name_or_path)
    peft_config = methods.build_peft_config(method_cfg, tokenizer_folder)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    args = sft_config(cfg, method_cfg, run_dir / "checkpoints")
    optimizer = methods.build_optimizer(model, method_cfg, args.learning_rate, args.weight_decay)
    callback = PeftBenchCallback(
        results_dir=None,
        run_id=record["run_id"],
        warmup_steps=cfg.run.warmup_steps,
        save_adapter=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        callbacks=[callback],
        optimizers=(optimizer, None),
    )
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
    return record


def failure_status(exc: BaseException) -> str:
    import torch

    if isinstance(exc, INPUT_ERRORS):
        return "invalid"
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom"
    return "failed"


def run_point(cfg: DictConfig) -> dict[str, Any]:
    """Run one point and write its record; failures become records too. Returns the record."""
    run_id = run_id_for(cfg)
    results_dir = Path(cfg.run.results_dir)
    record = base_record(cfg, run_id)
    start = time.perf_counter()
    try:
        validate(cfg)
        record = train_point(cfg, record)
        record["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - every failure is kept as a row, then the sweep goes on
        record["status"] = failure_status(exc)
        record["error"] = str(exc) if record["status"] == "invalid" else f"{type(exc).__name__}: {exc}"
        if record["status"] != "invalid":
            record["traceback"] = traceback.format_exc(limit=8)
        log.error("%s: %s", run_id, record["error"])
    record["time_total_s"] = time.perf_counter() - start
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
