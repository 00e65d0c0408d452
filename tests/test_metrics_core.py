"""metrics.py's small functions against hand-computed values (percentiles, peaks, MFU, sizes, counts, precision)."""

from __future__ import annotations

import importlib.metadata
import platform

import pytest
import torch

from peftbench import metrics


def test_percentile_interpolates_like_numpy():
    assert metrics.percentile([], 50) is None
    assert metrics.percentile([7.0], 99) == 7.0
    assert metrics.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5  # sorted first
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0], 25) == pytest.approx(1.75)  # position 0.75
    assert metrics.percentile([float(v) for v in range(1, 101)], 99) == pytest.approx(99.01)  # position 98.01


def test_summarize_peak_mean_p99():
    assert metrics.summarize([1.0, 3.0, 2.0], "gpu") == {
        "gpu_peak": 3.0,
        "gpu_mean": 2.0,
        "gpu_p99": pytest.approx(2.98),
    }
    assert metrics.summarize([], "rss") == {"rss_peak": None, "rss_mean": None, "rss_p99": None}


@pytest.mark.parametrize(
    "name,flops",
    [
        ("NVIDIA H200", 989.4e12),
        ("NVIDIA H100 80GB HBM3", 989.4e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA A10G", 70e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA T4", None),
        (None, None),
        ("", None),
    ],
)
def test_peak_flops_by_gpu_name(name, flops):
    assert metrics.peak_flops(name) == flops


def test_model_flops_utilisation_by_hand():
    # 6 x 6.5e9 params x 3000 tok/s = 1.17e14 FLOP/s, over one H100's 989.4e12
    assert metrics.model_flops_utilisation(6_500_000_000, 3000.0, "NVIDIA H100 80GB HBM3") == pytest.approx(
        0.118253, 1e-5
    )
    assert metrics.model_flops_utilisation(6_500_000_000, 6000.0, "NVIDIA H200", devices=2) == pytest.approx(
        0.118253, 1e-5
    )
    assert metrics.model_flops_utilisation(10, 1.0, "NVIDIA H200", devices=0) == pytest.approx(60 / 989.4e12)
    assert metrics.model_flops_utilisation(10, None, "NVIDIA H200") is None
    assert metrics.model_flops_utilisation(10, 0.0, "NVIDIA H200") is None
    assert metrics.model_flops_utilisation(10, 5.0, "NVIDIA T4") is None
    assert metrics.model_flops_utilisation(10, 5.0, None) is None


def test_stepwise_max_over_ranks():
    assert metrics.stepwise_max([]) == []
    assert metrics.stepwise_max([[], []]) == []
    one = [1.0, 2.0]
    copy = metrics.stepwise_max([one])
    assert copy == [1.0, 2.0] and copy is not one
    assert metrics.stepwise_max([[1.0, 5.0, 3.0], [4.0, 2.0]]) == [4.0, 5.0]  # the shorter series ends it
    assert metrics.stepwise_max([[], [1.0, 2.0], [0.5, 3.0]]) == [1.0, 3.0]


def test_rank_peaks():
    series = {
        "rank": 1,
        "device": "cuda:1",
        "allocated": [1.0, 3.0],
        "reserved": [2.0, 4.0],
        "requested": [0.5, 2.5],
        "nvml": [5.0],
        "rss": [0.1, 0.2],
    }
    assert metrics.rank_peaks(series) == {
        "rank": 1,
        "device": "cuda:1",
        "gpu_allocated_gib_peak": 3.0,
        "gpu_reserved_gib_peak": 4.0,
        "gpu_requested_gib_peak": 2.5,
        "gpu_nvml_used_gib_peak": 5.0,
        "rss_gib_peak": 0.2,
    }
    empty = metrics.rank_peaks({"rank": 0, "device": "cpu", "allocated": [], "reserved": [], "nvml": [], "rss": []})
    assert set(empty.values()) == {0, "cpu", None}


def test_folder_size(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 32)
    assert metrics.folder_size(tmp_path) == 42
    assert metrics.folder_size(str(tmp_path / "sub" / "b.bin")) == 32
    assert metrics.folder_size(tmp_path / "sub") == 32


def test_count_parameters_plain_and_peft():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2, bias=False))  # 16 + 8
    model[1].weight.requires_grad = False
    assert metrics.count_parameters(model) == (16, 24)

    class Peft(torch.nn.Module):
        def get_nb_trainable_parameters(self):
            return 7, 99

    assert metrics.count_parameters(Peft()) == (7, 99)


