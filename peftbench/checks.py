"""Checks of a composed recipe that need no weights: option ranges, the results folder, and its existing records.

Each check returns a list of messages (`field: what is wrong. The fix.`) rather than raising at the first, so one
run of validation lists every mistake of a recipe at once. `validation.validate` raises them as one `ConfigError`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from numbers import Number
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.errors import InputError
from peftbench.regional import COMPILE_MODES


class ConfigError(InputError):
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
    ("run.skip_predicted_oom", lambda v: isinstance(v, bool), "true or false"),
    ("profile.trl_step_metrics", lambda v: isinstance(v, bool), "true or false"),
    ("profile.compile", lambda v: v is False or v in COMPILE_MODES, "`regional` or `off`"),
    # profile.checkpointing: profiles.check_plan_options (planner.check_plan), which `peftbench plan` runs too
    ("profile.compile_dynamic", lambda v: isinstance(v, bool), "true, false, or null (static for fixed-length rows)"),
    ("profile.compile_backend", lambda v: isinstance(v, str) and bool(v), "a torch.compile backend name (inductor)"),
    ("data.max_length_policy", lambda v: v in ("error", "warn", "drop"), "`error`, `warn` or `drop`"),
    ("data.chat", lambda v: isinstance(v, bool), "true or false"),
    ("train.truncation_mode", lambda v: v in ("keep_start", "keep_end"), "`keep_start` or `keep_end` (TRL's modes)"),
]


def option_errors(cfg: DictConfig, method_cfg: dict[str, Any] | None = None) -> list[str]:
    """Every option of the recipe that is out of range, as `field: got X; expected Y. Set it with field=...`.
    `method.*` options are read from `method_cfg` where given: the method's options as the point runs them, with the
    sweep's `method_overrides` for it applied (peftbench.point)."""
    errors = []
    for field, ok, expected in RULES:
        if method_cfg is not None and field.startswith("method."):
            value = method_cfg.get(field.split(".", 1)[1])
        else:
            value = OmegaConf.select(cfg, field)
        if value is None or ok(value):
            continue
        errors.append(f"{field}: got {value!r}; expected {expected}. Fix it on the command line, e.g. `{field}=...`.")
    if OmegaConf.select(cfg, "train.max_steps") == -1 and not OmegaConf.select(cfg, "train.num_train_epochs"):
        errors.append("train.max_steps: -1 means train by epochs, but train.num_train_epochs is not set. Set one.")
    return errors


def _accepts(hint: Any, value: Any) -> bool:
    """Whether `value` (from YAML/Hydra) fits a dataclass field's type hint: bool, int, float, str, Enum, list,
    dict, Literal, Optional/Union of those. Unknown hints accept anything (TrainingArguments checks what it can)."""
    import enum
    import typing

    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _int(value)
    if hint is float:
        return _num(value)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, (str, hint))
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    names = [getattr(a, "__name__", str(a)) for a in args]
    words = {
        "bool": "true or false",
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "dict": "a mapping",
        "list": "a list",
    }
    return " or ".join(dict.fromkeys(words.get(n, n) for n in names)) + (
        " (or null)" if len(args) < len(typing.get_args(hint)) else ""
    )


# Values TrainingArguments handles beyond its declared type (`fsdp: true` is `fsdp="full_shard"`, training_args.py).
ALSO_ACCEPTED: dict[str, tuple[type, ...]] = {"fsdp": (bool, list)}


def train_type_errors(train: dict[str, Any], config_class: Any) -> list[str]:
    """Each `train.*` value against the type SFTConfig declares for it. TrainingArguments checks enum values and a
    few ranges but takes `gradient_checkpointing=maybe` or `max_steps="abc"` as they are, to fail mid-run."""
    import typing

    hints = typing.get_type_hints(config_class)
    errors = []
    for key, value in train.items():
        if isinstance(value, ALSO_ACCEPTED.get(key, ())):
            continue
        if key in hints and value is not None and not _accepts(hints[key], value):
            errors.append(
                f"train.{key}: got {value!r}; SFTConfig expects {_describe(hints[key])}. Set it with train.{key}=..."
            )
    return errors


