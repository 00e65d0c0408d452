"""The PEFT family: method name -> its facts and how to prepare the model.

A method is a YAML file in `recipes/method/` (its hyperparameters; every key that is not peftbench's own goes to the
PEFT config class unchanged, so `method.r=32` works) plus one `Method` entry below. The runner never branches on a
method's name.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from peftbench import memory
from peftbench.errors import InputError, did_you_mean

# Keys of a method YAML that are peftbench's; everything else is a field of the PEFT config class. `train_args` are
# TrainingArguments fields the method sets (GaLore's `optim`, `optim_target_modules`, `optim_args`).
OWN_KEYS = {"name", "learning_rate", "add_biases", "quantization", "loraplus_lr_ratio", "train_args"}


class MethodError(InputError):
    """A method that cannot run as configured; raised before any weights load."""


@dataclass(frozen=True)
class Method:
    """A method and the facts the runner, memory model, profiles and engines read (never its name).

    `states` is the memory model's optimizer-state pattern (memory.STATE_BYTES); `activations` its saved-activation
    pattern (memory.extra_saved_per_token_layer), None where no GPU measurement backs one: the record then says
    `memory_model: not modelled` and profile=fast keeps gradient checkpointing on. `meta_overrides` are config keys
    that change how a method initialises but not what it trains, swapped in to set it up on the meta device (an SVD
    or a tokenizer has no meta version); `trainable` counts what trains where PEFT cannot be set up on meta at all.
    """

    name: str
    peft_type: str | None = None  # PEFT's PeftType name; None for BitFit and full fine-tuning
    trains: str = "adapter"  # "adapter" | "biases" | "all"
    quantize_4bit: bool = False
    mergeable: bool = True  # can the adapter be folded into the base weights (for evaluation)
    optimizer: str | None = None  # a non-default optimizer recipe ("loraplus")
    bf16_adapters: bool = False  # may keep its adapters in bf16 (profile.bf16_lora_adapters): LoRA-type B starts at 0
    unsloth: bool = False  # unsloth's FastLanguageModel has a path for it
    states: str = "adapter"
    activations: str | None = None
    adds_tokens: bool = False  # virtual tokens lengthen every sequence (prompt tuning)
    meta_overrides: tuple[tuple[str, Any], ...] = ()
    trainable: Callable[[torch.nn.Module, Any], int] | None = None
    init: str | None = None  # an initialisation after PEFT set the adapter up (initialise): "loftq"
    callback: str | None = None  # a TrainerCallback the method needs (trainer_callbacks): AdaLoRA's rank budget
    extra: str | None = None  # "module:extra": the package it imports and the pip extra that installs it
    needs_cuda: str | None = None  # why it cannot run without a CUDA GPU, if it cannot
    # Why it cannot train with gradient checkpointing, if it cannot: every profile then turns checkpointing off for it
    # and the record says why (profiles.choose)
    no_checkpointing: str | None = None
    # PEFT's tuner keeps the base model's forward as it was when PEFT wrapped it, so TRL's fused LM head (patched onto
    # the base model's forward by SFTTrainer afterwards) is pointed at again once the trainer is built
    # (trainer.follow_fused_head)
    copies_forward: bool = False
    no_compile: str | None = None  # why its layers cannot be compiled (profile.compile=regional is skipped), if so

    @property
    def summary(self) -> str:
        return self.peft_type or self.trains

    @property
    def modelled(self) -> bool:
        return self.activations is not None


def targeted_linears(model: torch.nn.Module, peft_config) -> list[torch.nn.Linear]:
    """The linear layers PEFT would adapt: its own default target modules for the architecture and its own matching."""
    import copy

    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.tuners.tuners_utils import check_target_module_exists

    tuner = PEFT_TYPE_TO_TUNER_MAPPING[peft_config.peft_type]
    config = tuner._prepare_adapter_config(tuner, copy.deepcopy(peft_config), model.config.to_dict())
    return [
        m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and check_target_module_exists(config, n)
    ]


# Trainable counts of methods PEFT cannot set up on the meta device (their setup reads values: .item(), nonzero,
# bincount), read off each tuner's layer code in peft 0.21.
def _boft_count(model, config) -> int:  # boft/layer.py: R (factors x blocks x size x size) and a scale per output
    factors, total = config.boft_n_butterfly_factor, 0
    for m in targeted_linears(model, config):
        size = config.boft_block_size or m.in_features // config.boft_block_num
        total += factors * (m.in_features // size) * size * size + m.out_features
    return total


def _shira_count(model, config) -> int:  # shira/layer.py: r * (in + out) sparse entries per layer, at most in * out
    total = 0
    for m in targeted_linears(model, config):
        n = config.r * (m.in_features + m.out_features)
        if n > m.in_features * m.out_features:  # SHiRA's own check, worded as in shira/layer.py
            raise ValueError(
                f"The set rank {config.r} results in more shira params than the total number of params "
                f"in the base layer {m.in_features * m.out_features} and this is not allowed."
            )
        total += n
    return total


def _unilora_count(model, config) -> int:  # unilora/model.py: one shared vector theta_d for the whole model
    return config.theta_d_length


def _weights_dependent(model, config) -> None:  # AdaMSS clusters the weights' SVD, FRoD keeps the weights' nonzeros
    return None


def _lora(name: str, **facts) -> Method:
    facts.setdefault("activations", "lora")
    return Method(name, "LORA", unsloth=True, **facts)


def _peft(name: str, peft_type: str, **facts) -> Method:
    return Method(name, peft_type, **facts)


# PEFT (peft_model.py, _setup_prompt_encoder): "prefix tuning now uses Cache but that won't work with gradient
# checkpointing"; transformers' checkpointed decoder layers drop the cache (GradientCheckpointingLayer), so the prefix
# is lost while the attention mask keeps its columns (run 20 on the H200: 2048 positions against a 2064-wide mask).
_KV_PREFIX = (
    "PEFT: its trained prefix is a KV cache, which transformers' gradient-checkpointed decoder layers drop "
    "(peft: 'does not work with gradient checkpointing')"
)

REGISTRY: dict[str, Method] = {
    m.name: m
    for m in [
        _lora("lora", bf16_adapters=True),
        _lora("qlora", quantize_4bit=True, activations="shared_inputs"),
        _lora("dora", activations="dora"),
        _peft("ia3", "IA3", activations="ia3"),
        _peft(
            "prompt_tuning",
            "PROMPT_TUNING",
            mergeable=False,
            activations="none",
            adds_tokens=True,
            meta_overrides=(("prompt_tuning_init", "RANDOM"),),
        ),
        Method("bitfit", trains="biases", states="added_bf16", activations="none"),
        Method("full", trains="all", unsloth=True, states="adamw_bf16", activations="shared_inputs"),
        _lora("rslora", bf16_adapters=True),
        _lora("pissa", bf16_adapters=True, meta_overrides=(("init_lora_weights", True),)),
        _lora("olora", meta_overrides=(("init_lora_weights", True),)),  # its QR reads the weights: none on meta
        _lora("loraplus", optimizer="loraplus", bf16_adapters=True),
        Method(
            "qlora_loftq",
            "LORA",
            quantize_4bit=True,
            activations="shared_inputs",
            init="loftq",
            needs_cuda="PEFT's replace_lora_weights_loftq computes on a CUDA device (torch.cuda.is_available() is "
            "False here). Run it on a GPU machine, or use method=qlora.",
        ),
        _peft("vera", "VERA"),
        _peft("prefix_tuning", "PREFIX_TUNING", mergeable=False, no_checkpointing=_KV_PREFIX),
        _peft("cartridge", "CARTRIDGE", mergeable=False, no_checkpointing=_KV_PREFIX),
        _peft("loha", "LOHA"),
        _peft("lokr", "LOKR"),
        _peft("adalora", "ADALORA", callback="adalora"),
        _peft("adamss", "ADAMSS", trainable=_weights_dependent),
        # AdaptionPromptModel.__init__: `self.forward = self.model.forward`
        _peft("adaption_prompt", "ADAPTION_PROMPT", mergeable=False, copies_forward=True),
        _peft("beft", "BEFT", mergeable=False),  # PEFT cannot merge it into a layer without a bias (Llama)
        _peft("boft", "BOFT", trainable=_boft_count),
        _peft("c3a", "C3A"),
        _peft("deft", "DEFT"),
        _peft("delora", "DELORA"),
        _peft("fourierft", "FOURIERFT"),
        _peft("frod", "FROD", trainable=_weights_dependent),
        _peft("glora", "GLORA"),
        _peft("gralora", "GRALORA"),
        _peft("hira", "HIRA"),
        _peft("hra", "HRA"),
        _peft("lily", "LILY", mergeable=False),  # peft 0.21: "This method is not supported for Lily"
        _peft("ln_tuning", "LN_TUNING"),
        _peft("miss", "MISS"),
        _peft("oft", "OFT"),
        _peft("osf", "OSF"),
        _peft("p_tuning", "P_TUNING", mergeable=False),
        _peft("peanut", "PEANUT"),
        _peft("psoft", "PSOFT"),
        _peft("pvera", "PVERA"),
        _peft("randlora", "RANDLORA"),
        _peft("road", "ROAD"),
        _peft("shadow", "SHADOW", mergeable=False),
        _peft("shira", "SHIRA", trainable=_shira_count),
        _peft("supertuning", "SUPERTUNING"),
        _peft("tinylora", "TINYLORA"),
        _peft("trainable_tokens", "TRAINABLE_TOKENS"),
        _peft("unilora", "UNILORA", trainable=_unilora_count),
        _peft("vblora", "VBLORA"),
        _peft("waveft", "WAVEFT"),
        # Memory-efficient full fine-tuning: every weight trains, through an optimizer of transformers' own `optim`.
        Method("full_galore", trains="all", states="galore", activations="shared_inputs", extra="galore_torch:galore"),
        Method("full_apollo", trains="all", states="apollo", activations="shared_inputs", extra="apollo_torch:apollo"),
        Method("full_adamw8bit", trains="all", states="adamw_8bit", activations="shared_inputs"),
        Method(
            "full_paged_adamw",
            trains="all",
            states="paged",
            activations="shared_inputs",
            needs_cuda="bitsandbytes' paged optimizers keep their states in CUDA managed memory, which needs a CUDA "
            "GPU (torch.cuda.is_available() is False here). Run it on a GPU machine, or use method=full.",
        ),
    ]
}

FAMILY = ["lora", "qlora", "dora", "ia3", "prompt_tuning", "bitfit", "full"]


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        hint = did_you_mean(name, REGISTRY)
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

    if method.peft_type not in PeftType.__members__:
        import peft

        raise MethodError(
            f"method={method.name}: the installed peft {peft.__version__} has no {method.peft_type} tuner (peftbench's "
            f"registry follows peft 0.21.2). Upgrade it: pip install -U 'peft>=0.21.2'."
        )
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
            hint = did_you_mean(key, valid, "method.")
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


def skeleton(model_config) -> torch.nn.Module:
    """The architecture built on the meta device: every shape, no memory, no weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config)


