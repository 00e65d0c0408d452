"""`peftbench plan`: each point's predicted peak memory under every checkpointing plan, the plan training would
choose, whether it fits, and a measured tokens/s where the calibration has one, for a GPU you name. No GPU, no
weights: the recipe is composed as `python -m peftbench` composes it and every prediction comes from a meta-device
build of the architecture (peftbench.planner, peftbench.memory).

    peftbench plan +recipe=lora_7b --gpu H100-80GB
    peftbench plan -m +recipe=family_7b_synthetic profile=fast --gpu-memory 24
    python -m peftbench.plan +recipe=qlora_70b --gpu RTX-4090 train.per_device_train_batch_size=2

Exit codes: 0 every point's chosen plan is predicted to fit (or is not modelled); 1 some point's is predicted not
to fit (its line names the plan that would, or says none does); 2 bad input (an unknown GPU, a recipe that does not
compose, an option out of range), with the message naming the field.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from peftbench import console, engines, methods, models, planner, profiles
from peftbench.errors import InputError
from peftbench.paths import recipes_dir

EXIT_DOES_NOT_FIT, EXIT_BAD_INPUT = 1, 2


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(plain overrides, sweep overrides such as method=lora,qlora), parsed with Hydra's own grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    plain, swept = [], []
    for text in overrides:
        (swept if parser.parse_override(text).is_sweep_override() else plain).append(text)
    return plain, swept


def compose_points(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """[(the point's sweep overrides, its composed config)]: the recipe's own sweep (hydra.sweeper.params, e.g.
    sweep=family) times the command line's, expanded by Hydra's basic sweeper as a multirun expands them."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain, _ = split_overrides(overrides)
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        base = compose("config", overrides=plain, return_hydra_config=True)
        # as the basic sweeper does: the config's sweep params, then the command line's (a later key wins)
        params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()] + list(overrides)
        jobs = [
            list(job)
            for batch in BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
            for job in batch
        ]
        return [(job, compose("config", overrides=job)) for job in jobs or [[]]]


def plan_rows(
    points: list[tuple[list[str], Any]], total_gib: float | None, gpu_name: str | None
) -> list[dict[str, Any]]:
    """One row per point: its label, predicted peak per plan, the choice and a calibrated rate (or None)."""
    from peftbench.point import Point

    rows = []
    values: dict[str, set[str]] = {}
    for job, _ in points:
        for item in job:
            key, _, value = item.partition("=")
            values.setdefault(key, set()).add(value)
    varying = {k for k, v in values.items() if len(v) > 1}  # what tells the points apart names each line
    for job, cfg in points:
        point = Point.resolve(cfg)
        if point.method is None:
            methods.get_method(point.method_cfg["name"])  # raises the unknown name with the known ones
        if point.engine is None:
            raise planner.PlanInputError(
                f"engine: unknown engine `{engines.name(cfg)}`. Known engines: {', '.join(engines.REGISTRY)}."
            )
        profiles.check_plan_options(point.profile)
        if point.seq_len is None:
            raise planner.PlanInputError("data.seq_len / train.max_length: not a number of tokens.")
        model_config = models.load_config(cfg.model)
        choice = profiles.plan_point(point, model_config, total_gib, gpu_name)
        setup = profiles.setup_of(point, model_config)
        measured = planner.rate(setup, choice.plan or "own", gpu_name)
        label = " ".join(o for o in job if o.partition("=")[0] in varying) or cfg.method.name
        rows.append(
            {
                "label": label,
                "choice": choice,
                "rate": measured,
                "engine": setup.engine,
                "profile": point.profile_name,
                "seq_len": setup.seq_len,
                "micro_batch": setup.micro_batch,
                "model": setup.model,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="peftbench plan",
        description=__doc__.splitlines()[0],
        epilog="Any other argument is a Hydra override, as for `python -m peftbench`.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--gpu", help=f"a GPU by name: {', '.join(g.name for g in planner.GPUS)}")
    where.add_argument("--gpu-memory", type=float, metavar="GIB", help="the GPU's memory in GiB (any card)")
    parser.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="accepted as `python -m peftbench` takes it; "
        "a comma list (method=lora,qlora) or the recipe's sweep is expanded either way",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: +recipe=NAME, method=lora,qlora, key=value")
    args = parser.parse_args(argv)
    console.quiet_libraries()
    try:
        if args.gpu_memory is not None and not args.gpu_memory > 0:
            raise planner.PlanInputError(f"--gpu-memory: got {args.gpu_memory:g}; expected a positive number of GiB.")
        if args.gpu:
            found = planner.gpu(args.gpu)
            total, name, where_text = (
                found.memory_gib,
                found.name,
                f"{found.name} ({found.memory_gib:.2f} GiB: {found.source})",
            )
        elif args.gpu_memory is not None:
            total, name, where_text = args.gpu_memory, None, f"a GPU of {args.gpu_memory:g} GiB"
        else:
            total, name = profiles.gpu_memory_gib(), profiles.local_gpu_name()
            if total is None:
                raise planner.PlanInputError(
                    "--gpu: no GPU here to plan for. Name one (--gpu H100-80GB) or give its memory (--gpu-memory 24)."
                )
            where_text = f"this machine's GPU ({total:.2f} GiB)"
        points = compose_points(args.overrides)
        rows = plan_rows(points, total, name)
    except InputError as exc:
        print(f"peftbench plan: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - Hydra's composition errors (unknown group option, key typo) name the key
        if type(exc).__module__.startswith(("hydra", "omegaconf")):
            print(f"peftbench plan: {str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
            return EXIT_BAD_INPUT
        raise
    print("\n".join(console.plan_lines(rows, where_text)), flush=True)
    return EXIT_DOES_NOT_FIT if any(r["choice"].fits is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
