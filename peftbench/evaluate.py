"""Quality: lm-eval on the model in memory, plus the base model's row that every method reads as a delta over.

Tasks are named in the recipe's `eval` group: any task of lm-eval's registry by name, a task YAML path, or a task that
ships in `peftbench/tasks/` (the embedded `topics` task, `gsm8k_local`). Shipped tasks read local files whose paths
(`pkg://...`, `data://...`) are resolved here at run time and handed to lm-eval as a config dict, so the YAML stays
data and the data can live anywhere. All names and files are checked by `validate` before any weights load.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import models, records
from peftbench.errors import InputError, did_you_mean

log = logging.getLogger("peftbench")

SHIPPED_TASKS = Path(__file__).parent / "tasks"
DATA_SCHEME = "data://"  # a file under eval.data_dir (default $PEFTBENCH_DATA or ../shared/data)


class EvalError(InputError):
    """An evaluation that cannot run as configured (unknown task, missing data file); raised before weights load."""


# -- task resolution --------------------------------------------------------------------------------------------------
def shipped_task_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED_TASKS.glob("*.yaml"))


def all_tasks(eval_cfg: Any) -> list[str]:
    """The tasks scored for the headline, then those of the forgetting check (each once, in order)."""
    names = list(eval_cfg.get("tasks") or []) + list(eval_cfg.get("forgetting_tasks") or [])
    return list(dict.fromkeys(str(n) for n in names))


def is_yaml_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def resolve_data_file(spec: str, data_dir: str | None) -> str:
    """`data://rel` -> eval.data_dir/rel, `pkg://package/rel` -> inside the installed package, else a plain path."""
    if spec.startswith(DATA_SCHEME):
        if not data_dir:
            raise EvalError(f"`{spec}` needs eval.data_dir (or the PEFTBENCH_DATA environment variable) to be set.")
        return str(Path(data_dir).expanduser() / spec[len(DATA_SCHEME) :])
    return models.resolve_path(spec)


def shipped_task_yaml(name: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((SHIPPED_TASKS / f"{name}.yaml").read_text())


def shipped_data_files(name: str) -> dict[str, str]:
    """The data file specs of a shipped task as written (`pkg://...`, `data://...`), by split."""
    return dict(shipped_task_yaml(name).get("dataset_kwargs", {}).get("data_files", {}))


def shipped_task_config(name: str, data_dir: str | None) -> dict[str, Any]:
    """A shipped task YAML as lm-eval's config dict, with its data files resolved to absolute paths."""
    cfg = shipped_task_yaml(name)
    files = cfg.get("dataset_kwargs", {}).get("data_files", {})
    for split, spec in files.items():
        files[split] = str(Path(resolve_data_file(spec, data_dir)).resolve())
    return cfg


def task_specs(eval_cfg: Any) -> list[str | dict[str, Any]]:
    """What `simple_evaluate(tasks=...)` gets: config dicts for shipped tasks, names or YAML paths otherwise."""
    shipped = shipped_task_names()
    data_dir = eval_cfg.get("data_dir")
    return [shipped_task_config(n, data_dir) if n in shipped else n for n in all_tasks(eval_cfg)]


@functools.lru_cache(maxsize=1)
def registry_task_names() -> frozenset[str]:
    """Every task, group and tag lm-eval knows (indexing its YAML tree takes a few seconds, so once a process)."""
    return frozenset(task_manager(True).all_tasks)


def needs_registry(eval_cfg: Any) -> bool:
    shipped = shipped_task_names()
    return any(n not in shipped and not is_yaml_path(n) for n in all_tasks(eval_cfg))


