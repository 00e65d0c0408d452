"""The memory model, the fast profile's fit decision, steady-state rates and trainable counts, against values that
come from outside the code under test: GPU peaks measured on an H100 and an H200 (tests/fixtures/measured_peaks.csv,
each row naming the committed record it was copied from), hand arithmetic, and a fake clock with known step times.
(The checkpointing planner's choices: tests/test_planner.py.)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from peftbench import memory, methods, metrics, models

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "measured_peaks.csv"
RESULTS = REPO / "results"
GIB = 1024**3
# The measured points used each method's shipped hyperparameters; these are the ones the memory model reads.
METHOD_OPTIONS = {
    "lora": {"r": 16},
    "qlora": {"r": 16},
    "dora": {"r": 16},
    "ia3": {},
    "prompt_tuning": {"num_virtual_tokens": 16},
    "bitfit": {"add_biases": True},
    "full": {},
    "full_adamw8bit": {},
    "full_apollo": {},
    "full_paged_adamw": {},
    "full_galore": {},
    "pissa": {"r": 16},
    "olora": {"r": 16},
}


def measured_rows() -> list[dict]:
    lines = [line for line in FIXTURE.read_text().splitlines() if not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    for row in rows:
        for key in ("fused_kernels", "bf16_adapters", "compiled"):
            row[key] = {"true": True, "false": False}[row[key]]
        for key in ("seq_len", "micro_batch"):
            row[key] = int(row[key])
        for key in ("measured_peak_gib", "low_pct", "high_pct"):
            row[key] = float(row[key])
    return rows


ROWS = measured_rows()
ROW_IDS = [
    f"{r['source'].split('/')[0]}-{r['method']}-{r['model_config']}-s{r['seq_len']}xb{r['micro_batch']}-"
    f"{r['plan']}{'-liger' if r['fused_kernels'] else ''}"
    f"{'-bf16ad' if r['bf16_adapters'] else ''}{'-compiled' if r['compiled'] else ''}"
    for r in ROWS
]


def arch(name: str):
    return models.load_config(OmegaConf.create({"config": name, "name_or_path": name}))


def measured_method_cfg(row: dict) -> dict:
    """The method config the measured point ran with, as its record holds it."""
    cfg = dict(json.loads((RESULTS / row["source"]).read_text())["method_config"])
    if cfg.get("prompt_tuning_init") == "TEXT":
        cfg["prompt_tuning_init"] = "RANDOM"  # the same parameters; TEXT would load the tokenizer
    return cfg


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_predicted_peak_is_within_the_stated_tolerance_of_the_measured_gpu_peak(row):
    predicted = methods.predict_memory(
        measured_method_cfg(row),
        arch(row["model_config"]),
        row["seq_len"],
        row["micro_batch"],
        row["plan"] != "off",
        row["fused_kernels"],
        row["bf16_adapters"],
        plan=row["plan"],
        compiled=row["compiled"],
    )
    error_pct = 100 * (predicted["predicted_peak_gib"] - row["measured_peak_gib"]) / row["measured_peak_gib"]
    assert row["low_pct"] <= error_pct <= row["high_pct"], (
        f"predicted {predicted['predicted_peak_gib']:.3f} GiB vs measured {row['measured_peak_gib']:.3f} GiB "
        f"({error_pct:+.1f}%, allowed {row['low_pct']:+.0f}..{row['high_pct']:+.0f}%; source {row['source']})"
    )


def test_fixture_rows_are_the_committed_measurements_they_name():
    """Each fixture row equals its record (peak, method, shape, checkpointing, kernels, adapter dtype), so the
    fixture cannot drift from the measurement it quotes."""
    assert len(ROWS) == 60 and {r["method"] for r in ROWS} == set(METHOD_OPTIONS)
    assert all((r["low_pct"], r["high_pct"]) == (-10, 10) for r in ROWS)  # issue 20's bound, every plan and method
    assert {r["plan"] for r in ROWS if r["compiled"]} == {
        *("off", "every_4", "every_2", "all", "all_offload"),
        *("all_but_1_offload", "all_but_2_offload", "all_but_3_offload", "all_but_5_offload", "all_but_15_offload"),
    }
    assert {r["source"].split("/")[0] for r in ROWS} == {"h100", "h200"}
    for row in ROWS:
        record = json.loads((RESULTS / row["source"]).read_text())
        assert (
            record["gpu_name"] == {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200"}[row["source"].split("/")[0]]
        )
        cfg, choices = record["config"], record.get("profile_choices") or {}
        assert record["status"] == "ok" and record["method"] == row["method"], row["source"]
        assert record["gpu_allocated_gib_peak"] == pytest.approx(row["measured_peak_gib"], abs=1e-6)
        assert cfg["model"]["config"] == row["model_config"] and cfg["data"]["seq_len"] == row["seq_len"]
        assert cfg["train"]["per_device_train_batch_size"] == row["micro_batch"]
        checkpointing = choices.get("gradient_checkpointing", cfg["train"]["gradient_checkpointing"])
        assert choices.get("checkpointing_plan", {True: "all", False: "off"}[checkpointing]) == row["plan"]
        assert bool(choices.get("use_liger_kernel")) == row["fused_kernels"]
        assert (record.get("adapter_dtype") == "base (bf16)") == row["bf16_adapters"]
        assert (choices.get("compile", "off") == "regional") == row["compiled"], row["source"]
        for key, value in METHOD_OPTIONS[row["method"]].items():
            assert record["method_config"][key] == value, (row["source"], key)


# -- hand arithmetic on Llama-2-7B: h=4096, i=11008, 32 layers, vocab 32000, untied head ----------------------------
LLAMA2_7B_LINEAR = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # = 6_476_005_376 (q, k, v, o; gate, up, down)
LLAMA2_7B_OTHER = 2 * 32000 * 4096 + (2 * 32 + 1) * 4096  # embeddings + lm_head, 65 RMSNorms = 262_410_240


def test_memory_model_parts_on_llama2_7b_by_hand():
    config = arch("llama2_7b")
    gib = 1024**3
    assert LLAMA2_7B_LINEAR == 6_476_005_376 and LLAMA2_7B_OTHER == 262_410_240
    lora = methods.predict_memory(method_cfg_of("lora"), config, 2048, 2, gradient_checkpointing=True)
    # bf16 weights: 2 bytes x 6_738_415_616
    assert lora["predicted_weights_gib"] * gib == pytest.approx(13_476_831_232)
    assert lora["predicted_trainable_params"] == 39_976_960  # (below, by hand)
    # LoRA r=16 on every block linear: 16 * (in + out) per linear = 16 * (4*8192 + 3*15104) per layer * 32 layers
    lora_params = 32 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    assert lora_params == 39_976_960
    assert lora["predicted_trainable_states_gib"] * gib == pytest.approx(lora_params * 16)  # fp32 w, grad, 2 moments
    # checkpointing: 32 layer inputs of 2 bytes x 4096 tokens x 4096, plus one layer recomputed: 4096 tokens x
    # (34 x 4096 + 8 x 11008 + LoRA's bf16 input copies 2 x (6 x 4096 + 11008)) = 1_073_741_824 + 1_222_639_616
    assert lora["predicted_activations_gib"] * gib == pytest.approx(2_296_381_440)
    # the fp32 adapters' gradients (4 bytes each, within the 16) are made as the backward frees the activations: the
    # peak holds the larger of the two (here the activations), not their sum
    assert lora["predicted_gradients_gib"] * gib == pytest.approx(lora_params * 4)
    lora_peak = 1.05 * (13_476_831_232 + lora_params * 16 + 2_296_381_440 - lora_params * 4)
    assert lora["predicted_peak_gib"] * gib == pytest.approx(lora_peak)

    qlora = methods.predict_memory(method_cfg_of("qlora"), config, 2048, 2, gradient_checkpointing=True)
    # NF4: 0.5 byte a weight + one 8-bit absmax per 64 + one fp32 per 256 blocks of 64; the rest bf16
    nf4 = LLAMA2_7B_LINEAR // 2 + LLAMA2_7B_LINEAR // 64 + LLAMA2_7B_LINEAR * 4 // 16384
    assert nf4 == 3_340_771_328
    assert qlora["predicted_weights_gib"] * gib == pytest.approx(nf4 + 2 * LLAMA2_7B_OTHER)
    assert qlora["predicted_trainable_states_gib"] * gib == pytest.approx(lora_params * 8)  # bf16 adapters (TRL)

    full = methods.predict_memory(method_cfg_of("full"), config, 2048, 2, gradient_checkpointing=True)
    assert full["predicted_trainable_states_gib"] * gib == pytest.approx(6_738_415_616 * 6)  # bf16 grad + 2 moments
    # full fine-tuning without checkpointing: 32 layers x 4096 tokens x (34h + 8i, the frozen base's, plus the trained
    # linears' shared bf16 inputs 2 x (3h + i)) of activations, against 2 x 6.7 G bytes of bf16 gradients: the
    # larger, the activations, counts; the gradients (13.5 GB) do not add to them
    full_off = methods.predict_memory(method_cfg_of("full"), config, 2048, 2, gradient_checkpointing=False)
    full_layer = 4096 * (34 * 4096 + 8 * 11008 + 2 * (3 * 4096 + 11008))
    full_acts = 32 * full_layer
    assert full_acts == 35_903_242_240
    assert full_off["predicted_activations_gib"] * gib == pytest.approx(full_acts)
    assert full_off["predicted_gradients_gib"] * gib == pytest.approx(2 * 6_738_415_616)
    assert full_off["predicted_peak_gib"] * gib == pytest.approx(
        1.05 * (13_476_831_232 + 6 * 6_738_415_616 + full_acts - 2 * 6_738_415_616)
    )
    # with checkpointing the gradients are the larger: the activations (32 layer inputs and one layer) do not add
    full_acts_all = 32 * 4096 * 4096 * 2 + full_layer
    assert full["predicted_activations_gib"] * gib == pytest.approx(full_acts_all)
    assert full["predicted_peak_gib"] * gib == pytest.approx(1.05 * (13_476_831_232 + 6 * 6_738_415_616))

    no_gc = methods.predict_memory(method_cfg_of("lora"), config, 2048, 2, gradient_checkpointing=False)
    assert no_gc["predicted_activations_gib"] * gib == pytest.approx(32 * 1_222_639_616)  # every layer saves it all

    pt = methods.predict_memory(method_cfg_of("prompt_tuning"), config, 2048, 2, True)
    # 16 virtual tokens per sequence join the 2 x 2048 real ones; 16 x 4096 embedding values trained in fp32
    assert pt["predicted_trainable_states_gib"] * gib == pytest.approx(16 * 4096 * 16)
    assert pt["predicted_activations_gib"] * gib == pytest.approx(4128 * (32 * 2 * 4096 + 34 * 4096 + 8 * 11008))


# -- checkpointing plans (memory.PLANS, every_<n>) by hand on Llama-2-7B LoRA r16, seq 2048 x mb 2 (4096 tokens) ------
LORA_7B_LAYER = 1_222_639_616  # one layer's full activations (test above): 4096 x (34h + 8i + 2(6h + i))
LORA_7B_INPUT = 4096 * 4096 * 2  # one layer's bf16 input: 33_554_432


@pytest.mark.parametrize(
    "plan,activations,host",
    [
        ("off", 32 * LORA_7B_LAYER, 0),
        # layers 0, 2, ..., 30 keep their input; at the backward's start the 16 others hold everything; when layer 30 is
        # recomputed the 15 uncheckpointed layers below it still do: max(16, 15 + 1) = 16 full layers
        ("every_2", 16 * LORA_7B_INPUT + 16 * LORA_7B_LAYER, 0),
        # layers 0, 4, ..., 28 (8); 24 uncheckpointed; below layer 28: 28 - 7 = 21, + its recompute = 22: max 24
        ("every_4", 8 * LORA_7B_INPUT + 24 * LORA_7B_LAYER, 0),
        # layers 0, 3, ..., 30 (11); 21 uncheckpointed; below 30: 30 - 10 = 20, + 1 = 21
        ("every_3", 11 * LORA_7B_INPUT + 21 * LORA_7B_LAYER, 0),
        # layers 0, 7, 14, 21, 28 (5): 27 uncheckpointed; below 28: 24 + 1 = 25: max 27
        ("every_7", 5 * LORA_7B_INPUT + 27 * LORA_7B_LAYER, 0),
        ("all", 32 * LORA_7B_INPUT + LORA_7B_LAYER, 0),
        # inputs in pinned host memory (32 of them: exactly 1 GiB); on the GPU one recompute and one input in flight
        ("all_offload", LORA_7B_LAYER + LORA_7B_INPUT, 32 * LORA_7B_INPUT),
        # layers 0-28 keep their input, the top 3 everything; nothing uncheckpointed below layer 28: max(3, 0 + 1)
        ("all_but_3", 29 * LORA_7B_INPUT + 3 * LORA_7B_LAYER, 0),
        # the top layer kept costs what its recompute does: one input less than `all`
        ("all_but_1", 31 * LORA_7B_INPUT + LORA_7B_LAYER, 0),
        # all_but_16 and every_2 keep as much: 16 inputs, 16 full layers
        ("all_but_16", 16 * LORA_7B_INPUT + 16 * LORA_7B_LAYER, 0),
        # all_but_32 checkpoints nothing: `off`
        ("all_but_32", 32 * LORA_7B_LAYER, 0),
        # 27 inputs on the host; on the GPU the top 5 layers' activations and one input in flight
        ("all_but_5_offload", 5 * LORA_7B_LAYER + LORA_7B_INPUT, 27 * LORA_7B_INPUT),
    ],
)
def test_checkpointing_plans_on_llama2_7b_by_hand(plan, activations, host):
    config, gib = arch("llama2_7b"), 1024**3
    pred = methods.predict_memory(method_cfg_of("lora"), config, 2048, 2, gradient_checkpointing=False, plan=plan)
    assert pred["predicted_activations_gib"] * gib == pytest.approx(activations)
    assert pred["predicted_host_pinned_gib"] * gib == pytest.approx(host)
    rest = 13_476_831_232 + 39_976_960 * 16  # bf16 weights + fp32 LoRA states (test above)
    # less the fp32 gradients (4 bytes of the 16), made as the activations, the larger in every plan, are freed
    assert pred["predicted_peak_gib"] * gib == pytest.approx(1.05 * (rest + activations - 39_976_960 * 4))


def test_compiled_layers_use_the_fused_coefficients_and_plans_order_by_memory():
    config, gib = arch("llama2_7b"), 1024**3
    cfg = method_cfg_of("lora")
    compiled = methods.predict_memory(cfg, config, 2048, 2, False, bf16_adapters=True, plan="off", compiled=True)
    # 16 B a hidden unit, 2 an MLP unit, bf16 adapters' shared inputs 2(3h + i): 4096 x 134_144 a layer, 32 layers
    assert compiled["predicted_activations_gib"] * gib == pytest.approx(32 * 4096 * (16 * 4096 + 2 * 11008 + 46_592))
    peaks = [methods.predict_memory(cfg, config, 2048, 2, False, plan=p)["predicted_peak_gib"] for p in memory.PLANS]
    assert peaks == sorted(peaks, reverse=True)  # off, every_4, every_2, all, all_offload: each needs less


def test_checkpointed_layers_are_the_ones_transformers_every_n_layers_sets():
    """The plan's layers are the ones transformers itself checkpoints for every_n_layers=n (its own flags, read off a
    model), so the memory model counts the layers training will checkpoint."""
    import inspect

    from transformers import AutoModelForCausalLM, LlamaConfig

    model = AutoModelForCausalLM.from_config(
        LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=7, num_attention_heads=2, vocab_size=64)
    )
    if (
        "every_n_layers" not in inspect.signature(model.gradient_checkpointing_enable).parameters
        and "every_n_layers"
        not in inspect.signature(getattr(model, "activation_checkpointing_enable", print)).parameters
    ):
        pytest.skip("this transformers has no every_n_layers")
    for n in (2, 3, 4):
        model.activation_checkpointing_enable(every_n_layers=n)
        flags = [i for i, layer in enumerate(model.model.layers) if layer.gradient_checkpointing]
        assert memory.checkpointed_layers(f"every_{n}", 7) == flags
    assert memory.checkpointed_layers("all", 7) == list(range(7)) and memory.checkpointed_layers("off", 7) == []


def test_candidate_plans_go_by_recomputed_layers_each_offload_twin_after_its_plan():
    plans = memory.candidate_plans(8)
    # 8 layers: off; all_but_7 (1 recompute) ... all_but_1 (7), every_4 (layers 0 and 4: 2) ahead of all_but_6 (2),
    # every_2 (0, 2, 4, 6: 4) ahead of all_but_4; all (8); each all_but / all plan followed by its _offload twin
    assert plans == (
        "off",
        "all_but_7",
        "all_but_7_offload",
        "every_4",
        "all_but_6",
        "all_but_6_offload",
        "all_but_5",
        "all_but_5_offload",
        "every_2",
        "all_but_4",
        "all_but_4_offload",
        "all_but_3",
        "all_but_3_offload",
        "all_but_2",
        "all_but_2_offload",
        "all_but_1",
        "all_but_1_offload",
        "all",
        "all_offload",
    )


@pytest.mark.parametrize(
    "bad",
    [
        "every_1",
        "every_0",
        "every_x",
        "every_",
        "none",
        "",
        "ALL",
        "all-offload",
        "all_but_0",
        "all_but_",
        "all_but_-1",
    ],
)
def test_a_string_that_is_no_plan_is_refused(bad):
    with pytest.raises(memory.PlanError, match="not a checkpointing plan"):
        memory.parse_plan(bad)


# -- steady-state rates from a fake clock --------------------------------------------------------------------------
def test_steady_state_rate_excludes_warmup_steps():
    # steps take 9 s (compilation), 4 s, then 2 s each; 64 tokens and 2 samples a step; training starts at t=100
    step_times = [9.0, 4.0, 2.0, 2.0, 2.0, 2.0]
    marks, t = [(100.0, 0, 0)], 100.0
    for n, dt in enumerate(step_times, start=1):
        t += dt
        marks.append((t, 64 * n, 2 * n))
    # warm-up 2: the last four steps, 4 x 64 tokens in 8 s
    assert metrics.steady_state_rate(marks, 2) == {"tokens_per_s": 32.0, "samples_per_s": 1.0, "steady_state_steps": 4}
    # warm-up 0: all six steps, 384 tokens in 21 s
    rate = metrics.steady_state_rate(marks, 0)
    assert rate["tokens_per_s"] == pytest.approx(384 / 21) and rate["samples_per_s"] == pytest.approx(12 / 21)
    assert rate["steady_state_steps"] == 6
    # warm-up 5: only the last step remains, 64 tokens in 2 s
    assert metrics.steady_state_rate(marks, 5) == {"tokens_per_s": 32.0, "samples_per_s": 1.0, "steady_state_steps": 1}
    # a run no longer than its warm-up is timed over every step
    assert metrics.steady_state_rate(marks, 6)["steady_state_steps"] == 6
    assert metrics.steady_state_rate(marks[:3], 4)["tokens_per_s"] == pytest.approx(128 / 13)


def test_steady_state_rate_without_steps_or_elapsed_time():
    assert metrics.steady_state_rate([], 0) == {"tokens_per_s": None, "samples_per_s": None, "steady_state_steps": 0}
    assert metrics.steady_state_rate([(1.0, 0, 0)], 0)["tokens_per_s"] is None
    frozen = metrics.steady_state_rate([(5.0, 0, 0), (5.0, 10, 1)], 0)  # a clock that did not move
    assert frozen["tokens_per_s"] is None and frozen["samples_per_s"] is None and frozen["steady_state_steps"] == 1


# -- trainable parameters by hand on the tiny Llama: h=64, i=128, 2 layers, 4 heads, 2 KV heads (kv=32), vocab 49152,
# tied embeddings. Per layer the block linears (in, out) are q (64,64) k (64,32) v (64,32) o (64,64) gate (64,128)
# up (64,128) down (128,64).
LINEARS = [(64, 64), (64, 32), (64, 32), (64, 64), (64, 128), (64, 128), (128, 64)]
LAYERS, H, KV, I, VOCAB = 2, 64, 32, 128, 49152  # noqa: E741 - I: the MLP width, as the formulas write it
LORA = LAYERS * sum(16 * (i + o) for i, o in LINEARS)  # 16 * (128+96+96+128+192+192+192) * 2 = 32_768
HAND_TRAINABLE = {
    "lora": LORA,
    "qlora": LORA,  # the same adapters on a 4-bit base
    "rslora": LORA,  # a different scaling, the same matrices
    "pissa": LORA,  # a different initialisation, the same matrices
    "loraplus": LORA,  # a different learning rate for B, the same matrices
    "dora": LORA + LAYERS * sum(o for _, o in LINEARS),  # + one magnitude per output feature: 32_768 + 1_024
    "ia3": LAYERS * (KV + KV + I),  # PEFT's Llama default: k and v outputs, down_proj's input: 384
    "prompt_tuning": 16 * H,  # 16 virtual token embeddings: 1_024
    "prefix_tuning": 16 * LAYERS * 2 * KV,  # a key and a value prefix per layer, sized for the KV heads: 2_048
    "vera": LAYERS * ((H + 256) + (KV + 256)),  # lambda_b (out) + lambda_d (r=256) on q and v; A/B shared, frozen
    "bitfit": LAYERS * sum(o for _, o in LINEARS) + VOCAB,  # add_biases: every linear's bias, lm_head's too: 50_176
    "full": VOCAB * H + LAYERS * sum(i * o for i, o in LINEARS) + (2 * LAYERS + 1) * H,  # tied head: 3_219_776
}
TOTAL_BASE = HAND_TRAINABLE["full"]


def test_hand_formulas_name_registered_methods():
    """Hand formulas for the first twelve methods (tests/test_methods.py checks every later one against PEFT)."""
    assert len(HAND_TRAINABLE) == 12 and set(HAND_TRAINABLE) <= set(methods.REGISTRY)
    assert LORA == 32_768 and HAND_TRAINABLE["bitfit"] == 50_176 and TOTAL_BASE == 3_219_776


def method_cfg_of(name: str) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "recipes" / "method" / f"{name}.yaml"))
    if name == "bitfit":
        cfg["add_biases"] = True  # the tiny Llama has no biases; the family sweep sets this for BitFit too
    if name == "prompt_tuning":
        cfg["prompt_tuning_init"] = "RANDOM"  # same parameters; TEXT init would load the tokenizer
    if name == "pissa":
        cfg["init_lora_weights"] = True  # same matrices; PiSSA's SVD init is slow and changes no count
    return cfg


@pytest.mark.parametrize("name", sorted(HAND_TRAINABLE))
def test_trainable_parameters_the_runner_counts_match_the_hand_formula(name):
    """The runner's own preparation (methods.prepare_model, build_peft_config, PEFT's get_peft_model) and its count
    (metrics.count_parameters, what the record's trainable_params says) on the tiny Llama."""
    if name not in methods.REGISTRY:
        pytest.skip(f"{name} is not in the registry")
    from peft import get_peft_model

    cfg = method_cfg_of(name)
    torch.manual_seed(0)
    model = models.random_init_model(arch("tiny_llama"), torch.float32, "cpu", methods.quantization_config(cfg), seed=0)
    methods.prepare_model(model, cfg)
    peft_config = methods.build_peft_config(cfg)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    trainable, total = metrics.count_parameters(model)
    assert trainable == HAND_TRAINABLE[name]
    if name != "bitfit":  # BitFit's added biases are part of the model it counts
        assert total == TOTAL_BASE + (trainable if peft_config is not None else 0)


@pytest.mark.parametrize("name", sorted(HAND_TRAINABLE))
def test_memory_model_trainable_count_matches_the_hand_formula(name):
    assert methods.predicted_trainable(method_cfg_of(name), arch("tiny_llama")) == HAND_TRAINABLE[name]


# -- the memory model's pieces on the tiny shapes, by hand (what the measured rows above cannot resolve: terms of a few
# MB inside a 15 GB peak, methods not yet measured on a GPU, defaults) ----------------------------------------------
def test_shape_of_the_tiny_llama_by_hand():
    shape = memory.shape_of(arch("tiny_llama"))
    assert (shape.layers, shape.hidden, shape.intermediate, shape.vocab, shape.kv_hidden) == (2, 64, 128, 49152, 32)
    assert shape.linear_params == 2 * sum(i * o for i, o in LINEARS) == 73_728
    assert shape.other_params == TOTAL_BASE - 73_728 == 3_146_048  # tied embedding once, five norms
    assert shape.linear_shapes == LINEARS * 2


def test_shape_of_reads_head_dim_and_kv_heads_where_given_and_derives_them_where_not():
    from transformers import GPTNeoXConfig, LlamaConfig

    wide_heads = LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        head_dim=32,
        num_key_value_heads=2,
        intermediate_size=128,
        num_hidden_layers=1,
        vocab_size=100,
    )
    assert memory.shape_of(wide_heads).kv_hidden == 2 * 32  # the config's head_dim, not 64 // 4
    neox = GPTNeoXConfig(
        hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=1, vocab_size=100
    )  # no head_dim, no num_key_value_heads: 4 heads of 64 // 4
    kv = memory.shape_of(neox).kv_hidden
    assert kv == 64 and type(kv) is int


