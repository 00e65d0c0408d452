"""The base row: the untrained model's scores on the point's tasks, evaluated once per model + tasks + options +
library versions and cached in the results folder; every method's record reads its score as a delta over it."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import models, records
from peftbench.errors import failure_fields
from peftbench.evaluate import (
    SHIPPED_TASKS,
    all_tasks,
    evaluate_model,
    is_yaml_path,
    shipped_task_config,
    shipped_task_names,
    skip_reason,
)

log = logging.getLogger("peftbench")


def base_key(cfg: DictConfig) -> str:
    """Hash of what the base score depends on: model, tasks (their YAML and data files), options, lm-eval version."""
    import lm_eval

    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    shipped = shipped_task_names()
    task_content = {}
    for name in all_tasks(cfg.eval):
        if name in shipped:
            files = shipped_task_config(name, cfg.eval.get("data_dir"))["dataset_kwargs"]["data_files"]
            task_content[name] = [
                (SHIPPED_TASKS / f"{name}.yaml").read_text(),
                {split: models.sha256_file(path) for split, path in sorted(files.items())},
            ]
        elif is_yaml_path(name):
            task_content[name] = Path(name).expanduser().read_text()
    blob = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "eval": {k: v for k, v in eval_cfg.items() if k not in ("data_dir", "base", "on_random_init")},
        "tasks": task_content,
        "lm_eval": getattr(lm_eval, "__version__", None),
        "versions": base_versions(),  # a base row scored under other torch/transformers/peft/trl is not reused
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:10]


BASE_LIBRARIES = ("torch", "transformers", "peft", "trl", "lm_eval")


def base_versions() -> dict[str, str | None]:
    """The installed versions a base score depends on (read from package metadata, nothing imported)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in BASE_LIBRARIES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def base_run_id(cfg: DictConfig) -> str:
    return f"base-{cfg.model.name}-{base_key(cfg)}"


def ensure_base(cfg: DictConfig) -> dict[str, Any] | None:
    """The base model's record for this model + tasks + options: read from the results folder, else evaluated once.

    Runs in whichever sweep point gets here first (the first point of a sequential multirun); a file lock makes
    parallel launchers wait for that one instead of evaluating again. A failed base evaluation is recorded as a
    failed `base` row and the point goes on without deltas.
    """
    if skip_reason(cfg) or not cfg.eval.get("base", True):
        return None
    results_dir = Path(cfg.run.results_dir)
    run_id = base_run_id(cfg)
    with records.locked(results_dir, name=f".{run_id}.lock"):
        cached = records.finished_record(results_dir, run_id)
        if cached and cached.get("status") == "ok" and cached.get("base_versions", base_versions()) != base_versions():
            log.info(
                "base scores in %s were evaluated under %s, not %s: evaluating again",
                results_dir / run_id,
                cached.get("base_versions"),
                base_versions(),
            )
            cached = None
        if cached and cached.get("status") == "ok":
            log.info("base scores: cached in %s", results_dir / run_id)
            return cached
        log.info(
            "base model: evaluating the untrained %s once on %s (later points read its scores)",
            cfg.model.name,
            ", ".join(all_tasks(cfg.eval)),
        )
        record = evaluate_base(cfg, run_id)
        records.write_record(results_dir, record)
        log.info(
            "base model: %s in %.0f s%s",
            record["status"],
            record.get("time_total_s", 0),
            f", score {record['score']:.4g}" if isinstance(record.get("score"), (int, float)) else "",
        )
    return record if record["status"] == "ok" else None


def evaluate_base(cfg: DictConfig, run_id: str) -> dict[str, Any]:
    """Load the untrained model (full precision, as the recipe's model group loads it) and score it."""
    from peftbench import __version__

    record: dict[str, Any] = {
        "run_id": run_id,
        "run_name": cfg.run.name,
        "status": "running",
        "method": "base",
        "model": cfg.model.name,
        "model_source": cfg.model.name_or_path,
        "dataset": ",".join(all_tasks(cfg.eval)),
        "base_key": run_id.rsplit("-", 1)[-1],
        "merged": False,
        "config": {
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "eval": OmegaConf.to_container(cfg.eval, resolve=True),
        },
        "peftbench_version": __version__,
        "base_versions": base_versions(),
    }
    start = time.perf_counter()
    try:
        tokenizer = models.load_tokenizer(cfg.model)
        model = models.load_model(cfg.model, None, vocab_size=len(tokenizer))
        record.update(models.provenance(cfg.model, model))
        record["time_load_s"] = time.perf_counter() - start
        record.update(evaluate_model(model, tokenizer, cfg.eval))
        record["status"] = "ok"
        del model
    except Exception as exc:  # noqa: BLE001 - a failed base row is kept; the sweep goes on without deltas
        record.update(failure_fields(exc))
        log.error("%s: %s", run_id, record["error"])
    record["time_total_s"] = time.perf_counter() - start
    models.release_memory()
    return record


def deltas(record: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    """Score minus the base model's score, for the headline and for the forgetting check."""
    out: dict[str, Any] = {}
    if not base:
        return out
    out["base_run_id"] = base["run_id"]
    for score, delta in (("score", "score_delta"), ("forgetting_score", "forgetting_delta")):
        if record.get(score) is not None and base.get(score) is not None:
            out[delta] = record[score] - base[score]
    return out
