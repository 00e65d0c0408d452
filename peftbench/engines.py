"""Engines: which implementation trains a point, orthogonal to which method (`engine=peft|liger|unsloth`).

- `peft`: stock transformers + PEFT + bitsandbytes, what the user's own job runs.
- `liger`: the same, with Liger's fused kernels applied through TRL's `use_liger_kernel` (the code path of
  `profile=fast`, see profiles.choose).
- `unsloth`: unsloth's `FastLanguageModel` loads the model and sets up the adapter (its fused LoRA kernels, its
  offloaded gradient checkpointing); the same SFTTrainer and callback measure it. unsloth patches transformers, TRL
  and PEFT when imported and must come before them, so each unsloth point runs in a child process that imports it
  first (`python -m peftbench.worker train`); the sweep's own process never imports it, so peft/liger points
  around it stay stock.

A point an engine cannot run here (extra not installed, no GPU, a method it has no path for, versions its pins
refuse) raises `EngineUnavailable` before any model loads: the runner writes a `skipped` row with the reason and
the sweep goes on (exit code 3 when nothing else failed, see __main__).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("peftbench")

ENGINES = ("peft", "liger", "unsloth")
EXTRA = {"liger": ("liger_kernel", "liger-kernel"), "unsloth": ("unsloth", "unsloth")}  # engine -> (module, dist)
# Libraries whose versions unsloth pins (its METADATA); a mismatch is refused unless engine.check_versions=false.
PINNED = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes")
CHILD_ENV = "PEFTBENCH_ENGINE_CHILD"  # set in the worker process: the point is already isolated


class EngineUnavailable(RuntimeError):
    """This engine cannot run this point on this machine; the point becomes a `skipped` row with this message."""


class EngineChildError(RuntimeError):
    """The engine's child process ended the point with a status other than ok (failed, oom, ...)."""

    def __init__(self, status: str, message: str, child_traceback: str | None = None):
        super().__init__(message)
        self.status, self.child_traceback = status, child_traceback


def name(cfg: DictConfig) -> str:
    engine = cfg.get("engine")
    return str(engine.get("name", "peft")) if engine else "peft"


def installed(engine: str) -> bool:
    module = EXTRA.get(engine, (None,))[0]
    return module is None or importlib.util.find_spec(module) is not None


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def runs_method(method_name: str) -> bool:
    """unsloth's FastLanguageModel has a path for LoRA-type adapters (LoRA, QLoRA, DoRA, rsLoRA, PiSSA, LoRA+) and
    full fine-tuning with AdamW: the registry entry's `unsloth` fact."""
    from peftbench.methods import get_method

    return get_method(method_name).unsloth


def version_conflicts(dist: str, names: tuple[str, ...] = PINNED) -> list[str]:
    """`name installed X, dist requires Y` for each of `names` whose installed version the dist's pins exclude."""
    from packaging.requirements import Requirement

    try:
        requirements = importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    out = []
    for text in requirements:
        req = Requirement(text)
        if req.name.replace("_", "-").lower() not in names or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            have = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if not req.specifier.contains(have, prereleases=True):
            out.append(f"{dist} {importlib.metadata.version(dist)} requires {req.name}{req.specifier}, installed {have}")
    return out