def test_predicted_trainable_follows_the_options():
    tiny = arch("tiny_llama")
    count = methods.predicted_trainable
    assert count({**method_cfg_of("lora"), "r": 8}, tiny) == LORA // 2
    assert count({**method_cfg_of("dora"), "r": 8}, tiny) == LORA // 2 + 1_024
    assert count({**method_cfg_of("prompt_tuning"), "num_virtual_tokens": 5}, tiny) == 5 * 64
    assert count({**method_cfg_of("prefix_tuning"), "num_virtual_tokens": 4}, tiny) == 4 * LAYERS * 2 * KV


@pytest.mark.parametrize(
    "name,saved",
    [
        ("qlora", 2 * (3 * 64 + 128)),  # bf16 adapters share the group's input: 640 bytes a token and layer
        ("full", 2 * (3 * 64 + 128)),  # the linears' inputs, for the weight gradients
        *[(n, 2 * (6 * 64 + 128)) for n in ("lora", "rslora", "pissa", "loraplus", "vera")],  # 1_024 (VeRA: unmodelled)
        ("dora", 2 * (6 * 64 + 128) + 4 * (5 * 64 + 2 * 128)),  # + fp32 rescaled outputs: 3_328
        ("ia3", 2 * (2 * 32 + 128)),  # scaled k, v and down_proj's input: 384
        ("prompt_tuning", 0),
        ("bitfit", 0),
        ("prefix_tuning", 0),
    ],
)
def test_extra_saved_activations_per_method_by_hand(name, saved):
    pattern = methods.get_method(name).activations
    if pattern is None:  # not modelled (no measured activation pattern): the record says so, peak is None
        assert name in ("vera", "prefix_tuning")
        return
    assert memory.extra_saved_per_token_layer(memory.shape_of(arch("tiny_llama")), pattern) == saved


