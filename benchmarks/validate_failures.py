"""Failures at run scale: the Llama 3 profile's interruption count, and Young/Daly's checkpoint
interval against a sweep of the simulation (docs/validation.md, "Failures and whole runs").

Usage::

    python benchmarks/validate_failures.py [--seeds 40]

1. Runs ``scenarios/llama3-405b-16384xh100-failures.yaml`` (one simulated step, then the whole
   15.6T-token run with the ``llama3`` failure profile) and counts its unexpected interruptions in
   the first 54 days of wall time, against the 419 of the Llama 3 paper's Table 5 (accepted
   within 15%). The profile's rates are derived from that same table (count / (54 days x GPUs or
   servers)), so this is a consistency check of the sampling and the scaling, not an
   independent validation. Then the same run-scale plan over ``--seeds`` seeds: the mean and
   spread of the count, and the count by cause next to Table 5.
2. Sweeps the checkpoint interval of that run, ``--seeds`` seeds per interval (the same seeds for
   every interval), and of a synthetic run (1e6 s of work, job MTBF 1e4 s, checkpoint 50 s,
   restart 100 s; 100 seeds), next to Young's ``sqrt(2 x cost x MTBF)``, Daly's higher-order
   optimum and, for the synthetic run, Daly's expected wall time.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import hwsim
from hwsim.catalog.failures import failure_profile
from hwsim.jobs.resilience import (FailureSource, RunPlan, daly_expected_wall_s, daly_interval_s,
                                   interval_sweep, run_plan, simulate_run, young_interval_s)
from hwsim.scenario.build import build_graph, failure_spec, prepare
from hwsim.scenario.loader import load_scenario
from hwsim.topology import component_counts

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "llama3-405b-16384xh100-failures.yaml"
DAY = 86400.0
PUBLISHED = 419
WITHIN = 0.15


def _scenario_plan(summary: dict) -> RunPlan:
    """The run-scale plan of the scenario, rebuilt from its summary (no step is re-simulated)."""
    s = load_scenario(SCENARIO)
    g, job = prepare(s)
    return run_plan(failure_spec(s.workload.failures), step_time_s=summary["step_time_s"],
                    total_steps=summary["total_steps"], ideal_s=summary["time_to_train_ideal_s"],
                    counts=component_counts(g, list(job.devices)), replicas=job.dp,
                    summary=summary)


def llama3_check(seeds: int) -> dict:
    t0 = time.perf_counter()
    r = hwsim.run(SCENARIO)
    wall = time.perf_counter() - t0
    s, f = r.summary, r.failures
    first = int((f["time_s"] < 54 * DAY).sum())
    err = first / PUBLISHED - 1
    print(f"## Llama 3 profile: {SCENARIO.name} ({wall:.1f} s)\n")
    print("| quantity | value |\n|---|---:|")
    print(f"| unexpected interruptions in the first 54 days (seed {load_scenario(SCENARIO).seed}) "
          f"| {first} |")
    print(f"| Llama 3 paper, Table 5 | {PUBLISHED} |")
    print(f"| error | {err:+.1%} ({'within' if abs(err) <= WITHIN else 'OUTSIDE'} "
          f"{WITHIN:.0%}) |")
    print(f"| job MTBF | {s['job_mtbf_s']:.0f} s ({s['job_mtbf_s'] / 3600:.2f} h) |")
    print(f"| time_to_train_ideal_s | {s['time_to_train_ideal_s']:.4g} s "
          f"({s['time_to_train_ideal_s'] / DAY:.1f} d) |")
    print(f"| time_to_train_s | {s['time_to_train_s']:.4g} s ({s['time_to_train_s'] / DAY:.1f} d)"
          " |")
    print(f"| goodput | {s['goodput']:.4f} |")
    print(f"| effective_training_time_ratio | {s['effective_training_time_ratio']:.4f} "
          "(Llama 3 paper: > 90%) |")
    print(f"| failures_total (whole run) | {s['failures_total']} |")
    print(f"| lost_work_s, downtime_s, checkpoint_time_s | {s['lost_work_s']:.4g}, "
          f"{s['downtime_s']:.4g}, {s['checkpoint_time_s']:.4g} |")
    print(f"| checkpoint_interval_s (used) | {s['checkpoint_interval_s']:.1f} |")
    print(f"| checkpoint_interval_young_daly_s, checkpoint_interval_daly_s | "
          f"{s['checkpoint_interval_young_daly_s']:.1f}, {s['checkpoint_interval_daly_s']:.1f} |")

    plan = _scenario_plan(s)
    runs = [simulate_run(plan, np.random.default_rng(k))[1] for k in range(seeds)]
    counts = np.array([sum(1 for row in rows if row[0] < 54 * DAY) for rows in runs])
    print(f"\nOver {seeds} seeds (run-scale only): mean {counts.mean():.1f}, std "
          f"{counts.std(ddof=1):.1f} (Poisson: {math.sqrt(PUBLISHED):.1f}), min {counts.min()}, "
          f"max {counts.max()}; {np.mean(np.abs(counts / PUBLISHED - 1) <= WITHIN):.0%} of the "
          f"seeds within {WITHIN:.0%}.\n")
    print("| cause | component | Table 5 | mean in 54 d |\n|---|---|---:|---:|")
    for c in failure_profile("llama3").causes:
        n = np.mean([sum(1 for row in rows if row[0] < 54 * DAY and row[2] == c.cause)
                     for rows in runs])
        print(f"| {c.cause} | {c.component} | {c.count} | {n:.1f} |")
    return s


def sweep_table(title: str, plan: RunPlan, every: list[int], seeds: range, cost: float,
                mtbf: float, restart: float | None = None) -> None:
    t0 = time.perf_counter()
    rows = interval_sweep(plan, every, seeds)
    wall = time.perf_counter() - t0
    young, daly = young_interval_s(cost, mtbf), daly_interval_s(cost, mtbf)
    print(f"\n## {title} ({len(seeds)} seeds per interval, {wall:.1f} s)\n")
    print(f"Young: {young:.1f} s, Daly: {daly:.1f} s (checkpoint {cost:g} s, job MTBF "
          f"{mtbf:.0f} s).\n")
    head = "| interval s | steps | mean time_to_train_s | vs best |"
    head += " Daly's expected | sim / Daly - 1 |" if restart is not None else ""
    print(head)
    print("|" + "---:|" * (head.count("|") - 1))
    best = min(w for _, w in rows)
    for k, w in rows:
        line = f"| {k * plan.step_time_s:.1f} | {k} | {w:.6g} | {w / best - 1:+.3%} |"
        if restart is not None:
            exp = daly_expected_wall_s(plan.total_steps * plan.step_time_s, k * plan.step_time_s,
                                       cost, restart, mtbf)
            line += f" {exp:.6g} | {w / exp - 1:+.3%} |"
        print(line)
    x = np.log([k * plan.step_time_s for k, _ in rows])
    a, b, _ = np.polyfit(x, [w for _, w in rows], 2)
    vertex = math.exp(-b / (2 * a))
    print(f"\nSimulated optimum (vertex of a parabola in log interval): {vertex:.1f} s = "
          f"{vertex / daly - 1:+.1%} from Daly, {vertex / young - 1:+.1%} from Young.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=40)
    args = ap.parse_args()
    summary = llama3_check(args.seeds)
    m, cost, restart = 1e4, 50.0, 100.0
    synthetic = RunPlan(step_time_s=1.0, total_steps=1_000_000, checkpoint_stall_s=cost,
                        restore_s=restart, sources=(FailureSource("x", "gpu", 1 / m),))
    sweep_table("Young/Daly: synthetic run", synthetic,
                [250, 350, 500, 700, 1000, 1400, 2000, 2800, 4000], range(100), cost, m, restart)
    plan = _scenario_plan(summary)
    sweep_table("Young/Daly: the Llama 3 run", plan, [6, 9, 12, 17, 23, 33, 46, 65, 92],
                range(args.seeds), plan.checkpoint_stall_s, plan.mtbf_s)


if __name__ == "__main__":
    main()
