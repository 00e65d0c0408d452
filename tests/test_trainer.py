"""The SFTTrainer without TRL's per-step metrics computes TRL's own loss and gradients, and only skips the reads."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from peftbench.models import EMBEDDED_GGUF, local_folder
from peftbench.point import Point
from peftbench.trainer import sft_trainer_class


def build(tmp_path, step_metrics: bool, **args):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer
    from trl import SFTConfig

    tokenizer = AutoTokenizer.from_pretrained(local_folder(EMBEDDED_GGUF))
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=len(tokenizer),
    )
    model = get_peft_model(AutoModelForCausalLM.from_config(config), LoraConfig(r=2, target_modules="all-linear"))
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": torch.randint(1, 64, (n,), generator=g).tolist()} for n in (9, 5, 12, 7)]
    sft = SFTConfig(
        output_dir=str(tmp_path / f"out-{step_metrics}"),
        per_device_train_batch_size=4,
        max_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        **args,
    )
    cls = sft_trainer_class(step_metrics)
    trainer = cls(
        model=model, args=sft, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, data_collator=collator
    )
    batch = collator(rows)
    return trainer, batch


def collator(rows):
    """Right-padding with labels -100 on padding (what TRL's collator does), without needing a tokenizer."""
    longest = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros((len(rows), longest), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
        mask[i, : len(r["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def loss_and_grads(trainer, batch, num_items_in_batch=None):
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=num_items_in_batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_same_loss_and_gradients_as_trl_without_the_per_step_reads(tmp_path):
    trl_trainer, batch = build(tmp_path, step_metrics=True)
    lean_trainer, _ = build(tmp_path, step_metrics=False)
    assert type(lean_trainer).__name__ == "SFTTrainerWithoutStepMetrics"
    for items in (None, torch.tensor(40)):  # the batch's own token count, and a count across micro-batches
        trl_loss, trl_grads = loss_and_grads(trl_trainer, batch, items)
        lean_loss, lean_grads = loss_and_grads(lean_trainer, batch, items)
        torch.testing.assert_close(lean_loss, trl_loss)
        assert trl_grads.keys() == lean_grads.keys() and len(trl_grads) > 0
        for name in trl_grads:
            torch.testing.assert_close(lean_grads[name], trl_grads[name])
    assert "entropy" in trl_trainer._metrics["train"] and "mean_token_accuracy" in trl_trainer._metrics["train"]
    assert (
        "entropy" not in lean_trainer._metrics["train"] and "mean_token_accuracy" not in lean_trainer._metrics["train"]
    )


def test_evaluation_and_other_losses_stay_trls(tmp_path):
    lean_trainer, batch = build(tmp_path, step_metrics=False, loss_type="dft")
    loss_and_grads(lean_trainer, batch)  # DFT is not the plain NLL: TRL's compute_loss runs, with its metrics
    assert "entropy" in lean_trainer._metrics["train"]
    lean_trainer, batch = build(tmp_path, step_metrics=False)
    lean_trainer.model.eval()
    with torch.no_grad():
        lean_trainer.compute_loss(lean_trainer.model, dict(batch))
    assert "entropy" in lean_trainer._metrics["eval"]


def test_shipped_profiles_skip_the_reads_and_unsloth_keeps_trls_loss(tiny_cfg):
    assert Point.resolve(tiny_cfg()).trl_step_metrics is False
    assert Point.resolve(tiny_cfg("profile=fast")).trl_step_metrics is False
    assert Point.resolve(tiny_cfg("profile.trl_step_metrics=true")).trl_step_metrics is True
    assert Point.resolve(tiny_cfg("engine=unsloth")).trl_step_metrics is True


def test_the_fused_head_scores_every_position_without_gathering(tmp_path, monkeypatch):
    """On a Triton device TRL's head gathers the labelled positions (a host read). Forced on here, on CPU: TRL's own
    step gathers, the lean one must not, and both give the same loss and gradients on a batch with padding."""
    import trl.trainer.utils as head

    gathered: list[bool] = []
    monkeypatch.setattr(head, "_use_triton", lambda device: gathered.append(True) or True)
    trl_trainer, batch = build(tmp_path, step_metrics=True)
    lean_trainer, _ = build(tmp_path, step_metrics=False)
    assert (batch["labels"] == -100).any()
    trl_loss, trl_grads = loss_and_grads(trl_trainer, batch)
    assert gathered, "TRL's own step should have asked to gather"
    gathered.clear()
    lean_loss, lean_grads = loss_and_grads(lean_trainer, batch)
    assert not gathered, "the lean step gathered the labelled positions"
    assert head._use_triton(torch.device("cuda")) is True  # restored after the step
    torch.testing.assert_close(lean_loss, trl_loss)
    for name in trl_grads:
        torch.testing.assert_close(lean_grads[name], trl_grads[name])
