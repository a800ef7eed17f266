"""Issue 15 point 7: the whole-space parallelism search of GPT-3 175B on 1,024 A100
(``scenarios/gpt3-175b-1024xa100.yaml``): every valid layout of the default space (tp, pp,
virtual stages, dp, micro-batch, recompute, sequence parallelism, ZeRO) enumerated, those that
do not fit pruned by the memory model, every one that fits simulated (``budget="all"``), and
where the published layout ranks (Narayanan et al. SC'21: tp 8, pp 16, dp 8, micro-batch 1,
full recompute; as the scenario runs it, v 1, no sequence parallelism, ZeRO 0).

    PYTHONPATH=. python benchmarks/search_all.py [--workers 2] [--top 15] [--out FILE.csv]

Prints the counts (enumerated, invalid, pruned by memory, simulated), the wall time of the
search and of its two phases (planning every layout; simulating), the CPU time of this process
and its workers (user + sys) and the load average (the VM is shared), the best layouts, the
published layout's rank, and the best row of its tp 8, pp 16.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "gpt3-175b-1024xa100.yaml"
PUBLISHED = {"tp": 8, "pp": 16, "dp": 8, "cp": 1, "ep": 1, "micro_batch": 1, "virtual_stages": 1,
             "recompute": "full", "zero": 0, "sequence_parallel": False}
"""The published layout as scenarios/gpt3-175b-1024xa100.yaml runs it."""


def cpu_seconds() -> float:
    """User + sys CPU seconds of this process and its finished children (the workers)."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def rank_of(sim, layout: dict) -> int | None:
    """1-based rank of *layout* among the simulated rows (sorted by step time), or None."""
    hit = sim.index[(sim[list(layout)] == list(layout.values())).all(axis=1)]
    return int(hit[0]) + 1 if len(hit) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--top", type=int, default=15, help="best rows to print")
    ap.add_argument("--out", type=Path, help="write every row (CSV)")
    ap.add_argument("--scenario", type=Path, default=SCENARIO)
    args = ap.parse_args(argv)

    from hwsim.planning.search import compare, layout_text, search

    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), cpu_seconds()
    frame = search(args.scenario, budget="all", workers=args.workers)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    load1 = os.getloadavg()
    if args.out:
        frame.to_csv(args.out, index=False)
    counts = frame.attrs["counts"]
    valid = len(frame) - counts["invalid"]
    sim = frame[frame["status"] == "simulated"].reset_index(drop=True)
    print(f"whole-space search: {args.scenario.name}, workers {args.workers}")
    print(f"combinations {frame.attrs['candidates']}: invalid {counts['invalid']}, valid "
          f"(enumerated layouts) {valid}, pruned by memory {counts['pruned_memory']}, fit "
          f"{counts['simulated'] + counts['not_simulated']}, simulated {counts['simulated']}, "
          f"not simulated {counts['not_simulated']}")
    sec = frame.attrs["seconds"]
    print(f"wall {wall:.1f} s (planning {sec['plan']:.1f} s, simulating {sec['simulate']:.1f} "
          f"s); CPU {cpu:.1f} s user+sys (this process and its workers); simulations "
          f"{sim['simulation_s'].sum():.1f} CPU s in all, {sim['simulation_s'].median():.2f} "
          f"median, {sim['simulation_s'].max():.1f} max; load average {load0[0]:.2f} before, "
          f"{load1[0]:.2f} after")
    cols = ["tp", "pp", "dp", "micro_batch", "virtual_stages", "recompute", "zero",
            "sequence_parallel", "step_time_s", "model_tflops_per_gpu",
            "hardware_tflops_per_gpu", "mfu", "memory_per_device_gb", "simulation_s"]
    print(f"\nbest {args.top} of {len(sim)} simulated:")
    print(sim[cols].head(args.top).to_string(float_format=lambda x: f"{x:.4g}"))
    best = sim.iloc[0]
    print(f"\nbest: {layout_text(best)}: {best['step_time_s']:.4g} s per step, "
          f"{best['model_tflops_per_gpu']:.4g} model TFLOP/s per GPU, MFU {100 * best['mfu']:.1f}%")
    rank = rank_of(sim, PUBLISHED)
    if rank is None:
        print("published layout (tp 8, pp 16, dp 8, mb 1, v 1, full, no SP, ZeRO 0): not "
              "simulated")
    else:
        row = sim.iloc[rank - 1]
        print(f"published layout ({layout_text(row)}): rank {rank} of {len(sim)}, "
              f"{row['step_time_s']:.4g} s per step, {row['hardware_tflops_per_gpu']:.4g} "
              f"hardware TFLOP/s per GPU ({100 * (row['step_time_s'] / best['step_time_s'] - 1):.1f}%"
              f" slower than the best)")
        print(compare(best, row, "Published layout"))
    same = sim[(sim["tp"] == 8) & (sim["pp"] == 16)]
    if len(same):
        top = same.iloc[0]
        print(f"best row of tp 8, pp 16: rank {int(same.index[0]) + 1}: {layout_text(top)}, "
              f"{top['step_time_s']:.4g} s per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
