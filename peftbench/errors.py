"""The bottom floor: what a failure is called. Imports nothing of peftbench, so every module can use it."""

from __future__ import annotations

import traceback

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


def training_failure(exc: BaseException) -> dict[str, str]:
    """The record fields for a run that raised while training: status `oom` or `failed`, the error, a short traceback."""
    return {
        "status": "oom" if is_out_of_memory(exc) else "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=8)),
    }
