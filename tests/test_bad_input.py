"""Bad input is refused before any model loads, with an error that names the field (and, where it can, the fix).

Every case runs the real command line, `python -m peftbench -m ...`, in this process (peftbench.__main__.main with
sys.argv set: composition, the sweep's up-front validation, the exit code), with model loading patched to fail the
test if it is reached. Each case asserts: the field named in the message, no model loaded, the documented exit code
(2: refused before any point ran), and that the results folder's existing records and table are byte-identical
afterwards. A few cases run as real subprocesses for the exit codes of a sweep and of a single run. conftest.py
prints how many cases ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peftbench import records, sweep
from peftbench.point import Point, sft_config
from tests import warm_cli

REPO = Path(__file__).resolve().parents[1]
TINY_CLI = ["model=tiny_llama", "train=tiny", "sweep=none", "data.max_train_samples=32", "data.max_eval_samples=8"]
OLD_ID = "lora-tiny-llama-s0-00000000"


# -- the harness ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def existing_folder(tmp_path_factory) -> Path:
    """A results folder holding one finished record and its table, as a user's earlier sweep left it."""
    folder = tmp_path_factory.mktemp("existing") / "results"
    records.write_record(
        folder,
        {
            "run_id": OLD_ID,
            "status": "ok",
            "method": "lora",
            "model": "tiny-llama",
            "score": 0.5,
            "tokens_per_s": 123.0,
            "config": {"train": {"max_steps": 3}},
        },
    )
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every attempt to build or load a model, recorded and refused (the test fails if one happens)."""
    import transformers

    from peftbench import models

    calls: list[str] = []

    def refuse(name):
        def fn(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called before the input was refused")

        return fn

    monkeypatch.setattr(models, "load_model", refuse("models.load_model"))
    monkeypatch.setattr(models, "random_init_model", refuse("models.random_init_model"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse("from_pretrained"))
    real_from_config = transformers.AutoModelForCausalLM.from_config

    def from_config(*args, **kwargs):  # a meta-device skeleton (BitFit's bias census) holds no weights: allowed
        import torch

        if torch.get_default_device().type == "meta":
            return real_from_config(*args, **kwargs)
        return refuse("from_config")(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", from_config)
    return calls


def run_cli(monkeypatch, capsys, args: list[str]) -> tuple[int, str]:
    """`python -m peftbench ARGS` in this process: (exit code, stderr + stdout)."""
    from peftbench import __main__ as cli

    monkeypatch.setattr(sweep, "STATUSES", [])
    monkeypatch.setattr(sys, "argv", ["peftbench", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli.main()
    out = capsys.readouterr()
    return info.value.code, out.err + out.out


# -- data files in shapes nobody designed -----------------------------------------------------------------------------
GOOD = {"question": "What is 2 + 2?", "answer": "4"}


def _jsonl(tmp: Path, rows: list, name: str = "mine.jsonl") -> Path:
    path = tmp / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _own(path: Path, *extra: str) -> list[str]:
    """Own data in GSM8K's shape: question/answer columns, data.path alone (the eval file is reset)."""
    return ["data=gsm8k_local", f"data.path={path}", *extra]


def _malformed_line(tmp):
    return _own(_jsonl(tmp, [GOOD, GOOD, '{"question": "q", "answer": 4', GOOD]))


def _missing_column_line4(tmp):
    return _own(_jsonl(tmp, [GOOD, GOOD, GOOD, {"question": "q"}, GOOD]))


def _null_value_line2(tmp):
    return _own(_jsonl(tmp, [GOOD, {"question": None, "answer": "1"}, GOOD]))


def _empty_jsonl(tmp):
    (tmp / "empty.jsonl").write_text("")
    return _own(tmp / "empty.jsonl")


def _blank_lines_only(tmp):
    (tmp / "blank.jsonl").write_text("\n\n  \n")
    return _own(tmp / "blank.jsonl")


def _not_an_object_line(tmp):
    return _own(_jsonl(tmp, [GOOD, [1, 2, 3], GOOD]))


def _csv_header_only(tmp):
    (tmp / "h.csv").write_text("question,answer\n")
    return _own(tmp / "h.csv")


def _csv_empty(tmp):
    (tmp / "e.csv").write_text("")
    return _own(tmp / "e.csv")