def bias_parameter_names(model_config) -> list[str]:
    """Names of bias parameters of the architecture, read from a meta-device build."""
    return [n for n, _ in skeleton(model_config).named_parameters() if n.endswith(".bias")]


def count_trainable(model: torch.nn.Module) -> int:
    """Parameters with requires_grad, each tensor once (tied embeddings are one tensor)."""
    seen = {id(p): p.numel() for p in model.parameters() if p.requires_grad}
    return sum(seen.values())


def setup_on_meta(method_cfg: dict[str, Any], model_config) -> torch.nn.Module:
    """The method applied to a meta-device build of the architecture, exactly as the runner applies it to the loaded
    model (prepare_model, then PEFT's get_peft_model), with the method's `meta_overrides` swapped in."""
    from peft import get_peft_model

    method = get_method(method_cfg["name"])
    cfg = {**method_cfg, **dict(method.meta_overrides)}
    model = skeleton(model_config)
    with torch.device("meta"):
        prepare_model(model, cfg)
        peft_config = build_peft_config(cfg)
        if peft_config is not None:
            model = get_peft_model(model, peft_config)
    return model


def predicted_trainable(method_cfg: dict[str, Any], model_config) -> int | None:
    """What this method trains on this architecture, counted without weights: on a meta-device setup, or by the
    method's own `trainable` count where PEFT cannot be set up on meta. Cached: profiles and the record both ask."""
    return _predicted_trainable(json.dumps(method_cfg, sort_keys=True, default=str), model_config.to_json_string())