@pytest.mark.parametrize("name", ["lora", "rslora", "pissa", "loraplus", "dora", "ia3"])
def test_bf16_adapters_halve_the_states_of_lora_variants_only(name):
    tiny, gib = arch("tiny_llama"), 1024**3
    cfg = method_cfg_of(name)
    fp32 = methods.predict_memory(cfg, tiny, 64, 2, False)
    bf16 = methods.predict_memory(cfg, tiny, 64, 2, False, bf16_adapters=True)
    halves = name in ("lora", "rslora", "pissa", "loraplus")  # DoRA's magnitudes and IA3's vectors stay fp32
    trainable = HAND_TRAINABLE["dora"] if name == "dora" else HAND_TRAINABLE[name]
    assert fp32["predicted_trainable_states_gib"] * gib == trainable * 16
    assert bf16["predicted_trainable_states_gib"] * gib == trainable * (8 if halves else 16)
    # and their activations are QLoRA's: the bf16 adapter reads the very input its base linear saved
    tokens = 64 * 2
    own = {"lora": 1_024, "rslora": 1_024, "pissa": 1_024, "loraplus": 1_024, "dora": 3_328, "ia3": 384}[name]
    per_layer = tokens * (34 * 64 + 8 * 128 + (640 if halves else own))
    assert bf16["predicted_activations_gib"] * gib == 2 * per_layer


