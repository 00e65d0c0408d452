"""The Hydra app: `python -m peftbench [+recipe=NAME] [-m] [overrides]`.

Composes the recipe, runs each point through the runner, and prints the results table at the end. Exit codes:
0 every point finished ok (points skipped as already finished count as ok); 1 some point ran and ended failed, oom or
invalid (its row says why); 2 the input was refused before any point ran (sweep validation, Hydra composition errors,
usage errors); 3 no point failed, but some were `skipped` because their engine cannot run them here (extra not
installed, no GPU, a method the engine has no path for; each row says why and names the fix). Points run in this
process report through `sweep.STATUSES`; points run by a parallel launcher (joblib, submitit) report through the
status files that `sweep.ExitStatus` collects at the end of the multirun.

Under torchrun / `accelerate launch` every rank composes the same config and runs the same points; ranks other than
0 write no Hydra output folder or log file (see `quiet_rank_overrides`), and only rank 0 writes records.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from peftbench import gpu_slots, sweep  # noqa: F401 - gpu_slots registers the n_jobs resolver
from peftbench.paths import recipes_dir


@hydra.main(version_base="1.3", config_path=str(recipes_dir()), config_name="config")
def app(cfg: DictConfig) -> str:
    from peftbench.console import LAST
    from peftbench.runner import run_point

    record = run_point(cfg)
    LAST["record"] = record  # the Progress callback's result line reads it
    status = record["status"]
    sweep.STATUSES.append(status)
    return status


def quiet_rank_overrides(environ: dict[str, str] = os.environ) -> list[str]:
    """Overrides that keep a non-zero rank from writing Hydra outputs into the user's tree: its run/sweep folder is
    a scratch folder under the system temp dir, with no `.hydra/` copy of the config, and it logs to stdout only."""
    rank = int(environ.get("RANK", "0"))
    if rank == 0:
        return []
    scratch = Path(tempfile.gettempdir()) / f"peftbench-hydra-rank{rank}"
    return [
        f"hydra.run.dir={scratch}",
        f"hydra.sweep.dir={scratch}",
        "hydra.output_subdir=null",
        "hydra/job_logging=stdout",
        "hydra/hydra_logging=none",
    ]


def exit_code(statuses: list[str], environ: dict[str, str] = os.environ) -> int:
    """1 if any point failed (failed, oom, invalid), else 3 if any was skipped, else 0. A rank above 0 leaves
    `invalid` and `skipped` to rank 0: validation fails alike on every rank, and an early non-zero exit would make
    torchrun stop rank 0 before it writes the record."""
    bad = [s for s in statuses if s not in ("ok", "skipped")]
    skipped = [s for s in statuses if s == "skipped"]
    if int(environ.get("RANK", "0")) > 0:
        bad, skipped = [s for s in bad if s != "invalid"], []
    return sweep.EXIT_FAILED if bad else sweep.EXIT_SKIPPED if skipped else 0


def main() -> None:
    from peftbench.console import quiet_libraries

    quiet_libraries()
    sys.argv += quiet_rank_overrides()
    try:
        app()
    except SystemExit as exc:  # Hydra reports a config it cannot compose and exits 1; no point ran, so it is a refusal
        if exc.code == 1 and not sweep.STATUSES:
            sys.exit(sweep.EXIT_REFUSED)
        raise
    sys.exit(exit_code(sweep.STATUSES))


if __name__ == "__main__":
    main()
