"""One sweep point, resolved once: the composed config read into the facts every later step uses.

`Point.resolve(cfg)` applies the sweep's per-method overrides to the method's options, looks the method and the engine
up in their registries, and reads the profile's choices, the sequence length and the measurement settings; the runner
builds it at the top of `run_point` and hands it (or its parts) to validation, profiles, engines and training instead
of the whole config re-derived at each step. A name no registry knows resolves to None: validation reports it, with
every other problem of the point, before anything reads the entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench import data, engines, methods, profiles
from peftbench.engines import Engine
from peftbench.errors import did_you_mean
from peftbench.methods import Method


def own_overrides(cfg: DictConfig) -> dict[str, Any]:
    """`method_overrides` cut down to this point's method: another method's options are no part of this point."""
    overrides = cfg.get("method_overrides")
    overrides = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
    name = cfg.method.name
    return {name: overrides[name]} if overrides.get(name) else {}


def method_options(cfg: DictConfig) -> dict[str, Any]:
    """The method's YAML plus the recipe's per-method overrides (e.g. the family sweep's BitFit biases)."""
    method = OmegaConf.to_container(cfg.method, resolve=True)
    return {**method, **(own_overrides(cfg).get(method["name"]) or {})}


def _int(value: Any, default: int | None) -> int | None:
    """An integer setting as given, or `default` where it is unset or not an integer (validation names the field)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@dataclass(frozen=True)
class Point:
    """What one point runs, read once from its composed config (`cfg`, kept for the record and the child process)."""

    cfg: DictConfig
    method_cfg: dict[str, Any]  # the method's options with the sweep's overrides for it applied
    method: Method | None  # its registry entry (None: an unknown name, which validation reports)
    engine: Engine | None  # likewise
    profile: dict[str, Any]  # the profile group as composed ({} when the recipe has none)
    uses_liger: bool  # Liger's kernels: engine=liger, or a profile that asks for them (one code path)
    bf16_adapters: bool  # adapters kept in the base dtype (profile.bf16_lora_adapters and the method allows it)
    trl_step_metrics: bool  # TRL's step as it is (its per-step host reads), see peftbench.trainer
    synthetic: bool  # synthetic token rows rather than a dataset
    seq_len: int | None  # tokens per training row (data.seq_len, else train.max_length); None: not an integer
    warmup_steps: int | None  # run.warmup_steps as given (None: the default, see runner.throughput_warmup)
    profile_steps: int  # run.profile_steps (0: off)
    memory_trace_steps: int  # run.memory_trace_steps (0: off)

    @property
    def profile_name(self) -> str:
        return str(self.profile.get("name", "default"))

    @classmethod
    def resolve(cls, cfg: DictConfig) -> Point:
        method_cfg = method_options(cfg)
        method = methods.REGISTRY.get(method_cfg["name"])
        engine = engines.REGISTRY.get(engines.name(cfg))
        profile_group = cfg.get("profile")
        profile = OmegaConf.to_container(profile_group, resolve=True) if profile_group else {}
        synthetic = data.is_synthetic(cfg.data)
        run = cfg.run
        return cls(
            cfg=cfg,
            method_cfg=method_cfg,
            method=method,
            engine=engine,
            profile=profile,
            uses_liger=profiles.uses_liger(profile, engine),
            bf16_adapters=profiles.bf16_adapters(profile, method),
            trl_step_metrics=profiles.trl_step_metrics(profile, engine),
            synthetic=synthetic,
            seq_len=_int(cfg.data.seq_len if synthetic else cfg.train.get("max_length"), None),
            warmup_steps=_int(run.get("warmup_steps"), None),
            profile_steps=_int(run.get("profile_steps"), 0) or 0,
            memory_trace_steps=_int(run.get("memory_trace_steps"), 0) or 0,
        )


def train_options(point: Point, overrides: dict | None = None) -> dict[str, Any]:
    """The `train` group as SFTConfig keyword arguments; unknown keys fail with the closest valid one."""
    from dataclasses import fields

    from trl import SFTConfig

    method_cfg = point.method_cfg
    train = OmegaConf.to_container(point.cfg.train, resolve=True)
    valid = {f.name for f in fields(SFTConfig)}
    for key in train:
        if key not in valid:
            raise methods.MethodError(f"train.{key}: not an SFTConfig option.{did_you_mean(key, valid, 'train.')}")
    train.update(methods.train_args(method_cfg))  # a method's own Trainer options (GaLore's optim, ...)
    train.update(overrides or {})
    train["learning_rate"] = train.get("learning_rate") or method_cfg["learning_rate"]
    train.setdefault("report_to", "none")
    train.setdefault("save_strategy", "no")
    return train


def sft_config(point: Point, output_dir: Path, overrides: dict | None = None):
    """TRL's SFTConfig from the `train` group (plus the profile's choices)."""
    from trl import SFTConfig

    train = train_options(point, overrides)
    return SFTConfig(output_dir=str(output_dir), include_num_input_tokens_seen="non_padding", **train)
