"""Datasets: a hub name or a local json/jsonl/parquet/csv file, mapped to TRL's prompt/completion format.

The mapping is declarative (Python format strings over the dataset's columns), so GSM8K, the embedded task and a
user's own file differ only in YAML. SFTTrainer then computes the loss on completions only, as TRL does by default.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import string
from pathlib import Path
from typing import Any

import torch

from peftbench.errors import InputError
from peftbench.models import resolve_path

log = logging.getLogger("peftbench")

LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
MAX_LENGTH_POLICIES = ("error", "warn", "drop")
SPLIT_KEYS = {"train": "path", "eval": "eval_file"}


class DataError(InputError):
    """A dataset that cannot be read or mapped as configured; raised before any model loads."""


# -- templates --------------------------------------------------------------------------------------------------------
def template_fields(template: str, field: str = "data.mapping") -> list[str]:
    """The columns a format template names; an unbalanced brace or a positional `{}` is an error naming the field."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '}' encountered", "expected '}' before end of string"
        raise DataError(
            f"{field}: the template {template!r} has an unbalanced brace ({exc}). Name a column as {{column}}; write a "
            f"literal brace as {{{{ or }}}}."
        ) from None
    names = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        column = name.split(".")[0].split("[")[0]
        if not column or column.isdigit():
            raise DataError(
                f"{field}: the template {template!r} has a positional field `{{{name}}}`; templates name "
                f"columns, e.g. {{question}}. Write a literal brace as {{{{ or }}}}."
            )
        names.append(column)
    return names


def template_errors(data_cfg: Any) -> list[str]:
    """Template syntax, and a literal backslash-n (Hydra keeps `\\n` in a quoted override as two characters)."""
    errors = []
    mapping = data_cfg.get("mapping") or {}
    for key in ("prompt", "completion"):
        field = f"data.mapping.{key}"
        template = mapping.get(key)
        if not isinstance(template, str):
            errors.append(f'{field}: got {template!r}; expected a format template string such as " {{answer}}".')
            continue
        try:
            template_fields(template, field)
        except DataError as exc:
            errors.append(str(exc))
        if ("\\n" in template or "\\t" in template) and not data_cfg.get("literal_backslashes", False):
            errors.append(
                f"{field}: the template {template!r} holds a backslash followed by n or t, which would train as those "
                f"two characters: Hydra does not turn \\n into a newline on the command line. For a newline, quote "
                f"with bash's $'...': $'{field}=\"Question: {{question}}\\nAnswer:\"', or put the mapping in a data "
                f'YAML ("...\\n..." in double quotes is a newline there). If you mean the backslash, set '
                f"+data.literal_backslashes=true."
            )
    return errors


# -- where a split comes from -----------------------------------------------------------------------------------------
def is_local(path: str) -> bool:
    return path.startswith(("pkg://", "/", ".", "~")) or Path(path).suffix in LOCAL_BUILDERS or Path(path).exists()


def eval_file_spec(data_cfg: Any) -> tuple[str | None, str | None]:
    """(the eval file to use, a note when a data group's own eval file was reset).

    A shipped data group pairs its eval file with its train file (`shipped_pair`). `data.path=mine.jsonl` alone must
    not evaluate on the shipped group's test file, so that file is dropped unless `data.path` is still its partner.
    """
    spec = data_cfg.get("eval_file")
    pair = data_cfg.get("shipped_pair")
    if spec and pair and spec == pair.get("eval_file") and data_cfg.get("path") != pair.get("path"):
        note = (
            f"data.eval_file: reset to null. `{spec}` is the eval file of the data group `{data_cfg.get('name')}`, "
            f"and data.path now names another file, so no eval loss is computed. Set data.eval_file=FILE to "
            f"evaluate on a file of yours."
        )
        return None, note
    return spec or None, None


def split_spec(data_cfg: Any, split: str) -> str | None:
    """The configured source of a split: `path` (or `train_file`) for train, the effective eval file for eval."""
    if split == "train":
        return data_cfg.get("train_file") or data_cfg.get("path")
    return eval_file_spec(data_cfg)[0]


def split_field(data_cfg: Any, split: str) -> str:
    return "data.train_file" if split == "train" and data_cfg.get("train_file") else f"data.{SPLIT_KEYS[split]}"


def split_file(data_cfg: Any, split: str) -> str | None:
    """The local file of a split, resolved, or None (hub dataset, or no eval split)."""
    spec = split_spec(data_cfg, split)
    return resolve_path(spec) if spec and is_local(spec) else None


