"""The Hydra app: `python -m peftbench [+recipe=NAME] [-m] [overrides]`.

Composes the recipe, runs each point through the runner, and prints the results table at the end. The exit code is
0 when every point finished, 1 when any point failed or was invalid.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from peftbench.paths import recipes_dir

STATUSES: list[str] = []  # statuses of the points this process ran (Hydra's basic launcher runs them in-process)


@hydra.main(version_base="1.3", config_path=str(recipes_dir()), config_name="config")
def app(cfg: DictConfig) -> str:
    from peftbench.runner import run_point

    status = run_point(cfg)["status"]
    STATUSES.append(status)
    return status


def main() -> None:
    app()
    if any(s != "ok" for s in STATUSES):
        sys.exit(1)


if __name__ == "__main__":
    main()
