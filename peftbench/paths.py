"""Where the shipped recipes live: the repo's top-level `recipes/` in a checkout, `peftbench/recipes` in a wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def recipes_dir() -> Path:
    checkout = Path(__file__).resolve().parents[1] / "recipes"
    if (checkout / "config.yaml").exists():
        return checkout
    spec = importlib.util.find_spec("peftbench.recipes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("peftbench's recipes are missing: reinstall peftbench (pip install peftbench).")
    return Path(list(spec.submodule_search_locations)[0])