def hub_eval_split(data_cfg: Any) -> str | None:
    """A hub dataset's eval split name, when the train split also comes from the hub."""
    spec = split_spec(data_cfg, "train")
    return None if not spec or is_local(spec) else data_cfg.get("eval_split")


def source_errors(data_cfg: Any) -> list[str]:
    """Local files exist and have a known type; a name that is not a file but whose stem is (`my` for `my.jsonl`)
    is refused with the file, instead of being sent to the hub."""
    errors = []
    for key in ("path", "train_file", "eval_file"):
        spec = eval_file_spec(data_cfg)[0] if key == "eval_file" else data_cfg.get(key)
        if not spec:
            continue
        spec = str(spec)
        if not is_local(spec):
            stems = [spec + ext for ext in LOCAL_BUILDERS if Path(resolve_path(spec + ext)).is_file()]
            if stems:
                errors.append(
                    f"data.{key}: `{spec}` is no file here, and would be looked up as a hub dataset; "
                    f"`{stems[0]}` is a file. Did you mean data.{key}={stems[0]}?"
                )
            continue
        local = resolve_path(spec)
        if Path(local).is_dir():
            errors.append(f"data.{key}: `{local}` is a folder. Name one json/jsonl/parquet/csv file in it.")
        elif not Path(local).exists():
            stems = [spec + ext for ext in LOCAL_BUILDERS if Path(local + ext).is_file()]
            hint = f" `{stems[0]}` exists: did you mean data.{key}={stems[0]}?" if stems else ""
            errors.append(
                f"data.{key}: no file at `{local}`.{hint or ' Point it at an existing json/jsonl/parquet/csv file.'}"
            )
        elif Path(local).suffix not in LOCAL_BUILDERS:
            errors.append(f"data.{key}: `{local}` is not a {'/'.join(LOCAL_BUILDERS)} file. Convert it, or name one.")
    return errors


# -- reading rows -----------------------------------------------------------------------------------------------------
def _jsonl_rows(path: str, field: str) -> list[tuple[int, Any]]:
    import json

    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue  # blank lines (a trailing newline) are no rows, as for datasets' json reader
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{field}: `{path}` line {number} is not valid JSON ({exc.msg} at column {exc.colno}). "
                    f"Fix or remove that line (one JSON object per line)."
                ) from None
    return rows


def _json_rows(path: str, field: str) -> list[tuple[int, Any]]:
    """A `.json` file: an array of objects, or JSON lines (datasets' json builder reads both)."""
    import json

    text = Path(path).read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return _jsonl_rows(path, field)
    if isinstance(whole, list):
        return [(i, row) for i, row in enumerate(whole, 1)]
    if isinstance(whole, dict) and len(text.strip().splitlines()) == 1:
        return [(1, whole)]
    raise DataError(
        f"{field}: `{path}` holds one JSON {type(whole).__name__}; expected an array of objects or one "
        f"object per line (jsonl)."
    )


