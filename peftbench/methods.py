"""The PEFT family: method name -> how to prepare the model.

A method is a YAML file in `recipes/method/` (its hyperparameters; every key that is not peftbench's own goes to the
PEFT config class unchanged, so `method.r=32` works) plus one `Method` entry below. The runner never branches on a
method's name.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, fields
from typing import Any

import torch

# Keys of a method YAML that are peftbench's; everything else is a field of the PEFT config class.
OWN_KEYS = {"name", "learning_rate", "add_biases", "quantization", "loraplus_lr_ratio"}


class MethodError(ValueError):
    """A method that cannot run as configured; raised before any weights load."""


@dataclass(frozen=True)
class Method:
    name: str
    peft_type: str | None = None  # PEFT's PeftType name; None for BitFit and full fine-tuning
    trains: str = "adapter"  # "adapter" | "biases" | "all"
    quantize_4bit: bool = False
    mergeable: bool = True  # can the adapter be folded into the base weights (for evaluation)
    optimizer: str | None = None  # a non-default optimizer recipe ("loraplus")

    @property
    def summary(self) -> str:
        return self.peft_type or self.trains


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in [
        Method("lora", "LORA"),
        Method("qlora", "LORA", quantize_4bit=True),
        Method("dora", "LORA"),
        Method("ia3", "IA3"),
        Method("prompt_tuning", "PROMPT_TUNING", mergeable=False),
        Method("bitfit", trains="biases"),
        Method("full", trains="all"),
        Method("rslora", "LORA"),
        Method("pissa", "LORA"),
        Method("loraplus", "LORA", optimizer="loraplus"),
        Method("vera", "VERA"),
        Method("prefix_tuning", "PREFIX_TUNING", mergeable=False),
    ]
}

FAMILY = ["lora", "qlora", "dora", "ia3", "prompt_tuning", "bitfit", "full"]


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise MethodError(
            f"method: unknown method `{name}`.{hint} Known methods: {', '.join(REGISTRY)}. "
            f"A new method is a YAML file in recipes/method/ plus one entry in peftbench/methods.py REGISTRY."
        )
    return REGISTRY[name]


def peft_kwargs(method_cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in method_cfg.items() if k not in OWN_KEYS}


def peft_config_class(method: Method):
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[method.peft_type]]


def build_peft_config(method_cfg: dict[str, Any], tokenizer_path: str | None = None):
    """The PEFT config object for this method; unknown keys fail with the closest valid field named."""
    method = get_method(method_cfg["name"])
    if method.peft_type is None:
        return None
    cls = peft_config_class(method)
    valid = {f.name for f in fields(cls)}
    kwargs = peft_kwargs(method_cfg)
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean `method.{close[0]}`?" if close else ""
            raise MethodError(f"method.{key}: `{cls.__name__}` has no field `{key}`.{hint}")
    kwargs.setdefault("task_type", "CAUSAL_LM")
    if "tokenizer_name_or_path" in valid and kwargs.get("tokenizer_name_or_path") is None and tokenizer_path:
        kwargs["tokenizer_name_or_path"] = tokenizer_path
    return cls(**kwargs)


def quantization_config(method_cfg: dict[str, Any]):
    """bitsandbytes 4-bit settings for methods that train on a quantized base (QLoRA)."""
    if not get_method(method_cfg["name"]).quantize_4bit:
        return None
    from transformers import BitsAndBytesConfig

    q = dict(method_cfg.get("quantization") or {})
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.get("quant_type", "nf4"),
        bnb_4bit_use_double_quant=q.get("double_quant", True),
        bnb_4bit_compute_dtype=getattr(torch, q.get("compute_dtype", "bfloat16")),
        bnb_4bit_quant_storage=getattr(torch, q.get("quant_storage", "uint8")),
    )


def bias_parameter_names(model_config) -> list[str]:
    """Names of bias parameters of the architecture, read from a meta-device build: no memory, no weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model_config)
    return [n for n, _ in skeleton.named_parameters() if n.endswith(".bias")]


def validate(method_cfg: dict[str, Any], model_config, tokenizer_spec: str | None = None) -> None:
    """Everything about the method that can be checked from the config alone."""
    method = get_method(method_cfg["name"])
    build_peft_config(method_cfg, tokenizer_spec)
    if method.trains == "biases" and not method_cfg.get("add_biases"):
        if not bias_parameter_names(model_config):
            arch = (model_config.architectures or [model_config.model_type])[0]
            raise MethodError(
                f"method=bitfit: BitFit trains only the bias parameters, and this model ({arch}) has none: "
                f"Llama-family models are built without biases, so BitFit would train zero parameters. Use "
                f"method=ia3 (per-channel scaling vectors, a similar handful of parameters) or method=lora instead, "
                f"or set method.add_biases=true to add zero-initialised biases to every linear layer and train those."
            )


def add_zero_biases(model: torch.nn.Module) -> int:
    """Give every bias-free nn.Linear a zero bias (same output at step 0); returns how many were added."""
    added = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.bias is None:
            w = module.weight
            module.bias = torch.nn.Parameter(torch.zeros(module.out_features, device=w.device, dtype=w.dtype))
            added += 1
    return added


def prepare_model(model: torch.nn.Module, method_cfg: dict[str, Any]) -> dict[str, Any]:
    """Freeze what the method does not train (BitFit, full). PEFT methods are wrapped by SFTTrainer itself."""
    method = get_method(method_cfg["name"])
    info: dict[str, Any] = {}
    if method.trains == "biases":
        if method_cfg.get("add_biases"):
            info["biases_added"] = add_zero_biases(model)
        for name, param in model.named_parameters():
            param.requires_grad = name.endswith(".bias")
    elif method.trains == "all":
        for param in model.parameters():
            param.requires_grad = True
    return info


def trainable_state_dict(model: torch.nn.Module, patterns: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Parameters that training changed (BitFit biases, or all of them for full fine-tuning), for saving."""
    return {
        n: p.detach().contiguous().cpu()
        for n, p in model.named_parameters()
        if p.requires_grad and (not patterns or any(fnmatch.fnmatch(n, pat) for pat in patterns))
    }


def build_optimizer(model: torch.nn.Module, method_cfg: dict[str, Any], learning_rate: float, weight_decay: float):
    """Methods that need their own optimizer (LoRA+: a larger learning rate for B than for A), else None."""
    if get_method(method_cfg["name"]).optimizer != "loraplus":
        return None
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        model=model,
        optimizer_cls=torch.optim.AdamW,
        lr=learning_rate,
        loraplus_lr_ratio=float(method_cfg.get("loraplus_lr_ratio", 16)),
        weight_decay=weight_decay,
    )
