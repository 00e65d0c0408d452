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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftbench.errors import ChildFailed, Skipped

log = logging.getLogger("peftbench")


@dataclass(frozen=True)
class Engine:
    """What an engine is, as facts the runner, the profiles and the memory model read (never its name)."""

    name: str
    dist: str  # the distribution whose version the record names
    module: str | None = None  # the module an extra installs (None: part of peftbench's own dependencies)
    needs_gpu: str | None = None  # why it needs a CUDA GPU, or None
    child_process: bool = False  # must be imported before transformers: each point trains in a fresh process
    loads_model: bool = False  # loads the model and sets up the adapter itself (not models.load_model + PEFT)
    own_checkpointing: bool = False  # sets up its own gradient checkpointing with the model
    liger: bool = False  # applies Liger's kernels through TRL's use_liger_kernel
    keeps_trl_loss: bool = False  # patches the trainer: TRL's own compute_loss, not peftbench's lean one
    default_profile_only: bool = False  # the fast profile's kernels and checkpointing would replace its own
    single_process: bool = False  # one GPU only
    pins: tuple[str, ...] = ()  # distributions whose version pins must hold (engine.check_versions=false skips)
    modelled: bool = True  # the memory model describes its memory
    method_fact: str | None = None  # the Method registry field saying whether it runs a method (None: every method)
    no_compile: str | None = None  # why profile.compile=regional is skipped under it (None: it composes)


# Liger's kernels and regional compilation: every kernel but the loss ones (cross_entropy, fused_linear_cross_entropy)
# patches a module inside the decoder layers (RoPE, RMSNorm, SwiGLU/GeGLU, LayerNorm), so it runs inside the compiled
# region, where Dynamo fails to trace its Triton launches and breaks the graph at each one (results/h100 run 14:
# `triton_kernel_wrap ... AttributeError`, LoRA 12777 vs 13226 tok/s). TRL's SFTTrainer refuses the fused linear
# cross-entropy (it uses its own chunked LM head), and nothing of TRL's head calls the plain cross_entropy kernel.
LIGER_IN_LAYERS = (
    "Liger's kernels patch modules inside the decoder layers (RoPE, RMSNorm, SwiGLU), where Dynamo does "
    "not trace their Triton launches (results/h100 run 14: a graph break at each, slower)"
)
LIGER_LOSS_KERNELS = ("cross_entropy", "fused_linear_cross_entropy")  # outside the layers; TRL's head uses neither

REGISTRY: dict[str, Engine] = {
    e.name: e
    for e in [
        Engine("peft", dist="peft"),
        Engine(
            "liger",
            dist="liger-kernel",
            module="liger_kernel",
            needs_gpu="Liger's Triton kernels need",
            liger=True,
            no_compile=LIGER_IN_LAYERS,
        ),
        Engine(
            "unsloth",
            dist="unsloth",
            module="unsloth",
            needs_gpu="unsloth needs",
            child_process=True,
            loads_model=True,
            own_checkpointing=True,
            keeps_trl_loss=True,
            default_profile_only=True,
            single_process=True,
            pins=("unsloth", "unsloth_zoo"),
            modelled=False,
            method_fact="unsloth",
            no_compile="unsloth replaces the layers' forward with its own kernels and compiles what it compiles",
        ),
    ]
}
ENGINES = tuple(REGISTRY)
# Libraries whose versions unsloth pins (its METADATA); a mismatch is refused unless engine.check_versions=false.
PINNED = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes")
CHILD_ENV = "PEFTBENCH_ENGINE_CHILD"  # set in the worker process: the point is already isolated


class EngineUnavailable(Skipped):
    """This engine cannot run this point on this machine; the point becomes a `skipped` row with this message."""


EngineChildError = ChildFailed  # the engine's child ended the point with a status other than ok


def name(cfg: DictConfig) -> str:
    engine = cfg.get("engine")
    return str(engine.get("name", "peft")) if engine else "peft"


def get(cfg: DictConfig) -> Engine:
    """The point's engine (check() has refused an unknown name before anything asks)."""
    return REGISTRY[name(cfg)]


def installed(engine: Engine) -> bool:
    return engine.module is None or importlib.util.find_spec(engine.module) is not None


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def runs_method(engine: Engine, method_name: str) -> bool:
    """Whether the engine has a path for the method: the Method registry's fact the engine names (unsloth's
    FastLanguageModel: LoRA-type adapters and full fine-tuning with AdamW), else every method."""
    from peftbench.methods import get_method

    return engine.method_fact is None or bool(getattr(get_method(method_name), engine.method_fact))


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
            out.append(
                f"{dist} {importlib.metadata.version(dist)} requires {req.name}{req.specifier}, installed {have}"
            )
    return out


