"""The checkpointing planner, its GPU table and calibration, `peftbench plan`, and the pre-load check, on a CPU with
no weights (meta-device builds of the tiny and the shipped 7B/8B/70B configs). Expected values come from hand
arithmetic on the tiny shapes, from GPU peaks measured on an H100/H200 (committed records), and from the committed
records and logs each table entry cites.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from peftbench import calibration, memory, models, planner, profiles
from peftbench.point import Point
from tests import warm_cli
from tests.conftest import compose_recipe

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
GIB = 1024**3
H100 = planner.gpu("H100-80GB")
RTX_24 = planner.gpu("RTX-4090")


def arch(name: str):
    return models.load_config(OmegaConf.create({"config": name, "name_or_path": name}))


def plan_of(*overrides: str, total: float | None, gpu: str | None = None) -> planner.Choice:
    cfg = compose_recipe(*overrides, "run.results_dir=unused")
    return profiles.plan_point(Point.resolve(cfg), models.load_config(cfg.model), total, gpu)


# -- the GPU table ----------------------------------------------------------------------------------------------------
def test_gpu_names_as_typed_and_as_torch_reports_them():
    for name in ("H100-80GB", "h100", "H100 80GB", "NVIDIA H100 80GB HBM3"):
        assert planner.find_gpu(name).name == "H100-80GB"
    assert planner.find_gpu("NVIDIA H200").name == "H200" and planner.find_gpu("GeForce RTX 4090").name == "RTX-4090"
    assert planner.find_gpu("A100-SXM4-40GB").memory_gib == 40.0 and planner.find_gpu("B200") is None


def test_unknown_gpu_is_refused_listing_the_known_ones():
    with pytest.raises(planner.PlanInputError) as info:
        planner.gpu("B200")
    message = str(info.value)
    assert message.startswith("--gpu: unknown GPU `B200`. Known GPUs: H100-80GB (79.6 GiB), H200 (139.8 GiB)")
    assert all(g.name in message for g in planner.GPUS) and "--gpu-memory GIB" in message


def test_measured_gpu_sizes_are_the_committed_ones():
    """H200: torch's total_memory as every H200 record holds it; H100: nvidia-smi's total in the run logs."""
    totals = {json.loads(p.read_text()).get("gpu_total_gib") for p in (RESULTS / "h200").rglob("record.json")}
    assert planner.gpu("H200").memory_gib == max(t for t in totals if t)
    smi = {
        int(m) for p in (RESULTS / "h100").glob("run*/logs/env.log") for m in re.findall(r"/\s+(\d+)MiB", p.read_text())
    }
    assert smi == {81559} and H100.memory_gib == 81559 / 1024


# -- the calibration: every entry is its record ---------------------------------------------------------------------
def test_every_calibration_entry_is_the_committed_record_it_names():
    assert len({r.key() for r in calibration.RATES}) == len(calibration.RATES) == 53  # one rate per setup
    for rate in calibration.RATES:
        record = json.loads((RESULTS / rate.source / "record.json").read_text())
        cfg, choices = record["config"], record.get("profile_choices") or {}
        assert record["status"] == "ok" and planner.find_gpu(record["gpu_name"]).name == rate.gpu, rate.source
        assert (record["engine"], record["method"], cfg["model"]["config"], cfg["data"]["name"]) == (
            rate.engine,
            rate.method,
            rate.model,
            rate.data,
        )
        assert (cfg["data"]["seq_len"], cfg["train"]["per_device_train_batch_size"]) == (rate.seq_len, rate.micro_batch)
        checkpointing = choices.get("gradient_checkpointing", cfg["train"]["gradient_checkpointing"])
        plan = choices.get("checkpointing_plan", "all" if checkpointing else "off")
        assert rate.plan == ("own" if rate.engine == "unsloth" else plan), rate.source
        assert bool(choices.get("use_liger_kernel")) == rate.liger
        assert (record.get("adapter_dtype") == "base (bf16)") == rate.bf16_adapters
        assert (choices.get("compile", "off") == "regional") == rate.compiled, rate.source
        assert record["tokens_per_s"] == pytest.approx(rate.tokens_per_s, abs=0.05)
        assert record["gpu_allocated_gib_peak"] == pytest.approx(rate.peak_gib, abs=5e-4)


def test_rates_are_found_only_for_the_exact_setup():
    cfg = compose_recipe("+recipe=family_7b_synthetic", "method=lora", "run.results_dir=unused")
    setup = profiles.setup_of(Point.resolve(cfg), arch("llama2_7b"))
    assert planner.rate(setup, "all", "H200").source == "h200/run19/results/a_default/lora-llama2_7b-s0-e3613bbd"
    assert planner.rate(setup, "all", "H100-80GB").tokens_per_s == 6423.0
    assert planner.rate(setup, "every_2", "H200") is None  # no plan measured but all
    assert planner.rate(setup, "all", "A100-80GB") is None and planner.rate(setup, "all", None) is None
    gsm8k = compose_recipe("+recipe=lora_7b", "run.results_dir=unused")  # variable-length rows: never calibrated
    assert planner.rate(profiles.setup_of(Point.resolve(gsm8k), arch("llama2_7b")), "all", "H200") is None


def test_fastest_first_reorders_only_the_measured_plans():
    plans = memory.PLANS
    assert planner.fastest_first(plans, {}) == list(plans)
    assert planner.fastest_first(plans, {"all": 9.0}) == list(plans)  # one measured plan orders nothing
    # every_2 measured faster than off: they swap; the unmeasured keep their places
    assert planner.fastest_first(plans, {"off": 10.0, "every_2": 12.0}) == [
        "every_2",
        "every_4",
        "off",
        "all",
        "all_offload",
    ]
    assert planner.fastest_first(plans, {"all_offload": 3.0, "all": 2.0, "off": 1.0}) == [
        "all_offload",
        "every_4",
        "every_2",
        "all",
        "off",
    ]


# -- choices on the tiny Llama, by hand: h=64, i=128, 2 layers, 128 tokens (seq 64 x mb 2), LoRA r16 fp32 ------------
# bf16 weights (test_memory_model's counts) + fp32 LoRA states, less the adapters' fp32 gradients (4 of the 16 bytes),
# which the backward makes as it frees the activations, larger in every plan: the peak holds the larger, not both
TINY_REST = 2 * (73_728 + 3_146_048) + 32_768 * 16 - 32_768 * 4
TINY_LAYER = 128 * (34 * 64 + 8 * 128 + 2 * (6 * 64 + 128))  # 540_672: one layer's full activations
TINY_INPUT = 128 * 64 * 2  # 16_384
TINY_PEAK = {  # x 1.05 allocator slack
    "off": 1.05 * (TINY_REST + 2 * TINY_LAYER),
    "every_4": 1.05 * (TINY_REST + TINY_INPUT + TINY_LAYER),  # layer 0 only; layer 1 freed before 0 is recomputed
    "every_2": 1.05 * (TINY_REST + TINY_INPUT + TINY_LAYER),
    "all": 1.05 * (TINY_REST + 2 * TINY_INPUT + TINY_LAYER),
    "all_offload": 1.05 * (TINY_REST + TINY_INPUT + TINY_LAYER),  # one recompute, one input in flight
}
TINY = [
    "model=tiny_llama",
    "train=tiny",
    "sweep=none",
    "profile=fast",
    "profile.compile=off",
    "profile.use_liger_kernel=false",
    "profile.bf16_lora_adapters=false",
]  # eager layers: ACT_H, ACT_I


def test_tiny_plan_peaks_by_hand():
    choice = plan_of(*TINY, total=None)
    assert {p: v * GIB for p, v in choice.predicted_plans.items()} == pytest.approx(TINY_PEAK)


@pytest.mark.parametrize(
    "budget_bytes,plan,fits",
    [
        (TINY_PEAK["off"], "off", True),  # exactly the off plan's peak: it fits
        (TINY_PEAK["off"] - 1, "every_4", True),  # the next fastest that fits
        (TINY_PEAK["all"], "every_4", True),
        (TINY_PEAK["every_4"] - 1, "every_4", False),  # nothing fits: the smallest peak (ties: the faster plan)
    ],
)
def test_tiny_choice_against_the_budget(budget_bytes, plan, fits):
    choice = plan_of(*TINY, f"+profile.memory_budget_gib={budget_bytes / GIB!r}", total=None)
    assert (choice.plan, choice.fits, choice.how) == (plan, fits, "auto")
    assert choice.fitting == (plan if fits else None)


def test_fast_profile_budget_is_the_gpu_times_memory_fraction():
    assert plan_of(*TINY, total=TINY_PEAK["off"] / GIB / 0.9).plan == "off"
    assert plan_of(*TINY, "profile.memory_fraction=0.5", total=TINY_PEAK["off"] / GIB / 0.9).plan == "every_4"
    no_gpu = plan_of(*TINY, total=None)  # no GPU, no budget: every layer checkpointed, as before the planner
    assert (no_gpu.plan, no_gpu.fits, no_gpu.budget_gib) == ("all", None, None) and "no GPU" in no_gpu.note


def test_choose_records_the_plan_and_leaves_the_layers_to_peftbench(tiny_cfg):
    cfg = tiny_cfg(*TINY[3:], "+profile.memory_budget_gib=1.0")
    out, info = profiles.choose(Point.resolve(cfg), arch("tiny_llama"))
    # the plan is set layer by layer (peftbench.regional): the Trainer's own checkpointing stays off
    assert out == {"gradient_checkpointing": False} and info["profile_choices"]["checkpointing_plan"] == "off"
    assert set(info["predicted_plans"]) == set(memory.PLANS) and info["memory_budget_gib"] == 1.0
    assert info["checkpointing_chosen_by"] == "auto" and info["predicted_plan_fits"] is True
    assert info["checkpointing_plan"] == "off"
    cfg = tiny_cfg(*TINY[3:], "profile.checkpointing=all")  # fixed by the user
    out, info = profiles.choose(Point.resolve(cfg), arch("tiny_llama"))
    assert info["profile_choices"]["checkpointing_plan"] == "all" and info["checkpointing_chosen_by"] == "fixed"
    cfg = tiny_cfg()  # the default profile: the train group decides, the Trainer checkpoints (or not) itself
    out, info = profiles.choose(Point.resolve(cfg), arch("tiny_llama"))
    assert "checkpointing_plan" not in info["profile_choices"] and info["checkpointing_chosen_by"] == "train"
    assert info["checkpointing_plan"] == "off"  # train=tiny: gradient_checkpointing false, as the record says


def test_not_modelled_method_keeps_checkpointing_on():
    choice = plan_of(*TINY, "method=vera", "+profile.memory_budget_gib=100", total=None)
    assert (choice.plan, choice.fits) == ("all", None) and set(choice.predicted_plans.values()) == {None}


# -- the shipped configs ---------------------------------------------------------------------------------------------
def test_lora_7b_seq_2048_mb_2_on_80gb_runs_without_checkpointing():
    """Measured: fast LoRA without checkpointing peaked at 29.32 GiB on the H100 (run 16), far under 0.9 x 79.65."""
    choice = plan_of("+recipe=lora_7b", "profile=fast", total=H100.memory_gib, gpu=H100.name)
    assert (choice.plan, choice.fits) == ("off", True) and choice.budget_gib == pytest.approx(0.9 * 81559 / 1024)


def test_lora_7b_on_24gb_keeps_the_top_layers_that_fit_and_that_ran_under_a_24_gib_cap():
    """24 GB x 0.9 = 21.6 GiB. Measured on the H200: fast LoRA compiled `off` 29.37 GiB and `all` 14.76 GiB (run 24),
    so one layer's full activations are (29.37 - 14.76 + 32 x 0.03125) / 31 = 0.504 GiB (a layer input is 4096 tokens
    x 4096 x 2 B = 0.03125 GiB); all_offload 13.894 GiB (run 36), so all_but_<k>_offload = 13.894 + (k - 1) x 0.504:
    k = 16 is 21.45 GiB, k = 17 21.95. The plain all_but_<k> (inputs on the GPU) fits at most k = 15 (21.34 GiB) and
    recomputes one layer more. So the planner keeps the top ~16 layers and offloads the others' inputs; its choice
    predicted to fit, the next (one more layer kept) predicted not to; and the point it chose ran its 12 steps
    under a 24.0 GiB cap (run 35, set_per_process_memory_fraction) without running out of memory."""
    per_layer = (29.37 - 14.76 + 32 * 0.03125) / 31
    offload_k = max(k for k in range(1, 32) if 13.894 + (k - 1) * per_layer <= 21.6)
    plain_k = max(k for k in range(1, 32) if 14.76 + (k - 1) * per_layer - k * 0.03125 <= 21.6)
    assert (offload_k, plain_k) == (16, 15)
    choice = plan_of("+recipe=lora_7b", "profile=fast", total=RTX_24.memory_gib, gpu=RTX_24.name)
    assert re.fullmatch(r"all_but_\d+_offload", choice.plan) and choice.fits is True
    k = int(choice.plan.split("_")[2])
    assert abs(k - offload_k) <= 1
    assert choice.predicted_plans["off"] > 21.6 and choice.predicted_peak_gib <= 21.6
    one_more = plan_of(
        "+recipe=lora_7b", "profile=fast", f"profile.checkpointing=all_but_{k + 1}_offload", total=RTX_24.memory_gib
    )
    assert one_more.fits is False and one_more.fitting == choice.plan
    ran = json.loads(
        next(
            (RESULTS / "h200/run35/results").glob(
                "compile_lora_auto_profile_memory_budget_gib_21_6_profile_enforce_budget_true/*/record.json"
            )
        ).read_text()
    )
    assert (ran["status"], ran["checkpointing_plan"], ran["memory_cap_enforced_gib"]) == ("ok", choice.plan, 24.0)
    assert ran["gpu_allocated_gib_peak"] < 24.0 and ran["steps"] == 12
    # the same 24 GiB budget on the big GPU (profile.memory_budget_gib) chooses the same plan
    on_h100 = plan_of("+recipe=lora_7b", "profile=fast", "profile.memory_budget_gib=21.6", total=H100.memory_gib)
    assert on_h100.plan == choice.plan


def test_qlora_70b_on_24gb_fits_no_plan():
    """Measured: QLoRA 70B, seq 1024 x mb 1, every layer checkpointed, 37.21 GiB (H100 run 3). Offloading could move
    at most the 80 layer inputs (80 x 1024 x 8192 x 2 B = 1.25 GiB) to the host: 35.96 > 21.6 GiB, so none fits."""
    assert 37.21 - 80 * 1024 * 8192 * 2 / GIB > 0.9 * 24
    choice = plan_of("+recipe=qlora_70b", "profile=fast", total=RTX_24.memory_gib, gpu=RTX_24.name)
    # the smallest: all_but_1_offload, as small as all_offload (the top layer's activations kept cost what its
    # recompute does) with one recompute less
    assert choice.predicted_plans["all_but_1_offload"] == choice.predicted_plans["all_offload"]
    assert choice.fits is False and choice.fitting is None and choice.plan == "all_but_1_offload"
    assert "no checkpointing plan fits (the smallest, all_but_1_offload, is" in choice.warning()
    on_h100 = plan_of("+recipe=qlora_70b", total=H100.memory_gib, gpu=H100.name)  # default: the train group's `all`
    assert (on_h100.plan, on_h100.fits, on_h100.how) == ("all", True, "train")


def test_llama3_8b_lora_on_24gb_and_a_fixed_plan_that_does_not_fit():
    choice = plan_of("+recipe=lora_7b", "model=llama3_8b", "profile=fast", total=24.0)
    assert choice.plan != "off" and choice.fits is True
    fixed = plan_of("+recipe=lora_7b", "model=llama3_8b", "profile=fast", "profile.checkpointing=off", total=24.0)
    assert (fixed.plan, fixed.fits, fixed.how, fixed.fitting) == ("off", False, "fixed", choice.plan)
    assert f"plan {choice.plan} would fit" in fixed.warning() and "profile.checkpointing=" in fixed.warning()


@pytest.mark.parametrize("value", ["auto", "off", False, "every_2", "every_12", "all", "all_offload", None])
def test_checkpointing_plans_are_accepted(value):
    """The one check of profile.checkpointing (a run's validation and `peftbench plan` both call it); None: the
    train group's gradient_checkpointing decides."""
    profiles.check_plan_options({"name": "fast", "checkpointing": value})


@pytest.mark.parametrize("value", ["every_1", "every_x", "none", True, 3, "every_0", "all_offloads"])
def test_checkpointing_non_plans_are_refused_naming_the_field_and_the_fix(value):
    with pytest.raises(profiles.InputError) as info:
        profiles.check_plan_options({"name": "fast", "checkpointing": value})
    text = str(info.value)
    assert text.startswith("profile.checkpointing: ") and f"`{value}` is not a checkpointing plan" in text
    assert "every_<n> (n >= 2" in text and "Set it with profile.checkpointing=all" in text
    assert ("every_1 is `all`" in text) == (value == "every_1")


@pytest.mark.parametrize(
    "override,field",
    [
        ("profile.checkpointing=every_1", "profile.checkpointing"),
        ("profile.memory_budget_gib=-3", "profile.memory_budget_gib"),
        ("profile.memory_fraction=1.5", "profile.memory_fraction"),
        ("profile.enforce_budget=maybe", "profile.enforce_budget"),
    ],
)
def test_bad_plan_options_are_refused_naming_the_field(override, field):
    cfg = compose_recipe(*TINY, override, "run.results_dir=unused")
    with pytest.raises(profiles.InputError, match=re.escape(field)):
        profiles.check_plan_options(Point.resolve(cfg).profile)


# -- `peftbench plan` ------------------------------------------------------------------------------------------------
def run_plan(capsys, *argv: str) -> tuple[int, str, str]:
    from peftbench import plan

    capsys.readouterr()
    code = plan.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_prints_each_plan_the_choice_and_the_measured_rate(capsys):
    code, out, _ = run_plan(capsys, "+recipe=family_7b_synthetic", "method=lora,qlora", "--gpu", "H200")
    assert code == 0
    lines = out.splitlines()
    assert (
        lines[0].startswith("peftbench: plan for H200 (139.80 GiB")
        and "llama2_7b, seq 2048 x micro-batch 2" in lines[0]
    )
    assert lines[1].split() == ["point", *memory.PLANS, "budget", "chosen", "fits", "tokens/s"]
    rows = {ln.split()[0]: ln for ln in lines[2:]}
    for method, rate in (("lora", "7,434"), ("qlora", "7,559")):  # run 19's measured rates (calibration, records)
        choice = plan_of("+recipe=family_7b_synthetic", f"method={method}", total=planner.gpu("H200").memory_gib)
        cells = rows[f"method={method}"].split()
        assert cells[1:6] == [f"{choice.predicted_plans[p]:.2f}" + ("*" if p == "all" else "") for p in memory.PLANS]
        assert cells[6:9] == [f"{0.9 * 139.80072021484375:.2f}", "all", "yes"]
        assert cells[9] == rate and f"results/h200/run19/results/a_default/{method}-llama2_7b" in cells[11]


def test_plan_says_when_nothing_fits_and_exits_1(capsys):
    code, out, _ = run_plan(capsys, "+recipe=qlora_70b", "profile=fast", "--gpu", "RTX-4090")
    assert code == 1
    assert re.search(r"qlora\s.*all_but_1_offload\s+NO\s+no calibration", out)
    assert "-> predicted peak" in out and "no checkpointing plan fits" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--gpu", "B200"], "--gpu: unknown GPU `B200`"),
        (["--gpu-memory", "0"], "--gpu-memory: got 0"),
        (["+recipe=no_such_recipe", "--gpu", "H200"], "no_such_recipe"),
        (["train.max_stpes=3", "--gpu", "H200"], "max_stpes"),
        (["profile=fast", "profile.checkpointing=every_1", "--gpu", "H200"], "profile.checkpointing: `every_1`"),
        ([], "--gpu: no GPU here to plan for"),  # this machine has no GPU
    ],
)
def test_plan_refuses_bad_input_with_exit_2(capsys, argv, message):
    import torch

    if not argv and torch.cuda.is_available():
        pytest.skip("a GPU here: planning for it is valid")
    code, out, err = run_plan(capsys, *argv)
    assert code == 2 and message in err and not out


