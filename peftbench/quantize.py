"""4-bit NF4 quantization of a model built in memory (random init), one linear layer at a time.

transformers only quantizes while loading a checkpoint; shape-only runs have none, so each nn.Linear is swapped for
a bitsandbytes Linear4bit and quantized where it lives, releasing its full-precision weight before the next one.
"""

from __future__ import annotations

import torch
from torch import nn


def quantize_linear_layers(model: nn.Module, qconfig, mark_model: bool = True) -> int:
    """Replace every nn.Linear except the skipped ones (lm_head by default) in place; returns how many were swapped.

    `mark_model=False` quantizes a part (one decoder block) without setting the whole-model flags.
    """
    import bitsandbytes as bnb

    skip = set(qconfig.llm_int8_skip_modules or ["lm_head"])
    swapped = 0
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full_name = f"{parent_name}.{child_name}" if parent_name else child_name
            if (
                type(child) is not nn.Linear or child_name in skip or full_name in skip
            ):  # Linear4bit is an nn.Linear too
                continue
            device = child.weight.device
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=qconfig.bnb_4bit_compute_dtype,
                compress_statistics=qconfig.bnb_4bit_use_double_quant,
                quant_type=qconfig.bnb_4bit_quant_type,
                quant_storage=qconfig.bnb_4bit_quant_storage,
                device="meta",
            )
            weight = bnb.nn.Params4bit(
                child.weight.data,
                requires_grad=False,
                quant_type=qconfig.bnb_4bit_quant_type,
                compress_statistics=qconfig.bnb_4bit_use_double_quant,
                quant_storage=qconfig.bnb_4bit_quant_storage,
            )
            layer.weight = weight._quantize(device) if device.type != "meta" else weight
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, child_name, layer)
            del child, weight
            swapped += 1
    if not mark_model:
        return swapped
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    # What PEFT and transformers look at to treat the model as a k-bit base (casts, checkpointing, checks).
    from transformers.quantizers import AutoHfQuantizer

    model.is_loaded_in_4bit = True
    model.is_quantized = True
    model.quantization_method = "bitsandbytes"
    model.hf_quantizer = AutoHfQuantizer.from_config(qconfig)
    model.config.quantization_config = qconfig
    return swapped