def unavailable_reason(cfg: DictConfig, method_name: str) -> str | None:
    """Why this engine cannot run this point here (the message names the fix), or None if it can."""
    engine = name(cfg)
    profile = (cfg.get("profile") or {}).get("name", "default")
    if engine == "unsloth":
        if not runs_method(method_name):
            return (f"engine=unsloth cannot run method={method_name}: unsloth's FastLanguageModel sets up LoRA-type "
                    f"adapters (lora, qlora, dora, rslora, pissa, loraplus) and full fine-tuning only. "
                    f"Run method={method_name} with engine=peft or engine=liger.")  # fmt: skip
        if profile != "default":
            return (f"engine=unsloth with profile={profile}: the profile's Liger kernels and checkpointing choice "
                    f"would replace unsloth's own. Use profile=default with engine=unsloth.")  # fmt: skip
        from peftbench import distributed

        if distributed.world_size() > 1:
            return "engine=unsloth runs on one GPU in peftbench; under torchrun/accelerate use engine=peft or liger."
    if engine in ("liger", "unsloth") and not has_gpu():
        what = "Liger's Triton kernels need" if engine == "liger" else "unsloth needs"
        return (f"engine={engine}: {what} a CUDA GPU, and this machine has none (torch.cuda.is_available() is "
                f"False). Run this point on a GPU machine, or use engine=peft.")  # fmt: skip
    if not installed(engine):
        module, dist = EXTRA[engine]
        return (f"engine={engine}: the `{module}` package is not installed. Install the extra: "
                f'pip install "peftbench[{engine}]" ({dist}), or use engine=peft.')  # fmt: skip
    if engine == "unsloth" and cfg.engine.get("check_versions", True):
        conflicts = version_conflicts("unsloth") + version_conflicts("unsloth_zoo")
        if conflicts:
            return (f"engine=unsloth: installed versions outside unsloth's pins: {'; '.join(conflicts)}. "
                    f'Fix: pip install "peftbench[unsloth]" in a fresh environment (it resolves versions unsloth '
                    f"accepts), or set engine.check_versions=false to try anyway (unsupported by unsloth).")  # fmt: skip
    return None


def check(cfg: DictConfig, method_name: str) -> None:
    """Raise EngineUnavailable (-> `skipped`) or ConfigError (an unknown engine name, -> `invalid`)."""
    from peftbench.checks import ConfigError

    engine = name(cfg)
    if engine not in ENGINES:
        raise ConfigError(f"engine: `{engine}` is not an engine. Choose one of {', '.join(ENGINES)} (engine=peft).")
    reason = unavailable_reason(cfg, method_name)
    if reason:
        raise EngineUnavailable(reason)


def uses_liger(cfg: DictConfig) -> bool:
    """Liger kernels for this point: engine=liger, or a profile that asks for them (profile=fast): one code path."""
    return name(cfg) == "liger" or bool((cfg.get("profile") or {}).get("use_liger_kernel"))


def version(engine: str) -> str | None:
    dist = {"peft": "peft", "liger": "liger-kernel", "unsloth": "unsloth"}[engine]
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def liger_kernels(model_type: str, override: dict[str, Any] | None) -> list[str]:
    """The kernels Liger applies to this architecture: its apply function's defaults, then the trainer's override
    (TRL turns fused_linear_cross_entropy off; it uses its own chunked LM-head loss)."""
    import inspect

    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    fn = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if fn is None:
        return []
    flags = {k: p.default for k, p in inspect.signature(fn).parameters.items() if isinstance(p.default, bool)}
    flags.update({k: v for k, v in (override or {}).items() if k in flags})
    return sorted(k for k, v in flags.items() if v)


def trainer_settings(cfg: DictConfig, args: Any, model: Any) -> dict[str, Any]:
    """What the record says about the engine once the trainer is built (peft and liger; unsloth adds its own)."""
    info: dict[str, Any] = {"engine_version": version(name(cfg))}
    gc = bool(args.gradient_checkpointing)
    if gc and name(cfg) != "unsloth":
        reentrant = (args.gradient_checkpointing_kwargs or {}).get("use_reentrant")
        info["engine_gradient_checkpointing"] = f"transformers (use_reentrant={reentrant})"
    elif not gc:
        info["engine_gradient_checkpointing"] = "off"
    if args.use_liger_kernel:
        info["liger_version"] = version("liger")
        model_type = getattr(getattr(model, "config", None), "model_type", "")
        info["engine_kernels"] = ",".join(f"liger:{k}" for k in liger_kernels(model_type, args.liger_kernel_config))
    return info


