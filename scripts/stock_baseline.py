"""The stock baseline: the plain transformers.Trainer + PEFT script a user would write, with no peftbench code.

Same methods, shapes and batch as peftbench's GPU recipes: random-init model from a config (the shape is what matters
for speed and memory), gradient checkpointing on, fused AdamW, bf16. It times tokens/s and peak memory itself (a CUDA
event at each step end, on the same clock as peftbench's callback, with no synchronize per step) and appends one CSV
row per method.

    python scripts/stock_baseline.py --method lora --config peftbench/model_configs/llama2_7b.json --out stock.csv
    python scripts/stock_baseline.py --method lora --workload gsm8k --data train.jsonl --tokenizer TOKDIR ...
    python scripts/stock_baseline.py --method lora --callback-overhead --repeats 3 ...  # with/without the callback
    ... --callback-overhead --arms none,peftbench,peftbench_no_nvml,sync_only          # which part of it costs
    python scripts/stock_baseline.py --method lora --profile-steps 2 --profile-dir DIR ...  # where a step's time goes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

METHODS = ["lora", "qlora", "dora", "ia3", "prompt_tuning", "bitfit", "full"]
LEARNING_RATES = {
    "lora": 2e-4,
    "qlora": 2e-4,
    "dora": 2e-4,
    "ia3": 3e-3,
    "prompt_tuning": 3e-2,
    "bitfit": 1e-3,
    "full": 2e-5,
}


class StepTimer(TrainerCallback):
    """Each step's end time and peak allocated/reserved/requested memory. Registered last, so a callback under test
    runs inside the timed step.

    Step ends are CUDA events, read after training: a synchronize at every step end would leave the GPU idle while the
    host prepares the next step, and so slow the script it times (peftbench's callback times steps the same way:
    peftbench/step_clock.py). tokens/s is from the end of the last warm-up step to the end of the last step, the same
    definition as peftbench's (metrics.steady_state_rate), so the ratio compares like with like.
    """

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.events, self.ends, self.allocated, self.reserved, self.requested, self.tokens = [], [], [], [], [], []

    def on_train_begin(self, args, state, control, **kw):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.origin_event = torch.cuda.Event(enable_timing=True)
        self.origin_event.record()
        self.origin = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.events.append(event)
        self.tokens.append(state.num_input_tokens_seen)  # the Trainer's own count: attention-mask sum
        stats = torch.cuda.memory.memory_stats_as_nested_dict()  # counted on the host: no need to wait
        self.allocated.append(stats["allocated_bytes"]["all"]["peak"] / 2**30)
        self.reserved.append(stats["reserved_bytes"]["all"]["peak"] / 2**30)
        self.requested.append(stats["requested_bytes"]["all"]["peak"] / 2**30)
        torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, args, state, control, **kw):
        torch.cuda.synchronize()
        self.ends = [self.origin + self.origin_event.elapsed_time(e) / 1000 for e in self.events]

    def rates(self) -> dict:
        w = self.warmup
        start_tokens, start_time = (self.tokens[w - 1], self.ends[w - 1]) if w else (0, self.origin)
        steady_tokens = self.tokens[-1] - start_tokens
        wall = self.ends[-1] - start_time
        step_times = [b - a for a, b in zip([self.origin, *self.ends], self.ends)]
        return {
            "tokens_per_s": steady_tokens / wall if wall else None,
            "step_time_median_s": statistics.median(step_times[w:]),
            "wall_s_per_step": wall / (len(self.ends) - w) if wall else None,
        }


class PadCollator:
    """Pads to the longest row of the batch, as a user's collator does; labels -100 on padding."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows):
        longest = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def build_model(config_path: str, method: str, vocab_size: int | None):
    config = AutoConfig.for_model(**json.loads(Path(config_path).read_text()))
    if vocab_size and vocab_size > config.vocab_size:
        config.vocab_size = vocab_size
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    if method == "qlora":  # no checkpoint to load with BitsAndBytesConfig: swap the linears for 4-bit ones
        import bitsandbytes as bnb
        from peft import prepare_model_for_kbit_training

        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear and name != "lm_head":
                    q = bnb.nn.Linear4bit(
                        child.in_features,
                        child.out_features,
                        bias=False,
                        compute_dtype=torch.bfloat16,
                        compress_statistics=True,
                        quant_type="nf4",
                        device="meta",
                    )
                    q.weight = bnb.nn.Params4bit(
                        child.weight.data.cpu(), requires_grad=False, quant_type="nf4", compress_statistics=True
                    ).cuda()
                    setattr(parent, name, q)
        torch.cuda.empty_cache()
        model.is_loaded_in_4bit = True
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return model


