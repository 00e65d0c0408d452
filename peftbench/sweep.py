"""Hydra callback: after a run or a multirun, print the comparison table of the results folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("peftbench")

SHOWN = [
    "method", "status", "score", "score_stderr", "trainable_pct", "gpu_allocated_gib_peak", "rss_gib_peak",
    "tokens_per_s", "step_time_median_s", "adapter_mb", "train_loss", "eval_loss", "time_train_s",
]  # fmt: skip


def format_table(frame) -> str:
    """The columns that compare the family at a glance, rounded for a terminal."""
    columns = [c for c in SHOWN if c in frame.columns and frame[c].notna().any()]
    shown = frame[columns].copy()
    for col in shown.select_dtypes("number").columns:
        shown[col] = shown[col].map(lambda v: "" if v != v else f"{v:.4g}")
    return shown.to_string(index=False)


class PrintResults(Callback):
    def _print(self, config: DictConfig, run_names: Any = None) -> None:
        from peftbench.records import read_records, to_frame

        results_dir = Path(config.run.results_dir)
        if not results_dir.exists():
            return
        frame = to_frame(read_records(results_dir))
        if frame.empty:
            return
        print(f"\npeftbench results: {results_dir}/table.csv ({len(frame)} runs)\n{format_table(frame)}\n", flush=True)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._print(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._print(config)
