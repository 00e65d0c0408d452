"""One "did you mean" for every unknown name (peftbench.errors.did_you_mean). Expected hints are worked out by hand
from difflib's ratio, 2 x matching characters / total characters, and its cutoff 0.6."""

from __future__ import annotations

import ast
from pathlib import Path

from peftbench.errors import did_you_mean

PACKAGE = Path(__file__).resolve().parents[1] / "peftbench"


def test_the_closest_name_in_backticks():
    # lorra~lora 2*4/9 = 0.89, lorra~qlora 2*4/10 = 0.80, lorra~dora 2*3/9 = 0.67, lorra~ia3 below 0.6
    assert did_you_mean("lorra", ["ia3", "dora", "qlora", "lora"]) == " Did you mean `lora`?"
    assert did_you_mean("lorra", ["ia3", "dora", "qlora", "lora"], n=3) == " Did you mean `lora`, `qlora`, `dora`?"


def test_the_prefix_names_the_field():
    assert did_you_mean("max_stepz", {"max_steps", "seed"}, "train.") == " Did you mean `train.max_steps`?"


def test_nothing_close_says_nothing():
    assert did_you_mean("xyz", ["lora", "dora"]) == ""
    assert did_you_mean("lora", []) == ""


def test_no_module_but_errors_matches_names_itself():
    """Every unknown-name message takes its hint from the one helper: difflib is imported by errors.py alone."""
    users = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) else [])
            )
            if "difflib" in names:
                users.append(path.name)
    assert users == ["errors.py"]
