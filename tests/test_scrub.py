"""Every rule of `records.scrub`, each with its own secret, through the real CLI: none reaches disk or the logs.

Two runs share the module (one process each): a one-point multirun that trains one step on the tiny model, and a
single run whose point is invalid (its error message quotes the secrets, so they reach the log and the table's
`error` column). Each rule's secret is a string that only that rule masks: remove the rule from records.py and only
that rule's case fails. Where a secret cannot reach a file at all, the case says so instead of checking it there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench import records
from tests import warm_cli

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model=tiny_llama",
    "train=tiny",
    "sweep=none",
    "eval=none",
    "data.max_train_samples=8",
    "data.max_eval_samples=2",
    "train.max_steps=1",
    "run.report=false",
]

# One secret per rule; none of them has another rule's shape.
KEY_DEEP = "keyval-deep-7f3a9c"  # under run.deep.nested.api_key: only the secret-key rule masks it
KEY_IN_LIST = "keyval-list-2c81d0"  # under run.deep.items[0].hub_token
ASSIGNED = "assignval-51b2e8"  # `password=assignval-...` in text: only the name=value rule
HF = "hf_" + "Qm7" * 9
SK = "sk-" + "Wp4" * 9
GHP = "ghp_" + "Zt2" * 9
ENV_VALUE = "envval-opaque-9d4e"  # the value of WANDB_API_KEY: only the env-value rule
TEXT = f"notes password={ASSIGNED} {HF} {SK} {GHP} {ENV_VALUE}"  # all text-borne secrets at once

CASES = {
    "secret key at depth": KEY_DEEP,
    "secret key inside a list": KEY_IN_LIST,
    "name=value in text": ASSIGNED,
    "hf_ token shape": HF,
    "sk- token shape": SK,
    "ghp_ token shape": GHP,
    "secret env value": ENV_VALUE,
}
KEY_CASES = {"secret key at depth", "secret key inside a list"}  # nested config only: the table has no such column


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_API_KEY": ENV_VALUE}
    env.pop("HF_TOKEN", None)
    return warm_cli.run(
        [sys.executable, "-m", "peftbench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scrub")
    trained = cli(
        root,
        "-m",
        *TINY,
        f"run.results_dir={root / 'trained'}",
        "run.name=scrub-trained",
        f"+run.deep.nested.api_key={KEY_DEEP}",
        f"+run.deep.items=[{{hub_token:{KEY_IN_LIST}}}]",
        f"+run.note='{TEXT}'",
        f"data.name='{TEXT}'",
    )
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    # a single run (no -m): an out-of-range model.dtype is an invalid row whose error quotes the value
    invalid = cli(
        root,
        *TINY,
        f"run.results_dir={root / 'invalid'}",
        "run.name=scrub-invalid",
        f"+run.deep.nested.api_key={KEY_DEEP}",
        f"+run.deep.items=[{{hub_token:{KEY_IN_LIST}}}]",
        f"model.dtype='{TEXT}'",
    )
    assert invalid.returncode == 1, invalid.stdout[-3000:] + invalid.stderr[-3000:]
    return root, trained, invalid


def files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file())


@pytest.mark.parametrize("case", list(CASES))
def test_secret_is_gone_from_record_table_logs_and_hydra_dumps(runs, case):
    root, trained, invalid = runs
    secret = CASES[case]
    # the records: the trained point holds every secret in its config, the invalid one also in its error
    for folder in ("trained", "invalid"):
        (record,) = files(root / folder, "record.json")
        assert secret not in record.read_text(), f"{case}: in {record}"
        assert "***" in record.read_text()
    invalid_record = records.read_records(root / "invalid")[0]
    assert invalid_record["status"] == "invalid" and "model.dtype" in invalid_record["error"]
    # the tables: the text-borne secrets sit in the flat `dataset` and `error` columns before scrubbing
    for folder in ("trained", "invalid"):
        assert secret.encode() not in (root / folder / "table.parquet").read_bytes(), f"{case}: in {folder} parquet"
        assert secret not in (root / folder / "table.csv").read_text(), f"{case}: in {folder} csv"
    if case not in KEY_CASES:
        trained_row = records.read_table(root / "trained").iloc[0]
        assert "***" in trained_row["dataset"] and trained_row["dataset"].startswith("notes ")
        assert "***" in records.read_table(root / "invalid").iloc[0]["error"]
    # Hydra's dumps: multirun.yaml and .hydra/{config,hydra,overrides}.yaml of both runs
    dumps = files(root / "outputs", "*.yaml")
    assert any(p.name == "multirun.yaml" for p in dumps) and len([p for p in dumps if p.parent.name == ".hydra"]) == 6
    for dump in dumps:
        assert secret not in dump.read_text(), f"{case}: in {dump}"
    # logs: every job log and status file, and the single run's console (the invalid error is logged there);
    # a multirun's console is left out: Hydra itself echoes a sweep's overrides there (the README says so)
    logs = files(root / "outputs", "*.log") + files(root / "outputs", "*.json")
    assert len(logs) >= 3
    for log in logs:
        assert secret not in log.read_text(), f"{case}: in {log}"
    assert "model.dtype" in invalid.stdout + invalid.stderr
    assert secret not in invalid.stdout + invalid.stderr, f"{case}: on the console of a single run"


@pytest.mark.parametrize(
    "key",
    [
        "hub_token",
        "HF_TOKEN",
        "token",
        "client_secret",
        "password",
        "db.passwd",
        "api_key",
        "api-key",
        "OPENAI_APIKEY",
        "credentials",
        "credential",
        "proxy_auth",
        "x-auth",
    ],
)
def test_secret_named_keys_are_masked_at_any_depth(key):
    value = {"a": [{"b": {key: "plain-value-1"}}], key: 12345}
    assert records.scrub(value, []) == {"a": [{"b": {key: "***"}}], key: "***"}


@pytest.mark.parametrize(
    "key",
    [
        "tokenizer",
        "max_tokens",
        "num_virtual_tokens",
        "tokens_per_s",
        "author",
        "authority",
        "secretary",
        "token_count",
        "password_hint_shown",
    ],
)
def test_keys_that_only_contain_a_secret_word_are_kept(key):
    assert records.scrub({key: "kept-value"}, []) == {key: "kept-value"}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("--hub_token=abc123 --x 1", "--hub_token=*** --x 1"),
        ("HF_TOKEN: abc123, next", "HF_TOKEN: ***, next"),
        ("{'password': 'abc123'}", "{'password': '***'}"),
        ('api_key="abc123"', 'api_key="***"'),
        ("api-key = abc123", "api-key = ***"),
        ("db.passwd=abc}", "db.passwd=***}"),
        ("max_tokens=128 tokenizer=x", "max_tokens=128 tokenizer=x"),
        ("token_count=5", "token_count=5"),
    ],
)
def test_name_value_assignments_of_secrets_in_text(text, expected):
    assert records.scrub(text, []) == expected


@pytest.mark.parametrize(
    "token,masked",
    [
        ("hf_" + "a1" * 10, True),
        ("sk-" + "B2" * 10, True),
        ("ghp_" + "c3" * 10, True),
        ("hf_" + "a" * 19, False),  # shorter than a real token: an identifier like hf_model_dir stays
        ("xhf_" + "a" * 24, False),  # not at a word boundary
    ],
)
def test_token_shapes_in_text(token, masked):
    out = records.scrub(f"see {token} here", [])
    assert out == ("see *** here" if masked else f"see {token} here")


def test_secret_env_values_are_masked_and_short_or_unnamed_ones_kept(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "longenough-value")
    monkeypatch.setenv("MY_SECRET", "s3cr3t-value-long")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # under 8 characters: masking it would mangle ordinary text
    monkeypatch.setenv("PLAIN_SETTING", "not-secret-value")
    env = records.secret_env_values()
    assert "longenough-value" in env and "s3cr3t-value-long" in env
    assert "abc" not in env and "not-secret-value" not in env
    assert env == sorted(env, key=len, reverse=True)  # longest first: a value containing another is masked whole
    assert records.scrub(["x longenough-value y", ("s3cr3t-value-long",), 7]) == ["x *** y", ["***"], 7]
    assert records.scrub("not-secret-value abc") == "not-secret-value abc"


def test_env_value_length_threshold_and_longest_first(monkeypatch):
    monkeypatch.setenv("A_TOKEN", "abcdefgh")  # exactly 8: masked
    monkeypatch.setenv("B_TOKEN", "abcdefg")  # 7: kept
    monkeypatch.setenv("C_TOKEN", "abcdefgh-and-more")  # contains A's value: masked whole, not as `***-and-more`
    monkeypatch.setenv("D_TOKEN", "zzzzzzzz")  # sorts first alphabetically, but is shorter
    env = records.secret_env_values()
    assert env.index("abcdefgh-and-more") < env.index("abcdefgh") and env.index("abcdefgh-and-more") < env.index(
        "zzzzzzzz"
    )
    assert "abcdefg" not in env
    assert records.scrub("x abcdefgh-and-more y abcdefgh z abcdefg") == "x *** y *** z abcdefg"


def test_explicit_env_values_are_used_at_every_depth_instead_of_the_environment(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "from-the-environment")
    given = ["given-secret-value"]
    assert records.scrub("from-the-environment", []) == "from-the-environment"  # [] means none, not "read them"
    nested = {"a": {"b": ["given-secret-value", ("x given-secret-value",)]}, "c": "given-secret-value"}
    assert records.scrub(nested, given) == {"a": {"b": ["***", ["x ***"]]}, "c": "***"}
