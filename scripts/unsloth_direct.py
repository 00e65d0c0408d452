"""unsloth driven directly, as its own notebooks do, with no peftbench code: the reference for `engine=unsloth`.

FastLanguageModel.from_pretrained (4-bit for QLoRA, full_finetuning for full) -> get_peft_model (LoRA r16, alpha 32,
dropout 0, the seven Llama projections, use_gradient_checkpointing="unsloth") -> TRL SFTTrainer on fixed-length rows
of random token ids (no padding), with the SFTConfig of peftbench's `train=gpu` group (micro-batch 2, bf16, fused
AdamW, constant LR after 2 warm-up steps). It times every step itself (synchronize, host clock) and appends one CSV
row per run: tokens/s over the steps after --warmup (wall clock between step ends, as peftbench's callback counts),
median step, and the largest per-step peak allocated/reserved memory (peak counters reset at the start of training).

    python scripts/unsloth_direct.py --method lora --model /tmp/ckpt --steps 10 --out direct.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # it would fetch a file from the hub on load
transformers_first = "transformers" in sys.modules
import torch  # noqa: E402
import unsloth  # noqa: E402,F401 - before transformers/trl/peft, as unsloth requires
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402
from unsloth import FastLanguageModel  # noqa: E402

LEARNING_RATES = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class StepTimer(TrainerCallback):
    def __init__(self):
        self.ends, self.times, self.allocated, self.reserved = [], [], [], []

    def on_train_begin(self, args, state, control, **kw):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.ends.append(time.perf_counter())

    def on_step_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        torch.cuda.synchronize()
        now = time.perf_counter()
        self.times.append(now - self.t0)
        self.ends.append(now)
        self.allocated.append(torch.cuda.max_memory_allocated() / 2**30)
        self.reserved.append(torch.cuda.max_memory_reserved() / 2**30)
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(LEARNING_RATES), required=True)
    parser.add_argument("--model", required=True, help="a local checkpoint folder (config, safetensors, tokenizer)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of tokens/s")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", required=True, help="CSV to append one row to")
    args = parser.parse_args()

    t0 = time.perf_counter()
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=args.model,
        max_seq_length=args.seq_len,
        dtype=torch.bfloat16,
        load_in_4bit=args.method == "qlora",
        full_finetuning=args.method == "full",
    )
    if args.method != "full":
        model = FastLanguageModel.get_peft_model(
            model,
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules=TARGETS,
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=0,
        )
    load_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (256, args.seq_len), generator=torch.Generator().manual_seed(0))
    dataset = Dataset.from_dict({"input_ids": ids.tolist()})
    config = SFTConfig(
        output_dir="/tmp/unsloth_direct",
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATES[args.method],
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=2,
        weight_decay=0.0,
        max_length=args.seq_len,
        logging_steps=1,
        seed=0,
        bf16=True,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        optim="adamw_torch_fused",
        dataloader_num_workers=2,
        report_to="none",
        save_strategy="no",
    )
    timer = StepTimer()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[timer])
    trainer.train()

    warm = min(args.warmup, len(timer.times) - 1)
    tokens = (len(timer.ends) - 1 - warm) * args.batch * args.seq_len  # fixed-length rows: every token is real
    row = {
        "method": args.method,
        "tokens_per_s": tokens / (timer.ends[-1] - timer.ends[warm]),
        "step_time_median_s": statistics.median(timer.times[warm:]),
        "peak_allocated_gib": max(timer.allocated),
        "peak_reserved_gib": max(timer.reserved),
        "steps": len(timer.times),
        "warmup_steps": warm,
        "load_s": round(load_s, 1),
        "unsloth": unsloth.__version__,
        "transformers_imported_before_unsloth": transformers_first,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    print(row, flush=True)
    out = Path(args.out)
    new = not out.exists()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    main()
