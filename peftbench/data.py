"""Datasets: a hub name or a local json/jsonl/parquet/csv file, mapped to TRL's prompt/completion format.

The mapping is declarative (Python format strings over the dataset's columns), so GSM8K, the embedded task and a
user's own file differ only in YAML. SFTTrainer then computes the loss on completions only, as TRL does by default.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path
from typing import Any

import torch

from peftbench.models import resolve_path

LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


class DataError(ValueError):
    """A dataset that cannot be read or mapped as configured; raised before any model loads."""


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def is_local(path: str) -> bool:
    return path.startswith(("pkg://", "/", ".", "~")) or Path(path).suffix in LOCAL_BUILDERS


def split_file(data_cfg: Any, split: str) -> str | None:
    """The local file of a split: `train_file`/`eval_file`, or `path` for the train split."""
    key = "train_file" if split == "train" else "eval_file"
    spec = data_cfg.get(key) or (data_cfg.path if split == "train" else None)
    return resolve_path(spec) if spec and is_local(spec) else None


def load_split(data_cfg: Any, split: str):
    """One split as a `datasets.Dataset`, from a local file or the hub."""
    from datasets import load_dataset

    local = split_file(data_cfg, split)
    if local is not None:
        if not Path(local).exists():
            raise DataError(f"data.{'train_file' if split == 'train' else 'eval_file'}: no file at `{local}`.")
        builder = LOCAL_BUILDERS.get(Path(local).suffix)
        if builder is None:
            raise DataError(f"data: `{local}` is not one of {', '.join(LOCAL_BUILDERS)}.")
        return load_dataset(builder, data_files={"split": local}, split="split")
    name = data_cfg.get("config_name")
    hub_split = data_cfg.get("train_split", "train") if split == "train" else data_cfg.get("eval_split", "test")
    return load_dataset(data_cfg.path, name, split=hub_split)


def check_mapping(data_cfg: Any, columns: list[str]) -> None:
    for key in ("prompt", "completion"):
        for field in template_fields(data_cfg.mapping[key]):
            if field not in columns:
                raise DataError(
                    f"data.mapping.{key}: the template names the column `{field}`, which the dataset does not have. "
                    f"Its columns are: {', '.join(columns)}."
                )


def check_local_files(data_cfg: Any) -> None:
    """File existence and mapping columns, read from the first row only: cheap enough to run before any model."""
    import json

    if is_synthetic(data_cfg):
        return
    for key in ("path", "train_file", "eval_file"):
        spec = data_cfg.get(key)
        if not spec or not is_local(spec):
            continue
        local = resolve_path(spec)
        if not Path(local).exists():
            raise DataError(f"data.{key}: no file at `{local}`. Point it at an existing json/jsonl/parquet/csv file.")
        suffix = Path(local).suffix
        if suffix not in LOCAL_BUILDERS:
            raise DataError(f"data.{key}: `{local}` is not a {'/'.join(LOCAL_BUILDERS)} file. Convert it, or name one.")
        if suffix == ".jsonl":
            with open(local) as fh:
                check_mapping(data_cfg, list(json.loads(fh.readline()).keys()))
        elif suffix == ".parquet":  # the schema alone, no rows read
            import pyarrow.parquet as pq

            check_mapping(data_cfg, pq.read_schema(local).names)
        elif suffix == ".csv":
            import csv

            with open(local, newline="") as fh:
                check_mapping(data_cfg, next(csv.reader(fh), []))


def to_prompt_completion(dataset, data_cfg: Any, limit: int | None = None):
    """Map rows to TRL's prompt/completion columns (conversational when `data.chat` is set)."""
    check_mapping(data_cfg, dataset.column_names)
    if limit is not None and limit < len(dataset):
        dataset = dataset.select(range(limit))
    prompt_t, completion_t, chat = data_cfg.mapping.prompt, data_cfg.mapping.completion, data_cfg.get("chat", False)

    def row(example: dict[str, Any]) -> dict[str, Any]:
        prompt, completion = prompt_t.format(**example), completion_t.format(**example)
        if chat:
            return {
                "prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": completion.strip()}],
            }
        return {"prompt": prompt, "completion": completion}

    return dataset.map(row, remove_columns=dataset.column_names)


def is_synthetic(data_cfg: Any) -> bool:
    return data_cfg.get("kind") == "synthetic"


def sequence_length(cfg: Any) -> int:
    """Tokens per training row: synthetic rows' fixed length, else the trainer's `train.max_length`."""
    return int(cfg.data.seq_len) if is_synthetic(cfg.data) else int(cfg.train.max_length)


def uses_stand_in_tokenizer(cfg: Any) -> bool:
    """Synthetic data with no `model.tokenizer` named needs no tokenizer files: `synthetic_tokenizer` stands in."""
    return is_synthetic(cfg.data) and not cfg.model.get("tokenizer")


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
        unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>",
    )  # fmt: skip


def load_train_eval(data_cfg: Any, vocab_size: int | None = None):
    """(train, eval) datasets ready for SFTTrainer; eval is None when the recipe has no eval split."""
    if is_synthetic(data_cfg):
        return synthetic_dataset(data_cfg, vocab_size or 32000), None
    train = to_prompt_completion(load_split(data_cfg, "train"), data_cfg, data_cfg.get("max_train_samples"))
    has_eval = data_cfg.get("eval_file") or (not is_local(data_cfg.path) and data_cfg.get("eval_split"))
    evaluation = None
    if has_eval:
        evaluation = to_prompt_completion(load_split(data_cfg, "eval"), data_cfg, data_cfg.get("max_eval_samples"))
    return train, evaluation


def fingerprint(dataset) -> str:
    """datasets' own fingerprint of the mapped rows (a content hash of the processing chain)."""
    fp = getattr(dataset, "_fingerprint", None)
    return fp or hashlib.sha256(str(dataset[:].items()).encode()).hexdigest()[:16]
