"""The warm launcher (tests/warm_cli.py) gives real processes: exit codes, stdout/stderr, SIGKILL, the environment,
the working directory, atexit and open fds are a child's own; a differing import-time environment runs cold.

The child's program is a `peftbench/__main__.py` written into the test's folder: `python -m peftbench` puts the working
directory first on sys.path (and the launcher never imports peftbench), so a cold start would run the same file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import warm_cli

PROBE = """
import atexit, json, os, sys, threading, time
report = {
    "argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(), "env": dict(os.environ),
    "torch_preloaded": "torch" in sys.modules, "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
    "path0": sys.path[0],
}
mode = sys.argv[1]
if mode == "report":
    print(json.dumps(report))  # block-buffered (a pipe): must still come out at exit
    print("to stderr", file=sys.stderr)
    atexit.register(lambda: print("atexit ran"))
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread joined"))).start()  # non-daemon: joined
    sys.exit(int(sys.argv[2]))
if mode == "sleep":
    with open(sys.argv[2], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
if mode == "raise":
    raise ValueError("boom from the child")
if mode == "exit-text":
    sys.exit("a message, not a code")
"""


@pytest.fixture
def probe(tmp_path):
    (tmp_path / "peftbench").mkdir()
    (tmp_path / "peftbench" / "__init__.py").write_text("")
    (tmp_path / "peftbench" / "__main__.py").write_text(PROBE)

    def cmd(*args: str) -> list[str]:
        return [sys.executable, "-m", "peftbench", *args]

    return cmd


def test_exit_code_stdout_stderr_env_and_cwd_are_the_childs(probe, tmp_path):
    env = {**warm_cli.BASE_ENV, "PEFTBENCH_WARM_PROBE": "given-to-this-child"}
    done = warm_cli.run(probe("report", "7"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.warm, done.cold_reason
    assert done.returncode == 7, done.stderr
    report = json.loads(done.stdout.splitlines()[0])
    assert done.stdout.splitlines()[1:] == ["thread joined", "atexit ran"]
    assert done.stderr == "to stderr\n"
    assert report["argv"] == ["report", "7"] and report["cwd"] == str(tmp_path) and report["path0"] == str(tmp_path)
    assert report["env"] == env  # exactly the environment given, nothing of the launcher's
    assert report["torch_preloaded"]  # what it saves: the libraries are already imported
    assert report["fds"] == [0, 1, 2, 3]  # 3: the listdir itself; no socket or pipe of the launcher's
    assert report["pid"] not in (os.getpid(), warm_cli.launcher().proc.pid)


def test_sigkill_is_a_real_signal_death(probe, tmp_path):
    pidfile = tmp_path / "pid"
    proc = warm_cli.popen(probe("sleep", str(pidfile)), cwd=tmp_path, env=warm_cli.BASE_ENV, stdout=subprocess.PIPE)
    assert proc.warm
    deadline = time.monotonic() + 120
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(pidfile.read_text()) == proc.pid
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.2)
    os.kill(proc.pid, signal.SIGKILL)  # from outside, by pid, as the fault tests' victims die
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not os.path.exists(f"/proc/{proc.pid}") or open(f"/proc/{proc.pid}/stat").read().split()[2] == "Z"
    proc.stdout.close()


def test_run_timeout_kills_the_child(probe, tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        warm_cli.run(probe("sleep", str(tmp_path / "pid")), cwd=tmp_path, env=warm_cli.BASE_ENV, timeout=3)
    pid = int((tmp_path / "pid").read_text())
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped


def test_uncaught_exception_and_text_exit_end_as_in_a_fresh_interpreter(probe, tmp_path):
    raised = warm_cli.run(probe("raise"), cwd=tmp_path, env=warm_cli.BASE_ENV, capture_output=True, text=True)
    assert raised.warm and raised.returncode == 1
    assert raised.stderr.startswith("Traceback") and raised.stderr.endswith("ValueError: boom from the child\n")
    text = warm_cli.run(probe("exit-text"), cwd=tmp_path, env=warm_cli.BASE_ENV, capture_output=True, text=True)
    assert text.warm and text.returncode == 1 and text.stderr == "a message, not a code\n"


def test_an_import_time_variable_that_differs_runs_cold(probe, tmp_path):
    """HF_HUB_OFFLINE is read by huggingface_hub when it is imported: a child given another value than the launcher
    had must be a fresh interpreter, and is."""
    assert "HF_HUB_OFFLINE" in warm_cli.launcher().keys  # recorded while the launcher imported, not listed by hand
    offline = "0" if warm_cli.BASE_ENV.get("HF_HUB_OFFLINE") == "1" else "1"
    env = {**warm_cli.BASE_ENV, "HF_HUB_OFFLINE": offline}
    done = warm_cli.run(probe("report", "3"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert not done.warm and "HF_HUB_OFFLINE" in done.cold_reason
    report = json.loads(done.stdout.splitlines()[0])
    assert done.returncode == 3 and report["env"]["HF_HUB_OFFLINE"] == offline and not report["torch_preloaded"]
    for differs in ({"OMP_NUM_THREADS": "2"}, {"PYTHONPATH": str(tmp_path)}):  # native / interpreter start
        assert warm_cli.launcher().differs({**warm_cli.BASE_ENV, **differs}) == next(iter(differs))
    assert warm_cli.launcher().differs({**warm_cli.BASE_ENV, "HF_TOKEN": "hf_read_when_used"}) is None


def test_only_python_m_peftbench_runs_warm():
    assert warm_cli.cold_reason([sys.executable, "-c", "pass"], warm_cli.BASE_ENV) == "not `python -m peftbench`"
    assert "site hook" in warm_cli.cold_reason([sys.executable, "-m", "peftbench", "measure"], warm_cli.BASE_ENV)
    assert warm_cli.cold_reason(["torchrun", "-m", "peftbench"], warm_cli.BASE_ENV) == "not `python -m peftbench`"