def test_bitfit_full_and_prompt_tuning_states_and_tokens_on_llama2_7b_by_hand():
    config, gib = arch("llama2_7b"), 1024**3
    bitfit = methods.predict_memory(method_cfg_of("bitfit"), config, 2048, 2, True)
    # q, k, v, o, gate, up (out) and down (4096) per layer, and lm_head's 32000: 1_391_872
    biases = 32 * (4 * 4096 + 2 * 11008 + 4096) + 32000
    assert bitfit["predicted_trainable_params"] == biases == 1_391_872
    assert bitfit["predicted_trainable_states_gib"] * gib == pytest.approx(biases * 8)  # bias 2 + grad 2 + Adam 4
    pt8 = methods.predict_memory({**method_cfg_of("prompt_tuning"), "num_virtual_tokens": 8}, config, 2048, 2, False)
    pt_default = methods.predict_memory(method_cfg_of("prompt_tuning"), config, 2048, 2, False)
    per_token = 32 * (34 * 4096 + 8 * 11008)  # no checkpointing: every layer, nothing extra for prompt tuning
    assert pt8["predicted_activations_gib"] * gib == pytest.approx((4096 + 16) * per_token)
    assert pt_default["predicted_activations_gib"] * gib == pytest.approx((4096 + 32) * per_token)
    fused = methods.predict_memory(method_cfg_of("full"), config, 2048, 2, False, fused_kernels=True)
    # Liger's kernels: 16 bytes a hidden unit and 2 an MLP unit, plus full's saved linear inputs 2 x (3h + i)
    assert fused["predicted_activations_gib"] * gib == pytest.approx(
        32 * 4096 * (16 * 4096 + 2 * 11008 + 2 * (3 * 4096 + 11008))
    )