def _csv_empty_cell(tmp):
    (tmp / "c.csv").write_text("question,answer\nq1,a1\nq2,\nq3,a3\n")
    return _own(tmp / "c.csv")


def _csv_without_column(tmp):
    (tmp / "d.csv").write_text("question,solution\nq,s\n")
    return _own(tmp / "d.csv")


def _json_array_of_scalars(tmp):
    (tmp / "a.json").write_text(json.dumps([GOOD, "not a row"]))
    return _own(tmp / "a.json")


def _parquet_without_column(tmp):
    import pandas as pd

    pd.DataFrame({"question": ["q"], "solution": ["s"]}).to_parquet(tmp / "p.parquet")
    return _own(tmp / "p.parquet")


def _parquet_damaged(tmp):
    (tmp / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    return _own(tmp / "bad.parquet")


def _data_path_folder(tmp):
    (tmp / "folder").mkdir()
    return _own(tmp / "folder")


def _stem_of_local_file(tmp):
    _jsonl(tmp, [GOOD], "mydata.jsonl")
    return _own(tmp / "mydata")  # an absolute path without its extension


def _bare_stem_of_local_file(tmp):
    _jsonl(tmp, [GOOD], "mydata.jsonl")
    return ["data=gsm8k_local", "data.path=mydata"]  # looks like a hub dataset name; a file with that stem exists


def _txt_file(tmp):
    (tmp / "d.txt").write_text("hello\n")
    return _own(tmp / "d.txt")


def _eval_file_malformed(tmp):
    train = _jsonl(tmp, [GOOD] * 4)
    evaluation = _jsonl(tmp, [GOOD, "{oops"], "mine_test.jsonl")
    return _own(train, f"data.eval_file={evaluation}")


def _overlong_rows_refused(tmp):
    long = {"question": "word " * 80, "answer": "4"}
    return _own(_jsonl(tmp, [GOOD] * 4 + [long]), "data.max_length_policy=error")


def _drop_leaves_nothing(tmp):
    return _own(_jsonl(tmp, [GOOD] * 4), "data.max_length_policy=drop", "train.max_length=2")


def _batch_larger_than_data(tmp):
    return _own(_jsonl(tmp, [GOOD] * 3), "train.per_device_train_batch_size=4")


def _warmup_past_epoch_steps(tmp):
    return _own(_jsonl(tmp, [GOOD] * 4), "train.max_steps=-1", "+train.num_train_epochs=1", "run.warmup_steps=2")


def _empty_model_folder(tmp):
    (tmp / "model").mkdir()
    return [f"model.name_or_path={tmp / 'model'}", "model.init=pretrained", "model.config=null"]


def _model_folder_without_config(tmp):
    (tmp / "model").mkdir()
    (tmp / "model" / "model.safetensors").write_bytes(b"x")
    return [f"model.name_or_path={tmp / 'model'}", "model.init=pretrained", "model.config=null"]


def _random_init_config_folder_without_config(tmp):
    (tmp / "cfg").mkdir()
    (tmp / "cfg" / "notes.txt").write_text("x")
    return [f"model.config={tmp / 'cfg'}"]


def _empty_tokenizer_folder(tmp):
    (tmp / "tok").mkdir()
    return [f"model.tokenizer={tmp / 'tok'}"]


def _tokenizer_folder_without_tokenizer(tmp):
    (tmp / "tok").mkdir()
    (tmp / "tok" / "config.json").write_text("{}")
    return [f"model.tokenizer={tmp / 'tok'}"]


def _pickle_only_model(tmp):
    folder = tmp / "pickled-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    return [f"model.name_or_path={folder}", "model.init=pretrained", "model.config=null", "model.tokenizer=null"]


def _file_as_folder(tmp):
    (tmp / "a-file").write_text("x")
    return [f"run.results_dir={tmp / 'a-file' / 'results'}"]


def _future_record(folder: Path):
    (folder / "new-run").mkdir()
    (folder / "new-run" / "record.json").write_text(json.dumps({"run_id": "new-run", "schema_version": 99}))
    return []


def _future_record_case(tmp):
    return _future_record  # applied to the results folder itself, before the snapshot


def _launcher_missing(tmp):
    return ["hydra/launcher=local_gpus"]


# (id, overrides or a function of tmp_path returning them, the field(s) the message must name)
CASES = [
    # composition (Hydra's own errors name the key)
    ("unknown method option", ["method=lorra"], "method"),
    ("unknown model option", ["model=tiny_lama"], "model"),
    ("unknown data option", ["data=gsm9k"], "data"),
    # Hydra's "To append to your config use +train.max_stpes=3" is the wrong fix for a typo: peftbench names the option
    ("train key typo (struct)", ["train.max_stpes=3"], ("train.max_stpes", "Did you mean `train.max_steps`?")),
    ("method key typo (struct)", ["method.lora_alpah=3"], ("method.lora_alpah", "Did you mean `method.lora_alpha`?")),
    (
        "an option of another profile",
        ["profile.memory_budget_gib=21.6"],
        ("profile=default has no option `memory_budget_gib`", "`profile=fast profile.memory_budget_gib=21.6`"),
    ),
    ("a new nested key", ["model.foo.bar=1"], ("model=tiny_llama has no option `foo`", "`+model.foo.bar=1`")),
    ("appended train key typo", ["+train.max_stpes=3"], "train.max_stpes"),
    ("appended method key typo", ["+method.lora_alpah=3"], "method.lora_alpah"),
    ("unbraced template on the command line", ["data.mapping.prompt=Q: {sentence}"], "data.mapping.prompt"),
    ("launcher plugin not installed", _launcher_missing, "hydra/launcher"),
    # sources
    ("model path missing", ["model.name_or_path=/no/such/model"], "model.name_or_path"),
    ("tokenizer path missing", ["model.tokenizer=/no/such/tokenizer"], "model.tokenizer"),
    ("empty model folder", _empty_model_folder, "model.name_or_path"),
    ("model folder without config.json", _model_folder_without_config, "model.name_or_path"),
    ("random-init config folder without config.json", _random_init_config_folder_without_config, "model.config"),
    ("empty tokenizer folder", _empty_tokenizer_folder, "model.tokenizer"),
    ("tokenizer folder without a tokenizer", _tokenizer_folder_without_tokenizer, "model.tokenizer"),
    ("pickle-only weights without opting out", _pickle_only_model, "model.use_safetensors"),
    ("unknown engine", ["engine=vllm"], "engine"),
    # the checkpointing planner's options
    ("not a checkpointing plan", ["+profile.checkpointing=every_1"], ("profile.checkpointing", "every_<n>")),
    ("negative memory budget", ["+profile.memory_budget_gib=-24"], "profile.memory_budget_gib"),
    ("skip_predicted_oom not a bool", ["run.skip_predicted_oom=perhaps"], "run.skip_predicted_oom"),
    # data files
    ("data file missing", ["data.path=/no/such/train.jsonl"], "data.path"),
    ("eval file missing", ["data.eval_file=/no/such/test.jsonl"], "data.eval_file"),
    ("data path is a folder", _data_path_folder, "data.path"),
    ("unsupported data file type", _txt_file, "data.path"),
    ("extension left off a local file", _stem_of_local_file, ("data.path", "mydata.jsonl")),
    ("bare stem of a local file is not a hub dataset", _bare_stem_of_local_file, "mydata.jsonl"),
    ("malformed jsonl line names line 3", _malformed_line, ("data.path", "line 3")),
    ("missing column on line 4", _missing_column_line4, ("data.mapping.completion", "line 4", "answer")),
    ("null value on line 2", _null_value_line2, ("data.mapping.prompt", "line 2", "question")),
    ("empty jsonl file", _empty_jsonl, ("data.path", "empty")),
    ("jsonl of blank lines", _blank_lines_only, ("data.path", "no rows")),
    ("jsonl line that is not an object", _not_an_object_line, ("data.path", "line 2")),
    ("csv with a header only", _csv_header_only, ("data.path", "header")),
    ("empty csv", _csv_empty, ("data.path", "empty")),
    ("csv empty cell", _csv_empty_cell, ("data.mapping.completion", "line 3")),
    ("csv header lacks the column", _csv_without_column, "data.mapping.completion"),
    ("json array holding a string", _json_array_of_scalars, ("data.path", "row 2")),
    ("parquet lacks the column", _parquet_without_column, "data.mapping.completion"),
    ("damaged parquet", _parquet_damaged, "data.path"),
    ("malformed eval file", _eval_file_malformed, ("data.eval_file", "line 2")),
    # mapping templates
    ("mapping names a missing column", ["data.mapping.prompt='Q: {questoin}'"], "data.mapping.prompt"),
    ("completion mapping missing column", ["data.mapping.completion=' {answer}'"], "data.mapping.completion"),
    ("unbalanced open brace", ["data.mapping.prompt='Sentence: {sentence'"], ("data.mapping.prompt", "brace")),
    ("unbalanced close brace", ["data.mapping.completion=' {topic}}'"], ("data.mapping.completion", "brace")),
    ("positional template field", ["data.mapping.prompt='Sentence: {}'"], "data.mapping.prompt"),
    (
        "literal backslash-n from the shell",
        [r"data.mapping.prompt='Sentence: {sentence}\nTopic:'"],
        ("data.mapping.prompt", "$'"),
    ),
    ("template not a string", ["data.mapping.prompt=5"], "data.mapping.prompt"),
    ("chat not a bool", ["data.chat=maybe"], "data.chat"),
    # what max_length does to the data
    ("over-long rows with max_length_policy=error", _overlong_rows_refused, ("data.max_length_policy", "1 of 5")),
    ("max_length_policy=drop leaving nothing", _drop_leaves_nothing, "data.max_length_policy"),
    ("unknown max_length_policy", ["data.max_length_policy=trim"], "data.max_length_policy"),
    ("max_length beyond the model's positions", ["train.max_length=4096"], ("train.max_length", "512")),
    ("batch larger than the data", _batch_larger_than_data, "train.per_device_train_batch_size"),
    # the train group through SFTConfig
    ("gradient_checkpointing not a bool", ["train.gradient_checkpointing=maybe"], "train.gradient_checkpointing"),
    ("bf16 not a bool", ["train.bf16=yes"], "train.bf16"),
    ("unknown lr scheduler", ["train.lr_scheduler_type=cosin"], ("train.lr_scheduler_type", "cosine")),
    ("unknown optimizer", ["+train.optim=adamw_foo"], "train.optim"),
    ("fractional logging_steps above 1", ["train.logging_steps=1.5"], "train.logging_steps"),
    ("prefetch factor without workers", ["+train.dataloader_prefetch_factor=2"], "train.dataloader_prefetch_factor"),
    (
        "checkpointing kwargs not a mapping",
        ["+train.gradient_checkpointing_kwargs=5"],
        "train.gradient_checkpointing_kwargs",
    ),
    ("unknown truncation mode", ["+train.truncation_mode=middle"], "train.truncation_mode"),
    ("throughput warm-up covers every step", ["run.warmup_steps=3"], "run.warmup_steps"),
    ("compile with no warm-up step", ["profile=fast", "run.warmup_steps=0"], ("run.warmup_steps", "compile")),
    ("unknown checkpointing plan", ["profile=fast", "profile.checkpointing=every_1"], "profile.checkpointing"),
    ("unknown compile mode", ["profile=fast", "profile.compile=whole"], "profile.compile"),
    ("gc freeze not a boolean", ["profile=fast", "profile.gc_freeze=yes"], ("profile.gc_freeze", "true or false")),
    ("warm-up covers every step of an epoch run", _warmup_past_epoch_steps, "run.warmup_steps"),
    ("lr warm-up longer than training", ["train.warmup_steps=5"], "train.warmup_steps"),
    (
        "several errors listed at once",
        ["train.gradient_checkpointing=maybe", "method.r=0"],
        ("train.gradient_checkpointing", "method.r"),
    ),
    # ranges
    ("max_steps zero", ["train.max_steps=0"], "train.max_steps"),
    ("max_steps not a number", ["train.max_steps=abc"], "train.max_steps"),
    ("max_steps -1 without epochs", ["train.max_steps=-1", "+train.num_train_epochs=null"], "train.max_steps"),
    ("batch size zero", ["train.per_device_train_batch_size=0"], "train.per_device_train_batch_size"),
    ("gradient accumulation zero", ["train.gradient_accumulation_steps=0"], "train.gradient_accumulation_steps"),
    ("negative learning rate", ["train.learning_rate=-0.1"], "train.learning_rate"),
    ("max_length zero", ["train.max_length=0"], "train.max_length"),
    ("seed not an integer", ["train.seed=1.5"], "train.seed"),
    ("lora rank zero", ["method.r=0"], "method.r"),
    ("lora dropout out of range", ["method.lora_dropout=1.5"], "method.lora_dropout"),
    ("method learning rate zero", ["method.learning_rate=0"], "method.learning_rate"),
    ("bitfit on a model without biases", ["method=bitfit"], "method=bitfit"),
    ("max_train_samples zero", ["data.max_train_samples=0"], "data.max_train_samples"),
    ("max_eval_samples negative", ["data.max_eval_samples=-1"], "data.max_eval_samples"),
    ("unknown init", ["model.init=randm"], "model.init"),
    ("unknown dtype", ["model.dtype=float33"], "model.dtype"),
    ("trust_remote_code not a bool", ["model.trust_remote_code=maybe"], "model.trust_remote_code"),
    ("run.force not a bool", ["run.force=maybe"], "run.force"),
    ("negative throughput warm-up", ["run.warmup_steps=-1"], "run.warmup_steps"),
    ("eval limit zero", ["eval.limit=0", "eval.on_random_init=true"], "eval.limit"),
    ("unknown eval task", ["eval.tasks=[topcis]", "eval.on_random_init=true"], "eval.tasks"),
    # the results folder
    ("results folder not writable", _file_as_folder, "run.results_dir"),
    ("record from a newer schema in the folder", _future_record_case, "run.results_dir"),
]
if __import__("torch").cuda.is_available():  # fp16 on a CPU is the case; a GPU machine runs it
    CASES.remove(next(c for c in CASES if c[0] == "bf16 not a bool"))
else:
    CASES.append(("fp16 on a CPU", ["+train.fp16=true"], "train.fp16"))


@pytest.mark.parametrize("name,overrides,fields", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_field(existing_folder, loads, monkeypatch, capsys, tmp_path, name, overrides, fields):
    results = tmp_path / "results"
    shutil.copytree(existing_folder, results)
    monkeypatch.chdir(tmp_path)
    if callable(overrides):
        overrides = overrides(tmp_path)
    if callable(overrides):  # a case that changes the results folder itself
        overrides = overrides(results)
    if "launcher" in name:
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda n, *a: None if n.startswith("hydra_plugins.") else real(n, *a)
        )
    before = snapshot(results)
    folder = [] if any(o.startswith("run.results_dir=") for o in overrides) else [f"run.results_dir={results}"]
    args = ["-m", *TINY_CLI, *folder, f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]
    code, message = run_cli(monkeypatch, capsys, args)
    for field in (fields,) if isinstance(fields, str) else fields:
        assert field in message, f"{name}: the error does not name `{field}`:\n{message[-3000:]}"
    assert code == sweep.EXIT_REFUSED, f"{name}: exit {code}, expected {sweep.EXIT_REFUSED}:\n{message[-3000:]}"
    assert loads == [], f"{name}: a model was loaded: {loads}"
    assert snapshot(results) == before, f"{name}: the results folder changed"
    assert len(message) > 60, f"{name}: the error says nothing beyond the field name:\n{message}"


# -- the data report --------------------------------------------------------------------------------------------------
def _lengths_outside(tokenizer, rows, max_length):
    """What SFTTrainer will do, worked out here with the tokenizer alone: (truncated, dropped) row counts."""
    truncated = dropped = 0
    for row in rows:
        prompt = f"Question: {row['question']}\nAnswer:"
        full = tokenizer(prompt + f" {row['answer']}" + tokenizer.eos_token)["input_ids"]
        if len(full) <= max_length:
            continue
        prompt_len = len(tokenizer(prompt)["input_ids"])
        if prompt_len >= max_length:
            dropped += 1
        else:
            truncated += 1
    return truncated, dropped


def test_over_long_rows_are_counted_as_sft_trainer_treats_them(tiny_cfg, tmp_path):
    """Counts from the validation's report equal a count made here with the tokenizer, and what a real SFTTrainer
    keeps of the same data (its prepared train_dataset)."""
    from transformers import AutoModelForCausalLM

    from peftbench import data, models, validation

    rows = (
        [GOOD] * 5
        + [{"question": "word " * 10, "answer": "forty " * 20}] * 3
        + [{"question": "word " * 40, "answer": "4"}] * 2
    )
    path = _jsonl(tmp_path, rows)
    cfg = tiny_cfg("data=gsm8k_local", f"data.path={path}", "train.max_length=32", "data.max_train_samples=null")
    validation.validate(cfg)
    args = sft_config(Point.resolve(cfg), tmp_path / "out")
    tokenizer = data.measuring_tokenizer(cfg.model)
    _, fields = validation.data_plan(cfg.data, cfg.model, args)
    truncated, dropped = _lengths_outside(tokenizer, rows, 32)
    assert (truncated, dropped) == (3, 2)  # the rows were built so; the tokenizer agrees
    assert fields["train_examples"] == 10
    assert fields["examples_truncated"] == truncated and fields["examples_dropped"] == dropped
    assert fields["train_examples_used"] == 10 - dropped
    from trl import SFTTrainer

    model = AutoModelForCausalLM.from_config(models.load_config(cfg.model))
    train, _ = data.load_train_eval(cfg.data)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    assert len(trainer.train_dataset) == fields["train_examples_used"]
    assert sum(len(ids) == 32 for ids in trainer.train_dataset["input_ids"]) == truncated


def test_drop_policy_removes_every_over_long_row(tiny_cfg, tmp_path):
    from peftbench import validation

    rows = (
        [GOOD] * 5
        + [{"question": "word " * 10, "answer": "forty " * 20}] * 3
        + [{"question": "word " * 40, "answer": "4"}] * 2
    )
    cfg = tiny_cfg(
        "data=gsm8k_local",
        f"data.path={_jsonl(tmp_path, rows)}",
        "train.max_length=32",
        "data.max_train_samples=null",
        "data.max_length_policy=drop",
    )
    args = sft_config(Point.resolve(cfg), tmp_path / "out")
    train, fields = validation.data_plan(cfg.data, cfg.model, args)
    assert len(train) == 5 and fields["train_examples_used"] == 5
    assert fields["examples_dropped"] == 5 and fields["examples_truncated"] == 0


def test_missing_column_names_the_line(tmp_path):
    from omegaconf import OmegaConf

    from peftbench import data

    path = _jsonl(tmp_path, [GOOD] * 6 + [{"question": "q"}] + [GOOD])
    cfg = OmegaConf.create({"path": str(path), "mapping": {"prompt": "Q: {question}", "completion": " {answer}"}})
    with pytest.raises(data.DataError, match=r"line 7 has no `answer` column"):
        data.check_local_files(cfg)


def test_own_data_path_alone_resets_the_shipped_eval_file(tiny_cfg, tmp_path):
    from peftbench import data

    mine = _jsonl(tmp_path, [GOOD] * 4)
    spec, note = data.eval_file_spec(tiny_cfg("data=gsm8k_local", f"data.path={mine}").data)
    assert spec is None and "data.eval_file: reset to null" in note
    mine_test = _jsonl(tmp_path, [GOOD] * 2, "mine_test.jsonl")
    spec, note = data.eval_file_spec(
        tiny_cfg("data=gsm8k_local", f"data.path={mine}", f"data.eval_file={mine_test}").data
    )
    assert spec == str(mine_test) and note is None
    assert data.eval_file_spec(tiny_cfg().data) == ("pkg://peftbench/tasks/topics_test.jsonl", None)


def test_data_yaml_outside_the_repo_through_the_search_path(tmp_path):
    """A user's data group in their own folder: `--config-dir DIR` (or hydra.searchpath) and `data=NAME`."""
    from hydra import compose, initialize_config_dir

    from peftbench.paths import recipes_dir

    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "mine.yaml").write_text(
        'name: mine\npath: mine.jsonl\nmapping:\n  prompt: "Q: {q}\\nA:"\n  completion: " {a}"\nchat: false\n'
        "max_train_samples: null\nmax_eval_samples: null\nmax_length_policy: warn\n"
    )
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "data=mine"])
    assert cfg.data.name == "mine" and cfg.data.mapping.prompt == "Q: {q}\nA:"


