"""The SFTTrainer a point trains with: TRL's own, or the same loss without the host reads TRL makes every step.

TRL's SFTTrainer.compute_loss (1.15 and 1.16) reads the GPU back to the host several times a step. It logs entropy,
top-1 token accuracy and a token count (three reads between the forward and the backward), and its fused LM head
gathers the labelled positions first (`hidden_states[mask]`: the count goes to the host, at the end of the forward and
again in the backward). Each read empties the GPU's queue of launched work and leaves it idle until the host catches
up. With the metric reads gone, a profiled 7B step on an H100 found the head's gathering to be the only
synchronizations peftbench's step had and a plain Trainer's did not (results/h100/README.md, run 9). peftbench counts
tokens and losses in its callback, so `profile.trl_step_metrics=false` (the shipped profiles) keeps TRL's loss, with
its chunked LM head and the same value, without the reads: no metrics, and the head scores every position and zeroes
the unlabelled ones, which is TRL's own path on devices without Triton. Set it to true to get TRL's step as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def sft_trainer_class(step_metrics: bool) -> type:
    """TRL's SFTTrainer, or a subclass of it without the per-step host reads. Built here so it subclasses the
    SFTTrainer in place at call time (an engine may have patched it on import)."""
    from trl import SFTTrainer

    if step_metrics:
        return SFTTrainer

    class SFTTrainerWithoutStepMetrics(SFTTrainer):
        """SFTTrainer whose training loss skips the entropy, accuracy and token-count reads and the fused head's
        gathering of labelled positions. Every other case (evaluation, a custom loss, label smoothing, DFT, MoE aux
        loss, sequence parallelism) is TRL's own."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not plain_nll_step(self, model, return_outputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            with every_position_scored():
                outputs = model(**inputs, fused_lm_head=True)
            # TRL's own reduction (sft_trainer.compute_loss): tokens of the batch, or of every rank and micro-batch
            count = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -outputs.log_probs.sum() / torch.as_tensor(count).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            return loss

    return SFTTrainerWithoutStepMetrics


@contextmanager
def every_position_scored() -> Iterator[None]:
    """Within the block, TRL's fused LM head scores every position and zeroes those labelled -100, instead of
    gathering the labelled ones first (a boolean index, whose size the host must read).

    The head asks `trl.trainer.utils._use_triton` whether to gather; outside Triton devices it already answers no. The
    Triton kernels themselves are chosen in `trl.kernels.chunked_logprob` and stay on. If a TRL version no longer has
    that name, the head is left as it is (and gathers)."""
    import trl.trainer.utils as head

    original = getattr(head, "_use_triton", None)
    if original is None:
        yield
        return
    head._use_triton = lambda device: False
    try:
        yield
    finally:
        head._use_triton = original


def follow_fused_head(model: torch.nn.Module) -> None:
    """Point a PEFT tuner's copy of the base model's forward at the base model's forward as it is now.

    SFTTrainer patches TRL's fused LM head onto the base model's `forward` after PEFT wrapped it (trl's
    add_fused_lm_head on `get_base_model()`); a tuner that copied that forward when it wrapped (peft's
    AdaptionPromptModel: `self.forward = self.model.forward`) keeps calling the unpatched one, which returns logits
    where TRL's loss (its own and the lean step's) reads `log_probs`. Methods whose registry entry says
    `copies_forward`."""
    tuner = getattr(model, "base_model", None)
    base = getattr(tuner, "model", None)
    if tuner is not None and base is not None and "forward" in vars(tuner):
        tuner.forward = base.forward


def plain_nll_step(trainer: Any, model: torch.nn.Module, return_outputs: bool) -> bool:
    """Whether this compute_loss call is a training step whose loss is the plain NLL of TRL's fused LM head."""
    parallelism = getattr(trainer.accelerator, "parallelism_config", None)
    return (
        model.training
        and not return_outputs
        and trainer.compute_loss_func is None
        and trainer.label_smoother is None
        and trainer.args.loss_type == "nll"
        and not getattr(trainer, "aux_loss_enabled", False)
        and not (parallelism is not None and getattr(parallelism, "sp_enabled", False))
    )
