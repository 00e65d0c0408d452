"""What a run is, read from the model and the data alone: the callback's identity and provenance in plugin mode.

Inside peftbench's own runner the recipe says which method, model and data a point is. Inside somebody else's
Trainer job there is no recipe, so the same facts are read off the objects the Trainer holds: the PEFT config on the
model (or, without one, what is trainable), the weights' origin, and the training set's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

# PEFT config fields that describe where the adapter came from, not what it is: left out of `method_config`.
PEFT_BOOKKEEPING = {
    "base_model_name_or_path",
    "revision",
    "task_type",
    "peft_type",
    "inference_mode",
    "auto_mapping",
    "peft_version",
    "runtime_config",
}
LORA_INITS = {"pissa", "olora", "loftq", "corda", "eva", "orthogonal"}  # init_lora_weights values that name a method
MAX_HASHED_ROWS = 100_000  # a list-like training set longer than this is fingerprinted by length and its ends


def peft_adapter_config(model: torch.nn.Module) -> Any | None:
    """The active adapter's PEFT config, or None for a model without one."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return None
    active = getattr(model, "active_adapter", None)
    active = active[0] if isinstance(active, (list, tuple)) and active else active
    return configs.get(active) or next(iter(configs.values()))


def infer_method(model: torch.nn.Module) -> tuple[str, dict[str, Any]]:
    """(method name, its options) as peftbench's method registry would name them, from the model alone.

    PEFT models: the adapter's type, with LoRA's variants named by their switches (DoRA, rsLoRA, PiSSA-style inits,
    a 4-bit base for QLoRA). Other models: by what trains (everything: `full`; biases only: `bitfit`; nothing:
    `frozen`; anything else: `partial`)."""
    config = peft_adapter_config(model)
    if config is not None:
        peft_type = getattr(config.peft_type, "value", config.peft_type)
        name = str(peft_type).lower()
        options = {k: v for k, v in config.to_dict().items() if k not in PEFT_BOOKKEEPING}
        options = json.loads(json.dumps(options, default=sorted_list))  # sets -> sorted lists: stable in JSON
        if name == "lora":
            init = options.get("init_lora_weights")
            if options.get("use_dora"):
                name = "dora"
            elif options.get("use_rslora"):
                name = "rslora"
            elif isinstance(init, str) and init.split("_")[0] in LORA_INITS:
                name = init.split("_")[0]
            if getattr(model, "is_loaded_in_4bit", False) or getattr(
                getattr(model, "base_model", None), "is_loaded_in_4bit", False
            ):
                name = "qlora" if name == "lora" else f"q{name}"
        return name, options
    params = [(n, p) for n, p in model.named_parameters()]
    trainable = [n for n, p in params if p.requires_grad]
    if not trainable:
        return "frozen", {}
    if len(trainable) == len(params):
        return "full", {}
    if all(n.rsplit(".", 1)[-1] == "bias" for n in trainable):
        return "bitfit", {}
    return "partial", {"trainable_tensors": len(trainable)}


def sorted_list(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def model_provenance(model: torch.nn.Module) -> dict[str, Any]:
    """Where the weights came from: the name or path they were loaded from, the hub revision when the hub said one,
    a hash of the architecture config, and for a local folder a hash of its config and weight files' names and sizes
    (the files are not read: a multi-GB checkpoint would cost minutes)."""
    config = getattr(base_model(model), "config", None)
    if config is None:
        return {"model": type(model).__name__}
    source = getattr(config, "_name_or_path", None) or None
    info: dict[str, Any] = {
        "model": Path(source).name if source else type(base_model(model)).__name__,
        "model_source": source,
        "model_revision": getattr(config, "_commit_hash", None),
        "model_config_sha256": hashlib.sha256(config.to_json_string(use_diff=False).encode()).hexdigest()[:16],
        "model_init": "pretrained" if source else "from config",  # built from a config: weights of unknown origin
    }
    if source and Path(source).is_dir() and (Path(source) / "config.json").is_file():
        info["model_folder_sha256"] = folder_sha256(Path(source))
    return info


def folder_sha256(path: Path) -> str:
    """A checkpoint folder's identity: its config.json's bytes and every weight file's name and size."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted(path.glob("*.safetensors")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def dataset_fingerprint(dataset: Any) -> dict[str, Any]:
    """The training set's identity: a sha256 of its content. A 🤗 dataset is hashed from its Arrow buffers (fast, and
    the same for the same rows, where datasets' own `_fingerprint` is random whenever a map function cannot be
    hashed, as in TRL's tokenization: it is kept beside, as `datasets_fingerprint`); a list-like one from its rows as
    JSON (every row up to MAX_HASHED_ROWS; beyond that its length and end rows, and the record says so)."""
    if dataset is None:
        return {"dataset_fingerprint": None}
    out: dict[str, Any] = {"dataset": type(dataset).__name__}
    arrow = getattr(getattr(dataset, "data", None), "table", None)
    if arrow is not None:
        digest = hashlib.sha256()
        for table in (arrow, getattr(getattr(dataset, "_indices", None), "table", None)):
            for column in table.columns if table is not None else []:
                for chunk in column.chunks:
                    for buffer in chunk.buffers():
                        if buffer is not None:
                            digest.update(memoryview(buffer))
        out.update(
            train_examples=len(dataset),
            dataset_fingerprint=digest.hexdigest()[:16],
            dataset_fingerprint_source="arrow sha256",
            datasets_fingerprint=getattr(dataset, "_fingerprint", None),
        )
        return out
    try:
        n = len(dataset)
    except TypeError:  # an IterableDataset: no length, no rows to hash without consuming it
        out["dataset_fingerprint"] = None
        return out
    out["train_examples"] = n
    rows = range(n) if n <= MAX_HASHED_ROWS else [0, 1, 2, n - 3, n - 2, n - 1]
    digest = hashlib.sha256(str(n).encode())
    for i in rows:
        digest.update(json.dumps(as_plain(dataset[i]), sort_keys=True, default=str).encode())
    out["dataset_fingerprint"] = digest.hexdigest()[:16]
    out["dataset_fingerprint_source"] = "rows sha256" if n <= MAX_HASHED_ROWS else "length and end rows sha256"
    return out


def as_plain(row: Any) -> Any:
    """A row as JSON-able values (a BatchEncoding or tensor becomes dicts and lists)."""
    if isinstance(row, torch.Tensor):
        return row.tolist()
    if hasattr(row, "items"):
        return {str(k): as_plain(v) for k, v in row.items()}
    if isinstance(row, (list, tuple)):
        return [as_plain(v) for v in row]
    return row