# -- the table is never poisoned --------------------------------------------------------------------------------------
def test_one_odd_record_does_not_poison_the_table(tmp_path):
    folder = tmp_path / "results"
    records.write_record(folder, {"run_id": "a", "status": "ok", "engine_gradient_checkpointing": True, "score": 0.5})
    records.write_record(folder, {"run_id": "b", "status": "ok", "engine_gradient_checkpointing": "maybe"})
    (folder / "c").mkdir()
    (folder / "c" / "record.json").write_text("{not json")
    frame = records.write_table(folder)
    table = records.read_table(folder)
    assert sorted(table["run_id"]) == ["a", "b"]
    assert sorted(table["engine_gradient_checkpointing"].astype(str)) == ["True", "maybe"]
    assert any(str(folder / "c" / "record.json") in p for p in frame.attrs["left_out"])


def test_base_row_hash_covers_library_versions(tiny_cfg, monkeypatch):
    from peftbench import base_row

    before = base_row.base_key(tiny_cfg())
    monkeypatch.setattr(base_row, "base_versions", lambda: {**dict.fromkeys(base_row.BASE_LIBRARIES, "1"), "trl": "0"})
    assert base_row.base_key(tiny_cfg()) != before


def test_default_results_folder_is_ignored_by_git():
    """The main job writes under run.results_dir; by default that is an ignored folder, never committed results."""
    from tests.conftest import compose_recipe

    folder = compose_recipe().run.results_dir
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "check-ignore", "-q", f"{folder}/x/record.json"], cwd=REPO)
    assert done.returncode == 0, f"{folder} is not ignored by git: the main job would leave the tree dirty"


