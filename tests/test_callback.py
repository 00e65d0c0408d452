"""PeftBenchCallback in jobs that know nothing of peftbench: a plain transformers.Trainer script with the callback
added after construction, and TRL's own SFT script, unchanged, under `peftbench measure`.

Every expected value is the test's own: token counts from the collator's batches or from tokenizing the data file,
trainable counts from LoRA's formula, adapter bytes from the job's own save, peak RSS from the kernel's accounting of
the finished child (getrusage), step times from a clock callback of the test's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    LlamaConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from peftbench import PeftBenchCallback
from peftbench.models import EMBEDDED_GGUF, local_folder

from .conftest import REPO, SHARED_DATA

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS


def tiny_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        max_position_embeddings=512,
    )


def lora_trainable(r: int, modules: list[str]) -> int:
    """LoRA's formula: r * (in + out) per adapted linear, per layer."""
    shapes = {
        "q_proj": (HIDDEN, HEADS * HEAD_DIM),
        "k_proj": (HIDDEN, KV_HEADS * HEAD_DIM),
        "v_proj": (HIDDEN, KV_HEADS * HEAD_DIM),
        "o_proj": (HEADS * HEAD_DIM, HIDDEN),
        "gate_proj": (HIDDEN, INTER),
        "up_proj": (HIDDEN, INTER),
        "down_proj": (INTER, HIDDEN),
    }
    return LAYERS * sum(r * sum(shapes[m]) for m in modules)


