"""The callback's pure parts, on numbers made by hand: phases of a fake clock, batch counts of TRL's own collators,
run folders claimed without overwriting, and the method read off a model."""

from __future__ import annotations

import pytest
import torch

from peftbench import callback, identity, metrics


def test_pauses_are_not_step_time():
    # origin 0; step 1 ends at 1.0; an evaluation ends at 3.5; a save at 4.0; step 2 ends at 5.0; logging and other
    # callbacks take 0.1 each; step 3 ends at 6.2
    kinds = ["step", "eval", "save", "step", "log", "callbacks", "step"]
    times = [1.0, 3.5, 4.0, 5.0, 5.1, 5.2, 6.2]
    steps, pauses = metrics.split_phases(kinds, times, origin=0.0)
    assert steps == pytest.approx([1.0, 1.0, 1.0])
    assert pauses == pytest.approx({"eval": 2.5, "save": 0.5, "log": 0.1, "callbacks": 0.1})


def test_steady_state_rate_on_the_training_clock():
    # steps of 4 s (warm-up), then 1 s and 2 s; 100, 300 and 600 tokens; 1, 3 and 6 rows
    marks = metrics.training_marks([4.0, 1.0, 2.0], [100, 300, 600], [1, 3, 6])
    assert marks == [(0.0, 0, 0), (4.0, 100, 1), (5.0, 400, 4), (7.0, 1000, 10)]
    rate = metrics.steady_state_rate(marks, warmup_steps=1)
    assert rate == {"tokens_per_s": 300.0, "samples_per_s": 3.0, "steady_state_steps": 2}
    short = metrics.steady_state_rate(marks, warmup_steps=5)  # too short for its warm-up: every step counts
    assert short["steady_state_steps"] == 3 and short["tokens_per_s"] == pytest.approx(1000 / 7)


def test_batch_counts_read_the_attention_mask_not_the_pad_id():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    ids = torch.tensor([[5, 2, 2, 2], [7, 2, 2, 2]])  # pad id 2 is also EOS: the mask alone says what is real
    tokens, rows, source = metrics.batch_counts({"input_ids": ids, "attention_mask": mask})
    assert int(tokens) == 5 and rows == 2 and source == "attention_mask"


def test_batch_counts_of_trl_padding_free_batches_keep_eos_tokens():
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=2, padding_free=True)
    examples = [{"input_ids": [5, 6, 2]}, {"input_ids": [7, 2]}, {"input_ids": [8, 9, 10, 2]}]
    batch = collator(examples)
    assert "attention_mask" not in batch  # packed: TRL leaves no mask
    tokens, rows, source = metrics.batch_counts(dict(batch))
    assert int(tokens) == 9 and int(rows) == 3 and source == "position_ids"  # the three EOS (= pad id) count


def test_run_folders_are_claimed_never_reused(tmp_path):
    first = callback.claim_run_dir(tmp_path, "lora-x")
    (first / "record.json").write_text("{}")
    second = callback.claim_run_dir(tmp_path, "lora-x")
    third = callback.claim_run_dir(tmp_path, "lora-x")
    assert [first.name, second.name, third.name] == ["lora-x", "lora-x-2", "lora-x-3"]
    assert callback.claim_run_dir(tmp_path, "lora-x", overwrite=True) == first


def tiny_model():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=64,
    )
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, "lora"),
        ({"use_dora": True}, "dora"),
        ({"use_rslora": True}, "rslora"),
        ({"init_lora_weights": "pissa"}, "pissa"),
    ],
)
def test_method_is_read_off_a_peft_model(options, expected):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj"], **options))
    name, config = identity.infer_method(model)
    assert name == expected and config["r"] == 2 and config["target_modules"] == ["q_proj"]


def test_method_is_read_off_what_trains():
    model = tiny_model()
    assert identity.infer_method(model)[0] == "full"
    for p in model.parameters():
        p.requires_grad = False
    assert identity.infer_method(model)[0] == "frozen"
    model.model.layers[0].mlp.down_proj.weight.requires_grad = True
    assert identity.infer_method(model) == ("partial", {"trainable_tensors": 1})


def test_dataset_fingerprint_of_a_list_changes_with_any_row():
    rows = [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}]
    a = identity.dataset_fingerprint(rows)
    b = identity.dataset_fingerprint([rows[0], {"input_ids": [4, 6]}])
    assert a["train_examples"] == 2 and a["dataset_fingerprint"] != b["dataset_fingerprint"]
    assert identity.dataset_fingerprint(list(rows))["dataset_fingerprint"] == a["dataset_fingerprint"]


