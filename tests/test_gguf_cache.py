"""The GGUF cache: a tokenizer or config need reads the file's metadata only; conversions hold a lock; no temp folder
outlives a conversion. Every test points PEFTBENCH_CACHE at its own temp folder (never the user's cache)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from peftbench import models

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def embedded_gguf() -> str:
    try:
        return models.resolve_path(models.EMBEDDED_GGUF)
    except models.ModelSourceError as exc:
        pytest.skip(str(exc))


def test_tokenizer_and_config_never_dequantize(cache):
    gguf = embedded_gguf()
    cfg = OmegaConf.create({"name_or_path": gguf, "revision": None, "trust_remote_code": False})
    tokenizer = models.load_tokenizer(cfg)
    config = models.load_config(cfg)
    assert tokenizer("The answer is 42")["input_ids"] and tokenizer.pad_token is not None
    assert config.model_type == "llama" and config.num_hidden_layers == 30  # SmolLM2-135M's architecture
    folders = [p for p in (cache / "gguf").iterdir() if p.is_dir()]
    assert [p.name.endswith("-meta") for p in folders] == [True]  # config + tokenizer only; no conversion, no temp
    assert not list(folders[0].glob("*.safetensors")) and (folders[0] / "config.json").exists()
    start = time.perf_counter()
    assert models.load_tokenizer(cfg)("The answer is 42")["input_ids"] == tokenizer("The answer is 42")["input_ids"]
    assert (
        time.perf_counter() - start < 15
    )  # read from the cached folder, not parsed from the GGUF file's metadata again


LOCKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from peftbench import models
    target = Path(sys.argv[1])
    with models.conversion_lock(target):
        print("in", time.time(), flush=True)
        time.sleep(float(sys.argv[2]))
        print("out", time.time(), flush=True)
""")


def test_conversion_lock_serializes_and_clears_stale_temps(cache):
    target = cache / "gguf" / "0123456789abcdef"
    target.parent.mkdir(parents=True)
    stale = target.parent / f"{target.name}.4242.tmp"  # what a conversion killed by SIGKILL leaves behind
    (stale / "sub").mkdir(parents=True)
    other = target.parent / "fedcba9876543210.4242.tmp"  # another file's conversion: not this lock's to remove
    other.mkdir()
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    first = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(target), "2"], stdout=subprocess.PIPE, text=True, env=env
    )
    time.sleep(1.0)
    second = subprocess.run(
        [sys.executable, "-c", LOCKER, str(target), "0"], capture_output=True, text=True, env=env, timeout=60
    )
    out_first = first.communicate(timeout=60)[0]
    t_out_first = float(out_first.split("out ")[1])
    t_in_second = float(second.stdout.split("in ")[1].split()[0])
    assert t_in_second >= t_out_first  # the second process waited for the first to leave
    assert not stale.exists() and other.exists()


def test_killed_conversion_leaves_no_temp_for_the_next(cache):
    """A conversion killed mid-way (SIGKILL, so no cleanup of its own) holds the lock no more; the next process to
    take it removes the half-written temp folder before converting."""
    target = cache / "gguf" / "00000000feedbeef"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    script = LOCKER.replace(
        'print("in", time.time(), flush=True)',
        'tmp = target.with_name(target.name + ".77.tmp"); tmp.mkdir(); print("in", flush=True)',
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", script, str(target), "60"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert victim.stdout.readline().strip() == "in"
    assert (target.parent / f"{target.name}.77.tmp").is_dir()
    victim.kill()
    victim.wait(timeout=30)
    with models.conversion_lock(target):  # the kernel dropped the dead holder's lock: no wait
        assert not any(p.name.endswith(".tmp") for p in target.parent.iterdir())