def library_error(exc: BaseException, train: dict[str, Any], what: str = "SFTConfig") -> str:
    """A TrainingArguments/SFTConfig ValueError in peftbench's words: the `train.*` field it is about, and its text.

    The field is the key the message names (`--logging_steps must be...`), else the one whose value it quotes
    (`cosin is not a valid SchedulerType`)."""
    import re

    text = str(exc).strip()

    def mentions(word: str) -> bool:
        return bool(re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text))

    named = [k for k in train if mentions(k)]
    named = named or [k for k, v in train.items() if isinstance(v, str) and v and mentions(v)]
    field = f"train.{named[0]}" if named else "train"
    return f"{field}: {what} refused the train group: {text} Fix it on the command line, e.g. `{field}=...`."


def results_dir_errors(results_dir: str | Path) -> list[str]:
    """The results folder must be creatable and writable, and every record already in it readable by this version."""
    from peftbench import records

    path = Path(results_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # O_TMPFILE on Linux: a real write test that leaves no name behind
            pass
    except OSError as exc:
        return [
            f"run.results_dir: cannot write to `{path}` ({exc.strerror or exc}). Point run.results_dir at a "
            f"folder you can write to, e.g. run.results_dir=results/my-sweep."
        ]
    errors = []
    for record_path in sorted(path.glob(f"*/{records.RECORD}")):
        try:
            records.migrate(json.loads(record_path.read_text()), record_path)
        except (records.RecordVersionError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            errors.append(
                f"run.results_dir: `{record_path}` cannot be read ({exc}). Move that folder away, or use "
                f"another run.results_dir; the table is rebuilt from every record in it."
            )
    return errors


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def folder_errors(cfg: DictConfig) -> list[str]:
    """An empty model folder, one without config.json, or a tokenizer folder with no tokenizer file: named before
    transformers answers with a hub lookup of the folder's path."""
    from peftbench.models import ModelSourceError, resolve_path, shipped_config_names

    model = cfg.model
    errors = []
    specs = [
        (
            "model.name_or_path",
            model.get("name_or_path"),
            model.get("init") == "pretrained" or (model.get("init") == "random" and not model.get("config")),
        ),
        ("model.config", model.get("config"), model.get("init") == "random"),
    ]
    for field, spec, needs_config in specs:
        if not spec or not needs_config or str(spec) in shipped_config_names():
            continue
        try:
            folder = Path(resolve_path(str(spec)))
        except ModelSourceError:
            continue  # reported by check_source
        if folder.is_dir() and not any(folder.iterdir()):
            errors.append(
                f"{field}: `{folder}` is an empty folder. Point it at a folder with config.json and "
                f"*.safetensors (e.g. one written by save_pretrained), or at a hub id."
            )
        elif folder.is_dir() and not (folder / "config.json").is_file():
            errors.append(
                f"{field}: `{folder}` has no config.json ({len(list(folder.iterdir()))} other entries). "
                f"Point it at the folder save_pretrained wrote, which holds config.json."
            )
    tokenizer = model.get("tokenizer") or (model.get("name_or_path") if model.get("init") == "pretrained" else None)
    if tokenizer and str(tokenizer) not in shipped_config_names():
        try:
            folder = Path(resolve_path(str(tokenizer)))
        except ModelSourceError:
            folder = None
        field = "model.tokenizer" if model.get("tokenizer") else "model.name_or_path"
        if folder is not None and folder.is_dir() and any(folder.iterdir()) or field == "model.tokenizer":
            if folder is not None and folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
                errors.append(
                    f"{field}: `{folder}` holds no tokenizer ({', '.join(TOKENIZER_FILES[:2])}, ...). "
                    f"Save one there with tokenizer.save_pretrained(...), or set model.tokenizer to a "
                    f"folder or hub id that has one."
                )
    return list(dict.fromkeys(errors))


def model_errors(cfg: DictConfig) -> list[str]:
    return folder_errors(cfg) + pickle_errors(cfg)


def pickle_errors(cfg: DictConfig) -> list[str]:
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
    return [
        f"model.use_safetensors: `{folder}` holds only pickle weights ({', '.join(pickles)}), and peftbench loads "
        f"safetensors only by default because unpickling can run code. Convert the checkpoint to safetensors, or "
        f"set model.use_safetensors=false if you trust its source."
    ]