def test_non_embedding_parameters():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=100,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    # q 16x16, k 16x8, v 16x8, o 16x16, gate/up/down 3 x 16x32, two norms and the final norm 3 x 16, and the untied
    # lm_head 100 x 16 (transformers' exclude_embeddings leaves out nn.Embedding modules only)
    assert metrics.non_embedding_parameters(model) == 256 + 128 + 128 + 256 + 3 * 512 + 3 * 16 + 1600 == 3952
    assert metrics.non_embedding_parameters(model) == model.num_parameters(exclude_embeddings=True)

    class Wrapped(torch.nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base

        def get_base_model(self):
            return self.base

    assert metrics.non_embedding_parameters(Wrapped(model)) == metrics.non_embedding_parameters(model)
    assert metrics.non_embedding_parameters(torch.nn.Linear(3, 4)) == 16


def test_precision_regime():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).to(torch.bfloat16))
    for p in model[0].parameters():
        p.requires_grad = False
    assert metrics.precision_regime(model, bf16=True, fp16=False) == "float32 frozen, bfloat16 trainable, bf16 autocast"
    for p in model.parameters():
        p.requires_grad = False
    assert metrics.precision_regime(model, False, True) == "bfloat16/float32 frozen, nothing trainable, fp16 autocast"
    for p in model.parameters():
        p.requires_grad = True
    assert metrics.precision_regime(model, False, False) == "bfloat16/float32 trainable, no autocast"
    model.is_loaded_in_4bit = True
    assert metrics.precision_regime(model, True, False) == "4-bit NF4 base, bfloat16/float32 trainable, bf16 autocast"


def test_environment_and_versions_on_this_machine(monkeypatch):
    versions = metrics.library_versions()
    assert versions["python"] == platform.python_version()
    assert versions["torch"] == importlib.metadata.version("torch") and versions["cuda"] == torch.version.cuda
    assert set(metrics.VERSIONED) <= set(versions)
    monkeypatch.setattr(metrics, "VERSIONED", ["no-such-package-xyz"])
    assert metrics.library_versions()["no-such-package-xyz"] is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    env = metrics.environment()
    assert env["cuda_visible_devices"] == "3,1" and env["host_cpu_count"] >= 1
    assert env["gpu_name"] == metrics.gpu_name()
    assert 0 < metrics.rss_gib() < 1024


def test_gpu_readings_with_a_fake_cuda(monkeypatch):
    gib = 1024**3
    stats = {
        "allocated_bytes": {"all": {"peak": 3 * gib}},
        "reserved_bytes": {"all": {"peak": 4 * gib}},
        "requested_bytes": {"all": {"peak": 2 * gib}},
    }
    monkeypatch.setattr(torch.cuda.memory, "memory_stats_as_nested_dict", lambda: stats)
    assert metrics.cuda_memory_gib() == (3.0, 4.0, 2.0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    assert metrics.gpu_name() == "NVIDIA H200"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert metrics.gpu_name() is None
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(metrics, "nvml_handle", lambda index: None)
    assert metrics.nvml_used_gib() is None


def test_steady_state_rate_over_less_than_a_second():
    marks = [(10.0, 0, 0), (10.25, 32, 1), (10.5, 64, 2)]  # two 0.25 s steps of 32 tokens
    assert metrics.steady_state_rate(marks, 0) == {"tokens_per_s": 128.0, "samples_per_s": 4.0, "steady_state_steps": 2}


def test_nvml_reading_with_a_fake_pynvml(monkeypatch):
    import sys
    import types

    gib = 1024**3
    asked = []
    fake = types.SimpleNamespace(
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 * gib if h == "h3" else 0)
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(metrics, "nvml_handle", lambda index: asked.append(index) or f"h{index}")
    assert metrics.nvml_used_gib() == 3.0 and asked == [3]

    def broken(handle):
        raise RuntimeError("driver gone")

    fake.nvmlDeviceGetMemoryInfo = broken
    assert metrics.nvml_used_gib() is None


def test_versions_record_torchs_cuda_and_the_gpu_count(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert metrics.library_versions()["cuda"] == "12.8"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert metrics.environment()["gpu_count"] == 4


def test_rank_peaks_take_the_kernels_rss_mark_over_the_step_samples():
    series = {
        "rank": 1,
        "device": "cpu",
        "allocated": [],
        "reserved": [],
        "nvml": [],
        "rss": [0.5, 0.6],
        "rss_peak": 0.75,
    }
    assert metrics.rank_peaks(series)["rss_gib_peak"] == 0.75  # what the record's headline reads, rank by rank
    assert metrics.rank_peaks({**series, "rss_peak": None})["rss_gib_peak"] == 0.6