# -- unsloth ---------------------------------------------------------------------------------------------------------
def import_unsloth() -> dict[str, Any]:
    """Import unsloth (before transformers where possible); say whether transformers was imported first."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # unsloth would fetch a file from the hub on each load
    before = "transformers" in sys.modules
    if before:
        log.warning("engine=unsloth: transformers was imported before unsloth in this process; unsloth's patches "
                    "may be incomplete (peftbench runs unsloth points in a fresh child process to avoid this).")  # fmt: skip
    import unsloth  # noqa: F401

    return {"engine_transformers_imported_first": before, "engine_version": importlib.metadata.version("unsloth"),
            "unsloth_zoo_version": importlib.metadata.version("unsloth_zoo")}  # fmt: skip


def random_checkpoint(model_cfg: Any, tokenizer: Any) -> Path:
    """A local random-init checkpoint of the recipe's architecture, with `tokenizer`, written once and cached.

    unsloth loads from a folder (or hub id) only. Keyed by the architecture config, the init seed and the tokenizer's
    vocabulary, under the peftbench cache (PEFTBENCH_CACHE, default ~/.cache/peftbench)/random_init/.
    """
    import hashlib

    import torch

    from peftbench import models

    config = models.load_config(model_cfg)
    if len(tokenizer) > config.vocab_size:
        config.vocab_size = len(tokenizer)
    key = json.dumps({"config": config.to_diff_dict(), "seed": int(model_cfg.get("init_seed", 0)),
                      "dtype": str(model_cfg.dtype), "vocab": sorted(tokenizer.get_vocab().items())[:64]},
                     sort_keys=True, default=str)  # fmt: skip
    target = models.cache_root() / "random_init" / f"{model_cfg.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (target / "peftbench_random_init.json").exists():
        print(f"peftbench: random-init checkpoint (cached): {target}", flush=True)
        return target
    dtype = models.torch_dtype(model_cfg.dtype)
    model = models.random_init_model(config, dtype, models.default_device(), None, int(model_cfg.get("init_seed", 0)))
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, max_shard_size="5GB")
    tokenizer.save_pretrained(tmp)
    (tmp / "peftbench_random_init.json").write_text(key)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        os.replace(tmp, target)
    except OSError:  # another process wrote it first; the same key means the same architecture and seed
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    print(f"peftbench: wrote the random-init checkpoint for engine=unsloth to {target}", flush=True)
    return target


def linear_leaf_names(model: Any) -> list[str]:
    """What PEFT's `all-linear` means, as the leaf names unsloth takes: every linear layer but the output head."""
    from torch import nn

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
             if isinstance(m, nn.Linear) or type(m).__name__ in ("Linear4bit", "Linear8bitLt")}  # fmt: skip
    names.discard("lm_head")
    return sorted(names)


