"""PeftBenchCallback inside a plain transformers.Trainer job that knows nothing of peftbench's runner."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, LlamaConfig, Trainer, TrainingArguments

from peftbench import PeftBenchCallback
from peftbench.models import EMBEDDED_GGUF, local_folder


class CountingCollator(DataCollatorForLanguageModeling):
    """Pads like the stock collator and remembers, per batch, how many tokens are real (not padding)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.real_per_batch: list[int] = []
        self.padded_per_batch: list[int] = []

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        self.real_per_batch.append(int((batch["input_ids"] != self.tokenizer.pad_token_id).sum()))
        self.padded_per_batch.append(batch["input_ids"].numel())
        return batch


def test_callback_in_a_plain_trainer(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(local_folder(EMBEDDED_GGUF))
    tokenizer.pad_token = "<|endoftext|>"  # distinct from every token of the texts below, so "real" is unambiguous
    texts = [" ".join(["word"] * n) for n in (3, 17, 5, 11, 2, 29, 7, 13, 19, 4, 23, 6)]
    rows = [tokenizer(t) for t in texts]
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    model = get_peft_model(AutoModelForCausalLM.from_config(config), LoraConfig(r=2, target_modules="all-linear"))
    collator = CountingCollator(tokenizer=tokenizer, mlm=False)
    callback = PeftBenchCallback(results_dir=tmp_path / "results", run_id="plain-trainer", warmup_steps=1)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=3, max_steps=4,
                             logging_steps=1, report_to="none", save_strategy="no", use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[callback])
    trainer.train()

    record = json.loads((tmp_path / "results" / "plain-trainer" / "record.json").read_text())
    consumed = collator.real_per_batch[:4]  # accelerate's loader looks one batch ahead; the first 4 were trained on
    assert record["real_tokens"] == sum(consumed)
    assert sum(consumed) < sum(collator.padded_per_batch[:4])  # there was padding, and it was not counted
    assert record["steps"] == 4 and len(record["loss_curve"]) == 4
    assert record["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = Path(record["adapter_path"])
    assert record["adapter_bytes"] == sum(p.stat().st_size for p in adapter.iterdir())
    # steady-state throughput: tokens after the warm-up step over the time after it
    assert record["steady_state_steps"] == 3 and record["tokens_per_s"] > 0
    assert (tmp_path / "results" / "table.parquet").exists()