@functools.lru_cache(maxsize=8)
def _predicted_trainable(method_json: str, model_config_json: str) -> int | None:
    from transformers import AutoConfig

    method_cfg = json.loads(method_json)
    fields_ = json.loads(model_config_json)
    fields_.pop(
        "quantization_config", None
    )  # the loaded model's 4-bit settings: the count is the same on a plain build
    model_config = AutoConfig.for_model(**fields_)
    method = get_method(method_cfg["name"])
    if method.trainable is not None:
        count = method.trainable(skeleton(model_config), build_peft_config(method_cfg))
        return None if count is None else int(count)
    return count_trainable(setup_on_meta(method_cfg, model_config))


def predict_memory(
    method_cfg: dict[str, Any],
    model_config,
    seq_len: int,
    micro_batch: int,
    gradient_checkpointing: bool,
    fused_kernels: bool = False,
    bf16_adapters: bool = False,
    plan: str | None = None,
    compiled: bool = False,
):
    """memory.predict for this method, with its registry facts and its predicted trainable count (`plan`: a
    checkpointing plan, memory.PLANS; None: `gradient_checkpointing` as `all` or `off`)."""
    return memory.predict(
        model_config,
        get_method(method_cfg["name"]),
        method_cfg,
        predicted_trainable(method_cfg, model_config),
        seq_len,
        micro_batch,
        gradient_checkpointing,
        fused_kernels,
        bf16_adapters,
        plan,
        compiled,
    )


