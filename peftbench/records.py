"""Run records and the results table.

One JSON record per run at `<results>/<run_id>/record.json`, written atomically (temp file, fsync, rename, fsync of
the folder), after the run's artefacts are fsynced. The table
(`table.parquet`, `table.csv`) is always rebuilt from all records under a file lock, never appended to, so two
sweeps writing into one folder both land all their rows. Records are JSON only: nothing here unpickles.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RECORD = "record.json"
TEMP_SUFFIX = ".tmp"  # every temporary file or folder written here ends with it; none outlives its writer's lock
SECRET_KEY = re.compile(r"(^|[_.-])(token|secret|password|passwd|api[_-]?key|credentials?|auth)$", re.IGNORECASE)
SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,})\b")
# `hub_token=abc` / `HF_TOKEN: abc` inside a string (a command line, a traceback): keep the name, mask the value.
SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b([\w.+-]*?(?:token|secret|password|passwd|api[_-]?key|credentials?|auth)"
    r"['\"]?\s*[=:]\s*['\"]?)([^\s,'\"}]+)"
)
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # mkstemp creates 0600 files; results are shared, so give them the mode a plain open() would

# Leading columns of the table, in the order a reader compares methods; the rest follow alphabetically.
LEAD_COLUMNS = [
    "run_id",
    "status",
    "method",
    "engine",
    "model",
    "score",
    "score_stderr",
    "score_delta",
    "gpu_allocated_gib_peak",
    "predicted_peak_gib",
    "gpu_reserved_gib_peak",
    "rss_gib_peak",
    "tokens_per_s",
    "samples_per_s",
    "step_time_median_s",
    "mfu",
    "trainable_params",
    "trainable_pct",
    "adapter_mb",
    "train_loss",
    "eval_loss",
    "time_train_s",
    "precision",
    "gpu_name",
    "quality_valid",
    "error",
]


FAULT_ENV = "PEFTBENCH_FAULT"  # test-only (tests/test_faults.py): the phase at which fault_point kills this process


def fault_point(phase: str) -> None:
    """Test-only: SIGKILL this process here when PEFTBENCH_FAULT names `phase`, so tests place a crash exactly.

    Phases: `adapter_save` (the adapter's files are in its temp folder, not yet renamed to `adapter/`),
    `before_record` (the point ran, no record yet), `temp:<file>` (a temp copy of `<file>` is written, not yet
    renamed over it: record.json, table.parquet, table.csv), `between_record_and_table` (the record is written, the
    table not yet rebuilt). Unset, as in every real run, it does nothing.
    """
    if os.environ.get(FAULT_ENV) == phase:
        os.kill(os.getpid(), signal.SIGKILL)


class RecordVersionError(ValueError):
    """A record written by another results schema that cannot be migrated."""


def secret_env_values() -> list[str]:
    """Current values of secret-named environment variables (HF_TOKEN, WANDB_API_KEY...), longest first.

    Masked wherever they appear, because a token need not look like `hf_...` to be one.
    """
    values = {v for k, v in os.environ.items() if SECRET_KEY.search(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def scrub(value: Any, _env: list[str] | None = None) -> Any:
    """Drop values under secret-looking keys and mask token-shaped strings and secret env values anywhere."""
    env = secret_env_values() if _env is None else _env
    if isinstance(value, dict):
        return {k: ("***" if SECRET_KEY.search(str(k)) else scrub(v, env)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, env) for v in value]
    if isinstance(value, str):
        for secret in env:
            value = value.replace(secret, "***")
        return SECRET_ASSIGNMENT.sub(r"\1***", SECRET_VALUE.sub("***", value))
    return value


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable: without it a crash can forget the new directory entry."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(path: Path) -> None:
    """fsync every file and folder under `path` (an adapter before its record says it exists)."""
    if not path.exists():
        return
    if path.name.endswith(TEMP_SUFFIX):  # only the adapter save syncs a temp folder (callback.save_trained_weights)
        fault_point("adapter_save")
    for p in sorted(path.rglob("*"), reverse=True):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(path)


def _publish(tmp: str | Path, path: Path) -> None:
    """fsync a finished temp file, give it the usual mode, rename it over `path`, and fsync the folder."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_stale_temps(folder: Path, prefix: str = ".") -> list[Path]:
    """Delete temp files/folders left by a killed writer. Call only while holding the lock their writers hold."""
    import shutil

    removed = []
    for p in folder.glob(f"{prefix}*{TEMP_SUFFIX}"):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@contextmanager
def replacing(path: Path):
    """Yield a temp file's name beside `path` to write into; on success publish it over `path`, else delete it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        yield tmp
        fault_point(f"temp:{path.name}")
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        Path(tmp).write_text(text)


def write_record(results_dir: str | Path, record: dict[str, Any], rebuild: bool = True) -> Path:
    """Write one run's record atomically, then rebuild the table from every record in the folder.

    The run's artefacts (adapter...) are fsynced first, so a record on disk always means complete artefacts.
    """
    results_dir = Path(results_dir)
    record = scrub({"schema_version": SCHEMA_VERSION, **{k: v for k, v in record.items() if k != "schema_version"}})
    path = results_dir / record["run_id"] / RECORD
    sync_tree(path.parent)
    atomic_write_text(path, json.dumps(record, indent=2, default=str, sort_keys=False))
    fault_point("between_record_and_table")
    if rebuild:
        write_table(results_dir)
    return path


def _from_v0(record: dict[str, Any]) -> dict[str, Any]:
    """Version 0 is the layout before schema versions: no `schema_version`, and no `status`, since only
    successful runs were written then. Adding both is the whole migration."""
    return {**record, "status": record.get("status", "ok"), "schema_version": 1}


# version -> function that returns the record in version+1; applied in a chain up to SCHEMA_VERSION.
MIGRATIONS = {0: _from_v0}


def migrate(record: dict[str, Any], path: Path | str) -> dict[str, Any]:
    """Bring an older record up to SCHEMA_VERSION, or say why it cannot be read."""
    if not isinstance(record, dict) or "run_id" not in record:
        raise RecordVersionError(f"{path}: not a peftbench record (no run_id).")
    version = record.get("schema_version", 0)
    if version == SCHEMA_VERSION:
        return record
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise RecordVersionError(
            f"{path}: record schema version {version} was written by a newer peftbench; this one reads versions "
            f"{min(MIGRATIONS, default=SCHEMA_VERSION)}..{SCHEMA_VERSION}. Upgrade peftbench to read it."
        )
    while version != SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise RecordVersionError(
                f"{path}: record schema version {version!r}, this peftbench reads version {SCHEMA_VERSION} and has "
                f"no migration from it. Rerun that point (delete its folder, or sweep again with run.force=true)."
            )
        record = MIGRATIONS[version](record)
        version = record["schema_version"]
    return record


def read_records(results_dir: str | Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(Path(results_dir).glob(f"*/{RECORD}")):
        records.append(migrate(json.loads(path.read_text()), path))
    return records


def finished_record(results_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    """The run's record if one exists (of any status), migrated to this schema."""
    path = Path(results_dir) / run_id / RECORD
    if not path.exists():
        return None
    return migrate(json.loads(path.read_text()), path)


def completed_record(results_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    """The point's `ok` record when everything it produced is still on disk, else None (the point runs again).

    A record that measured a saved adapter whose folder is gone is not complete: adapters are not versioned, so a
    fresh clone of committed results (or a folder whose adapters were deleted) trains again instead of skipping.
    """
    record = finished_record(results_dir, run_id)
    if record is None or record.get("status") != "ok":
        return None
    if record.get("adapter_bytes") is not None and not (Path(results_dir) / run_id / "adapter").is_dir():
        return None
    return record


@contextmanager
def point_lock(results_dir: str | Path, run_id: str):
    """Hold one point exclusively (two sweeps sharing a folder never run the same point at once).

    Blocks while another process runs the point; the kernel drops the lock when its holder dies, even by SIGKILL,
    so a crashed sweep never leaves a stale claim. While held, the point's leftover temp files are removed.
    """
    run_dir = Path(results_dir) / run_id
    with locked(run_dir):
        remove_stale_temps(run_dir)
        yield run_dir


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
def locked(results_dir: Path, name: str = ".lock"):
    """An exclusive `flock` on `results_dir/name`, released by the kernel if the holder dies (even by SIGKILL)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / name, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def readable_records(results_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(records, problems): every record that can be read; each one that cannot is named with its file and why."""
    records, problems = [], []
    for path in sorted(Path(results_dir).glob(f"*/{RECORD}")):
        try:
            records.append(migrate(json.loads(path.read_text()), path))
        except (OSError, ValueError, RecordVersionError) as exc:  # JSONDecodeError and UnicodeDecodeError included
            problems.append(f"{path}: left out of the table, it cannot be read ({exc})")
    return records, problems


def tabular(frame):
    """A frame parquet can store: a column whose values mix types (e.g. `true` in one record and "maybe" in another)
    is stored as text, so one odd value never stops the table (pyarrow refuses mixed object columns)."""
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        kinds = {type(v) for v in frame[column] if v is not None and v == v}
        if len(kinds) > 1 or (kinds and not kinds <= {str, bool, int, float}):
            frame[column] = frame[column].map(lambda v: v if v is None or v != v else str(v))
    return frame


def write_table(results_dir: str | Path):
    """Rebuild table.parquet and table.csv from all records, atomically and under the folder's lock.

    Never poisoned by one record: a record that cannot be read is left out and named (logged, and returned on the
    frame as `frame.attrs["left_out"]`), a record whose row cannot be tabulated is left out the same way, and
    columns of mixed types are stored as text; every other row is written."""
    import io
    import logging

    log = logging.getLogger("peftbench")
    results_dir = Path(results_dir)
    with locked(results_dir):
        remove_stale_temps(results_dir, ".table.")
        rows, problems = readable_records(results_dir)
        good = []
        for record in rows:
            try:
                tabular(to_frame([record])).to_parquet(io.BytesIO(), index=False)
                good.append(record)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types; the row is named and left out
                problems.append(
                    f"{results_dir / str(record.get('run_id')) / RECORD}: left out of the table, its row "
                    f"cannot be stored ({type(exc).__name__}: {exc})"
                )
        frame = tabular(to_frame(good))
        for name, write in (("table.parquet", frame.to_parquet), ("table.csv", frame.to_csv)):
            with replacing(results_dir / name) as tmp:
                write(tmp, index=False)
    for problem in problems:
        log.error("peftbench: %s", scrub(problem))
    frame.attrs["left_out"] = problems
    return frame


def read_table(results_dir: str | Path):
    import pandas as pd

    return pd.read_parquet(Path(results_dir) / "table.parquet")
