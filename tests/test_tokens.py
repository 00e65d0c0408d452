"""Real-token counts against the collator's own batches: the record's `real_tokens` must equal the tokens of the
examples TRL's collator was handed during training (their unpadded lengths), counted here without peftbench."""

from __future__ import annotations

from trl.trainer import sft_trainer

from peftbench.runner import run_point


def test_real_tokens_equal_the_unpadded_tokens_the_collator_batched(tiny_cfg, monkeypatch):
    batches: list[list[int]] = []
    original = sft_trainer.DataCollatorForLanguageModeling.torch_call

    def spy(self, examples):
        batches.append([len(example["input_ids"]) for example in examples])
        return original(self, examples)

    monkeypatch.setattr(sft_trainer.DataCollatorForLanguageModeling, "torch_call", spy)
    # batch 4 of rows of different lengths, so every batch is padded; 3 steps; eval batches come after training
    record = run_point(
        tiny_cfg(
            "method=lora", "train.per_device_train_batch_size=4", "train.max_steps=3", "eval=none", "run.report=false"
        )
    )
    assert record["status"] == "ok", record.get("error")
    train_batches = batches[:3]
    assert all(len(b) == 4 for b in train_batches)
    assert any(len(set(b)) > 1 for b in train_batches), "no batch needed padding: the test would not tell"
    assert record["real_tokens"] == sum(map(sum, train_batches))
    padded = sum(len(b) * max(b) for b in train_batches)
    assert record["real_tokens"] < padded  # padding is never counted
