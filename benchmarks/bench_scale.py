"""Wall time and peak memory of one training step at scale (issue 3's targets), on one core.

Cases (scenarios/):

- (a) ``gpt3-175b-1024xa100.yaml``: GPT-3 175B on 1,024 A100, TP 8, PP 16, DP 8, global batch
  1536 (192 micro-batches per pipeline), one step. Target: under 2 s.
- (b) ``llama3-405b-16384xh100.yaml``: Llama-3-405B architecture on 16,384 H100, TP 8, PP 16,
  DP 128, sequence 8192, global batch 2048, one step. Target: under 20 s and 2 GB.

Each case runs in a fresh Python process pinned to one CPU (``taskset -c 0`` where available),
``--repeat`` times. Reported per case (medians): ``run`` is ``hwsim.run(scenario)`` (build the
graph and plan, simulate, summary; imports excluded), ``frames`` is building the full events
and utilization DataFrames afterwards (they are built on first read), ``peak MB`` is the
process's maximum resident set (imports included).

    python benchmarks/bench_scale.py                 # both cases, 3 repeats
    python benchmarks/bench_scale.py --only a --repeat 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "a": ("gpt3-175b-1024xa100.yaml", 2.0, None),
    "b": ("llama3-405b-16384xh100.yaml", 20.0, 2000.0),
}
_CHILD = r"""
import json, resource, sys, time
import hwsim
t0 = time.perf_counter()
r = hwsim.run(sys.argv[1])
t1 = time.perf_counter()
n_events, n_util = len(r.events), len(r.utilization)
t2 = time.perf_counter()
s = r.summary
print(json.dumps({"run_s": t1 - t0, "frames_s": t2 - t1, "events": n_events,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "step_time_s": s["step_time_s"], "mfu": s["mfu"],
                  "simulated_ranks": s["simulated_ranks"], "devices": s["devices"],
                  "bottleneck": s["bottleneck"], "flows": s["flows"]}))
"""


def measure(scenario: Path) -> dict:
    cmd = [sys.executable, "-c", _CHILD, str(scenario)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(CASES), action="append")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"{'case':<34} {'devices':>7} {'run s':>7} {'frames s':>8} {'peak MB':>8} "
          f"{'target':>14} {'events':>9} {'step s':>8} {'MFU':>6}")
    for key in args.only or sorted(CASES):
        name, limit_s, limit_mb = CASES[key]
        runs = [measure(ROOT / "scenarios" / name) for _ in range(args.repeat)]
        run_s = statistics.median(r["run_s"] for r in runs)
        frames_s = statistics.median(r["frames_s"] for r in runs)
        peak = max(r["peak_mb"] for r in runs)
        r = runs[0]
        target = f"<{limit_s:g} s" + (f", <{limit_mb:g} MB" if limit_mb else "")
        print(f"({key}) {name:<30} {r['devices']:>7} {run_s:>7.2f} {frames_s:>8.2f} {peak:>8.0f} "
              f"{target:>14} {r['events']:>9} {r['step_time_s']:>8.3f} {r['mfu']:>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
