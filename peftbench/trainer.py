"""The SFTTrainer a point trains with: TRL's own, or the same loss without TRL's per-step diagnostics.

TRL's SFTTrainer.compute_loss (1.15 and 1.16) also logs entropy, top-1 token accuracy and a token count on every
step. Reading them costs three host synchronizations between the forward and the backward, which empty the GPU's
queue of launched work. On a 7B step on an H100 removing them did not measurably close peftbench's gap to a plain
Trainer: TRL's fused LM head makes four more synchronizations of its own (results/h100/README.md, runs 8 and 9).
peftbench counts tokens and losses in its callback, so `profile.trl_step_metrics=false` (the shipped profiles) keeps
TRL's loss, with its chunked LM head and the same value, and skips those reads. Set it to true to get them back.
"""

from __future__ import annotations

from typing import Any

import torch


def sft_trainer_class(step_metrics: bool) -> type:
    """TRL's SFTTrainer, or a subclass of it without the per-step metrics. Built here so it subclasses the SFTTrainer
    in place at call time (an engine may have patched it on import)."""
    from trl import SFTTrainer

    if step_metrics:
        return SFTTrainer

    class SFTTrainerWithoutStepMetrics(SFTTrainer):
        """SFTTrainer whose training loss skips the entropy, accuracy and token-count reads. Every other case
        (evaluation, a custom loss, label smoothing, DFT, MoE aux loss, sequence parallelism) is TRL's own."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not plain_nll_step(self, model, return_outputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            # TRL's own reduction (sft_trainer.compute_loss): tokens of the batch, or of every rank and micro-batch
            count = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -outputs.log_probs.sum() / torch.as_tensor(count).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            return loss

    return SFTTrainerWithoutStepMetrics


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
