"""`peftbench measure -- python train.py ARGS...`: measure an existing Trainer/SFTTrainer job without editing it.

The command runs unchanged, with PeftBenchCallback attached to every `transformers.Trainer` (and so every TRL
trainer) it builds. How: the command's PYTHONPATH gets a folder whose `sitecustomize.py` (run by Python at start-up,
before the script) installs an import hook; when the script imports `transformers.trainer`, the hook wraps
`Trainer.__init__` to add the callback. Nothing is imported early (transformers, TRL and unsloth keep their own
import order), launchers such as `accelerate launch` and `torchrun` pass the environment on to every rank, and an
existing `sitecustomize` of the environment still runs after ours.

Records go where PeftBenchCallback() puts them (`<output_dir>/peftbench/`), or into `--results-dir`; the table and
`peftbench-report` read them as they read a sweep's.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import sys
from pathlib import Path

SITE_DIR = Path(__file__).parent / "measure_site"  # holds the sitecustomize.py that calls install()
ENV = "PEFTBENCH_MEASURE"  # JSON of the callback's arguments, for the child process
TARGET = "transformers.trainer"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="peftbench measure",
        description="Run a Trainer/SFTTrainer training command unchanged, measured by PeftBenchCallback.",
        epilog="Example: peftbench measure --results-dir results/my-jobs -- python train.py --lr 2e-4",
    )
    parser.add_argument("--results-dir", help="records and table go here (default: <output_dir>/peftbench)")
    parser.add_argument("--run-id", help="the record's folder name (default: <method>-<model>-<output_dir name>)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps left out of throughput (default 2)")
    parser.add_argument("--no-adapter", action="store_true", help="do not save a copy of a PEFT adapter")
    parser.add_argument("--no-trainer-logs", action="store_true", help="do not add peftbench/ figures to the logs")
    if "--" in argv:
        cut = argv.index("--")
        options, command = argv[:cut], argv[cut + 1 :]
    else:  # `peftbench measure python train.py`: the command starts at the first word that is not an option
        options, command = [], list(argv)
        while command and command[0].startswith("-"):
            options.append(command.pop(0))
            if options[-1] in ("--results-dir", "--run-id", "--warmup-steps") and command:
                options.append(command.pop(0))
    args = parser.parse_args(options)
    if not command:
        parser.error("give the training command after `--`, e.g. peftbench measure -- python train.py")
    return args, command


def callback_kwargs(args: argparse.Namespace) -> dict:
    kwargs = {"warmup_steps": args.warmup_steps}
    if args.results_dir:
        kwargs["results_dir"] = str(Path(args.results_dir).resolve())
    if args.run_id:
        kwargs["run_id"] = args.run_id
    if args.no_adapter:
        kwargs["save_adapter"] = False
    if args.no_trainer_logs:
        kwargs["log_to_trainer"] = False
    return kwargs


def child_environment(kwargs: dict, environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    path = [str(SITE_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(path)
    env[ENV] = json.dumps(kwargs)
    return env


def main(argv: list[str] | None = None) -> None:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    env = child_environment(callback_kwargs(args))
    try:
        os.execvpe(command[0], command, env)  # the job becomes this process: its exit code and signals are its own
    except FileNotFoundError:
        sys.exit(f"peftbench measure: command not found: {command[0]}")


# -- inside the measured job -----------------------------------------------------------------------------------------
def install() -> None:
    """Called by measure_site/sitecustomize.py at interpreter start: patch Trainer when it is imported."""
    if ENV not in os.environ or any(isinstance(f, _TrainerImportHook) for f in sys.meta_path):
        return
    if TARGET in sys.modules:
        patch_trainer(sys.modules[TARGET])
    else:
        sys.meta_path.insert(0, _TrainerImportHook())


class _TrainerImportHook(importlib.abc.MetaPathFinder):
    """Finds `transformers.trainer` as the other finders would, and patches it once it has executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        patch_trainer(module)


def patch_trainer(module) -> None:
    """Every Trainer built from now on gets a PeftBenchCallback (unless the job added one itself)."""
    trainer_cls = module.Trainer
    if getattr(trainer_cls.__init__, "_peftbench", False):
        return
    original = trainer_cls.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if getattr(self, "_peftbench_measured", False):
            return  # a subclass's __init__ calling Trainer.__init__ again
        self._peftbench_measured = True
        from peftbench.callback import PeftBenchCallback

        if any(isinstance(c, PeftBenchCallback) for c in self.callback_handler.callbacks):
            return
        callback = PeftBenchCallback(**json.loads(os.environ.get(ENV) or "{}"))
        callback.attached = "peftbench measure"
        callback._watch_train(self)
        self.add_callback(callback)

    __init__._peftbench = True
    __init__.__wrapped__ = original
    __init__.__doc__ = original.__doc__
    trainer_cls.__init__ = __init__


if __name__ == "__main__":
    main()
