""".ci/run: the README's test command itself, with CI=true, refusing to start without the data and Chromium.

The README's two set-up commands are the contract; these tests read the README with their own parser and compare.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CI_RUN = REPO / ".ci" / "run"


def readme_tests_command() -> str:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"\*\*Tests\*\*:?\s*\n+```bash\n(.+?)\n```", readme, re.S)
    assert block, "README.md has no **Tests** bash block"
    return block.group(1).strip()


def run_ci(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(CI_RUN), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_ci_runs_exactly_the_readme_test_command():
    done = run_ci(dict(os.environ), "--print-command")
    assert done.returncode == 0, done.stderr
    command = done.stdout.strip()
    assert command == readme_tests_command()
    # bytecode written as the tests import (not compiled at install), also where the caller sets PYTHONDONTWRITEBYTECODE
    assert command.endswith(" && PYTHONDONTWRITEBYTECODE= python -m pytest -q -n 2")
    assert 'uv pip install -e ".[test]"' in command
    # torch from pip (the CPU build only pip finds here), before uv installs the rest around it
    assert command.index("pip install --no-compile torch==2.13.0 uv && ") < command.index("uv pip install")
    text = CI_RUN.read_text()
    assert "export CI=true" in text and 'eval "$command"' in text


def test_ci_stops_with_exit_1_when_the_shared_data_is_missing(tmp_path):
    done = run_ci({**os.environ, "PEFTBENCH_DATA": str(tmp_path / "nothing")})
    assert done.returncode == 1
    assert f"{tmp_path / 'nothing'}/gsm8k/train.jsonl is missing" in done.stderr and "PEFTBENCH_DATA" in done.stderr
    assert "running the README's test command" not in done.stdout  # stopped before any install


def test_ci_stops_with_exit_1_when_chromium_is_missing(tmp_path):
    """A PATH with the few tools the script needs and neither chromium nor apt-get: no install can be tried."""
    data = tmp_path / "data" / "gsm8k"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("{}\n")
    (data / "test.jsonl").write_text("{}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("awk", "dirname", "id", "bash"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = run_ci({"PATH": str(bin_dir), "PEFTBENCH_DATA": str(tmp_path / "data"), "HOME": str(tmp_path)})
    assert done.returncode == 1, done.stderr
    assert "chromium is not installed" in done.stderr and "apt-get install -y chromium" in done.stderr
    assert "running the README's test command" not in done.stdout
