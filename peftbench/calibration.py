"""Measured training rates, the only source of a predicted tokens/s: `peftbench plan` prints a rate for a point only
where an entry here has that point's GPU and setup; otherwise it says `no calibration`. Nothing here is estimated.

Each entry is one committed record under results/ (its folder is `source`, relative to results/), copied as the
record says: workload A of results/h100/README.md (the model's architecture with random weights, fixed-length
synthetic rows of random ids, no padding), bf16, one GPU. tests/test_planner.py checks every entry against its
record. A rate holds for the libraries of its run (results/h100/README.md, results/h200/README.md name them).

Fields that must match the point: gpu (planner.GPUS name), engine, method, model (shipped config name), data
(`synthetic`: fixed-length rows), seq_len, micro_batch, plan (`own`: the engine's own checkpointing, unsloth's),
liger (Liger's kernels on), bf16_adapters, compiled (regional torch.compile, profile=fast: H200 runs 24-26).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    gpu: str
    engine: str
    method: str
    model: str
    seq_len: int
    micro_batch: int
    plan: str
    liger: bool
    bf16_adapters: bool
    tokens_per_s: float
    peak_gib: float  # the record's gpu_allocated_gib_peak, for the report beside the prediction
    source: str  # the record's folder under results/
    data: str = "synthetic"
    compiled: bool = False

    def key(self) -> tuple:
        return (self.gpu, self.engine, self.method, self.model, self.data, self.seq_len, self.micro_batch, self.plan,
                self.liger, self.bf16_adapters, self.compiled)


_m = Rate
RATES: tuple[Rate, ...] = (
    _m("H100-80GB", "peft", "bitfit", "llama2_7b", 2048, 2, "all", False, False, 9787.0,
       14.410, "h100/run8/results/a_default/bitfit-llama2_7b-s0-0bf1148f"),
    _m("H100-80GB", "peft", "dora", "llama2_7b", 2048, 2, "all", False, False, 2925.7,
       16.789, "h100/run8/results/a_default/dora-llama2_7b-s0-0222c54c"),
    _m("H100-80GB", "peft", "full", "llama2_7b", 2048, 2, "all", False, False, 7430.7,
       50.676, "h100/run8/results/a_default/full-llama2_7b-s0-4055b201"),
    _m("H100-80GB", "peft", "ia3", "llama2_7b", 2048, 2, "all", False, False, 8231.5,
       14.890, "h100/run8/results/a_default/ia3-llama2_7b-s0-4991278b"),
    _m("H100-80GB", "peft", "lora", "llama2_7b", 2048, 2, "all", False, False, 6423.0,
       15.247, "h100/run8/results/a_default/lora-llama2_7b-s0-6dac1bd2"),
    _m("H100-80GB", "peft", "prompt_tuning", "llama2_7b", 2048, 2, "all", False, False, 9883.6,
       14.446, "h100/run8/results/a_default/prompt_tuning-llama2_7b-s0-360b19e0"),
    _m("H100-80GB", "peft", "qlora", "llama2_7b", 2048, 2, "all", False, False, 6318.1,
       5.799, "h100/run8/results/a_default/qlora-llama2_7b-s0-5326be57"),
    _m("H100-80GB", "peft", "qlora", "llama2_70b", 1024, 1, "all", False, False, 699.1,
       37.213, "h100/run3/results/qlora70b/qlora-llama2_70b-s0-6380214c"),
    _m("H100-80GB", "peft", "qlora", "llama2_7b", 2048, 1, "all", False, False, 3732.1,
       4.911, "h100/run3/results/qlora7b_mb1/qlora-llama2_7b-s0-be7ed39c"),
    _m("H100-80GB", "peft", "lora", "llama2_7b", 2048, 2, "off", True, True, 13946.1,
       29.320, "h100/run16/ab2/results/ab_fast_r1/lora-llama2_7b-s0-b330fa7a"),
    _m("H100-80GB", "peft", "qlora", "llama2_7b", 2048, 2, "off", True, False, 13032.8,
       20.416, "h100/run16/ab2/results/ab_fast_r1/qlora-llama2_7b-s0-11b51ec1"),
    _m("H100-80GB", "peft", "bitfit", "llama2_7b", 2048, 2, "off", True, False, 18383.8,
       24.497, "h100/run4/results/a_fast/bitfit-llama2_7b-s0-dfa14f55"),
    _m("H100-80GB", "peft", "dora", "llama2_7b", 2048, 2, "off", True, False, 5161.9,
       55.089, "h100/run4/results/a_fast/dora-llama2_7b-s0-a6a7042a"),
    _m("H100-80GB", "peft", "full", "llama2_7b", 2048, 2, "off", True, False, 11451.5,
       54.936, "h100/run4/results/a_fast/full-llama2_7b-s0-0b3d30d3"),
    _m("H100-80GB", "peft", "ia3", "llama2_7b", 2048, 2, "off", True, False, 15483.0,
       32.026, "h100/run4/results/a_fast/ia3-llama2_7b-s0-562ec684"),
    _m("H100-80GB", "peft", "prompt_tuning", "llama2_7b", 2048, 2, "off", True, False, 18248.2,
       24.503, "h100/run4/results/a_fast/prompt_tuning-llama2_7b-s0-d0f84bd3"),
    _m("H100-80GB", "unsloth", "full", "llama2_7b", 2048, 2, "own", False, False, 8365.0,
       50.517, "h100/engines/call4/results/engines/full-llama2_7b-s0-0f3f6186"),
    _m("H100-80GB", "liger", "full", "llama2_7b", 2048, 2, "all", True, False, 9258.7,
       50.368, "h100/engines/call4/results/engines/full-llama2_7b-s0-f562bcb9"),
    _m("H100-80GB", "liger", "lora", "llama2_7b", 2048, 2, "all", True, False, 8270.9,
       15.038, "h100/engines/call4/results/engines/lora-llama2_7b-s0-9fab3ef4"),
    _m("H100-80GB", "unsloth", "lora", "llama2_7b", 2048, 2, "own", False, False, 9925.8,
       13.877, "h100/engines/call4/results/engines/lora-llama2_7b-s0-ccfdc89a"),
    _m("H100-80GB", "liger", "qlora", "llama2_7b", 2048, 2, "all", True, False, 7284.1,
       5.606, "h100/engines/call4/results/engines/qlora-llama2_7b-s0-792a1260"),
    _m("H100-80GB", "unsloth", "qlora", "llama2_7b", 2048, 2, "own", False, False, 9912.0,
       5.094, "h100/engines/call4/results/engines/qlora-llama2_7b-s0-b2450420"),
    _m("H100-80GB", "unsloth", "dora", "llama2_7b", 2048, 2, "own", False, False, 3347.4,
       15.758, "h100/engines/call6/results/engines/dora-llama2_7b-s0-5d2e59e6"),
    _m("H100-80GB", "liger", "dora", "llama2_7b", 2048, 2, "all", True, False, 3296.2,
       16.580, "h100/engines/call6/results/engines/dora-llama2_7b-s0-8a731130"),
    _m("H100-80GB", "liger", "ia3", "llama2_7b", 2048, 2, "all", True, False, 11140.9,
       14.712, "h100/engines/call6/results/engines/ia3-llama2_7b-s0-6640d56a"),
    _m("H200", "peft", "bitfit", "llama2_7b", 2048, 2, "all", False, False, 10484.0,
       14.410, "h200/run19/results/a_default/bitfit-llama2_7b-s0-7b5d71c1"),
    _m("H200", "peft", "dora", "llama2_7b", 2048, 2, "all", False, False, 3440.2,
       16.789, "h200/run19/results/a_default/dora-llama2_7b-s0-ba4357b8"),
    _m("H200", "peft", "full", "llama2_7b", 2048, 2, "all", False, False, 7957.6,
       50.676, "h200/run19/results/a_default/full-llama2_7b-s0-da6d3406"),
    _m("H200", "peft", "ia3", "llama2_7b", 2048, 2, "all", False, False, 9238.3,
       14.890, "h200/run19/results/a_default/ia3-llama2_7b-s0-44a92abe"),
    _m("H200", "peft", "lora", "llama2_7b", 2048, 2, "all", False, False, 7434.1,
       15.247, "h200/run19/results/a_default/lora-llama2_7b-s0-e3613bbd"),
    _m("H200", "peft", "prompt_tuning", "llama2_7b", 2048, 2, "all", False, False, 10598.6,
       14.446, "h200/run19/results/a_default/prompt_tuning-llama2_7b-s0-63bec6f8"),
    _m("H200", "peft", "qlora", "llama2_7b", 2048, 2, "all", False, False, 7559.4,
       5.799, "h200/run19/results/a_default/qlora-llama2_7b-s0-52edce12"),
    # profile=fast with regional compile (Liger off), one plan each: H200 runs 24-26
    _m("H200", "peft", "lora", "llama2_7b", 2048, 2, "all", False, True, 10282.7,
       14.762, "h200/run24c/results/compile_lora_all/lora-llama2_7b-s0-56b16900", compiled=True),
    _m("H200", "peft", "lora", "llama2_7b", 2048, 2, "all_offload", False, True, 8932.0,
       13.863, "h200/run24c/results/compile_lora_all_offload/lora-llama2_7b-s0-67e4b59d", compiled=True),
    _m("H200", "peft", "lora", "llama2_7b", 2048, 2, "off", False, True, 16210.5,
       29.365, "h200/run24c/results/compile_lora_off/lora-llama2_7b-s0-73c3388f", compiled=True),
    _m("H200", "peft", "qlora", "llama2_7b", 2048, 2, "all_offload", False, False, 9009.0,
       4.959, "h200/run24c/results/compile_qlora_all_offload/qlora-llama2_7b-s0-679e8a84", compiled=True),
    _m("H200", "peft", "qlora", "llama2_7b", 2048, 2, "off", False, False, 14311.3,
       20.461, "h200/run24c/results/compile_qlora_off/qlora-llama2_7b-s0-dd1dedd2", compiled=True),
    _m("H200", "peft", "dora", "llama2_7b", 2048, 2, "all", False, False, 7894.2,
       15.589, "h200/run25c/results/compile_dora_all/dora-llama2_7b-s0-86b596fe", compiled=True),
    _m("H200", "peft", "full", "llama2_7b", 2048, 2, "all", False, False, 9493.0,
       50.432, "h200/run25c/results/compile_full_all/full-llama2_7b-s0-113159f6", compiled=True),
    _m("H200", "peft", "ia3", "llama2_7b", 2048, 2, "all", False, False, 13141.5,
       14.346, "h200/run25c/results/compile_ia3_all/ia3-llama2_7b-s0-8b40345c", compiled=True),
    _m("H200", "peft", "lora", "llama2_7b", 2048, 2, "every_2", False, True, 12984.8,
       21.843, "h200/run25c/results/compile_lora_every_2/lora-llama2_7b-s0-ec41da5e", compiled=True),
    _m("H200", "peft", "prompt_tuning", "llama2_7b", 2048, 2, "all", False, False, 13343.7,
       14.210, "h200/run25c/results/compile_prompt_tuning_all/prompt_tuning-llama2_7b-s0-95aa266c", compiled=True),
    _m("H200", "peft", "qlora", "llama2_7b", 2048, 2, "all", False, False, 9647.0,
       5.858, "h200/run25c/results/compile_qlora_all/qlora-llama2_7b-s0-be98a25a", compiled=True),
    _m("H200", "peft", "lora", "llama2_7b", 2048, 2, "every_4", False, True, 13930.2,
       25.620, "h200/run26c/results/compile_lora_every_4/lora-llama2_7b-s0-23fc8043", compiled=True),
    _m("H200", "peft", "qlora", "llama2_7b", 2048, 2, "every_2", False, False, 12036.6,
       12.939, "h200/run26c/results/compile_qlora_every_2/qlora-llama2_7b-s0-9e5d2c1c", compiled=True),
)


def lookup(key: tuple) -> Rate | None:
    """The measured entry for exactly this setup (Rate.key order), or None."""
    return next((r for r in RATES if r.key() == key), None)