def test_the_summary_line_says_where_and_what():
    line = callback.summary_line({"status": "ok", "tokens_per_s": 12345.6, "rss_gib_peak": 1.234}, "r/x/record.json")
    assert line == "peftbench: ok -> r/x/record.json | 12,346 tok/s | RSS peak 1.23 GiB"


def test_dataset_fingerprint_of_a_datasets_dataset_is_its_content():
    from datasets import Dataset

    def build(last: int):
        offset = object()  # a closure datasets cannot hash: its own fingerprint is then random
        return Dataset.from_list([{"x": i} for i in range(4)] + [{"x": last}]).map(
            lambda r: {"y": r["x"] + 1 + 0 * id(offset)}
        )

    a, b, c = build(9), build(9), build(8)
    assert (
        identity.dataset_fingerprint(a)["dataset_fingerprint"] == identity.dataset_fingerprint(b)["dataset_fingerprint"]
    )
    assert (
        identity.dataset_fingerprint(a)["dataset_fingerprint"] != identity.dataset_fingerprint(c)["dataset_fingerprint"]
    )
    shuffled = a.shuffle(seed=0)  # an indices mapping over the same table: other rows in another order
    assert (
        identity.dataset_fingerprint(shuffled)["dataset_fingerprint"]
        != identity.dataset_fingerprint(a)["dataset_fingerprint"]
    )


def test_trainable_tensor_bytes_count_each_dtype_by_hand():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2).to(torch.bfloat16))
    model[0].bias.requires_grad = False
    # float32 weight 4x3 (bias frozen) + bf16 weight 3x2 and bias 2
    assert metrics.trainable_tensor_bytes(model) == 12 * 4 + (6 + 2) * 2


def test_saved_weights_bytes_lists_weight_files_only(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 7)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x" * 5)
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "optimizer.pt").write_bytes(b"x" * 1000)
    assert metrics.saved_weights_bytes(tmp_path) == {
        "adapter_model.safetensors": 100,
        "model-00001-of-00002.safetensors": 7,
        "pytorch_model.bin": 5,
    }
    assert metrics.saved_weights_bytes(tmp_path / "missing") == {}


def test_the_kernels_high_water_mark_sees_a_peak_between_samples():
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    assert metrics.reset_rss_high_water()
    before = metrics.rss_high_water_gib()
    block = bytearray(256 * 1024**2)  # 256 MiB, touched page by page, then freed before any sample is taken
    for i in range(0, len(block), 4096):
        block[i] = 1
    del block
    after = metrics.rss_high_water_gib()
    assert after - before >= 0.24  # GiB: the peak stayed in the kernel's mark
    assert metrics.rss_gib() < after - 0.2  # while the resident size fell back
    assert metrics.reset_rss_high_water() and metrics.rss_high_water_gib() < after - 0.2


def test_batch_counts_without_a_mask_or_positions_count_every_input_id():
    ids = torch.tensor([[5, 6, 7, 8, 9], [1, 2, 3, 4, 5]])
    tokens, rows, source = metrics.batch_counts({"input_ids": ids, "labels": ids})
    assert (int(tokens), int(rows), source) == (10, 2, "input_ids")
    embeds = torch.zeros(3, 4, 8)  # inputs_embeds stand in for the ids: 3 rows of 4 positions, hidden 8
    tokens, rows, source = metrics.batch_counts({"inputs_embeds": embeds})
    assert (int(tokens), int(rows), source) == (12, 3, "input_ids")
    assert metrics.batch_counts({"input_ids": torch.tensor([4, 5, 6])})[:2] == (3, 3)  # one unbatched row
    assert metrics.batch_counts({"labels": ids}) == (0, 0, "none")
    one_d_mask = {"input_ids": ids, "attention_mask": torch.ones(5)}  # not a (batch, seq) mask: the ids count
    assert metrics.batch_counts(one_d_mask)[2] == "input_ids"


def test_batch_counts_of_multimodal_rope_positions_read_the_first_axis():
    # (3, batch 1, seq 6) positions, as Qwen2-VL's RoPE gives them, of two packed sequences (4 and 2 tokens)
    row = torch.tensor([[0, 1, 2, 3, 0, 1]])
    positions = torch.stack([row, row * 0 + 5, row * 0 + 5])  # the other two axes would count no sequence start
    tokens, rows, source = metrics.batch_counts(
        {"input_ids": torch.ones(1, 6, dtype=torch.long), "position_ids": positions}
    )
    assert (int(tokens), int(rows), source) == (6, 2, "position_ids")