# -- memory.predict's own contract, called directly (methods.predict_memory always passes every argument) -----------
def test_predict_reports_what_it_does_not_model_and_its_defaults():
    from peftbench.methods import REGISTRY

    tiny = arch("tiny_llama")
    shape = memory.shape_of(tiny)
    unknown = memory.predict(tiny, REGISTRY["frod"], {"name": "frod"}, None, 64, 2, True)
    assert unknown == {
        "predicted_trainable_params": None,
        "predicted_peak_gib": None,
        "memory_model": "not modelled: what method=frod trains depends on the weights' values",
    }
    loha = memory.predict(tiny, REGISTRY["loha"], {"name": "loha"}, 1000, 64, 2, True)
    assert loha["predicted_peak_gib"] is None and loha["predicted_trainable_params"] == 1000
    assert loha["memory_model"] == "not modelled: no measured activation pattern for method=loha"
    params = shape.linear_params + shape.other_params
    assert loha["predicted_weights_gib"] * GIB == pytest.approx(2 * params)  # bf16 weights, in GiB
    assert loha["predicted_trainable_states_gib"] * GIB == pytest.approx(16 * 1000)  # fp32 adapter + AdamW
    lora = {"name": "lora"}
    plain = memory.predict(tiny, REGISTRY["lora"], lora, 1000, 64, 2, True)
    assert plain["memory_model"] == "modelled"
    explicit = memory.predict(tiny, REGISTRY["lora"], lora, 1000, 64, 2, True, False, False, None, False)
    assert plain == explicit  # the defaults: no fused kernels, fp32 adapters, plan from the flag, not compiled
    prompt = memory.predict(tiny, REGISTRY["prompt_tuning"], {"name": "prompt_tuning"}, 1000, 64, 2, False)
    sixteen = memory.predict(
        tiny, REGISTRY["prompt_tuning"], {"name": "prompt_tuning", "num_virtual_tokens": 16}, 1000, 64, 2, False
    )
    assert prompt == sixteen  # PEFT's own default: 16 virtual tokens