def apply_method(model, method: str):
    from peft import IA3Config, LoraConfig, PromptTuningConfig, get_peft_model

    lora = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    if method in ("lora", "qlora"):
        return get_peft_model(model, LoraConfig(**lora))
    if method == "dora":
        return get_peft_model(model, LoraConfig(**lora, use_dora=True))
    if method == "ia3":
        return get_peft_model(model, IA3Config(task_type="CAUSAL_LM"))
    if method == "prompt_tuning":
        return get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=16))
    if method == "bitfit":  # Llama has no biases: add zero ones, train only those
        for m in list(model.modules()):
            if isinstance(m, nn.Linear) and m.bias is None:
                m.bias = nn.Parameter(torch.zeros(m.out_features, device=m.weight.device, dtype=m.weight.dtype))
        for n, p in model.named_parameters():
            p.requires_grad = n.endswith(".bias")
        return model
    return model  # full


def dataset(args, vocab_size: int):
    from datasets import Dataset

    if args.workload == "synthetic":
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, vocab_size, (args.samples, args.seq_len), generator=g)
        return Dataset.from_dict({"input_ids": ids.tolist()}), 0
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    rows = [json.loads(line) for line in open(args.data)][: args.samples]
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}{tok.eos_token}" for r in rows]
    enc = tok(texts, truncation=True, max_length=args.seq_len)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Dataset.from_dict({"input_ids": enc["input_ids"]}), pad


