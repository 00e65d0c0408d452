"""Hydra callbacks: validate every point of a multirun before the first model loads; keep secrets out of Hydra's
config dumps; print the comparison table and write the report (report.md/.html) at the end; carry the points'
statuses back to the launching process for the exit code, whichever launcher ran them (in-process, joblib, SLURM).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("peftbench")

STATUSES: list[str] = []  # statuses of the points known to this process; __main__.exit_code reads them
STATUS_FILE = "peftbench_status.json"


class PrintResults(Callback):
    def _print(self, config: DictConfig, run_names: Any = None) -> None:
        from peftbench.records import readable_records, tabular, to_frame

        results_dir = Path(config.run.results_dir)
        if not results_dir.exists():
            return
        frame = tabular(to_frame(readable_records(results_dir)[0]))  # an unreadable record is named by write_table
        if frame.empty:
            return
        from peftbench.console import final_table

        print(f"\npeftbench results: {results_dir}/table.csv ({len(frame)} runs)", flush=True)
        try:
            final_table(results_dir)
        except Exception as exc:  # noqa: BLE001 - the records are safe; the table is a view of them
            log.error(
                "results table not printed: %s: %s (the records and table.csv are written)", type(exc).__name__, exc
            )
        print(flush=True)
        if config.run.get("report", True):
            write_report(results_dir)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._print(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._print(config)


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# Exit codes of `python -m peftbench` (__main__ documents them; here because ValidateSweep exits with one).
EXIT_FAILED = 1  # some point ran and ended failed, oom or invalid
EXIT_REFUSED = 2  # refused before any point ran
EXIT_SKIPPED = 3  # nothing failed, but some point was skipped (its engine cannot run it here)


def sweep_point_overrides(config: DictConfig, loader: Any) -> list[list[str]]:
    """Every job's override list, expanded with the basic sweeper's own parser and product, so it equals its jobs."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    params += list(config.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def point_config(config: DictConfig, overrides: list[str], loader: Any) -> DictConfig:
    """One point's task config, composed as the launcher composes it (then without the `hydra` node, as jobs get it)."""
    from omegaconf import open_dict, read_write

    point = loader.load_sweep_config(config, overrides)
    with read_write(point), open_dict(point):
        del point["hydra"]
    return point


def sweep_errors(config: DictConfig, loader: Any, valid: list | None = None) -> tuple[list[str], int, int]:
    """(errors, points, finished): `validation.validate` on every point that will run (finished ones are skipped).
    A point its engine cannot run here is no error: it runs to a `skipped` row with the reason (logged here too).
    `valid`, when given, receives (overrides, config) of every point that validated and will run."""
    from peftbench import records
    from peftbench.engines import EngineUnavailable
    from peftbench.runner import run_id_for
    from peftbench.validation import validate

    jobs = sweep_point_overrides(config, loader)
    errors, finished = [], 0
    for num, overrides in enumerate(jobs):
        label = f"point #{num} ({' '.join(overrides) or 'defaults'})"
        try:
            point = point_config(config, overrides, loader)
            done = records.completed_record(point.run.results_dir, run_id_for(point))
            if done is not None and not point.run.get("force", False):
                finished += 1
                continue
            validate(point)
            if valid is not None:
                valid.append((overrides, point))
        except EngineUnavailable as exc:
            log.warning("%s will be skipped: %s", label, exc)
        except Exception as exc:  # noqa: BLE001 - collect every point's error, report them together
            errors.append(f"{label}:\n  " + records.scrub(str(exc)).replace("\n", "\n  "))
    return errors, len(jobs), finished


class Progress(Callback):
    """`point k of N · elapsed · ETA` as each point starts, its result line as it ends. The ETA comes from the points
    finished so far (their status files in the sweep folder, so it holds for parallel launchers too)."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.start: float | None = None  # the multirun's start (validation of every point comes before the first)
        self.first: float | None = None  # when this process started its first point: the ETA's clock
        self.varying: set[str] = set()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra

        from peftbench.console import say

        self.start = time.time()
        try:
            jobs = sweep_point_overrides(config, GlobalHydra.instance().config_loader())
        except Exception:  # noqa: BLE001 - a sweeper the basic parser cannot expand: no N, still a line per point
            return
        self.total = len(jobs)
        values: dict[str, set[str]] = {}
        for job in jobs:
            for item in job:
                key, _, value = item.partition("=")
                values.setdefault(key, set()).add(value)
        self.varying = {k for k, v in values.items() if len(v) > 1}
        say(f"sweep of {self.total} point(s); results into {config.run.results_dir}")

    def _where(self, config: DictConfig) -> tuple[int, str]:
        try:
            num = int(config.hydra.job.num)
        except Exception:  # noqa: BLE001 - a single run has no job number
            num = 0
        return num + 1, f" of {self.total}" if self.total else ""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from peftbench.console import clock, quiet_libraries, say

        quiet_libraries()
        k, of = self._where(config)
        overrides = [o for o in (config.hydra.overrides.task or []) if o.partition("=")[0] in self.varying]
        what = " ".join(overrides) or f"method={config.method.name}"
        timing = ""
        if self.start is not None:
            now = time.time()
            self.first = self.first or now
            try:
                done = len(list(Path(str(config.hydra.sweep.dir)).rglob(STATUS_FILE)))
            except Exception:  # noqa: BLE001
                done = 0
            per_point = (now - self.first) / done if done else None  # from the points run, not the validation
            eta = clock(per_point * (self.total - done)) if per_point and self.total else "after the first point"
            timing = f" · elapsed {clock(now - self.start)} · ETA {eta}"
        say(f"point {k}{of}: {what}{timing}")

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        from peftbench.console import LAST, result_line, say

        k, of = self._where(config)
        record = LAST.pop("record", None)
        if record is None:  # the job raised before a record existed (Hydra reports the exception itself)
            say(f"point {k}{of} ended without a record")
            return
        say(f"point {k}{of} {'✓' if record.get('status') == 'ok' else '✗'} {result_line(record)}")


class ValidateSweep(Callback):
    """Before a multirun's first job: compose and validate every point, and refuse the sweep listing all errors.

    Hydra's basic launcher runs points one after another, so without this a typo in the last point would surface
    hours in. Other sweepers (optuna, ...) pick points as they go; their points are validated one by one instead.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra

        if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            log.info("sweeper %s: points are validated one by one as they start", config.hydra.sweeper._target_)
            return
        valid: list = []
        errors, points, finished = sweep_errors(config, GlobalHydra.instance().config_loader(), valid)
        if errors:
            print(
                f"peftbench: refusing the sweep, {len(errors)} of {points} points are invalid "
                f"(nothing was loaded or trained):\n" + "\n".join(errors),
                file=sys.stderr,
                flush=True,
            )
            sys.exit(EXIT_REFUSED)  # SystemExit passes through Hydra's error handler with its code intact
        log.info("validated %d sweep points before loading any model (%d finished, to be skipped)", points, finished)
        print_plan(valid)


