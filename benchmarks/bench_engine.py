"""Issue 15 point 3's figure: SimPy events the engine processes per second of ``env.run`` on
the 512-H100 GPT-3 step (and any other scenario), in-process.

    python benchmarks/bench_engine.py [--repeat 5] [SCENARIO ...]

For each scenario, each repeat runs ``hwsim.run(SCENARIO)`` in this process and times the
outermost ``simpy.Environment.run`` calls of the simulation (the collectives' own small
environments, run inside it to cost a phase, are counted in its time, not as its events):
events are those processed: the ids ``env.schedule`` handed out during the run (``env._eid``:
counting them adds no work per event), plus the events queued before it, minus those still
queued at its end. Prints, per scenario, the events,
the median and fastest ``env.run`` wall time and the events per second at each, and the
activities recorded (rows of ``Result.events``: ops, collectives and flows) per second of
``env.run``. Wall times on a shared machine move with its load: quote the median of a quiet
run, and compare changes in pairs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import simpy

import hwsim

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "benchmarks" / "scenarios" / "gpt3-175b-512xh100-mlperf.yaml"


def _measure(path: Path) -> tuple[int, float, int]:
    """(SimPy events, seconds of the outermost env.run calls, activities recorded) of one run."""
    orig = simpy.Environment.run
    depth, out = [0], [0, 0.0]

    def run(env, until=None):
        depth[0] += 1
        if depth[0] > 1:
            try:
                return orig(env, until)
            finally:
                depth[0] -= 1
        e0, q0, t0 = next(env._eid), len(env._queue), time.perf_counter()
        try:
            return orig(env, until)
        finally:
            out[1] += time.perf_counter() - t0
            # processed = scheduled meanwhile (each schedule takes an id) + queued before - left
            out[0] += next(env._eid) - e0 - 1 + q0 - len(env._queue)
            depth[0] -= 1

    simpy.Environment.run = run
    try:
        result = hwsim.run(path)
    finally:
        simpy.Environment.run = orig
    return out[0], out[1], len(result.events)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", type=Path, default=[DEFAULT])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    print("| scenario | SimPy events | env.run s (median / min) | events/s (median / min time) "
          "| activities recorded | activities/s (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in args.scenarios:
        runs = [_measure(path) for _ in range(args.repeat)]
        events, acts = runs[0][0], runs[0][2]
        secs = [r[1] for r in runs]
        med, best = statistics.median(secs), min(secs)
        print(f"| {path.stem} | {events:,} | {med:.3f} / {best:.3f} | {events / med:,.0f} / "
              f"{events / best:,.0f} | {acts:,} | {acts / med:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