def _csv_rows(path: str, field: str) -> list[tuple[int, Any]]:
    """CSV through pandas, as datasets' csv builder reads it (types inferred, empty cells missing)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{field}: `{path}` is empty (no header, no rows).") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{field}: `{path}` is not valid CSV ({exc}).") from None
    frame = frame.astype(object).where(frame.notna(), None)
    return [(i + 2, row) for i, row in enumerate(frame.to_dict("records"))]  # line 1 is the header


def _parquet_rows(path: str, field: str) -> list[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise DataError(f"{field}: `{path}` is not a readable parquet file ({exc}).") from None
    return [(i, row) for i, row in enumerate(table.to_pylist(), 1)]


READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
UNIT = {".jsonl": "line", ".json": "row", ".csv": "line", ".parquet": "row"}


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, field: str, mtime_ns: int, size: int) -> tuple[tuple[int, Any], ...]:
    if size == 0:
        raise DataError(f"{field}: `{path}` is empty. Give a file with one example per row.")
    rows = READERS[Path(path).suffix](path, field)
    if not rows:
        what = "a header and no rows" if Path(path).suffix == ".csv" else "no rows"
        raise DataError(f"{field}: `{path}` has {what}. Give a file with one example per row.")
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(
                f"{field}: `{path}` {UNIT[Path(path).suffix]} {number} is a JSON "
                f"{type(row).__name__}, not an object with columns."
            )
    return tuple(rows)


def read_local(path: str, field: str) -> list[tuple[int, dict[str, Any]]]:
    """Every row of a local file with its line (jsonl, csv) or row number (json array, parquet); read once a process
    per file version (the validation of each sweep point and the training read the same parse)."""
    stat = Path(path).stat()
    return list(_read_cached(path, field, stat.st_mtime_ns, stat.st_size))


def read_split(data_cfg: Any, split: str) -> tuple[list[tuple[int, dict[str, Any]]], str, str]:
    """(rows with their numbers, where they came from, the unit of the numbers) of one split, local or hub."""
    field = split_field(data_cfg, split)
    local = split_file(data_cfg, split)
    if local is not None:
        errors = source_errors(data_cfg)
        if errors:
            raise DataError("\n".join(errors))
        return read_local(local, field), f"`{local}`", UNIT[Path(local).suffix]
    from datasets import load_dataset

    name = data_cfg.get("config_name")
    hub_split = data_cfg.get("train_split", "train") if split == "train" else data_cfg.get("eval_split", "test")
    dataset = load_dataset(data_cfg.path, name, split=hub_split)
    return [(i, row) for i, row in enumerate(dataset, 1)], f"the hub dataset `{data_cfg.path}` ({hub_split})", "row"


# -- mapping to prompt/completion -------------------------------------------------------------------------------------
def render_rows(
    rows: list[tuple[int, dict[str, Any]]], data_cfg: Any, source: str, unit: str, limit: int | None = None
) -> dict[str, list]:
    """Check every row has every mapped column, non-null, and render the first `limit` rows (all when None) to TRL's
    prompt/completion columns (conversational when `data.chat` is set). Errors name the source, line and column."""
    templates = {key: data_cfg.mapping[key] for key in ("prompt", "completion")}
    fields = {key: template_fields(t, f"data.mapping.{key}") for key, t in templates.items()}
    first_columns = list(rows[0][1])
    for key, names in fields.items():  # a column no row has: the usual mistake, named with the columns there are
        for name in names:
            if not any(name in row for _, row in rows):
                raise DataError(
                    f"data.mapping.{key}: the template names the column `{name}`, which {source} does "
                    f"not have. Its columns are: {', '.join(first_columns)}."
                )
    for number, row in rows:
        for key, names in fields.items():
            for name in names:
                if row.get(name) is None:
                    state = "has no" if name not in row else "has a null"
                    raise DataError(
                        f"data.mapping.{key}: {source} {unit} {number} {state} `{name}` column, so the "
                        f"example would train on the text 'None'. Fill it in, or remove that "
                        f"{unit}."
                    )
    used = rows if limit is None else rows[:limit]
    chat = data_cfg.get("chat", False)
    out: dict[str, list] = {"prompt": [], "completion": []}
    for number, row in used:
        texts = {}
        for key, template in templates.items():
            try:
                texts[key] = template.format(**row)
            except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
                raise DataError(
                    f"data.mapping.{key}: the template {template!r} cannot render {source} {unit} "
                    f"{number} ({type(exc).__name__}: {exc})."
                ) from None
        if chat:
            out["prompt"].append([{"role": "user", "content": texts["prompt"]}])
            out["completion"].append([{"role": "assistant", "content": texts["completion"].strip()}])
        else:
            out["prompt"].append(texts["prompt"])
            out["completion"].append(texts["completion"])
    return out


def split_limit(data_cfg: Any, split: str) -> int | None:
    return data_cfg.get("max_train_samples") if split == "train" else data_cfg.get("max_eval_samples")


@functools.lru_cache(maxsize=16)
def _rendered_cached(key: str, data_cfg_json: str, split: str) -> dict[str, list]:
    import json

    from omegaconf import OmegaConf

    data_cfg = OmegaConf.create(json.loads(data_cfg_json))
    rows, source, unit = read_split(data_cfg, split)
    return render_rows(rows, data_cfg, source, unit, split_limit(data_cfg, split))


def rendered_split(data_cfg: Any, split: str) -> dict[str, list]:
    """One split's rows as prompt/completion lists (read and checked once a process per file version and mapping)."""
    import json

    from omegaconf import OmegaConf

    container = OmegaConf.to_container(data_cfg, resolve=True) if not isinstance(data_cfg, dict) else data_cfg
    local = split_file(data_cfg, split)
    version = ""
    if local and Path(local).is_file():
        stat = Path(local).stat()
        version = f"{local}:{stat.st_mtime_ns}:{stat.st_size}"
    return _rendered_cached(version, json.dumps(container, sort_keys=True, default=str), split)


def check_local_files(data_cfg: Any) -> None:
    """Sources, templates, and every row of every local file parsed and mapped; raises one DataError listing all."""
    if is_synthetic(data_cfg):
        return
    errors = source_errors(data_cfg) + template_errors(data_cfg)
    if not errors:
        for split in ("train", "eval"):
            if split_file(data_cfg, split) is None:
                continue
            try:
                rendered_split(data_cfg, split)
            except DataError as exc:
                errors.append(str(exc))
    if errors:
        raise DataError("\n".join(errors))