def train_once(args, extra_callbacks=()) -> dict:
    vocab = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        vocab = len(AutoTokenizer.from_pretrained(args.tokenizer))
    t0 = time.perf_counter()
    model = apply_method(build_model(args.config, args.method, vocab), args.method)
    load_s = time.perf_counter() - t0
    train_set, pad = dataset(args, model.config.vocab_size if hasattr(model, "config") else vocab)
    collator = PadCollator(pad)
    timer = StepTimer(args.warmup)
    if args.profile_steps:  # diagnosis only: the profiled steps are slower
        from peftbench.profiling import StepProfiler

        extra_callbacks = [*extra_callbacks, StepProfiler(args.profile_dir, args.warmup, args.profile_steps)]
    if args.memory_trace_steps:  # diagnosis only: the tensors alive at the peak, by size
        from peftbench.profiling import PeakMemoryTrace

        extra_callbacks = [*extra_callbacks, PeakMemoryTrace(args.profile_dir, args.memory_trace_steps)]
    targs = TrainingArguments(
        output_dir=f"/tmp/stock-{args.method}",
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=LEARNING_RATES[args.method],
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=2,
        bf16=True,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        optim="adamw_torch_fused",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=2,
        remove_unused_columns=False,
        seed=0,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = Trainer(
        model=model, args=targs, train_dataset=train_set, data_collator=collator, callbacks=[*extra_callbacks, timer]
    )
    trainer.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    row = {
        "method": args.method,
        "workload": args.workload,
        "seq_len": args.seq_len,
        "micro_batch": args.batch,
        "steps": len(timer.ends),
        "warmup_steps": args.warmup,
        **timer.rates(),
        "peak_allocated_gib": max(timer.allocated),
        "peak_reserved_gib": max(timer.reserved),
        "peak_requested_gib": max(timer.requested),
        "trainable_params": trainable,
        "load_s": load_s,
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }
    del trainer, model
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    return row


def time_hooks(callback) -> list[float]:
    """Wrap the callback's per-step hooks so the seconds spent inside them add up in the returned list."""
    spent: list[float] = []
    for name in ("on_step_begin", "on_step_end", "on_log", "on_substep_end"):
        hook = getattr(callback, name)

        def timed(*a, _hook=hook, **kw):
            t0 = time.perf_counter()
            try:
                return _hook(*a, **kw)
            finally:
                spent.append(time.perf_counter() - t0)

        setattr(callback, name, timed)
    return spent


def append(path: str, row: dict) -> None:
    new = not Path(path).exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    print("STOCK", json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=METHODS, required=True)
    ap.add_argument("--config", required=True, help="architecture config json (e.g. Llama-2-7B)")
    ap.add_argument("--workload", choices=["synthetic", "gsm8k"], default="synthetic")
    ap.add_argument("--data", help="GSM8K train.jsonl (workload gsm8k)")
    ap.add_argument("--tokenizer", help="tokenizer folder (workload gsm8k)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", required=True, help="CSV file to append the row to")
    ap.add_argument(
        "--callback-overhead",
        action="store_true",
        help="train without and with PeftBenchCallback, interleaved, in this process; report both rates",
    )
    ap.add_argument("--profile-steps", type=int, default=0, help="torch.profiler over N steps after the warm-up")
    ap.add_argument(
        "--memory-trace-steps",
        type=int,
        default=0,
        help="the tensors alive at the peak of the first N steps, by size (into --profile-dir)",
    )
    ap.add_argument("--profile-dir", default="profile", help="--profile-steps: folder for the trace and op tables")
    ap.add_argument("--repeats", type=int, default=3, help="--callback-overhead: trainings per arm")
    ap.add_argument(
        "--arms", default="none,peftbench", help=f"--callback-overhead: comma-separated arms among {', '.join(ARMS)}"
    )
    args = ap.parse_args()
    if args.workload == "gsm8k" and not (args.data and args.tokenizer):
        ap.error("--workload gsm8k needs --data and --tokenizer")
    if not args.callback_overhead:
        append(args.out, train_once(args))
        return
    import peftbench  # noqa: F401 - loaded before the first arm, so every arm runs with the same modules imported

    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown or "none" not in arms:
        ap.error(f"--arms: choose from {', '.join(ARMS)}, including none (got {args.arms})")
    # Each round runs every arm, in reverse order every other round, so a drift within the process (clocks, allocator,
    # thermals) cancels instead of always landing on the same arm. The timer synchronizes only at the warm-up end and
    # the last step, so an arm carries its callback's whole cost, and PeftBenchCallback's own tokens/s is kept beside
    # the timer's, as a check of its clock.
    order = [arm for i in range(args.repeats) for arm in (arms if i % 2 == 0 else arms[::-1])]
    rows = []
    for arm in order:
        callbacks, restore = overhead_arm(arm, args.warmup)
        spent = [time_hooks(c) for c in callbacks]
        try:
            row = train_once(args, callbacks)
        finally:
            restore()
        row["arm"], row["with_callback"] = arm, arm != "none"
        row["callback_tokens_per_s"] = next(
            (c.record()["tokens_per_s"] for c in callbacks if hasattr(c, "record")), None
        )
        row["callback_hook_s_per_step"] = sum(spent[0]) / row["steps"] if spent else 0.0
        rows.append(row)
        append(args.out, row)
    rates = {arm: [r["tokens_per_s"] for r in rows if r["arm"] == arm] for arm in arms}
    base = statistics.mean(rates["none"])
    wall = statistics.mean(r["wall_s_per_step"] for r in rows if r["arm"] == "none")
    spread = 100 * (max(rates["none"]) - min(rates["none"])) / base
    for arm in [a for a in arms if a != "none"]:
        hook = statistics.mean(r["callback_hook_s_per_step"] for r in rows if r["arm"] == arm)
        mean = statistics.mean(rates[arm])
        print(
            f"CALLBACK_HOOKS {arm}: {1000 * hook:.3f} ms per step inside the callback = "
            f"{100 * hook / wall:.3f}% of a step"
        )
        print(
            f"CALLBACK_OVERHEAD {arm}: tokens/s without={base:.1f} with={mean:.1f} "
            f"overhead={100 * (1 - mean / base):+.2f}% "
            f"(runs per arm: {args.repeats}; spread of the runs without: {spread:.2f}%)"
        )


ARMS = ("none", "peftbench", "peftbench_no_nvml", "sync_only")


class SyncOnly(TrainerCallback):
    """A callback that only synchronizes at each step end, as PeftBenchCallback did before it timed steps with events:
    what one synchronize per step costs."""

    def on_step_end(self, args, state, control, **kw):
        torch.cuda.synchronize()


def overhead_arm(arm: str, warmup: int) -> tuple[list, Callable[[], None]]:
    """(the callbacks of this arm, a function undoing what the arm patched)."""
    if arm == "none":
        return [], lambda: None
    if arm == "sync_only":
        return [SyncOnly()], lambda: None
    from peftbench import PeftBenchCallback, metrics  # the one thing measured here; imported only for this mode

    callback = PeftBenchCallback(warmup_steps=warmup, save_adapter=False)
    if arm == "peftbench":
        return [callback], lambda: None
    original = metrics.nvml_used_gib
    metrics.nvml_used_gib = lambda: None  # peftbench_no_nvml: the callback without its NVML read
    return [callback], lambda: setattr(metrics, "nvml_used_gib", original)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