def test_plan_subcommand_prints_the_hand_computed_peaks():
    """`python -m peftbench plan` (dispatched as a subcommand, exit code passed through) on Llama-2-7B LoRA r16 fp32,
    seq 2048 x mb 2: the peaks of test_memory_model's hand arithmetic, x 1.05."""
    import os
    import sys

    done = warm_cli.run(
        [sys.executable, "-m", "peftbench", "plan", "+recipe=lora_7b", "--gpu", "h100"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    layer, inp, rest = 1_222_639_616, 33_554_432, 13_476_831_232 + 39_976_960 * 16 - 39_976_960 * 4  # less the grads
    acts = [32 * layer, 8 * inp + 24 * layer, 16 * inp + 16 * layer, 32 * inp + layer, layer + inp]
    cells = [f"{1.05 * (rest + a) / GIB:.2f}" for a in acts]
    cells[3] += "*"  # the train group's gradient_checkpointing=true: `all`
    line = next(ln for ln in done.stdout.splitlines() if ln.split()[:1] == ["lora"])
    assert line.split() == ["lora", *cells, f"{0.9 * 81559 / 1024:.2f}", "all", "yes", "no", "calibration"]


# -- the pre-load check: a warning, or with run.skip_predicted_oom=true a skipped row ----------------------------------
def test_predicted_oom_warns_before_loading(tiny_cfg, capsys):
    from peftbench.runner import predicted_fit

    record: dict = {"run_id": "tiny"}
    predicted_fit(Point.resolve(tiny_cfg("+profile.memory_budget_gib=0.001")), record, arch("tiny_llama"))
    out = capsys.readouterr().out
    assert "peftbench: warning: tiny: predicted peak" in out and "plan off exceeds the memory budget 0.00 GiB" in out
    assert (
        record["predicted_peak_gib"] == pytest.approx(TINY_PEAK["off"] / GIB) and record["predicted_plan_fits"] is False
    )
    quiet: dict = {"run_id": "tiny"}
    predicted_fit(Point.resolve(tiny_cfg("+profile.memory_budget_gib=1.0")), quiet, arch("tiny_llama"))
    assert capsys.readouterr().out == "" and quiet == {"run_id": "tiny"}


def test_skip_predicted_oom_writes_a_skipped_row_before_any_model_loads(tiny_cfg, monkeypatch):
    from peftbench import records, runner

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", refuse)
    cfg = tiny_cfg(
        "+profile.memory_budget_gib=0.001",
        "run.skip_predicted_oom=true",
        "data=synthetic",
        "data.seq_len=64",
        "model.tokenizer=null",
        "eval=none",
    )  # no tokenizer, no data to measure: validation is quick
    record = runner.run_point(cfg)
    assert record["status"] == "skipped"
    assert record["error"].startswith("run.skip_predicted_oom: predicted peak ")
    assert "no checkpointing plan fits" in record["error"] and record["checkpointing_plan"] == "off"
    saved = records.completed_record(cfg.run.results_dir, record["run_id"])
    assert saved is None  # a skipped point is not finished: a later run with more memory runs it
    (row,) = records.read_records(cfg.run.results_dir)
    assert row["status"] == "skipped" and row["predicted_plans"]["off"] == pytest.approx(TINY_PEAK["off"] / GIB)


def test_a_sweep_on_a_gpu_prints_the_plan_first(tiny_cfg, capsys):
    """ValidateSweep hands the validated points to sweep.print_plan; on a GPU (here: 24 GiB given) it prints
    `peftbench plan`'s block; on this CPU with no GPU it prints nothing."""
    from peftbench import sweep

    points = [([f"method={m}"], tiny_cfg(f"method={m}", *TINY[3:])) for m in ("lora", "vera")]
    sweep.print_plan(points)  # no GPU here
    assert capsys.readouterr().out == ""
    sweep.print_plan(points, total_gib=24.0, gpu_name="RTX-4090")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("peftbench: plan for RTX-4090 (24.00 GiB); tiny_llama, seq 64 x micro-batch 2")
    lora = lines[2].split()
    assert (
        lora[0] == "method=lora"
        and lora[1] == f"{TINY_PEAK['off'] / GIB:.2f}*"
        and lora[6:9] == ["21.60", "off", "yes"]
    )
    assert lines[3].split()[:9] == ["method=vera", "-", "-", "-", "-", "-", "21.60", "all", "n/a"]
    assert "not modelled" in lines[4]


def test_a_bare_off_in_yaml_is_the_off_plan(tiny_cfg):
    """A YAML file reads a bare `off` as false (`checkpointing: off` in a profile): it is the plan `off`."""
    cfg = tiny_cfg(*TINY[3:])
    OmegaConf.update(cfg, "profile.checkpointing", OmegaConf.create("x: off").x)
    assert cfg.profile.checkpointing is False and profiles.requested_plan(Point.resolve(cfg).profile) == "off"
    profiles.check_plan_options(Point.resolve(cfg).profile)
    assert profiles.plan_point(Point.resolve(cfg), arch("tiny_llama"), None).plan == "off"
    assert plan_of(*TINY, "profile.checkpointing=off", total=None).plan == "off"  # the command line's string


def test_enforced_cap_is_the_card_the_budget_stands_for():
    """memory_budget_gib=21.6 at memory_fraction 0.9 is a 24 GiB card: the cap (reserved memory) is 24, so the
    caching allocator keeps the headroom it would have there; fraction 1.0 caps at the budget itself."""
    assert profiles.enforce_cap_gib(
        {"enforce_budget": True, "memory_budget_gib": 21.6, "memory_fraction": 0.9}
    ) == pytest.approx(24.0)
    assert profiles.enforce_cap_gib({"enforce_budget": True, "memory_budget_gib": 24, "memory_fraction": 1.0}) == 24.0
    assert profiles.enforce_cap_gib({"enforce_budget": True, "memory_budget_gib": None}) is None  # the GPU's own budget
    assert profiles.enforce_cap_gib({"enforce_budget": False, "memory_budget_gib": 21.6}) is None
    import torch

    if not torch.cuda.is_available():
        assert profiles.enforce_budget({"enforce_budget": True, "memory_budget_gib": 21.6}) is None  # nothing to cap


def test_an_all_but_plan_that_keeps_every_layer_is_refused_naming_the_depth():
    """Llama-2-7B has 32 decoder layers: all_but_32 would checkpoint none (it is `off`), all_but_31 the bottom one."""
    with pytest.raises(planner.PlanInputError) as info:
        plan_of("+recipe=lora_7b", "profile=fast", "profile.checkpointing=all_but_32", total=H100.memory_gib)
    message = str(info.value)
    assert "profile.checkpointing=all_but_32: this model has 32 decoder layers" in message
    assert "all_but_31" in message and "profile.checkpointing=off" in message
    with pytest.raises(planner.PlanInputError, match="32 decoder layers"):
        plan_of("+recipe=lora_7b", "profile=fast", "profile.checkpointing=all_but_40_offload", total=H100.memory_gib)
    kept = plan_of("+recipe=lora_7b", "profile=fast", "profile.checkpointing=all_but_31", total=H100.memory_gib)
    assert (kept.plan, kept.how) == ("all_but_31", "fixed")
