"""The checkpointing planner: each plan's predicted peak (peftbench.memory), and the fastest plan that fits a budget.

Pure functions of a point's setup (`Setup`: the method, the architecture, the batch shape, the kernels), a memory
budget in GiB and, where one was measured, the calibration table (peftbench.calibration). Nothing here needs a GPU
or weights: `peftbench plan`, `profiles.choose` and the runner's pre-load check all read the same answers.

"Fastest" is memory.candidate_plans' order (fewer recomputed layers first: off, all_but_<k> from k = layers - 1
down with every_4 and every_2 among them, all; each plan's `_offload` twin right after it) unless the calibration
measured two or more plans of the same setup on the GPU, which are then ordered by their measured tokens/s (the other
plans keep their places). The record and `peftbench plan` show memory.PLANS' predictions and the chosen plan's. A
user's fixed plan (`profile.checkpointing=every_2`) is kept as given, and said not to fit where it does not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from peftbench import calibration, memory, methods
from peftbench.errors import InputError

PLANS = memory.PLANS


class PlanInputError(InputError):
    """A GPU name, a memory size or a plan the planner cannot use; raised before any model loads."""


# -- GPUs: name -> memory (GiB, as the runtime sees it where a committed run measured it) --------------------------
@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    source: str
    aliases: tuple[str, ...] = ()


GPUS: tuple[Gpu, ...] = (
    Gpu(
        "H100-80GB",
        81559 / 1024,
        "nvidia-smi's 81559 MiB in results/h100/run*/logs/env.log",
        ("H100", "H100-SXM", "NVIDIA H100 80GB HBM3"),
    ),
    Gpu(
        "H200",
        139.80072021484375,
        "torch total_memory (gpu_total_gib) in results/h200 records",
        ("H200-141GB", "NVIDIA H200"),
    ),
    Gpu("A100-40GB", 40.0, "vendor capacity, 40 GiB (not measured here)", ("A100-SXM4-40GB", "A100-PCIE-40GB")),
    Gpu("A100-80GB", 80.0, "vendor capacity, 80 GiB (not measured here)", ("A100", "A100-SXM4-80GB", "A100-PCIE-80GB")),
    Gpu("L40S", 48.0, "vendor capacity, 48 GiB (not measured here)", ()),
    Gpu("L4", 24.0, "vendor capacity, 24 GiB (not measured here)", ()),
    Gpu("A10G", 24.0, "vendor capacity, 24 GiB (not measured here)", ("A10",)),
    Gpu("RTX-4090", 24.0, "vendor capacity, 24 GiB (not measured here)", ("4090", "GeForce RTX 4090")),
    Gpu("RTX-3090", 24.0, "vendor capacity, 24 GiB (not measured here)", ("3090", "GeForce RTX 3090")),
    Gpu("T4", 16.0, "vendor capacity, 16 GiB (not measured here)", ("Tesla T4",)),
)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower().replace("nvidia", "").replace("geforce", ""))


def find_gpu(name: str) -> Gpu | None:
    """The table's GPU for a name as a user types it (`h100-80gb`, `H100 80GB`) or as torch reports it."""
    wanted = _norm(name)
    for gpu in GPUS:
        if wanted in {_norm(n) for n in (gpu.name, *gpu.aliases)}:
            return gpu
    return None


def gpu(name: str, field_name: str = "--gpu") -> Gpu:
    found = find_gpu(name)
    if found is None:
        known = ", ".join(f"{g.name} ({g.memory_gib:.1f} GiB)" for g in GPUS)
        raise PlanInputError(
            f"{field_name}: unknown GPU `{name}`. Known GPUs: {known}. For another card give its "
            f"memory instead: --gpu-memory GIB (e.g. --gpu-memory 24)."
        )
    return found


def check_plan(plan: str, field_name: str = "profile.checkpointing") -> None:
    try:
        memory.parse_plan(plan)
    except memory.PlanError as exc:
        raise PlanInputError(
            f"{field_name}: {exc}, or `auto` to let the planner choose the fastest that fits profile.memory_budget_gib "
            f"(null: the train group's gradient_checkpointing). Set it with {field_name}=all, for example."
        ) from None