def applicability_error(method_cfg: dict[str, Any], model_config) -> str | None:
    """PEFT's own refusal (an unsupported target module type, a size it cannot divide...) from setting the method up
    on a meta-device build, or TRL's (an adapter on the LM head), or None."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    method = get_method(method_cfg["name"])
    if method.peft_type is None:
        return None
    try:
        if method.trainable is not None:  # its count replays the checks PEFT makes on the shapes
            method.trainable(skeleton(model_config), build_peft_config(method_cfg))
            return None
        model = setup_on_meta(method_cfg, model_config)
    except (ValueError, TypeError, KeyError, NotImplementedError, RuntimeError) as exc:
        return f"PEFT refuses it: {type(exc).__name__}: {exc}"
    if isinstance(model.get_output_embeddings(), BaseTunerLayer):  # TRL's SFTTrainer refuses it (its fused LM head)
        tied = (
            " (this model ties its input and output embeddings, so an adapter on one is on both)"
            if getattr(model_config, "tie_word_embeddings", False)
            else ""
        )
        return (
            "the adapter would wrap the LM head, which TRL's SFTTrainer refuses: its loss reads lm_head.weight "
            f"directly, so the adapter would never train{tied}."
        )
    return None


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
    if method.needs_cuda and not torch.cuda.is_available():
        raise MethodError(f"method={method.name}: {method.needs_cuda}")
    check_train_args(method_cfg)
    problem = applicability_error(method_cfg, model_config)
    if problem:
        arch = (model_config.architectures or [model_config.model_type])[0]
        raise MethodError(
            f"method={method.name} cannot apply to this model ({arch}): {problem} "
            f"Change the method's options (method.target_modules, its rank or block size) or pick another method."
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


def train_args(method_cfg: dict[str, Any]) -> dict[str, Any]:
    """TrainingArguments fields the method sets (`train_args` in its YAML: GaLore's optim, 8-bit AdamW...)."""
    return dict(method_cfg.get("train_args") or {})


def check_train_args(method_cfg: dict[str, Any]) -> None:
    """The method's `train_args`: known TrainingArguments fields, an optimizer transformers knows, its package here."""
    from transformers import TrainingArguments
    from transformers.training_args import OptimizerNames

    method = get_method(method_cfg["name"])
    valid = {f.name for f in fields(TrainingArguments)}
    args = train_args(method_cfg)
    for key in args:
        if key not in valid:
            hint = did_you_mean(key, valid, "method.train_args.")
            raise MethodError(f"method.train_args.{key}: not a TrainingArguments field.{hint}")
    optim = args.get("optim")
    if optim is not None and optim not in {o.value for o in OptimizerNames}:
        hint = did_you_mean(optim, [o.value for o in OptimizerNames])
        raise MethodError(f"method.train_args.optim: transformers has no optimizer `{optim}`.{hint}")
    if method.extra:
        import importlib.util

        package, extra = method.extra.split(":")
        if importlib.util.find_spec(package) is None:
            raise MethodError(
                f"method={method.name} needs the `{package}` package, which is not installed. Install it with "
                f'`pip install "peftbench[{extra}]"`.'
            )


def trainer_callbacks(method_cfg: dict[str, Any]) -> list:
    """TrainerCallbacks the method needs during training (its registry entry's `callback`)."""
    kind = get_method(method_cfg["name"]).callback
    if kind is None:
        return []
    from transformers import TrainerCallback

    class AdaLoraBudget(TrainerCallback):
        """AdaLoRA reallocates its rank budget from the gradients after each optimizer step and before they are
        zeroed (PEFT's `update_and_allocate`, which its docs say the training loop must call); the Trainer does not
        call it, so this callback does, at the Trainer's `on_optimizer_step`."""

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            from peft import PeftModel

            peft_model = model
            while not isinstance(peft_model, PeftModel) and hasattr(peft_model, "module"):
                peft_model = peft_model.module  # DDP / accelerate wrappers
            peft_model.base_model.update_and_allocate(state.global_step)

    return {"adalora": [AdaLoraBudget()]}[kind]


def check_model(method_cfg: dict[str, Any], model_cfg: Any) -> None:
    """What the method needs of the model source, checked before any weights load."""
    method = get_method(method_cfg["name"])
    if method.init == "loftq" and model_cfg.get("init") == "random":
        raise MethodError(
            f"method={method.name}: LoftQ initialises the adapters from the quantization error of the original "
            f"weights, which it reads from the checkpoint's safetensors (PEFT's replace_lora_weights_loftq), and "
            f"model.init=random has no checkpoint. Use a real checkpoint (model.init=pretrained), or method=qlora for "
            f"shape-only runs (LoftQ changes the initial values, not the memory or speed)."
        )


def initialise(model: torch.nn.Module, method_cfg: dict[str, Any], model_folder: Any) -> dict[str, Any]:
    """The method's initialisation after PEFT set the adapter up; returns what the record should say about it.
    `model_folder()` gives the checkpoint's local folder (a GGUF file's dequantized one), asked only by a method
    whose initialisation reads the weights.

    LoftQ (Li et al. 2023) for QLoRA: PEFT's `replace_lora_weights_loftq` reads each original weight from the
    safetensors beside the model and sets A and B so that the 4-bit weight plus the adapter is closest to it (one
    alternating step; PEFT's recommended route for a bitsandbytes 4-bit model)."""
    method = get_method(method_cfg["name"])
    if method.init != "loftq":
        return {}
    from pathlib import Path

    from peft import replace_lora_weights_loftq

    folder = model_folder()  # a hub id: PEFT finds its cached snapshot
    replace_lora_weights_loftq(model, model_path=folder if Path(folder).is_dir() else None)
    return {"init": "loftq (peft.replace_lora_weights_loftq)"}