# -- what max_length does to the rows ---------------------------------------------------------------------------------
def length_report(dataset, tokenizer, args) -> dict[str, Any]:
    """Token lengths of every example as TRL's SFTTrainer prepares it, and what `max_length` will do to each.

    SFTTrainer (trl/trainer/sft_trainer.py `_prepare_dataset`) appends EOS, tokenizes prompt+completion, cuts every
    sequence to `max_length` (keep_start: the first tokens; keep_end: the last), then drops the examples whose
    completion was cut away entirely (no label left). The preparation itself is TRL's, run here without truncation;
    the cut and the drop are the two rules above applied to its labels. Packing cuts nothing and drops nothing.
    """
    import dataclasses
    from types import SimpleNamespace

    from trl import SFTTrainer

    rows = len(dataset)
    report: dict[str, Any] = {"examples": rows, "max_length": args.max_length}
    if args.max_length is None or args.packing or rows == 0:
        report.update(used=rows, truncated=0, dropped=0, truncated_rows=[], dropped_rows=[], longest=None)
        return report
    full_args = dataclasses.replace(args, max_length=None, shuffle_dataset=False, dataset_num_proc=None)
    sample = dataset[0]
    trainer_like = SimpleNamespace(  # the three attributes _prepare_dataset reads from the trainer (trl 1.16)
        _tokenizer=getattr(tokenizer, "tokenizer", tokenizer),
        chat_template=None,
        completion_only_loss=(
            args.completion_only_loss
            if args.completion_only_loss is not None
            else "prompt" in sample and "completion" in sample
        ),
    )
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a measurement, not the training's preparation: no bars for it
    try:
        prepared = SFTTrainer._prepare_dataset(trainer_like, dataset, tokenizer, full_args, False, None, "length check")
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    cut = slice(None, args.max_length) if args.truncation_mode != "keep_end" else slice(-args.max_length, None)
    truncated, dropped, lengths = [], [], []
    for index, labels in enumerate(prepared["labels"]):
        lengths.append(len(labels))
        if len(labels) <= args.max_length:
            continue
        (truncated if any(label != -100 for label in labels[cut]) else dropped).append(index)
    report.update(
        used=rows - len(dropped),
        truncated=len(truncated),
        dropped=len(dropped),
        truncated_rows=truncated,
        dropped_rows=dropped,
        longest=max(lengths),
    )
    return report


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """Log a warning once a process: a sweep validates every point, then trains each, over the same data."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def apply_policy(dataset, report: dict[str, Any], policy: str, source: str = "the train data"):
    """`data.max_length_policy`: error (refuse over-long rows), warn (let SFTTrainer cut and drop, say how many),
    drop (remove every over-long row before training, so nothing is cut). Returns (dataset, record fields)."""
    over = sorted(report["truncated_rows"] + report["dropped_rows"])
    fields = {
        "train_examples": report["examples"],
        "train_examples_used": report["used"],
        "examples_truncated": report["truncated"],
        "examples_dropped": report["dropped"],
        "max_length_policy": policy,
        "longest_example_tokens": report["longest"],
    }
    if not over:
        return dataset, fields
    counts = (
        f"{len(over)} of {report['examples']} examples of {source} are longer than train.max_length="
        f"{report['max_length']} tokens (longest {report['longest']})"
    )
    if policy == "error":
        raise DataError(
            f"data.max_length_policy: {counts}: {report['truncated']} would be cut and "
            f"{report['dropped']} dropped (their completion lies past max_length). Raise train.max_length, "
            f"or set data.max_length_policy=drop (leave them out) or warn (train on them cut)."
        )
    if policy == "drop":
        keep = sorted(set(range(report["examples"])) - set(over))
        if not keep:
            raise DataError(
                f"data.max_length_policy: {counts}, so drop would leave no example. Raise train.max_length."
            )
        fields.update(train_examples_used=len(keep), examples_truncated=0, examples_dropped=len(over))
        warn_once(f"peftbench: {counts}: dropped them (data.max_length_policy=drop); {len(keep)} examples train.")
        return dataset.select(keep), fields
    message = (
        f"peftbench: {counts}: SFTTrainer cuts {report['truncated']} of them to max_length and drops "
        f"{report['dropped']} whose completion lies past it; {report['used']} examples train. Set "
        f"data.max_length_policy=drop to leave them all out, error to refuse, or raise train.max_length."
    )
    warn_once(message)
    return dataset, fields


def is_synthetic(data_cfg: Any) -> bool:
    return data_cfg.get("kind") == "synthetic"


def sequence_length(cfg: Any) -> int:
    """Tokens per training row: synthetic rows' fixed length, else the trainer's `train.max_length`."""
    return int(cfg.data.seq_len) if is_synthetic(cfg.data) else int(cfg.train.max_length)


def uses_stand_in_tokenizer(cfg: Any) -> bool:
    """Synthetic data with no `model.tokenizer` named needs no tokenizer files: `synthetic_tokenizer` stands in."""
    return is_synthetic(cfg.data) and not cfg.model.get("tokenizer")


@functools.lru_cache(maxsize=4)
def _measuring_tokenizer(source: str, revision: str | None, trust_remote_code: bool):
    from transformers import AutoTokenizer

    from peftbench.models import ModelSourceError, gguf_metadata_folder, local_folder

    path = resolve_path(source)
    try:
        # a GGUF file: the tokenizer alone, from the weights-free folder its metadata is cached in
        # (models.load_tokenizer
        # does the same; parsing the GGUF's vocabulary in Python takes seconds in every process). A missing file is
        # handed to transformers as before, for its own error.
        if path.endswith(".gguf"):
            cached = gguf_metadata_folder(path)
            tokenizer = (
                AutoTokenizer.from_pretrained(cached)
                if cached
                else AutoTokenizer.from_pretrained(str(Path(path).parent), gguf_file=Path(path).name)
            )
        else:
            tokenizer = AutoTokenizer.from_pretrained(
                local_folder(source), revision=revision, trust_remote_code=trust_remote_code
            )
    except (OSError, ValueError, TypeError) as exc:
        raise ModelSourceError(
            f"model.tokenizer: cannot load a tokenizer from `{source}` ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Name a folder with tokenizer.json "
            f"or tokenizer_config.json, or a hub id."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def measuring_tokenizer(model_cfg: Any):
    """The point's tokenizer for measuring token lengths at validation, loaded once a process per source."""
    source = str(model_cfg.get("tokenizer") or model_cfg.name_or_path)
    return _measuring_tokenizer(source, model_cfg.get("revision"), bool(model_cfg.get("trust_remote_code", False)))