def unsloth_load(cfg: DictConfig, method_cfg: dict[str, Any], seq_len: int):
    """(model with adapter, tokenizer, record info) through FastLanguageModel, as unsloth's own notebooks do."""
    import torch
    from unsloth import FastLanguageModel

    from peftbench import data, methods, models

    method = methods.get_method(method_cfg["name"])
    mode = cfg.engine.get("gradient_checkpointing", "unsloth")
    if models.looks_like_hub_id(str(cfg.model.name_or_path)) and cfg.model.init == "pretrained":
        source = str(cfg.model.name_or_path)
    elif cfg.model.init == "random":
        source = str(random_checkpoint(cfg.model, data.tokenizer_for(cfg)))
    else:
        source = models.local_folder(str(cfg.model.name_or_path))
    quant = methods.quantization_config(method_cfg)
    kwargs: dict[str, Any] = dict(model_name=source, max_seq_length=seq_len, dtype=models.torch_dtype(cfg.model.dtype),
                                  load_in_4bit=quant is not None, full_finetuning=method.trains == "all",
                                  use_gradient_checkpointing=mode, trust_remote_code=cfg.model.trust_remote_code,
                                  revision=cfg.model.get("revision"))  # fmt: skip
    if kwargs["dtype"] == "auto":
        kwargs["dtype"] = None  # unsloth's own choice (bf16 where supported)
    if quant is not None:
        kwargs["quantization_config"] = quant  # the method's NF4/double-quant settings, not unsloth's defaults
    model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
    info: dict[str, Any] = {"engine_model_source": source, "engine_gradient_checkpointing": str(mode)}
    if method.peft_type == "LORA":
        pc = methods.build_peft_config(method_cfg)
        targets = pc.target_modules
        if targets == "all-linear" or targets == {"all-linear"}:
            targets = linear_leaf_names(model)
        lora = dict(r=pc.r, lora_alpha=pc.lora_alpha, lora_dropout=pc.lora_dropout, target_modules=sorted(targets),
                    bias=pc.bias, use_rslora=pc.use_rslora, init_lora_weights=pc.init_lora_weights,
                    use_gradient_checkpointing=mode, random_state=int(cfg.train.seed))  # fmt: skip
        if pc.use_dora:
            lora["use_dora"] = True
        model = FastLanguageModel.get_peft_model(model, **lora)
        info["engine_kernels"] = fused_lora_summary(model)
        if pc.use_dora:
            info["engine_note"] = ("DoRA: unsloth leaves layers with a DoRA magnitude vector out of its fused LoRA "
                                   "kernels, so they run PEFT's own DoRA forward (with unsloth's checkpointing).")  # fmt: skip
    else:
        info["engine_kernels"] = "unsloth full fine-tuning (compiled blocks)"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    info["adapter_dtype"] = str(next((p.dtype for p in model.parameters() if p.requires_grad), torch.bfloat16))
    return model, tokenizer, info


def fused_lora_summary(model: Any) -> str:
    """How many decoder layers run unsloth's fused LoRA MLP / QKV / O kernels (its patch replaces their forward)."""
    counts = {"mlp": 0, "qkv": 0, "o": 0}
    for module in model.modules():
        forward = getattr(module, "forward", None)
        fname = getattr(getattr(forward, "__func__", forward), "__name__", "")
        if "lora_mlp" in fname:
            counts["mlp"] += 1
        elif "lora_qkv" in fname:
            counts["qkv"] += 1
        for attr, key in (("apply_qkv", "qkv"), ("apply_o", "o")):
            fn = getattr(module, attr, None)
            if fn is not None and "lora" in getattr(fn, "__name__", ""):
                counts[key] += 1
    return f"unsloth fused LoRA: mlp {counts['mlp']}, qkv {counts['qkv']}, o {counts['o']} layers"


# -- the child process ----------------------------------------------------------------------------------------------
def needs_child(cfg: DictConfig) -> bool:
    return name(cfg) == "unsloth" and os.environ.get(CHILD_ENV) != "1"


def train_in_child(cfg: DictConfig, record: dict[str, Any]) -> dict[str, Any]:
    """Run runner.train_point in a fresh process that imports unsloth first; returns its record, or raises
    EngineChildError with the child's status (the parent's runner turns it into the row)."""
    with tempfile.TemporaryDirectory(prefix="peftbench-engine-") as tmp:
        cfg_path, rec_path, out_path = Path(tmp, "cfg.yaml"), Path(tmp, "record.json"), Path(tmp, "out.json")
        cfg_path.write_text(OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))))
        rec_path.write_text(json.dumps(record, default=str))
        env = {**os.environ, CHILD_ENV: "1"}
        command = [sys.executable, "-m", "peftbench.worker", "train", str(cfg_path), str(rec_path), str(out_path)]
        log.info("engine=%s: training in a child process (%s)", name(cfg), " ".join(command[1:4]))
        proc = subprocess.run(command, env=env, check=False)
        if not out_path.exists():
            raise EngineChildError("failed", f"engine={name(cfg)} child process exited with code {proc.returncode} "
                                             f"and wrote no result (killed? see the log above)")  # fmt: skip
        result = json.loads(out_path.read_text())
    if result["status"] != "ok":
        raise EngineChildError(result["status"], result["error"], result.get("traceback"))
    return result["record"]
