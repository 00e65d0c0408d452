"""The engines' child process: `python -m peftbench.worker train CFG RECORD OUT` trains one point with unsloth
imported first (engines.train_in_child starts it), and `python -m peftbench.worker checkpoint OVERRIDES...` writes or
finds a recipe's random-init checkpoint. An entry point of its own, so that engines (a building block) never imports
the runner that uses it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from peftbench import engines  # imports neither transformers nor torch at module level: unsloth must come first


def worker(cfg_path: str, rec_path: str, out_path: str) -> int:
    """The child: import the engine first, then the runner's train_point; write {status, record|error}."""
    import traceback

    info = engines.import_unsloth()  # before anything imports transformers, TRL or PEFT
    from peftbench import records, runner

    cfg = OmegaConf.create(json.loads(json.dumps(OmegaConf.to_container(OmegaConf.load(cfg_path)))))
    record = json.loads(Path(rec_path).read_text())
    record.update(info)
    try:
        record = runner.train_point(cfg, record)
        result = {"status": "ok", "record": record}
    except Exception as exc:  # noqa: BLE001 - the parent writes the row; the child reports what happened
        status = runner.failure_status(exc)
        result = {"status": status, "error": str(exc) if status == "invalid" else f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(limit=8)}  # fmt: skip
    records.atomic_write_text(Path(out_path), json.dumps(result, default=str))
    return 0


def checkpoint_main(overrides: list[str]) -> int:
    """`python -m peftbench.worker checkpoint OVERRIDES...`: write (or find) the random-init checkpoint of a recipe
    and print its folder, e.g. for scripts/unsloth_direct.py."""
    from hydra import compose, initialize_config_dir

    from peftbench import data
    from peftbench.paths import recipes_dir

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    print(engines.random_checkpoint(cfg.model, data.tokenizer_for(cfg)))
    return 0


if __name__ == "__main__":
    usage = "usage: python -m peftbench.worker train CFG RECORD OUT | checkpoint [OVERRIDES...]"
    if len(sys.argv) >= 2 and sys.argv[1] == "train" and len(sys.argv) == 5:
        sys.exit(worker(*sys.argv[2:]))
    if len(sys.argv) >= 2 and sys.argv[1] == "checkpoint":
        sys.exit(checkpoint_main(sys.argv[2:]))
    sys.exit(usage)
