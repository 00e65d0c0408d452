"""A point resolved once (peftbench.point): the sweep's overrides applied, registry entries looked up, range checks on
the values the point will run with."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from peftbench import checks, engines, methods, runner, validation
from peftbench.point import Point


def test_the_sweeps_override_is_in_the_resolved_options_and_the_record(tiny_cfg):
    cfg = tiny_cfg("method=bitfit", "+method_overrides.bitfit.add_biases=true", "+method_overrides.lora.r=99")
    point = Point.resolve(cfg)
    assert point.method_cfg["add_biases"] is True and "r" not in point.method_cfg  # lora's entry is not this point's
    assert point.method is methods.REGISTRY["bitfit"] and point.engine is engines.REGISTRY["peft"]
    assert runner.base_record(point, "x")["method_config"] == point.method_cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.method = methods.REGISTRY["lora"]


def test_an_override_out_of_range_is_refused_like_the_option_itself(tiny_cfg):
    """method_overrides.lora.r=0 is the rank the point would train with: the range check reads it (before the
    point was resolved, the check read cfg.method.r, the YAML's 8, and let it through)."""
    cfg = tiny_cfg("method=lora", "+method_overrides.lora.r=0")
    assert OmegaConf.select(cfg, "method.r") > 0
    point = Point.resolve(cfg)
    assert point.method_cfg["r"] == 0
    assert any(e.startswith("method.r: got 0") for e in checks.option_errors(cfg, point.method_cfg))
    with pytest.raises(checks.ConfigError, match="method.r: got 0"):
        validation.validate(point)


def test_profile_choices_and_settings_are_read_once(tiny_cfg):
    fast = Point.resolve(tiny_cfg("profile=fast", "method=lora", "run.warmup_steps=1"))
    assert fast.profile_name == "fast" and fast.uses_liger and fast.bf16_adapters and not fast.trl_step_metrics
    assert fast.warmup_steps == 1 and fast.seq_len == fast.cfg.train.max_length
    dora = Point.resolve(tiny_cfg("profile=fast", "method=dora"))
    assert not dora.bf16_adapters  # DoRA's magnitude stays float32 (its registry entry)
    plain = Point.resolve(tiny_cfg())
    assert plain.profile_name == "default" and not plain.uses_liger and plain.warmup_steps is None


def test_unknown_names_resolve_to_none_and_validation_names_them(tiny_cfg):
    point = Point.resolve(tiny_cfg("method.name=lorra", "engine.name=peftt"))
    assert point.method is None and point.engine is None
    with pytest.raises(checks.ConfigError) as caught:
        validation.validate(point)
    assert "Did you mean `lora`?" in str(caught.value) and "engine: `peftt` is not an engine" in str(caught.value)