# -- one point's setup ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """What the memory model and the calibration read about one point (built by profiles.setup_of)."""

    method_cfg: dict[str, Any]
    model_config: Any
    model: str  # the shipped config's name (the calibration's key), or the model's own name
    engine: str
    seq_len: int
    micro_batch: int
    liger: bool = False
    bf16_adapters: bool = False
    compiled: bool = False
    synthetic: bool = True  # fixed-length rows, no padding (what every calibration entry measured)
    modelled_engine: bool = True  # the memory model describes the engine (not unsloth's own offloading)
    own_checkpointing: bool = False  # the engine sets up its own checkpointing (plan `own`)


def predict_plans(setup: Setup, plans: tuple[str, ...] = PLANS) -> dict[str, float | None]:
    """{plan: predicted peak GiB}; None for every plan where the method or the engine is not modelled."""
    if not setup.modelled_engine or setup.own_checkpointing:
        return {p: None for p in plans}
    out = {}
    for plan in plans:
        pred = methods.predict_memory(
            setup.method_cfg,
            setup.model_config,
            setup.seq_len,
            setup.micro_batch,
            plan != "off",
            setup.liger,
            setup.bf16_adapters,
            plan=plan,
            compiled=setup.compiled,
        )
        out[plan] = pred.get("predicted_peak_gib")
    return out


def rate(setup: Setup, plan: str, gpu_name: str | None) -> calibration.Rate | None:
    """The calibration's measured rate for this setup and plan on this GPU, or None (no made-up number)."""
    if gpu_name is None or not setup.synthetic:
        return None
    return calibration.lookup(
        (
            gpu_name,
            setup.engine,
            setup.method_cfg["name"],
            setup.model,
            "synthetic",
            setup.seq_len,
            setup.micro_batch,
            plan,
            setup.liger,
            setup.bf16_adapters,
            setup.compiled,
        )
    )


def fastest_first(plans: tuple[str, ...], rates: dict[str, float]) -> list[str]:
    """`plans` in their default order, except that the measured ones (two or more) swap places to stand in the order
    of their measured rates, fastest first."""
    measured = [p for p in plans if p in rates]
    if len(measured) < 2:
        return list(plans)
    by_rate = iter(sorted(measured, key=lambda p: -rates[p]))
    return [next(by_rate) if p in rates else p for p in plans]


@dataclass
class Choice:
    """The plan a point runs with, and why."""

    plan: str | None  # None: the engine's own checkpointing (unsloth)
    # `auto` (the planner chose), `fixed` (profile.checkpointing), `train` (train.gradient_checkpointing), `engine`
    how: str
    budget_gib: float | None
    predicted_plans: dict[str, float | None] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    fits: bool | None = None  # None: nothing to compare (not modelled, or no budget)
    fitting: str | None = None  # the fastest plan that fits the budget (None: none does, or not known)
    note: str = ""
    every_plan: dict[str, float | None] = field(default_factory=dict)  # all the plans tried (not in the record)

    @property
    def predicted_peak_gib(self) -> float | None:
        return self.predicted_plans.get(self.plan) if self.plan else None

    def warning(self) -> str | None:
        """The pre-load message for a plan predicted not to fit, naming the plan that would, or saying none does."""
        if self.fits is not False:
            return None
        peak = self.predicted_peak_gib
        if self.fitting:
            fix = (
                f"plan {self.fitting} would fit ({self.predicted_plans[self.fitting]:.2f} GiB): set "
                f"profile.checkpointing={self.fitting} (or auto)"
            )
        else:
            known = {p: v for p, v in self.predicted_plans.items() if v is not None}
            smallest = min(known, key=lambda p: (known[p], p != self.plan))  # a tie: the plan chosen
            fix = (
                f"no checkpointing plan fits (the smallest, {smallest}, is {self.predicted_plans[smallest]:.2f} GiB): "
                f"lower train.per_device_train_batch_size or the sequence length, use a smaller model, "
                f"or a GPU with more memory"
            )
        return (
            f"predicted peak {peak:.2f} GiB with checkpointing plan {self.plan} exceeds the memory budget "
            f"{self.budget_gib:.2f} GiB; {fix}."
        )


