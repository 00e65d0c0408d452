"""Run records and the results table.

One JSON record per run at `<results>/<run_id>/record.json`, written atomically (temp file, fsync, rename). The table
(`table.parquet`, `table.csv`) is always rebuilt from all records under a file lock, never appended to, so two
sweeps writing into one folder both land all their rows. Records are JSON only: nothing here unpickles.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RECORD = "record.json"
SECRET_KEY = re.compile(r"(^|[_.-])(token|secret|password|passwd|api[_-]?key|credentials?|auth)$", re.IGNORECASE)
SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,})\b")

# Leading columns of the table, in the order a reader compares methods; the rest follow alphabetically.
LEAD_COLUMNS = [
    "run_id", "status", "method", "engine", "model", "score", "score_stderr", "score_delta",
    "gpu_allocated_gib_peak", "gpu_reserved_gib_peak", "rss_gib_peak", "tokens_per_s", "samples_per_s",
    "step_time_median_s", "mfu", "trainable_params", "trainable_pct", "adapter_mb", "train_loss", "eval_loss",
    "time_train_s", "precision", "gpu_name", "quality_valid", "error",
]  # fmt: skip


class RecordVersionError(ValueError):
    """A record written by another results schema that cannot be migrated."""


def scrub(value: Any) -> Any:
    """Drop values under secret-looking keys and mask token-shaped strings anywhere (HF_TOKEN and the like)."""
    if isinstance(value, dict):
        return {k: ("***" if SECRET_KEY.search(str(k)) else scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return SECRET_VALUE.sub("***", value)
    return value


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(results_dir: str | Path, record: dict[str, Any], rebuild: bool = True) -> Path:
    """Write one run's record atomically, then rebuild the table from every record in the folder."""
    results_dir = Path(results_dir)
    record = scrub({"schema_version": SCHEMA_VERSION, **record})
    path = results_dir / record["run_id"] / RECORD
    atomic_write_text(path, json.dumps(record, indent=2, default=str, sort_keys=False))
    if rebuild:
        write_table(results_dir)
    return path


def migrate(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring an older record up to SCHEMA_VERSION, or say why it cannot be read."""
    version = record.get("schema_version")
    if version == SCHEMA_VERSION:
        return record
    raise RecordVersionError(
        f"{path}: record schema version {version!r}, this peftbench reads version {SCHEMA_VERSION} and has no "
        f"migration from it. Rerun that point (delete its folder, or sweep again with run.force=true)."
    )


def read_records(results_dir: str | Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(Path(results_dir).glob(f"*/{RECORD}")):
        records.append(migrate(json.loads(path.read_text()), path))
    return records


def finished_record(results_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    path = Path(results_dir) / run_id / RECORD
    if not path.exists():
        return None
    return migrate(json.loads(path.read_text()), path)


def to_frame(records: list[dict[str, Any]]):
    """One row per run; nested dicts become dotted columns, lists (loss curves) stay in the JSON records."""
    import pandas as pd

    flat = []
    for rec in records:
        row = {k: v for k, v in rec.items() if not isinstance(v, (list, dict))}
        for key in ("scores", "versions", "hyperparameters"):
            for k, v in (rec.get(key) or {}).items():
                if not isinstance(v, (list, dict)):
                    row[f"{key}.{k}"] = v
        if rec.get("adapter_bytes") is not None:
            row["adapter_mb"] = rec["adapter_bytes"] / 1e6
        flat.append(row)
    frame = pd.DataFrame(flat)
    lead = [c for c in LEAD_COLUMNS if c in frame.columns]
    return frame[lead + sorted(c for c in frame.columns if c not in lead)]


@contextmanager
def locked(results_dir: Path):
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_table(results_dir: str | Path):
    """Rebuild table.parquet and table.csv from all records, atomically and under the folder's lock."""
    results_dir = Path(results_dir)
    with locked(results_dir):
        frame = to_frame(read_records(results_dir))
        for name, write in (("table.parquet", frame.to_parquet), ("table.csv", frame.to_csv)):
            fd, tmp = tempfile.mkstemp(dir=results_dir, prefix=f".{name}.", suffix=".tmp")
            os.close(fd)
            try:
                write(tmp, index=False)
                os.replace(tmp, results_dir / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    return frame


def read_table(results_dir: str | Path):
    import pandas as pd

    return pd.read_parquet(Path(results_dir) / "table.parquet")