def test_optim_args_are_read_as_transformers_reads_them_and_set_galore_states():
    from peftbench.methods import REGISTRY

    assert memory.parse_optim_args(None) == {} and memory.parse_optim_args("") == {}
    assert memory.parse_optim_args("rank = 64, proj=random,scale=0.25") == {
        "rank": "64",
        "proj": "random",
        "scale": "0.25",
    }
    # one linear 200 -> 300, 10 other parameters; GaLore rank r: 2 * (60000 + 10) + min(r, 200) * (2 * 200 + 4 * 300)
    # + 4 * 10 bytes (transformers' default rank: 128)
    shape = memory.Shape(
        layers=1,
        hidden=200,
        intermediate=300,
        vocab=2,
        kv_hidden=200,
        linear_params=60_000,
        other_params=10,
        linear_shapes=[(200, 300)],
    )
    galore = REGISTRY["full_galore"]
    ranked = {"name": "full_galore", "train_args": {"optim_args": "rank=2, update_proj_gap=200"}}
    assert memory.state_bytes(shape, galore, ranked, 60_010, False) == 120_020 + 2 * 1600 + 40
    assert memory.state_bytes(shape, galore, {"name": "full_galore"}, 60_010, False) == 120_020 + 128 * 1600 + 40


@pytest.mark.parametrize(
    "states,bf16,per_param",
    [
        ("adapter", False, 4),  # fp32 adapters: an fp32 gradient
        ("adapter", True, 2),  # bf16 adapters (TRL's QLoRA, profile=fast LoRA): a bf16 gradient
        ("adamw_bf16", False, 2),  # the model's own bf16 weights: bf16 gradients
        ("added_bf16", False, 2),  # BitFit's bf16 biases
        ("adamw_8bit", False, 2),  # 8-bit moments, but a bf16 gradient
        ("paged", False, 2),  # paged AdamW: the moments outside the allocator, the bf16 gradient in it
    ],
)
def test_gradient_bytes_per_trained_parameter_by_hand(states, bf16, per_param):
    """The gradients within the states, which the peak counts against the activations (the larger of the two)."""
    from types import SimpleNamespace

    shape = memory.shape_of(arch("tiny_llama"))
    method = SimpleNamespace(states=states)
    assert memory.gradient_bytes(shape, method, 1000, bf16) == per_param * 1000
    galore = SimpleNamespace(states="galore")  # every parameter keeps its bf16 gradient, trained count aside
    params = shape.linear_params + shape.other_params
    assert memory.gradient_bytes(shape, galore, 1000, bf16) == 2 * params
    assert memory.gradient_bytes(shape, SimpleNamespace(states="apollo"), 7, bf16) == 2 * params


