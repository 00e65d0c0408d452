"""Checks of a composed recipe that need no weights: option ranges, the results folder, and its existing records.

Each check returns a list of messages (`field: what is wrong. The fix.`) rather than raising at the first, so one
run of validation lists every mistake of a recipe at once. `runner.validate` raises them as one `ConfigError`.
"""

from __future__ import annotations

import json
import tempfile
from numbers import Number
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """One or more recipe options out of range, or a results folder that cannot be used; raised before any work."""


# (field, test, what a valid value is). `None` values are skipped where the option is optional (null = default).
Rule = tuple[str, Callable[[Any], bool], str]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


DTYPES = ("auto", "float32", "float16", "bfloat16")

RULES: list[Rule] = [
    ("train.max_steps", lambda v: _int(v) and (v > 0 or v == -1), "a positive integer (or -1 to train by epochs)"),
    ("train.per_device_train_batch_size", lambda v: _int(v) and v > 0, "a positive integer"),
    ("train.gradient_accumulation_steps", lambda v: _int(v) and v > 0, "a positive integer"),
    ("train.learning_rate", lambda v: _num(v) and v > 0, "a positive number, or null for the method's own rate"),
    ("train.max_length", lambda v: _int(v) and v > 0, "a positive integer number of tokens"),
    ("train.warmup_steps", lambda v: _num(v) and v >= 0, "0 or more"),
    ("train.weight_decay", lambda v: _num(v) and v >= 0, "0 or more"),
    ("train.logging_steps", lambda v: _num(v) and v > 0, "a positive number"),
    ("train.seed", lambda v: _int(v) and v >= 0, "an integer >= 0"),
    ("train.num_train_epochs", lambda v: _num(v) and v > 0, "a positive number"),
    ("method.learning_rate", lambda v: _num(v) and v > 0, "a positive number"),
    ("method.r", lambda v: _int(v) and v > 0, "a positive integer rank"),
    ("method.lora_alpha", lambda v: _num(v) and v > 0, "a positive number"),
    ("method.lora_dropout", lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("method.num_virtual_tokens", lambda v: _int(v) and v > 0, "a positive integer"),
    ("method.loraplus_lr_ratio", lambda v: _num(v) and v > 0, "a positive number"),
    ("data.max_train_samples", lambda v: _int(v) and v > 0, "a positive integer, or null for all rows"),
    ("data.max_eval_samples", lambda v: _int(v) and v >= 0, "an integer >= 0, or null for all rows"),
    ("run.profile_steps", lambda v: _int(v) and v >= 0, "an integer >= 0 (steps to profile; 0 = off)"),
    ("run.memory_trace_steps", lambda v: _int(v) and v >= 0, "an integer >= 0 (steps to trace; 0 = off)"),
    ("run.warmup_steps", lambda v: _int(v) and v >= 0, "an integer >= 0 (optimizer steps left out of throughput)"),
    ("model.init", lambda v: v in ("pretrained", "random"), "`pretrained` or `random`"),
    ("model.dtype", lambda v: v in DTYPES, "one of " + ", ".join(DTYPES)),
    ("model.trust_remote_code", lambda v: isinstance(v, bool), "true or false"),
    ("model.use_safetensors", lambda v: isinstance(v, bool), "true or false"),
    ("run.force", lambda v: isinstance(v, bool), "true or false"),
    ("run.save_adapter", lambda v: isinstance(v, bool), "true or false"),
    ("profile.trl_step_metrics", lambda v: isinstance(v, bool), "true or false"),
]  # fmt: skip


def option_errors(cfg: DictConfig) -> list[str]:
    """Every option of the recipe that is out of range, as `field: got X; expected Y. Set it with field=...`."""
    errors = []
    for field, ok, expected in RULES:
        value = OmegaConf.select(cfg, field)
        if value is None or ok(value):
            continue
        errors.append(f"{field}: got {value!r}; expected {expected}. Fix it on the command line, e.g. `{field}=...`.")
    if OmegaConf.select(cfg, "train.max_steps") == -1 and not OmegaConf.select(cfg, "train.num_train_epochs"):
        errors.append("train.max_steps: -1 means train by epochs, but train.num_train_epochs is not set. Set one.")
    return errors


def results_dir_errors(results_dir: str | Path) -> list[str]:
    """The results folder must be creatable and writable, and every record already in it readable by this version."""
    from peftbench import records

    path = Path(results_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # O_TMPFILE on Linux: a real write test that leaves no name behind
            pass
    except OSError as exc:
        return [f"run.results_dir: cannot write to `{path}` ({exc.strerror or exc}). Point run.results_dir at a "
                f"folder you can write to, e.g. run.results_dir=results/my-sweep."]  # fmt: skip
    errors = []
    for record_path in sorted(path.glob(f"*/{records.RECORD}")):
        try:
            records.migrate(json.loads(record_path.read_text()), record_path)
        except (records.RecordVersionError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            errors.append(f"run.results_dir: `{record_path}` cannot be read ({exc}). Move that folder away, or use "
                          f"another run.results_dir; the table is rebuilt from every record in it.")  # fmt: skip
    return errors


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def model_errors(cfg: DictConfig) -> list[str]:
    """A local pretrained folder must hold safetensors unless the recipe opts out: `.bin`/`.pt` files are pickles,
    and unpickling a file can run arbitrary code. (Hub ids are checked by transformers itself at download.)"""
    from peftbench.models import resolve_path

    model = cfg.model
    if model.get("init") != "pretrained" or not model.get("use_safetensors", True):
        return []
    folder = Path(resolve_path(str(model.name_or_path)))
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return []
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if not pickles:
        return []
    return [f"model.use_safetensors: `{folder}` holds only pickle weights ({', '.join(pickles)}), and peftbench loads "
            f"safetensors only by default because unpickling can run code. Convert the checkpoint to safetensors, or "
            f"set model.use_safetensors=false if you trust its source."]  # fmt: skip
