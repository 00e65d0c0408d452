"""A point's identity: one method's options never enter another method's config, label or run id."""

from __future__ import annotations

import hashlib
import json

from omegaconf import OmegaConf

from peftbench.point import method_options as method_config
from peftbench.runner import point_container, run_id_for
from tests.conftest import TINY, compose_recipe

ALONE = [o for o in TINY if o != "sweep=none"] + ["sweep=none", "run.results_dir=unused"]
IN_FAMILY = [o for o in TINY if o != "sweep=none"] + ["sweep=family", "run.results_dir=unused"]


def old_run_id(cfg) -> str:
    """The id as it was computed before this fix (whole config, `run` dropped, default engine dropped)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("run", None)
    if container.get("engine") == {"name": "peft"}:
        container.pop("engine")
    digest = hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg.method.name}-{cfg.model.name}-s{cfg.train.seed}-{digest}"


def test_lora_alone_and_in_family_sweep_is_one_point():
    alone = compose_recipe(*ALONE, "method=lora")
    family = compose_recipe(*IN_FAMILY, "method=lora")
    assert family.method_overrides.bitfit.add_biases is True  # the family sweep does carry BitFit's override
    assert run_id_for(alone) == run_id_for(family)
    assert run_id_for(alone) == old_run_id(alone)  # ids of points run alone are what they always were
    assert "add_biases" not in method_config(family)
    assert point_container(family)["method_overrides"] == {}
    assert point_container(alone) == point_container(family)  # the record's config, which the report labels from


def test_bitfit_keeps_its_own_override():
    family = compose_recipe(*IN_FAMILY, "method=bitfit")
    assert method_config(family)["add_biases"] is True
    assert point_container(family)["method_overrides"] == {"bitfit": {"add_biases": True}}
    assert run_id_for(family) == old_run_id(family)  # BitFit's id inside the family sweep is unchanged
    assert run_id_for(family) != run_id_for(compose_recipe(*ALONE, "method=bitfit"))  # the override does change it


def test_every_family_method_alone_and_in_sweep():
    for method in ("lora", "qlora", "dora", "ia3", "prompt_tuning", "full"):
        alone, family = compose_recipe(*ALONE, f"method={method}"), compose_recipe(*IN_FAMILY, f"method={method}")
        assert run_id_for(alone) == run_id_for(family), method
