"""peftbench.override_hint: what to do about an override Hydra could not apply, named from the recipes' own YAML."""

from __future__ import annotations

from peftbench import override_hint
from peftbench.paths import recipes_dir


def test_only_plain_dotted_overrides_are_checked():
    keep, check = override_hint.plain_dotted_keys(
        [
            "-m",
            "+recipe=lora_7b",
            "method=lora,dora",  # a sweep composes as its first choice
            "train.learning_rte=1e-4",
            "+train.new_key=1",
            "++train.other=2",
            "~data.eval_file",
            "hydra.run.dir=/tmp/x",
            "profile=fast",
        ]
    )
    assert check == ["train.learning_rte=1e-4"]
    assert keep == ["+recipe=lora_7b", "method=lora", "+train.new_key=1", "++train.other=2", "~data.eval_file",
                    "profile=fast"]  # fmt: skip


def test_groups_holding_reads_the_recipe_files():
    root = recipes_dir()
    assert override_hint.groups_holding("profile", "memory_budget_gib", root) == ["profile=fast"]
    assert "profile=default" in override_hint.groups_holding("profile", "name", root)
    assert override_hint.groups_holding("profile", "no_such_key", root) == []
    assert override_hint.groups_holding("no_such_group", "name", root) == []


def test_hint_names_the_option_and_the_fix():
    text = override_hint.hint(["model=tiny_llama", "train.learning_rte=1e-4", "profile.memory_budget_gib=21.6"])
    lines = text.splitlines()
    assert lines[0] == "train.learning_rte: train has no option `learning_rte`. Did you mean `train.learning_rate`?"
    assert lines[1] == (
        "profile.memory_budget_gib: profile=default has no option `memory_budget_gib`. It is an option of "
        "profile=fast: choose it, e.g. `profile=fast profile.memory_budget_gib=21.6`."
    )


def test_no_hint_where_the_keys_exist_or_nothing_composes():
    assert override_hint.hint(["model=tiny_llama", "train.learning_rate=1e-4"]) is None
    assert override_hint.hint(["model=no_such_model", "train.learning_rte=1"]) is None  # Hydra's message stands
    assert override_hint.hint(["method=lora"]) is None
    # a sweep Hydra expands only with its config loader: no hint (and no crash), Hydra's own message stands
    assert override_hint.plain_dotted_keys(["method=glob(*)", "train.learning_rte=1"]) == ([], [])
