"""Diagnosis only: what the host does while a training steps, sampled from inside the process.

    PEFTBENCH_HOST_MONITOR=/tmp/mon.jsonl PYTHONPATH=scripts/host_monitor:$PYTHONPATH python -m peftbench ...

Python imports `sitecustomize` at start-up; with PEFTBENCH_HOST_MONITOR set, a daemon thread writes one JSON line
every 0.2 s: the monotonic time, the host's runnable tasks (/proc/loadavg's 4th field), how many processes descend
from this one (e.g. torch.compile's worker pool) and this process's CPU seconds. Each garbage collection over 5 ms
and each step end the callback marks (as the host reaches it) gets a line too. A training whose steady steps run
slower than its median step can then be laid beside what else ran on the host at those times. Not for timing runs.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

PATH = os.environ.get("PEFTBENCH_HOST_MONITOR")


def descendants(root: int) -> int:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    count, todo = 0, [root]
    while todo:
        kids = children.get(todo.pop(), [])
        count += len(kids)
        todo.extend(kids)
    return count


def start(path: str) -> None:
    out = open(path, "a", buffering=1)
    lock = threading.Lock()

    def emit(**fields) -> None:
        with lock:
            out.write(json.dumps({"t": round(time.monotonic(), 4), "pid": os.getpid(), **fields}) + "\n")

    gc_start: list[float] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[:] = [time.monotonic()]
        elif gc_start:
            took = time.monotonic() - gc_start[0]
            if took > 0.005:
                emit(kind="gc", generation=info.get("generation"), s=round(took, 4), collected=info.get("collected"))

    gc.callbacks.append(on_gc)
    main_pid = os.getpid()

    def sample() -> None:
        patched = False
        while True:
            if os.getpid() != main_pid:  # a forked child: only the parent samples
                return
            try:
                running = int(open("/proc/loadavg").read().split()[3].split("/")[0])
                cpu = os.times()
                emit(kind="host", runnable=running, descendants=descendants(main_pid), cpu_s=round(cpu[0] + cpu[1], 2))
            except OSError:
                pass
            callback = sys.modules.get("peftbench.callback")
            if callback is not None and not patched:
                mark = callback.PeftBenchCallback._mark

                def marked(self, kind, _mark=mark):
                    if kind == "step":
                        emit(kind="step_end")
                    return _mark(self, kind)

                callback.PeftBenchCallback._mark = marked
                patched = True
            time.sleep(0.2)

    threading.Thread(target=sample, name="peftbench-host-monitor", daemon=True).start()


if PATH:
    os.environ.pop(
        "PEFTBENCH_HOST_MONITOR"
    )  # the processes this one starts (compile workers) are counted, not monitored
    start(PATH)