class CountingCollator(DataCollatorForLanguageModeling):
    """Pads like the stock collator; remembers each training batch's real tokens (attention-mask sum) and rows.
    Evaluation rows carry a marker, so their batches are told apart."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_tokens: list[int] = []
        self.train_rows: list[int] = []
        self.padded: list[int] = []

    def __call__(self, features, return_tensors=None):
        is_eval = any(f.get("is_eval") for f in features)
        features = [{k: v for k, v in f.items() if k != "is_eval"} for f in features]
        batch = super().__call__(features, return_tensors)
        if not is_eval:
            self.train_tokens.append(int(batch["attention_mask"].sum()))
            self.train_rows.append(batch["input_ids"].shape[0])
            self.padded.append(batch["input_ids"].numel())
        return batch


class StepTimer(TrainerCallback):
    """The test's own clock: wall time from each step's begin to its end."""

    def __init__(self):
        self.begins: list[float] = []
        self.ends: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.begins.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


@pytest.fixture(scope="module")
def tokenizer():
    tok = AutoTokenizer.from_pretrained(local_folder(EMBEDDED_GGUF))
    tok.pad_token = "<|endoftext|>"  # distinct from every token of the texts, so "real" is unambiguous
    return tok


def gsm8k_texts(n: int, offset: int = 0) -> list[str]:
    lines = (SHARED_DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[offset : offset + n]
    return [json.loads(line)["question"] for line in lines]


def plain_trainer_job(tmp_path, tokenizer, callback_args: dict, **overrides):
    """A plain Trainer script: LoRA on every linear layer, batch 3 with padding, accumulation 2, evaluation and a
    checkpoint every 2 steps. 12 rows make 4 batches an epoch, so max_steps=4 is exactly 2 epochs: every batch the
    collator makes for training is trained on."""
    from peft import LoraConfig, get_peft_model

    rows = [tokenizer(t) for t in gsm8k_texts(12)]
    eval_rows = [{**tokenizer(t), "is_eval": 1} for t in gsm8k_texts(3, offset=100)]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(tokenizer))
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    collator = CountingCollator(tokenizer=tokenizer, mlm=False)
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        max_steps=4,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_steps=2,
        report_to="none",
        use_cpu=True,
        include_num_input_tokens_seen="all",
        remove_unused_columns=False,
    )
    settings.update(overrides)
    args = TrainingArguments(**settings)
    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=eval_rows, data_collator=collator)
    timer = StepTimer()
    trainer.add_callback(timer)
    callback = PeftBenchCallback(**callback_args)
    trainer.add_callback(callback)  # after construction, as the README shows
    return trainer, model, collator, timer, callback


def test_add_callback_after_construction_in_a_plain_trainer(tmp_path, tokenizer):
    results = tmp_path / "results"
    trainer, model, collator, timer, _ = plain_trainer_job(
        tmp_path, tokenizer, {"results_dir": results, "run_id": "plain", "warmup_steps": 1}
    )
    output = trainer.train()
    record = json.loads((results / "plain" / "record.json").read_text())

    assert len(collator.train_tokens) == 8  # 4 steps x 2 micro-batches
    assert record["real_tokens"] == sum(collator.train_tokens)
    assert record["real_tokens"] < sum(collator.padded)  # there was padding, and it was not counted
    # the job asked the Trainer to count padding too: its own count is kept beside ours, and differs
    assert record["trainer_num_input_tokens_seen"] == sum(collator.padded)
    assert record["samples"] == sum(collator.train_rows) == 24
    assert record["steps"] == 4 and len(record["loss_curve"]) == 4
    assert record["train_loss"] == pytest.approx(output.training_loss, rel=1e-6)
    assert record["trainable_params"] == lora_trainable(
        4, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # the adapter's size is what the job's own save_pretrained writes (the weights file; the config apart)
    model.save_pretrained(tmp_path / "mine")
    assert record["adapter_bytes"] == (tmp_path / "mine" / "adapter_model.safetensors").stat().st_size
    assert record["adapter_config_bytes"] > 0
    # evaluation and checkpoints during training were timed apart, not as steps
    assert record["time_eval_s"] > 0 and record["time_save_s"] > 0
    # tokens/s over the steps after the warm-up, against the test's own clock of those steps
    step_tokens = [sum(collator.train_tokens[2 * k : 2 * k + 2]) for k in range(4)]
    own_seconds = sum(e - b for b, e in zip(timer.begins[1:], timer.ends[1:]))
    assert record["steady_state_steps"] == 3 and record["warmup_steps_excluded"] == 1
    assert record["tokens_per_s"] == pytest.approx(sum(step_tokens[1:]) / own_seconds, rel=0.03)
    assert record["samples_per_s"] == pytest.approx(18 / own_seconds, rel=0.03)
    # every step's time is in the record, the warm-up's too: the steady ones against the test's clock
    assert len(record["step_times_s"]) == 4
    assert sum(record["step_times_s"]) == pytest.approx(record["time_steps_s"], abs=1e-4)
    assert sum(record["step_times_s"][1:]) == pytest.approx(own_seconds, rel=0.03)
    # identity and provenance, with no recipe
    assert record["status"] == "ok" and record["method"] == "lora" and record["method_config"]["r"] == 4
    assert record["attached"] == "add_callback" and record["unmeasured"] == {}
    assert record["model_config_sha256"] and record["dataset_fingerprint"] and record["peftbench_version"]
    assert record["rss_gib_peak"] > 0 and record["rss_peak_scope"] in ("train", "process")


def test_figures_reach_the_trainers_logs_and_tensorboard(tmp_path, tokenizer):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, *_ = plain_trainer_job(
        tmp_path,
        tokenizer,
        {"results_dir": tmp_path / "results"},
        report_to=["tensorboard"],
        eval_strategy="no",
        save_strategy="no",
        max_steps=2,
    )
    trainer.train()
    events = [p for p in (tmp_path / "out").rglob("events.out.tfevents.*")]  # <output_dir>/runs/...
    assert events, "TensorBoard wrote no event file"
    tags = set()
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    for name in ("tokens_per_s", "real_tokens", "rss_gib_peak", "trainable_pct"):
        assert f"train/peftbench/{name}" in tags, sorted(tags)


def test_no_arguments_and_no_overwrite(tmp_path, tokenizer):
    """PeftBenchCallback() alone: the record goes under <output_dir>/peftbench/, and a second run of the same job
    gets a folder of its own instead of replacing the first record."""
    first_trainer, *_ = plain_trainer_job(tmp_path, tokenizer, {}, eval_strategy="no", save_strategy="no", max_steps=2)
    first_trainer.train()
    found = sorted((tmp_path / "out" / "peftbench").glob("*/record.json"))
    assert [p.parent.name for p in found] == ["lora-LlamaForCausalLM-out"]
    before = found[0].read_bytes()
    second_trainer, *_ = plain_trainer_job(tmp_path, tokenizer, {}, eval_strategy="no", save_strategy="no", max_steps=2)
    second_trainer.train()
    found = sorted((tmp_path / "out" / "peftbench").glob("*/record.json"))
    assert [p.parent.name for p in found] == ["lora-LlamaForCausalLM-out", "lora-LlamaForCausalLM-out-2"]
    assert found[0].read_bytes() == before


def test_a_failing_run_gets_a_record_and_the_exception_goes_on(tmp_path, tokenizer):
    trainer, model, *_ = plain_trainer_job(
        tmp_path,
        tokenizer,
        {"results_dir": tmp_path / "results", "run_id": "x"},
        eval_strategy="no",
        save_strategy="no",
    )
    raised = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    calls = []

    def explode(module, args, kwargs):
        calls.append(1)
        if len(calls) == 5:  # the first micro-batch of step 3
            raise raised

    model.register_forward_pre_hook(explode, with_kwargs=True)
    with pytest.raises(RuntimeError) as caught:
        trainer.train()
    assert caught.value is raised  # re-raised unchanged
    record = json.loads((tmp_path / "results" / "x" / "record.json").read_text())
    assert record["status"] == "oom" and "Tried to allocate" in record["error"] and record["traceback"]
    assert record["steps"] == 2


def test_report_of_callback_records(tmp_path, tokenizer):
    """A folder written by the callback alone renders with method, status and provenance filled in."""
    from peftbench.report import write_report

    results = tmp_path / "results"
    trainer, *_ = plain_trainer_job(
        tmp_path, tokenizer, {"results_dir": results}, eval_strategy="no", save_strategy="no", max_steps=2
    )
    trainer.train()
    paths = write_report(results)
    text = paths["md"].read_text()
    assert "| lora" in text and "method ?" not in text and " ok " in text
    assert "config sha256" in text and "fingerprint not recorded" not in text


# -- TRL's own SFT script, unchanged, under `peftbench measure` --------------------------------------------------------
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def sft_job(tmp_path_factory, tokenizer):
    """A local tiny model folder and a text dataset folder (train/test jsonl) from GSM8K, as TRL's script takes them."""
    root = tmp_path_factory.mktemp("sft")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(local_folder(EMBEDDED_GGUF))
    AutoModelForCausalLM.from_config(tiny_config(tok)).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    (root / "data").mkdir()
    train = gsm8k_texts(16)
    (root / "data" / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in train))
    (root / "data" / "test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in gsm8k_texts(4, 200)))
    # TRL tokenizes each text, appends EOS and truncates to max_length; 16 rows at batch 2 x accumulation 2 is one
    # epoch of 4 steps, so every row is trained on exactly once
    expected = sum(min(len(tok(t)["input_ids"]) + 1, MAX_LENGTH) for t in train)
    return root, expected


RUN_AND_MEASURE = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_trl_sft_script_unchanged_under_peftbench_measure(sft_job, tmp_path, method):
    import trl.scripts.sft

    root, expected_tokens = sft_job
    out, results = tmp_path / "out", tmp_path / "results"
    script = [
        sys.executable,
        trl.scripts.sft.__file__,
        "--model_name_or_path",
        str(root / "model"),
        "--dataset_name",
        str(root / "data"),
        "--dataset_test_split",
        "test",
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "2",
        "--num_train_epochs",
        "1",
        "--max_length",
        str(MAX_LENGTH),
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "2",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
        "--bf16",
        "false",
        "--report_to",
        "none",
        "--learning_rate",
        "1e-3",
    ]
    if method == "lora":
        script += ["--use_peft", "--lora_r", "8"]
    cmd = [
        sys.executable,
        "-c",
        RUN_AND_MEASURE,
        sys.executable,
        "-m",
        "peftbench.measure",
        "--results-dir",
        str(results),
        "--",
    ] + script
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = list(results.glob("*/record.json"))
    assert len(found) == 1, done.stdout[-2000:]
    record = json.loads(found[0].read_text())

    assert record["status"] == "ok" and record["attached"] == "peftbench measure"
    assert record["real_tokens"] == expected_tokens and record["samples"] == 16 and record["steps"] == 4
    assert record["time_eval_s"] > 0 and record["time_save_s"] > 0
    assert record["model_source"] == str(root / "model") and record["model_folder_sha256"]
    maxrss_gib = int(done.stdout.split("MAXRSS_KB")[-1].split()[0]) * 1024 / 1024**3
    assert record["rss_gib_peak"] == pytest.approx(maxrss_gib, rel=0.02)
    assert f"peftbench: ok -> {found[0]}" in done.stdout  # the one line at the end of training
    total = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(root / "model").parameters())
    if method == "lora":  # TRL's default LoRA targets: q_proj and v_proj
        assert record["method"] == "lora" and record["trainable_params"] == lora_trainable(8, ["q_proj", "v_proj"])
        saved = out / "adapter_model.safetensors"  # what the script itself saved at the end
        assert record["adapter_bytes"] == saved.stat().st_size
    else:
        assert record["method"] == "full" and record["trainable_params"] == record["total_params"] == total
        assert not list(results.rglob("*.safetensors"))  # no copy of the full weights
        assert record["trainable_tensor_bytes"] == 4 * total  # float32
        assert record["checkpoint_weights_bytes"] == (out / "checkpoint-4" / "model.safetensors").stat().st_size