def test_the_peak_holds_the_larger_of_gradients_and_activations():
    """Full fine-tuning on the tiny Llama (3,219,776 bf16 parameters: 6.4 MB of gradients) against 128 tokens of
    activations (0.5 MB checkpointed, 1.0 MB not): the gradients are the larger, so the peak is weights + states,
    the activations adding nothing; at 16 x the tokens without checkpointing (15.7 MB) the activations are the
    larger, and the gradients add nothing."""
    from peftbench.methods import REGISTRY

    config, full = arch("tiny_llama"), REGISTRY["full"]
    shape = memory.shape_of(config)
    params = shape.linear_params + shape.other_params
    for gc in (True, False):
        small = memory.predict(config, full, {"name": "full"}, params, 64, 2, gc)
        assert small["predicted_gradients_gib"] * GIB == 2 * params
        assert small["predicted_activations_gib"] * GIB < 2 * params
        assert small["predicted_peak_gib"] * GIB == pytest.approx(1.05 * (2 * params + 6 * params))
    big = memory.predict(config, full, {"name": "full"}, params, 1024, 2, False)
    acts = big["predicted_activations_gib"] * GIB
    assert acts > 2 * params
    assert big["predicted_peak_gib"] * GIB == pytest.approx(1.05 * (2 * params + 4 * params + acts))