# -- real command lines, for the exit codes ---------------------------------------------------------------------------
def _cli(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    flags = [a for a in args if a.startswith("-")]
    cmd = [
        sys.executable,
        "-m",
        "peftbench",
        *flags,
        *TINY_CLI,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *[a for a in args if not a.startswith("-")],
    ]
    return warm_cli.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_cli_sweep_refused_before_any_model_loads(tmp_path):
    """A multirun with a bad option in some points is refused as a whole (exit 2), every bad point listed."""
    results = tmp_path / "results"
    done = _cli(
        tmp_path, "-m", f"run.results_dir={results}", "method=lora,ia3", "method.lora_dropout=1.5", "train.max_steps=0"
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing the sweep" in done.stderr
    assert done.stderr.count("train.max_steps: got 0") == 1  # ia3 fails composing (no lora_dropout key) first
    assert "method.lora_dropout" in done.stderr and "Could not override 'method.lora_dropout'" in done.stderr
    assert not list(results.glob("*/record.json")), "a refused sweep must not run or record any point"


def test_cli_single_run_bad_option_is_an_invalid_row_exit_1(tmp_path, existing_folder):
    """A single run refused at validation: exit 1 with its `invalid` row (README: Exit codes); the records already
    in the folder are untouched and keep their rows in the rebuilt table."""
    results = tmp_path / "results"
    shutil.copytree(existing_folder, results)
    before = (results / OLD_ID / "record.json").read_bytes()
    done = _cli(tmp_path, f"run.results_dir={results}", "train.gradient_checkpointing=maybe")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "train.gradient_checkpointing" in done.stdout + done.stderr
    assert (results / OLD_ID / "record.json").read_bytes() == before
    table = records.read_table(results)
    assert sorted(table["status"]) == ["invalid", "ok"]
    assert "time_train_s" not in table.columns or table["time_train_s"].isna().all()  # nothing trained


def test_cli_launcher_plugin_missing_names_the_extra(tmp_path):
    """Without the plugin Hydra only says it cannot find `hydra/launcher/joblib`; peftbench names the extra."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import importlib.util as u\nreal = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n.startswith('hydra_plugins.hydra_joblib') else real(n, *a)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{shim}:{REPO}"}
    done = subprocess.run(
        [sys.executable, "-m", "peftbench", "-m", "hydra/launcher=local_gpus", *TINY_CLI],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'pip install "peftbench[sweep]"' in done.stderr and "hydra-joblib-launcher" in done.stderr
