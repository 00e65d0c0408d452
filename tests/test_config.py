"""Every shipped config composes with Hydra's compose API, so a broken YAML fails here, not at hour three."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from peftbench.methods import FAMILY, REGISTRY
from peftbench.paths import recipes_dir

from .conftest import compose_recipe

RECIPES = sorted(p.stem for p in (recipes_dir() / "recipe").glob("*.yaml"))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (recipes_dir() / group).glob("*.yaml"))


def test_every_method_yaml_has_a_registry_entry_and_back():
    assert set(group_options("method")) == set(REGISTRY)


@pytest.mark.parametrize("method", group_options("method"))
def test_method_composes_and_builds_its_peft_config(method):
    from peftbench.methods import build_peft_config, get_method
    from peftbench.point import method_options as method_config

    cfg = compose_recipe(f"method={method}")
    config = build_peft_config(method_config(cfg), tokenizer_path="unused")
    assert (config is None) == (get_method(method).peft_type is None)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes(recipe):
    cfg = compose_recipe(f"+recipe={recipe}")
    assert cfg.run.name


@pytest.mark.parametrize("group", ["model", "data", "train", "sweep", "eval"])
def test_every_group_option_composes(group):
    for option in group_options(group):
        compose_recipe(f"{group}={option}")


def test_single_method_recipes_are_single_points():
    cfg = compose_recipe("+recipe=qlora_7b")
    assert cfg.method.name == "qlora" and cfg.model.name_or_path == "meta-llama/Llama-2-7b-hf"
    assert not cfg.method_overrides  # no family-sweep BitFit biases outside the family sweep


def test_embedded_default_sweeps_the_whole_family():
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    # the seven the README names as the family (its method table's first rows), written out here, not read from FAMILY
    seven = ["lora", "qlora", "dora", "ia3", "prompt_tuning", "bitfit", "full"]
    assert cfg.hydra.sweeper.params.method.split(",") == seven == FAMILY
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = re.findall(r"^\| `([a-z0-9_]+)` \| ", readme.split("| method | what it is |", 1)[1], re.M)
    assert table[:7] == seven


def test_command_line_overrides_reach_the_train_and_method_groups():
    cfg = compose_recipe("+recipe=lora_7b", "train.max_steps=50", "method.r=32")
    assert cfg.train.max_steps == 50 and cfg.method.r == 32


def test_recipes_resolve_from_an_installed_wheel(tmp_path):
    """Build the wheel, install it into a bare folder, and compose a recipe from there (not from the checkout)."""
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(repo)], check=True
    )
    wheel = next(tmp_path.glob("peftbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"peftbench/recipes/{p.relative_to(repo / 'recipes')}" for p in (repo / "recipes").rglob("*.yaml")}
    assert shipped <= names
    assert "peftbench/tasks/topics_test.jsonl" in names and "peftbench/model_configs/llama2_7b.json" in names

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True
    )
    out = subprocess.run(
        [sys.executable, "-m", "peftbench", "--cfg", "job", "+recipe=qlora_7b", "train.max_steps=7"],
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "name: qlora" in out and "max_steps: 7" in out
    where = subprocess.run(
        [sys.executable, "-c", "import peftbench.paths as p; print(p.recipes_dir())"],
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(site))
