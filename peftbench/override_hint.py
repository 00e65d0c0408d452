"""What to do about an override Hydra could not apply: `train.learning_rte=1e-4` or `profile.memory_budget_gib=21.6`.

Hydra refuses a plain override of a key the composed config lacks with "Could not override ... To append to your
config use +train.learning_rte=1e-4", which is the wrong advice for a typo (the `+` adds an option SFTConfig then
refuses). `hint` runs only after Hydra refused (no cost on the normal path): it composes the config without the
offending overrides and, for each plain dotted key the config lacks, names the closest option of that group
(did_you_mean) and the other choices of the config group whose YAML has the key (`memory_budget_gib` is an option of
`profile=fast`, not of the default profile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.errors import did_you_mean
from peftbench.paths import recipes_dir


def plain_dotted_keys(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the overrides to compose with, the plain `a.b=v` overrides to check): `+`, `++`, `~` overrides and group
    choices (`profile=fast`) are composed as given; Hydra's own `hydra.*` settings are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keep, check = [], []
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:  # noqa: BLE001 - an unparsable override is __main__.override_problem's to name
            return [], []
        key = override.key_or_group
        if key.startswith("hydra.") or key == "hydra":
            continue  # Hydra's own settings: not in the composed job config
        if override.package is None and not arg.startswith(("+", "~")) and "." in key:
            check.append(arg)
        elif override.is_sweep_override():  # `-m method=lora,dora`: one of its choices composes the same keys
            try:
                first = next(iter(override.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - `glob(*)` needs Hydra's config loader: no hint, Hydra's message stands
                return [], []
            keep.append(f"{arg.partition('=')[0]}={first}")
        else:
            keep.append(arg)
    return keep, check


def groups_holding(group: str, key: str, root: Path) -> list[str]:
    """The choices of config group `group` whose YAML file sets `key` at its top (profile=fast for
    memory_budget_gib)."""
    import yaml

    folder = root / group
    found = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and key in data:
            found.append(f"{group}={path.stem}")
    return found


def problem(cfg: Any, arg: str, root: Path) -> str | None:
    """Why the plain override `arg` (`a.b=v`) cannot be set in the composed `cfg`, with the fix; None where its key
    exists."""
    from omegaconf import DictConfig

    key = arg.partition("=")[0]
    parts = key.split(".")
    node = cfg
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return None  # a list index or a value: Hydra's own message stands
        if part not in node:
            where = ".".join(parts[:depth])
            chosen = f"{where}={node.name}" if depth == 1 and isinstance(node.get("name"), str) else where
            text = f"{key}: {chosen or 'the config'} has no option `{part}`."
            hint = did_you_mean(part, list(node.keys()), f"{where}." if where else "")
            elsewhere = groups_holding(parts[0], part, root) if depth == 1 else []
            if hint:
                text += hint
            if elsewhere:
                text += f" It is an option of {', '.join(elsewhere)}: choose it, e.g. `{elsewhere[0]} {arg}`."
            if not hint and not elsewhere:
                text += f" To add it as a new option anyway, write `+{arg}`."
            return text
        node = node[part]
    return None


def hint(argv: list[str]) -> str | None:
    """One line per plain override Hydra could not apply, or None (the refusal was about something else)."""
    from hydra import compose, initialize_config_dir

    keep, check = plain_dotted_keys(argv)
    if not check:
        return None
    root = recipes_dir()
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            cfg = compose("config", overrides=keep)
    except Exception:  # noqa: BLE001 - the other overrides do not compose either: Hydra's message stands
        return None
    lines = [text for arg in check if (text := problem(cfg, arg, root))]
    return "\n".join(lines) or None
