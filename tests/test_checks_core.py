"""checks.py's validation rules, one field at a time at its boundaries, with the message a user reads."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from peftbench import checks, records

# (field, valid values, invalid values), written from the README's ranges, not from checks.RULES
CASES = [
    ("train.max_steps", [1, 500, -1], [0, -2, 1.5, True, "10"]),
    ("train.per_device_train_batch_size", [1, 8], [0, -1, 2.0, True]),
    ("train.gradient_accumulation_steps", [1, 4], [0, -3, 1.0, False]),
    ("train.learning_rate", [1e-4, 1, 0.5], [0, -1e-4, True, "1e-4"]),
    ("train.max_length", [1, 2048], [0, -1, 64.0, True]),
    ("train.warmup_steps", [0, 0.1, 10], [-1, -0.5, True]),
    ("train.weight_decay", [0, 0.01], [-0.01, True]),
    ("train.logging_steps", [1, 0.5], [0, -1, True]),
    ("train.seed", [0, 42], [-1, 1.0, True]),
    ("train.num_train_epochs", [1, 0.5], [0, -1, True]),
    ("method.learning_rate", [2e-4, 3], [0, -1, False]),
    ("method.r", [1, 16], [0, -8, 16.0, True]),
    ("method.lora_alpha", [32, 0.5], [0, -32, True]),
    ("method.lora_dropout", [0, 0.0, 0.05, 0.999], [1, 1.0, -0.1, True]),
    ("method.num_virtual_tokens", [1, 16], [0, -1, 16.0, True]),
    ("method.loraplus_lr_ratio", [16, 0.5], [0, -1, True]),
    ("data.max_train_samples", [1, 1000], [0, -1, 1.5, True]),
    ("data.max_eval_samples", [0, 64], [-1, 2.5, True]),
    ("run.profile_steps", [0, 3], [-1, 1.5, True]),
    ("run.memory_trace_steps", [0, 6], [-1, 2.0, False]),
    ("run.warmup_steps", [0, 2], [-1, 0.5, True]),
    ("model.init", ["pretrained", "random"], ["Random", "scratch", 1]),
    ("model.dtype", ["auto", "float32", "float16", "bfloat16"], ["fp16", "bf16", "int8"]),
    ("model.trust_remote_code", [True, False], ["false", 0, 1]),
    ("model.use_safetensors", [True, False], ["true", 1]),
    ("run.force", [True, False], ["yes", 1]),
    ("run.save_adapter", [True, False], ["no", 0]),
    ("run.skip_predicted_oom", [True, False], ["yes", 1]),
    ("profile.trl_step_metrics", [True, False], ["false", 0]),
    ("profile.compile", ["regional", "off", False], ["fast", True, 1]),
    ("profile.compile_dynamic", [True, False], ["yes", 1]),
    ("profile.compile_backend", ["inductor", "aot_eager"], ["", 3]),
    ("data.max_length_policy", ["error", "warn", "drop"], ["truncate", "Error", True]),
    ("data.chat", [True, False], ["true", 1]),
    ("train.truncation_mode", ["keep_start", "keep_end"], ["start", "keep_middle", 0]),
]


def cfg_with(field: str, value):
    node: dict = {}
    cur = node
    *parents, leaf = field.split(".")
    for part in parents:
        cur = cur.setdefault(part, {})
    cur[leaf] = value
    if field == "train.max_steps" and value == -1:
        node["train"]["num_train_epochs"] = 1
    return OmegaConf.create(node)


def test_every_rule_has_a_case_here():
    assert sorted(f for f, _, _ in CASES) == sorted(f for f, _, _ in checks.RULES)


@pytest.mark.parametrize("field,valid,invalid", CASES, ids=[c[0] for c in CASES])
def test_rule_accepts_valid_and_names_the_field_for_invalid(field, valid, invalid):
    for value in valid:
        assert checks.option_errors(cfg_with(field, value)) == [], (field, value)
    for value in invalid:
        errors = checks.option_errors(cfg_with(field, value))
        assert len(errors) == 1, (field, value, errors)
        assert errors[0].startswith(f"{field}: got {value!r}; expected ")
        assert errors[0].endswith(f"Fix it on the command line, e.g. `{field}=...`.")


def test_unset_options_are_not_errors_and_every_error_is_listed_at_once():
    assert checks.option_errors(OmegaConf.create({})) == []
    assert checks.option_errors(OmegaConf.create({"train": {"max_steps": None, "seed": None}})) == []
    many = OmegaConf.create({"train": {"max_steps": 0, "seed": -1}, "method": {"r": 0}, "model": {"dtype": "fp8"}})
    errors = checks.option_errors(many)
    assert [e.split(":")[0] for e in errors] == ["train.max_steps", "train.seed", "method.r", "model.dtype"]
    assert "one of auto, float32, float16, bfloat16" in errors[-1]


def test_max_steps_minus_one_needs_epochs():
    bare = checks.option_errors(OmegaConf.create({"train": {"max_steps": -1}}))
    assert bare == ["train.max_steps: -1 means train by epochs, but train.num_train_epochs is not set. Set one."]
    assert checks.option_errors(OmegaConf.create({"train": {"max_steps": -1, "num_train_epochs": 2}})) == []
    assert checks.option_errors(OmegaConf.create({"train": {"max_steps": -1, "num_train_epochs": 0}})) == [
        "train.num_train_epochs: got 0; expected a positive number. Fix it on the command line, e.g. "
        "`train.num_train_epochs=...`.",
        "train.max_steps: -1 means train by epochs, but train.num_train_epochs is not set. Set one.",
    ]


def test_results_dir_must_be_writable(tmp_path):
    assert checks.results_dir_errors(tmp_path / "new" / "folder") == []
    assert (tmp_path / "new" / "folder").is_dir() and list((tmp_path / "new" / "folder").iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    (error,) = checks.results_dir_errors(blocker / "results")
    assert error.startswith(f"run.results_dir: cannot write to `{blocker / 'results'}` (")
    assert "(Not a directory). Point run.results_dir at a folder you can write to" in error
    # a folder that exists but takes no files (a kernel filesystem): the write test itself fails
    (error,) = checks.results_dir_errors("/proc")
    assert error.startswith("run.results_dir: cannot write to `/proc` (")


def test_results_dir_records_must_be_readable(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "record.json").write_text(json.dumps({"run_id": "ok", "schema_version": 1, "status": "ok"}))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "record.json").write_text(json.dumps({"run_id": "old"}))  # version 0: migrated, fine
    assert checks.results_dir_errors(tmp_path) == []
    (tmp_path / "newer").mkdir()
    (tmp_path / "newer" / "record.json").write_text(json.dumps({"run_id": "n", "schema_version": 99}))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "record.json").write_text('{"run_id": "t", ')
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "record.json").write_bytes(b"\xff\xfe\x00")
    errors = checks.results_dir_errors(tmp_path)
    assert [e.split("`")[1] for e in errors] == [
        str(tmp_path / d / records.RECORD) for d in ("binary", "newer", "torn")
    ]
    assert all(
        e.startswith("run.results_dir: `") and "Move that folder away, or use another run.results_dir" in e
        for e in errors
    )
    assert (
        f"({tmp_path / 'newer' / records.RECORD}: record schema version 99 was written by a newer peftbench"
        in errors[1]
    )


def model_cfg(folder, init="pretrained", safetensors=True):
    return OmegaConf.create({"model": {"init": init, "name_or_path": str(folder), "use_safetensors": safetensors}})


# The pickle rule alone (checks.pickle_errors); checks.folder_errors, the folder's other rules, is issue 17's.
def test_model_folder_with_only_pickles_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    (tmp_path / "extra.pt").write_bytes(b"x")
    (error,) = checks.pickle_errors(model_cfg(tmp_path))
    assert error.startswith(
        f"model.use_safetensors: `{tmp_path}` holds only pickle weights (extra.pt, pytorch_model.bin)"
    )
    assert "set model.use_safetensors=false if you trust its source" in error
    assert error in checks.model_errors(model_cfg(tmp_path))
    assert checks.pickle_errors(model_cfg(tmp_path, safetensors=False)) == []
    assert checks.pickle_errors(model_cfg(tmp_path, init="random")) == []
    unset = OmegaConf.create({"model": {"init": "pretrained", "name_or_path": str(tmp_path)}})
    assert len(checks.pickle_errors(unset)) == 1  # use_safetensors defaults to true
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert checks.pickle_errors(model_cfg(tmp_path)) == []


@pytest.mark.parametrize("name", ["w.bin", "w.pt", "w.pth", "w.ckpt", "w.pkl"])
def test_each_pickle_suffix_counts(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    (error,) = checks.pickle_errors(model_cfg(tmp_path))
    assert f"({name})" in error


def test_pickle_rule_leaves_hub_ids_and_weightless_folders_to_other_checks(tmp_path):
    assert checks.pickle_errors(model_cfg("meta-llama/Llama-2-7b-hf")) == []
    assert checks.pickle_errors(model_cfg(tmp_path)) == []
    (tmp_path / "notes.txt").write_text("x")
    assert checks.pickle_errors(model_cfg(tmp_path)) == []


# -- type checks of the train group against SFTConfig's declared types, and SFTConfig's own refusals ----------------
def test_accepts_by_type_hint():
    import enum
    import typing

    class Mode(enum.Enum):
        A = "a"

    accepts = checks._accepts
    assert accepts(typing.Any, object()) and accepts(object, "anything")  # unknown hints accept
    assert accepts(bool, True) and not accepts(bool, 1) and not accepts(bool, "true")
    assert accepts(int, 3) and not accepts(int, 3.0) and not accepts(int, True)
    assert accepts(float, 3) and accepts(float, 0.5) and not accepts(float, "0.5") and not accepts(float, False)
    assert accepts(str, "x") and not accepts(str, 1)
    assert accepts(Mode, "a") and accepts(Mode, Mode.A) and not accepts(Mode, 1)
    assert accepts(list[int], [1]) and accepts(list, (1,)) and accepts(tuple[int, ...], [1]) and not accepts(list, "x")
    assert accepts(dict[str, int], {}) and accepts(dict, {"a": 1}) and not accepts(dict, [("a", 1)])
    assert accepts(typing.Literal["x", "y"], "y") and not accepts(typing.Literal["x", "y"], "z")
    assert accepts(type(None), None) and not accepts(type(None), 0)
    # the old spellings on purpose: the checks must read typing.Optional/Union as SFTConfig declares them
    assert accepts(typing.Optional[int], None) and accepts(typing.Optional[int], 2) and not accepts(int | None, "2")  # noqa: UP045
    assert accepts(typing.Union[bool, str], "s") and not accepts(bool | str, 1.5)  # noqa: UP007


def test_describe_names_the_types_in_words():
    import typing

    assert checks._describe(bool) == "true or false"
    assert checks._describe(typing.Optional[int]) == "an integer (or null)"  # noqa: UP045 - the spelling under test
    assert checks._describe(typing.Union[int, float]) == "an integer or a number"  # noqa: UP007 - likewise
    assert checks._describe(str | None) == "a string (or null)"
    assert checks._describe(dict[str, int]) == "a string or an integer"  # a parametrized hint: its arguments
    assert checks._describe(list) == "a list" and checks._describe(dict) == "a mapping"


def test_train_type_errors_against_sftconfig():
    from trl import SFTConfig

    train = {
        "max_steps": "abc",
        "gradient_checkpointing": "maybe",
        "learning_rate": 1e-4,
        "seed": None,
        "fsdp": True,
        "not_a_field": object(),
        "logging_steps": 1,
    }
    errors = checks.train_type_errors(train, SFTConfig)
    assert [e.split(":")[0] for e in errors] == ["train.max_steps", "train.gradient_checkpointing"]
    assert errors[0] == "train.max_steps: got 'abc'; SFTConfig expects an integer. Set it with train.max_steps=..."
    assert errors[1].startswith("train.gradient_checkpointing: got 'maybe'; SFTConfig expects true or false")
    assert checks.train_type_errors({"fsdp": ["full_shard"]}, SFTConfig) == []  # ALSO_ACCEPTED: bool or list


def test_library_error_names_the_field_it_is_about():
    train = {"logging_steps": 0, "lr_scheduler_type": "cosin", "seed": 1}
    named = checks.library_error(ValueError("--logging_steps must be positive "), train)
    assert named == (
        "train.logging_steps: SFTConfig refused the train group: --logging_steps must be positive Fix it "
        "on the command line, e.g. `train.logging_steps=...`."
    )
    quoted = checks.library_error(ValueError("'cosin' is not a valid SchedulerType"), train, what="TrainingArguments")
    assert quoted.startswith("train.lr_scheduler_type: TrainingArguments refused the train group: 'cosin' is not")
    assert checks.library_error(ValueError("seeds must be odd"), {"seed": 1}).startswith("train: SFTConfig refused")
    assert checks.library_error(ValueError("x_seed is bad"), {"seed": 1, "empty": ""}).startswith("train: ")


# -- model and tokenizer folders (checks.folder_errors) ----------------------------------------------------------
def folder_cfg(**model):
    return OmegaConf.create({"model": model})


def test_folder_errors_empty_and_config_less_model_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (error,) = checks.folder_errors(folder_cfg(init="pretrained", name_or_path=str(empty), tokenizer=None))
    assert error == (
        f"model.name_or_path: `{empty}` is an empty folder. Point it at a folder with config.json and "
        f"*.safetensors (e.g. one written by save_pretrained), or at a hub id."
    )
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_text("x")
    (weights / "tokenizer.json").write_text("{}")
    (error,) = checks.folder_errors(folder_cfg(init="pretrained", name_or_path=str(weights)))
    assert error == (
        f"model.name_or_path: `{weights}` has no config.json (2 other entries). Point it at the folder "
        f"save_pretrained wrote, which holds config.json."
    )
    (weights / "config.json").write_text("{}")
    assert checks.folder_errors(folder_cfg(init="pretrained", name_or_path=str(weights))) == []
    # random init reads the architecture from model.config (a folder too), not from name_or_path
    assert checks.folder_errors(folder_cfg(init="random", name_or_path=str(empty), config="tiny_llama")) == []
    (error,) = checks.folder_errors(folder_cfg(init="random", name_or_path="x", config=str(empty)))
    assert error.startswith(f"model.config: `{empty}` is an empty folder.")
    assert checks.folder_errors(folder_cfg(init="pretrained", name_or_path="meta-llama/Llama-2-7b-hf")) == []


def test_folder_errors_tokenizer_folder_without_a_tokenizer(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_text("x")
    (error,) = checks.folder_errors(folder_cfg(init="pretrained", name_or_path=str(model)))
    assert error == (
        f"model.name_or_path: `{model}` holds no tokenizer (tokenizer.json, tokenizer_config.json, ...). "
        f"Save one there with tokenizer.save_pretrained(...), or set model.tokenizer to a folder or hub "
        f"id that has one."
    )
    for name in checks.TOKENIZER_FILES:
        tok = tmp_path / f"tok-{name}"
        tok.mkdir()
        (tok / name).write_text("{}")
        assert checks.folder_errors(folder_cfg(init="pretrained", name_or_path=str(model), tokenizer=str(tok))) == []
    empty_tok = tmp_path / "empty-tok"
    empty_tok.mkdir()
    (error,) = checks.folder_errors(folder_cfg(init="pretrained", name_or_path=str(model), tokenizer=str(empty_tok)))
    assert error.startswith(f"model.tokenizer: `{empty_tok}` holds no tokenizer")
    # a random-init model has no tokenizer of its own in name_or_path
    assert checks.folder_errors(folder_cfg(init="random", name_or_path=str(model), config="tiny_llama")) == []