def unavailable_reason(cfg: DictConfig, method_name: str) -> str | None:
    """Why this engine cannot run this point here (the message names the fix), or None if it can."""
    engine = get(cfg)
    profile = (cfg.get("profile") or {}).get("name", "default")
    if not runs_method(engine, method_name):
        runnable = ", ".join(m for m in method_names() if runs_method(engine, m))
        return (
            f"engine={engine.name} cannot run method={method_name}: it has a path for {runnable} only. "
            f"Run method={method_name} with engine=peft or engine=liger."
        )
    if engine.default_profile_only and profile != "default":
        return (
            f"engine={engine.name} with profile={profile}: the profile's Liger kernels and checkpointing choice "
            f"would replace {engine.name}'s own. Use profile=default with engine={engine.name}."
        )
    if engine.single_process:
        from peftbench import distributed

        if distributed.world_size() > 1:
            return (
                f"engine={engine.name} runs on one GPU in peftbench; under torchrun/accelerate use engine=peft "
                f"or liger."
            )
    if engine.needs_gpu and not has_gpu():
        return (
            f"engine={engine.name}: {engine.needs_gpu} a CUDA GPU, and this machine has none "
            f"(torch.cuda.is_available() is False). Run this point on a GPU machine, or use engine=peft."
        )
    if not installed(engine):
        return (
            f"engine={engine.name}: the `{engine.module}` package is not installed. Install the extra: "
            f'pip install "peftbench[{engine.name}]" ({engine.dist}), or use engine=peft.'
        )
    if engine.pins and cfg.engine.get("check_versions", True):
        conflicts = [c for dist in engine.pins for c in version_conflicts(dist)]
        if conflicts:
            return (
                f"engine={engine.name}: installed versions outside its pins: {'; '.join(conflicts)}. "
                f'Fix: pip install "peftbench[{engine.name}]" in a fresh environment (it resolves versions '
                f"{engine.name} accepts), or set engine.check_versions=false to try anyway."
            )
    return None


def method_names() -> list[str]:
    from peftbench.methods import REGISTRY as METHODS

    return list(METHODS)


def check(cfg: DictConfig, method_name: str) -> None:
    """Raise EngineUnavailable (-> `skipped`) or ConfigError (an unknown engine name, -> `invalid`)."""
    from peftbench.checks import ConfigError

    engine = name(cfg)
    if engine not in ENGINES:
        raise ConfigError(f"engine: `{engine}` is not an engine. Choose one of {', '.join(ENGINES)} (engine=peft).")
    reason = unavailable_reason(cfg, method_name)
    if reason:
        raise EngineUnavailable(reason)


def version(engine: str) -> str | None:
    try:
        return importlib.metadata.version(REGISTRY[engine].dist)
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


def trainer_settings(engine: Engine, args: Any, model: Any) -> dict[str, Any]:
    """What the record says about the engine once the trainer is built (peft and liger; unsloth adds its own)."""
    info: dict[str, Any] = {"engine_version": version(engine.name)}
    gc = bool(args.gradient_checkpointing)
    if gc and not engine.own_checkpointing:
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
        log.warning(
            "engine=unsloth: transformers was imported before unsloth in this process; unsloth's patches "
            "may be incomplete (peftbench runs unsloth points in a fresh child process to avoid this)."
        )
    import unsloth  # noqa: F401

    return {
        "engine_transformers_imported_first": before,
        "engine_version": importlib.metadata.version("unsloth"),
        "unsloth_zoo_version": importlib.metadata.version("unsloth_zoo"),
    }


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
    key = json.dumps(
        {
            "config": config.to_diff_dict(),
            "seed": int(model_cfg.get("init_seed", 0)),
            "dtype": str(model_cfg.dtype),
            "vocab": sorted(tokenizer.get_vocab().items())[:64],
        },
        sort_keys=True,
        default=str,
    )
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

    names = {
        n.rsplit(".", 1)[-1]
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) or type(m).__name__ in ("Linear4bit", "Linear8bitLt")
    }
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
    kwargs: dict[str, Any] = dict(
        model_name=source,
        max_seq_length=seq_len,
        dtype=models.torch_dtype(cfg.model.dtype),
        load_in_4bit=quant is not None,
        full_finetuning=method.trains == "all",
        use_gradient_checkpointing=mode,
        trust_remote_code=cfg.model.trust_remote_code,
        revision=cfg.model.get("revision"),
    )
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
        lora = dict(
            r=pc.r,
            lora_alpha=pc.lora_alpha,
            lora_dropout=pc.lora_dropout,
            target_modules=sorted(targets),
            bias=pc.bias,
            use_rslora=pc.use_rslora,
            init_lora_weights=pc.init_lora_weights,
            use_gradient_checkpointing=mode,
            random_state=int(cfg.train.seed),
        )
        if pc.use_dora:
            lora["use_dora"] = True
        model = FastLanguageModel.get_peft_model(model, **lora)
        info["engine_kernels"] = fused_lora_summary(model)
        if pc.use_dora:
            info["engine_note"] = (
                "DoRA: unsloth leaves layers with a DoRA magnitude vector out of its fused LoRA "
                "kernels, so they run PEFT's own DoRA forward (with unsloth's checkpointing)."
            )
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
def needs_child(engine: Engine) -> bool:
    return engine.child_process and os.environ.get(CHILD_ENV) != "1"


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
            raise EngineChildError(
                "failed",
                f"engine={name(cfg)} child process exited with code {proc.returncode} "
                f"and wrote no result (killed? see the log above)",
            )
        result = json.loads(out_path.read_text())
    if result["status"] != "ok":
        raise EngineChildError(result["status"], result["error"], result.get("traceback"))
    return result["record"]
