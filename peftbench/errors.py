"""The bottom floor: what a failure is called. Imports nothing of peftbench, so every module can use it."""

from __future__ import annotations

import difflib
import traceback
from collections.abc import Iterable

OOM_TEXT = ("out of memory", "cublas_status_alloc_failed")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA/CPU out-of-memory error, also when another exception wraps it (a bounded walk down the
    cause/context chain: libraries often re-raise an OOM as a RuntimeError of their own)."""
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            return False
        if type(seen).__name__ == "OutOfMemoryError" or any(t in str(seen).lower() for t in OOM_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def did_you_mean(word: object, choices: Iterable[object], prefix: str = "", n: int = 1) -> str:
    """` Did you mean `X`?` for the choices closest to `word` (difflib's ratio, its default cutoff 0.6; up to `n`,
    as `X`, `Y`), each written `prefix` + choice; "" when none is close. Every unknown-name message ends with it."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n)
    return f" Did you mean {', '.join(f'`{prefix}{c}`' for c in close)}?" if close else ""


class InputError(ValueError):
    """The input is wrong (an option, a file, a model source...): the point is `invalid`, and its message, which
    names the field and the fix, is the whole error. Every module's own input error derives from it."""


class Skipped(RuntimeError):
    """The point cannot run here (an engine's package or GPU is missing): a `skipped` row with the reason."""


class ChildFailed(RuntimeError):
    """A child process ended the point with a status of its own (`failed`, `oom`, `invalid`)."""

    def __init__(self, status: str, message: str, child_traceback: str | None = None):
        super().__init__(message)
        self.status, self.child_traceback = status, child_traceback


def failure_status(exc: BaseException) -> str:
    """`skipped`, the child's own status, `invalid` for input errors, `oom` for out-of-memory (also when wrapped by
    another exception), else `failed`."""
    if isinstance(exc, Skipped):
        return "skipped"
    if isinstance(exc, ChildFailed):
        return exc.status
    if isinstance(exc, InputError):
        return "invalid"
    return "oom" if is_out_of_memory(exc) else "failed"


def failure_fields(exc: BaseException) -> dict[str, str]:
    """The record fields of a point (or a training run) that raised: `status`, `error` (an input error's or a child's
    message as it is, else prefixed with the exception's type) and, where it helps, a short `traceback`."""
    status = failure_status(exc)
    plain = status in ("invalid", "skipped") or isinstance(exc, ChildFailed)
    out = {"status": status, "error": str(exc) if plain else f"{type(exc).__name__}: {exc}"}
    if isinstance(exc, ChildFailed):
        if exc.child_traceback:
            out["traceback"] = exc.child_traceback
    elif status not in ("invalid", "skipped"):
        out["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=8))
    return out