@functools.lru_cache(maxsize=2)
def task_manager(with_registry: bool):
    """lm-eval's TaskManager; without its registry when only shipped tasks run (skips indexing ~15k YAMLs)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=with_registry)


# -- validation -------------------------------------------------------------------------------------------------------
def validate_point(cfg: DictConfig) -> None:
    """A point's tasks are checked whenever lm-eval is installed (a typo surfaces even on a shape-only run); a point
    whose evaluation is skipped anyway (random init, several processes) also runs where lm-eval is not installed."""
    import importlib.util

    if skip_reason(cfg) and importlib.util.find_spec("lm_eval") is None:
        return
    validate(cfg.get("eval"))


def validate(eval_cfg: Any) -> None:
    """Unknown task names, missing local data files and bad options stop the run here, before any model loads."""
    if eval_cfg is None:
        return
    shipped = shipped_task_names()
    data_dir = eval_cfg.get("data_dir")
    headline = [str(n) for n in eval_cfg.get("tasks") or []]
    for name in all_tasks(eval_cfg):
        field = "eval.tasks" if name in headline else "eval.forgetting_tasks"
        if name in shipped:
            for split, spec in shipped_data_files(name).items():
                path = Path(resolve_data_file(spec, data_dir))
                if not path.is_file():
                    hint = (
                        " Set eval.data_dir (or PEFTBENCH_DATA) to the folder that holds it."
                        if spec.startswith(DATA_SCHEME)
                        else ""
                    )
                    raise EvalError(
                        f"{field}: the task `{name}` reads its {split} split from `{spec}`, and there is no file "
                        f"at `{path}`.{hint}"
                    )
        elif is_yaml_path(name):
            if not Path(name).expanduser().is_file():
                raise EvalError(f"{field}: no task YAML at `{name}`.")
        elif name not in registry_task_names():
            known = sorted(registry_task_names() | set(shipped))
            hint = did_you_mean(name, known, n=3)
            raise EvalError(
                f"{field}: unknown task `{name}`: not one of lm-eval's {len(registry_task_names())} registered "
                f"tasks, groups or tags, nor a task shipped with peftbench ({', '.join(shipped)}).{hint} "
                f"`lm-eval ls tasks` lists them; a path to a task YAML also works."
            )
    limit = eval_cfg.get("limit")
    if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
        raise EvalError(f"eval.limit: {limit!r} is not a positive number (a count, or a fraction below 1), or null.")
    batch = eval_cfg.get("batch_size", 1)
    if not (isinstance(batch, int) and batch > 0):
        raise EvalError(f"eval.batch_size: {batch!r} is not a positive integer.")
    shots = eval_cfg.get("num_fewshot")
    if shots is not None and not (isinstance(shots, int) and shots >= 0):
        raise EvalError(f"eval.num_fewshot: {shots!r} is not a non-negative integer, or null (the task's default).")


# -- running lm-eval --------------------------------------------------------------------------------------------------
def live_lm(model, tokenizer, batch_size: int):
    """lm-eval's HFLM wrapping a model already in memory (no reload, no copy).

    A PeftModel works as is: HFLM drops the logits of prompt-tuning's virtual tokens itself (tested).
    """
    from lm_eval.models.huggingface import HFLM

    model.eval()
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def run_tasks(lm, eval_cfg: Any) -> dict[str, Any]:
    """simple_evaluate over the configured tasks; returns lm-eval's results dict."""
    from lm_eval import simple_evaluate

    max_gen_toks = eval_cfg.get("max_gen_toks")
    results = simple_evaluate(
        model=lm,
        tasks=task_specs(eval_cfg),
        num_fewshot=eval_cfg.get("num_fewshot"),
        limit=eval_cfg.get("limit"),
        gen_kwargs={"max_gen_toks": int(max_gen_toks)} if max_gen_toks else None,
        task_manager=task_manager(needs_registry(eval_cfg)),
        log_samples=False,
    )
    if results is None:  # non-zero rank of a distributed run
        raise RuntimeError("lm-eval returned no results on this process (not rank 0).")
    return results


def main_metric(results: dict[str, Any], task: str) -> str:
    """The metric a task leads with: its first metric under its first filter (lm-eval's `metric,filter` key)."""
    cfg = results.get("configs", {}).get(task)
    if cfg and cfg.get("metric_list"):
        metric = cfg["metric_list"][0]["metric"]
        filters = cfg.get("filter_list") or []
        key = f"{metric},{filters[0]['name'] if filters else 'none'}"
        if key in results["results"][task]:
            return key
    return next(k for k in results["results"][task] if k != "alias" and "_stderr," not in k)


def score_key(task: str, key: str) -> str:
    """`topics` + `acc,none` -> `topics/acc`; a named filter stays: `gsm8k_local/exact_match,strict-match`."""
    return f"{task}/{key.removesuffix(',none')}"


