"""Lay a host monitor's lines (sitecustomize.py beside this file) beside a record's step times.

    python scripts/host_monitor/summarize.py /tmp/mon.jsonl results/.../record.json

Per step (between two step-end lines of the training process): its time in the record, the most runnable tasks on
the host and descendant processes seen during it, the process's CPU seconds in it, and the garbage collections.
"""

from __future__ import annotations

import json
import sys


def main(monitor: str, record: str) -> None:
    lines = [json.loads(line) for line in open(monitor) if line.strip()]
    trainers = {x["pid"] for x in lines if x["kind"] == "step_end"}  # other Python processes of the run wrote too
    lines = [x for x in lines if x["pid"] in trainers]
    rec = json.load(open(record))
    ends = [x["t"] for x in lines if x["kind"] == "step_end"]
    steps = rec.get("step_times_s") or []
    tok = rec["real_tokens"] / max(rec["steps"], 1)
    median = rec["step_time_median_s"]
    print(
        f"{record}: tokens/s {rec['tokens_per_s']:.0f}, at the median step {tok / median:.0f} "
        f"(mean/median {tok / rec['tokens_per_s'] / median:.3f}); time_compile_s {rec.get('time_compile_s')}"
    )
    hosts = [x for x in lines if x["kind"] == "host"]
    if ends:
        before = [x for x in hosts if x["t"] < ends[0]]
        print(f"  before step 1 ends: max descendants {max((x['descendants'] for x in before), default=None)}")
    for i, (t0, t1) in enumerate(zip([None, *ends], ends), start=1):
        inside = [x for x in hosts if (t0 is None or x["t"] >= t0) and x["t"] < t1]
        gcs = [x for x in lines if x["kind"] == "gc" and (t0 is None or x["t"] >= t0) and x["t"] < t1]
        cpu = (inside[-1]["cpu_s"] - inside[0]["cpu_s"]) if len(inside) > 1 else None
        print(
            f"  step {i:2d}: {steps[i - 1] if i <= len(steps) else '?':>8} s (host {t1 - t0 if t0 else 0:6.3f} s)"
            f"  runnable max {max((x['runnable'] for x in inside), default='-'):>3}"
            f"  descendants max {max((x['descendants'] for x in inside), default='-'):>3}"
            f"  cpu {cpu if cpu is None else round(cpu, 2)}"
            f"  gc {[(g['generation'], g['s']) for g in gcs]}"
        )
    after = [x for x in hosts if ends and x["t"] >= ends[-1]]
    if after:
        print(f"  after the last step: max descendants {max(x['descendants'] for x in after)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
