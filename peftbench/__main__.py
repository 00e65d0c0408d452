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

    try:
        record = run_point(cfg)
    except BaseException:  # a point that ran and broke outside its own error handling is a failure, not a refusal
        sweep.STATUSES.append("failed")
        raise
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


SUBCOMMANDS = {
    "measure": "peftbench.measure",
    "plan": "peftbench.plan",
}  # `peftbench measure|plan ...`: not Hydra apps, dispatched before it


# hydra/launcher options -> (the plugin module they need, its pip package). Both are in peftbench's `sweep` extra.
LAUNCHER_PLUGINS = {
    "local_gpus": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "slurm_gpus": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


def launcher_problem(argv: list[str]) -> str | None:
    """A `hydra/launcher=X` whose plugin is not installed, named with the extra to install (Hydra itself says only
    that it could not find `hydra/launcher/joblib` in the search path)."""
    import importlib.util

    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key != "hydra/launcher" or value not in LAUNCHER_PLUGINS:
            continue
        module, package = LAUNCHER_PLUGINS[value]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return (
                f"hydra/launcher={value}: needs the Hydra launcher plugin {package}, which is not installed. "
                f'Install the extra: pip install "peftbench[sweep]" (or pip install {package}).'
            )
    return None


FLAGS_WITH_VALUE = (
    "--config-dir",
    "-cd",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--experimental-rerun",
    "--info",
    "-i",
)


def override_problem(argv: list[str]) -> str | None:
    """An override Hydra's grammar cannot parse, named with the quoting that works. Hydra's own message
    ("mismatched input '{' expecting <EOF>") names neither the override nor the fix."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    skip = False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = arg in FLAGS_WITH_VALUE and arg not in ("--info", "-i")
            continue
        try:
            parser.parse_override(arg)
        except Exception as exc:  # noqa: BLE001 - Hydra's grammar raises HydraException / OverrideParseException
            key = arg.partition("=")[0].lstrip("+~")
            return (
                f"{key}: Hydra cannot parse the override `{arg}` ({str(exc).splitlines()[0]}). A value with "
                f"braces, colons, commas or spaces needs Hydra's own quotes inside the shell's: "
                f"'{key}=\"Question: {{question}} Answer:\"'; for a newline in it use bash's $'...': "
                f"$'{key}=\"Question: {{question}}\\nAnswer:\"'. Or put it in a YAML file."
            )
    return None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        import importlib

        code = importlib.import_module(SUBCOMMANDS[sys.argv[1]]).main(sys.argv[2:])
        sys.exit(code or 0)
    problem = launcher_problem(sys.argv[1:]) or override_problem(sys.argv[1:])
    if problem:
        print(f"peftbench: {problem}", file=sys.stderr, flush=True)
        sys.exit(sweep.EXIT_REFUSED)
    from peftbench.console import quiet_libraries

    quiet_libraries()
    sys.argv += quiet_rank_overrides()
    try:
        app()
    except SystemExit as exc:  # Hydra reports a config it cannot compose and exits 1; no point ran, so it is a refusal
        if exc.code == 1 and not sweep.STATUSES:
            from peftbench.override_hint import hint

            text = hint(sys.argv[1:])  # after Hydra's own message: the option it could not set, and the fix
            if text:
                print("\n".join(f"peftbench: {line}" for line in text.splitlines()), file=sys.stderr, flush=True)
            sys.exit(sweep.EXIT_REFUSED)
        raise
    sys.exit(exit_code(sweep.STATUSES))


if __name__ == "__main__":
    main()