def choose(
    setup: Setup,
    requested: str | None,
    budget_gib: float | None,
    train_checkpointing: bool,
    gpu_name: str | None = None,
) -> Choice:
    """The plan for a point. `requested`: `auto` (the fastest that fits `budget_gib`), a plan string (kept), or None
    (the train group's `gradient_checkpointing`, as `all` or `off`: the default profile, the user's own job)."""
    if setup.own_checkpointing:
        return Choice(None, "engine", budget_gib, note="the engine sets up its own gradient checkpointing")
    check_depth(setup, requested)
    candidates = plans_for(setup)
    extra = (requested,) if requested not in (None, "auto", *candidates) else ()
    predicted = predict_plans(setup, candidates + extra)
    rates = {p: r.tokens_per_s for p in candidates if (r := rate(setup, p, gpu_name)) is not None}
    order = fastest_first(candidates, rates)
    modelled = all(v is not None for v in predicted.values())
    fitting = None
    if modelled and budget_gib is not None:
        fitting = next((p for p in order if predicted[p] <= budget_gib), None)
    if requested == "auto":
        if not modelled:
            plan, how, note = "all", "auto", "not modelled: every layer checkpointed, as without a planner"
        elif budget_gib is None:
            plan, how, note = "all", "auto", "no GPU and no profile.memory_budget_gib: every layer checkpointed"
        elif fitting is None:
            plan = min(candidates, key=lambda p: predicted[p])
            how, note = "auto", "no plan fits the budget: the one with the smallest predicted peak"
        else:
            plan, how, note = fitting, "auto", "the fastest plan predicted to fit the budget"
    elif requested is None:
        plan, how, note = ("all" if train_checkpointing else "off"), "train", "train.gradient_checkpointing"
    else:
        plan, how, note = requested, "fixed", "profile.checkpointing"
    fits = None
    if modelled and budget_gib is not None and not math.isnan(budget_gib):
        fits = predicted[plan] <= budget_gib
    shown = {p: predicted[p] for p in dict.fromkeys([*PLANS, plan, fitting]) if p is not None}
    return Choice(plan, how, budget_gib, shown, order, fits, fitting, note, predicted)


def check_depth(setup: Setup, requested: str | None, field_name: str = "profile.checkpointing") -> None:
    """A user's `all_but_<k>` that keeps every layer (k >= the model's decoder layers) checkpoints none: refused
    before any model loads, naming the depth, rather than run as `off` under another name."""
    if requested in (None, "auto"):
        return
    top = memory.parse_plan(requested).top_plain
    if not top:
        return
    layers = memory.shape_of(setup.model_config).layers
    if top >= layers:
        raise PlanInputError(
            f"{field_name}={requested}: this model has {layers} decoder layers, so all_but_{top} checkpoints none of "
            f"them. Use all_but_<k> with k below {layers} (all_but_{layers - 1}: only the bottom layer checkpointed), "
            f"or {field_name}=off."
        )


def plans_for(setup: Setup) -> tuple[str, ...]:
    """The plans `auto` chooses among (memory.candidate_plans: PLANS and every all_but_<k>, with and without host
    copies) for this architecture's depth; PLANS where the engine or method is not modelled (nothing to compare)."""
    if not setup.modelled_engine or setup.own_checkpointing:
        return PLANS
    return memory.candidate_plans(memory.shape_of(setup.model_config).layers)


def budget(memory_budget_gib: float | None, total_gib: float | None, fraction: float = 0.9) -> float | None:
    """`profile.memory_budget_gib`, else the GPU's memory times `profile.memory_fraction`; None without either."""
    if memory_budget_gib is not None:
        return float(memory_budget_gib)
    return None if total_gib is None else float(total_gib) * float(fraction)