def tokenizer_for(cfg: Any):
    """The point's tokenizer: the recipe's, or the stand-in for synthetic data that names none."""
    from peftbench.models import load_tokenizer

    return synthetic_tokenizer() if uses_stand_in_tokenizer(cfg) else load_tokenizer(cfg.model)


def synthetic_dataset(data_cfg: Any, vocab_size: int):
    """Fixed-length sequences of uniform random token ids, already tokenized (SFTTrainer skips its tokenization).

    For speed and memory runs on random-init models: every token is real (no padding), so tokens/s is exact, and no
    tokenizer is needed. Ids start at 3, above the special ids of `synthetic_tokenizer`.
    """
    from datasets import Dataset

    seq_len, count = int(data_cfg.seq_len), int(data_cfg.num_samples)
    if seq_len < 2 or count < 1:
        raise DataError(f"data.seq_len={seq_len}, data.num_samples={count}: need seq_len >= 2 and num_samples >= 1.")
    generator = torch.Generator().manual_seed(int(data_cfg.get("seed", 0)))
    ids = torch.randint(3, vocab_size, (count, seq_len), generator=generator)
    return Dataset.from_dict({"input_ids": ids.tolist()})


def synthetic_tokenizer():
    """The smallest tokenizer SFTTrainer accepts for pre-tokenized data: unk/bos/eos/pad ids 0/1/2/0 (Llama's)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
    )


def load_train_eval(data_cfg: Any, vocab_size: int | None = None):
    """(train, eval) datasets ready for SFTTrainer; eval is None when the recipe has no eval split."""
    from datasets import Dataset

    if is_synthetic(data_cfg):
        return synthetic_dataset(data_cfg, vocab_size or 32000), None
    train = Dataset.from_dict(rendered_split(data_cfg, "train"))
    has_eval = eval_file_spec(data_cfg)[0] or hub_eval_split(data_cfg)
    evaluation = Dataset.from_dict(rendered_split(data_cfg, "eval")) if has_eval else None
    if evaluation is not None and len(evaluation) == 0:
        evaluation = None  # data.max_eval_samples=0: no eval split
    return train, evaluation


def fingerprint(dataset) -> str:
    """datasets' own fingerprint of the mapped rows (a content hash of the processing chain)."""
    fp = getattr(dataset, "_fingerprint", None)
    return fp or hashlib.sha256(str(dataset[:].items()).encode()).hexdigest()[:16]