def test_checkpoints_any_and_the_bf16_adapters_gradient_and_galore_rank_above_a_side():
    """Three of the f833d5a/581edb9 runs' surviving mutants, by hand: `off` checkpoints nothing; bf16 adapters
    (profile=fast LoRA) keep bf16 gradients in the peak's accounting; GaLore's rank is capped by the linear's
    smaller side, not only by its output."""
    from peftbench.methods import REGISTRY

    assert [memory.checkpoints_any(p) for p in ("off", "all", "every_2", "all_offload")] == [False, True, True, True]
    config = arch("tiny_llama")
    bf16 = memory.predict(config, REGISTRY["lora"], {"name": "lora"}, 1000, 64, 2, True, bf16_adapters=True)
    fp32 = memory.predict(config, REGISTRY["lora"], {"name": "lora"}, 1000, 64, 2, True, bf16_adapters=False)
    assert bf16["predicted_gradients_gib"] * GIB == 2 * 1000 and fp32["predicted_gradients_gib"] * GIB == 4 * 1000
    shape = memory.Shape(1, 200, 300, 2, 200, 60_000, 10, [(200, 300)])
    # rank 250 > the input side 200: 200 x (2 x 200 + 4 x 300) projected, not 250 x ...
    assert memory.low_rank_states(shape, 250) == 2 * 60_010 + 200 * 1600 + 4 * 10