def print_plan(points: list, total_gib: float | None = None, gpu_name: str | None = None) -> None:
    """On a GPU (or for `total_gib`): the planner's block for the points about to run, before the first loads, as
    `peftbench plan` prints it. A point the planner cannot read is left out; the block never stops a sweep."""
    from peftbench import profiles
    from peftbench.console import plan_lines
    from peftbench.plan import plan_rows

    if total_gib is None:
        total_gib, gpu_name = profiles.gpu_memory_gib(), profiles.local_gpu_name()
    if total_gib is None or not points:
        return
    try:
        rows = plan_rows(points, total_gib, gpu_name)
    except Exception as exc:  # noqa: BLE001 - the prediction is advice; the points were validated already
        log.warning("plan not printed: %s: %s", type(exc).__name__, exc)
        return
    print("\n".join(plan_lines(rows, f"{gpu_name or 'this GPU'} ({total_gib:.2f} GiB)")), flush=True)


class ScrubConfigDumps(Callback):
    """Hydra saves the composed config and overrides as YAML (.hydra/, multirun.yaml) before the job starts;
    rewrite them through records.scrub so a token given in the config or on the command line is not kept there."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        folders = []
        if config.hydra.get("output_subdir"):
            folders.append(Path(config.hydra.runtime.output_dir) / config.hydra.output_subdir)
        folders.append(Path(config.hydra.sweep.dir))  # multirun.yaml, when this is a multirun
        for folder in folders:
            for path in folder.glob("*.yaml"):
                scrub_yaml(path)


def scrub_yaml(path: Path) -> None:
    from omegaconf import OmegaConf

    from peftbench.records import atomic_write_text, scrub

    original = path.read_text()
    container = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    cleaned = scrub(container)
    if cleaned != container:
        atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(cleaned)))
    elif scrub(original) != original:  # a secret inside a string the YAML round trip kept as is
        atomic_write_text(path, scrub(original))


def write_report(results_dir: Path) -> None:
    """The leaderboard next to the table. A report that fails is logged, not raised: the records are already safe."""
    from peftbench.report import write_report as write

    try:
        paths = write(results_dir)
    except Exception as exc:  # noqa: BLE001 - the sweep's results stand; `peftbench-report DIR` can be rerun
        log.error(
            "report for %s not written: %s: %s (rerun: peftbench-report %s)",
            results_dir,
            type(exc).__name__,
            exc,
            results_dir,
        )
        return
    print(f"peftbench report: {paths['md']} and {paths['html']}", flush=True)


class ExitStatus(Callback):
    """Each job writes its status into its own Hydra output folder (wherever it ran); the launching process reads
    back the files of this multirun (matched by a token made at its start) into STATUSES.

    Files, because a parallel launcher's workers are other processes (or machines) and Hydra's entry point drops the
    job returns; the sweep folder is where every launcher already puts each job's outputs.
    """

    def __init__(self) -> None:
        self.token: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.token = uuid.uuid4().hex  # travels to the workers with the pickled callbacks

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        from peftbench.records import atomic_write_text, scrub

        completed = job_return.status == JobStatus.COMPLETED
        status = job_return.return_value if completed else "failed"
        payload = {"token": self.token, "status": status, "overrides": scrub(list(job_return.overrides or []))}
        atomic_write_text(Path(str(config.hydra.runtime.output_dir)) / STATUS_FILE, json.dumps(payload))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        found = collect_statuses(Path(str(config.hydra.sweep.dir)), self.token)
        STATUSES.extend(found)
        bad = [s for s in found if s != "ok"]
        if bad:
            log.warning("%d of %d sweep points did not finish: %s", len(bad), len(found), ", ".join(bad))


def collect_statuses(sweep_dir: Path, token: str | None) -> list[str]:
    statuses = []
    for path in sorted(sweep_dir.rglob(STATUS_FILE)):
        payload = json.loads(path.read_text())
        if payload.get("token") == token:
            statuses.append(str(payload.get("status")))
    return statuses