def summarize(results: dict[str, Any], eval_cfg: Any) -> dict[str, Any]:
    """Scores with standard errors for every task, and the first task's main metric as the headline `score`."""
    scores: dict[str, float | None] = {}
    for task, values in results["results"].items():
        for key, value in values.items():
            if key in ("alias", "sample_len") or not isinstance(value, (int, float)):  # not metrics
                continue
            scores[score_key(task, key)] = None if value != value else float(value)  # NaN stderr -> null
    names = all_tasks(eval_cfg)
    head = names[0]
    key = main_metric(results, head)
    metric, _, filt = key.partition(",")
    stderr_key = score_key(head, f"{metric}_stderr,{filt}")
    out: dict[str, Any] = {
        "scores": scores,
        "score": scores.get(score_key(head, key)),
        "score_stderr": scores.get(stderr_key),
        "score_metric": score_key(head, key),
        "eval_samples": {t: n.get("effective") for t, n in results.get("n-samples", {}).items()},
        "eval_num_fewshot": dict(results.get("n-shot", {})),
    }
    forgetting = list(eval_cfg.get("forgetting_tasks") or [])
    if forgetting:
        out["forgetting_metric"] = score_key(forgetting[0], main_metric(results, forgetting[0]))
        out["forgetting_score"] = scores.get(out["forgetting_metric"])
    return out


def evaluate_model(model, tokenizer, eval_cfg: Any) -> dict[str, Any]:
    """Score a model in memory on the configured tasks; `time_eval_s` is the evaluation's own wall time."""
    import lm_eval

    start = time.perf_counter()
    results = run_tasks(live_lm(model, tokenizer, int(eval_cfg.get("batch_size", 1))), eval_cfg)
    out = summarize(results, eval_cfg)
    out["time_eval_s"] = time.perf_counter() - start
    out["eval_tasks"] = all_tasks(eval_cfg)
    out["lm_eval_version"] = getattr(lm_eval, "__version__", None)
    return out


# -- trained models ---------------------------------------------------------------------------------------------------
def prepare_for_eval(model, method) -> tuple[Any, bool, str]:
    """Merge the adapter where that is exact; returns (model to evaluate, merged, why)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model, False, "no adapter: the trained parameters are the model's own"
    if not method.mergeable:
        return model, False, f"{method.name} cannot be merged: the adapter is evaluated as trained"
    if method.quantize_4bit or getattr(model, "is_loaded_in_4bit", False):
        return model, False, "4-bit base: merging would re-quantize the merged weights (lossy), so the adapter is kept"
    return model.merge_and_unload(), True, "adapter merged into the base weights"


def enabled(cfg: DictConfig) -> bool:
    return bool(cfg.get("eval") and all_tasks(cfg.eval))


def skip_reason(cfg: DictConfig) -> str | None:
    if not enabled(cfg):
        return "no eval tasks"
    if cfg.model.init == "random" and not cfg.eval.get("on_random_init", False):
        return "random-init weights: scores would be meaningless (eval.on_random_init=true scores them anyway)"
    from peftbench.distributed import world_size

    if world_size() > 1:  # HFLM would score a DDP replica on every rank, or drive FSDP shards outside the Trainer
        return f"{world_size()} processes: scores come from a single-process run (lm-eval's in-memory model is whole)"
    return None


def evaluate_trained(cfg: DictConfig, model, tokenizer, method) -> dict[str, Any]:
    """Record fields for a trained point: scores, `merged` and its reason, `time_eval_s`."""
    reason = skip_reason(cfg)
    if reason:
        return {"eval_skipped": reason}
    start = time.perf_counter()
    model, merged, why = prepare_for_eval(model, method)
    out = evaluate_model(model, tokenizer, cfg.eval)
    out.update(merged=merged, merge_note=why, time_eval_s=time.perf_counter() - start)
    return out


# -- the base row -----------------------------------------------------------------------------------------------------
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
            log.info("base scores in %s were evaluated under %s, not %s: evaluating again", results_dir / run_id,
                     cached.get("base_versions"), base_versions())  # fmt: skip
            cached = None
        if cached and cached.get("status") == "ok":
            log.info("base scores: cached in %s", results_dir / run_id)
            return cached
        log.info("base model: evaluating the untrained %s once on %s (later points read its scores)",
                 cfg.model.name, ", ".join(all_tasks(cfg.eval)))  # fmt: skip
        record = evaluate_base(cfg, run_id)
        records.write_record(results_dir, record)
        log.info("base model: %s in %.0f s%s", record["status"], record.get("time_total_s", 0),
                 f", score {record['score']:.4g}" if isinstance(record.get("score"), (int, float)) else "")  # fmt: skip
    return record if record["status"] == "ok" else None


def evaluate_base(cfg: DictConfig, run_id: str) -> dict[str, Any]:
    """Load the untrained model (full precision, as the recipe's model group loads it) and score it."""
    import traceback

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
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
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
