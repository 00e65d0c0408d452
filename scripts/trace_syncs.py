"""Where the host waits in a StepProfiler trace: every synchronize with the ops around it, and per-thread host speed.

    python scripts/trace_syncs.py results/h100/run9/profile/stock_lora/trace.json.gz \
        results/h100/run9/results/profile/lora-*/profile/trace.json.gz

A synchronize in the middle of a step (between forward and backward) drains the GPU's queue of launched work; when
the host is the bottleneck (many small kernels, as with LoRA), the lead it had built up is lost. The per-thread
medians compare the host's cost of the same ops in two traces (the autograd engine runs the backward on its own thread).
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
from collections import Counter

SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize")


def main(paths: list[str]) -> None:
    for path in paths:
        events = [e for e in json.load(gzip.open(path))["traceEvents"] if e.get("ph") == "X"]
        start = min(e["ts"] for e in events)
        ops = [e for e in events if e.get("cat") in ("cpu_op", "user_annotation")]
        print(f"== {path}")
        for sync in sorted((e for e in events if e["name"] in SYNCS), key=lambda e: e["ts"]):
            around = sorted(
                (
                    e
                    for e in ops
                    if e["tid"] == sync["tid"]
                    and e["ts"] <= sync["ts"]
                    and e["ts"] + e["dur"] >= sync["ts"] + sync["dur"]
                ),
                key=lambda e: e["dur"],
            )
            inside = " < ".join(e["name"][:48] for e in around[:4]) or "(no op)"
            print(
                f"  {(sync['ts'] - start) / 1e3:9.1f} ms  {sync['name']}  "
                f"waited {sync['dur'] / 1e3:6.2f} ms  in {inside}"
            )
        threads = Counter(e["tid"] for e in events if e.get("cat") == "cuda_runtime")
        for tid, _ in threads.most_common(2):
            mine = [e for e in events if e["tid"] == tid]
            medians = {
                name: statistics.median([e["dur"] for e in mine if e["name"] == name] or [0])
                for name in ("cudaLaunchKernel", "aten::mm", "aten::view")
            }
            print(
                f"  thread {tid}: {len(mine)} events; median host us: "
                + ", ".join(f"{k} {v:.2f}" for k, v in medians.items())
            )


if __name__ == "__main__":
    main(sys.argv[1:])
