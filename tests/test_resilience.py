"""Whole runs with failures and checkpoints (hwsim/jobs/resilience.py, docs/model.md "Failures and
whole runs"): exact timelines for scripted failures, invariants of random runs, determinism, the
Llama 3 profile's interruption count, and Young's and Daly's checkpoint interval against a sweep
of the simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import hwsim
from hwsim.catalog.failures import failure_profile
from hwsim.exceptions import InfeasibleError
from hwsim.jobs.resilience import (FailureSource, FailureSpec, RunPlan, ScriptedFailure,
                                   daly_expected_wall_s, daly_interval_s, interval_sweep,
                                   run_plan, simulate_run, young_interval_s)
from hwsim.scenario.build import build_graph
from hwsim.scenario.loader import load_scenario
from hwsim.topology import component_counts

DAY = 86400.0


def _run(plan: RunPlan, seed: int = 0):
    out, rows = simulate_run(plan, np.random.default_rng(seed))
    return out, pd.DataFrame(rows, columns=["time_s", "component", "cause", "lost_s",
                                            "downtime_s", "step"])


# A run of 100 one-second steps, a checkpoint every 10 steps stalling 2 s; a failure is noticed
# after 4 s, rescheduled in 5 s, restored in 3 s: 12 s down.
BASE = RunPlan(step_time_s=1.0, total_steps=100, checkpoint_every_steps=10, checkpoint_stall_s=2.0,
               restore_s=3.0, detect_s=4.0, reschedule_s=5.0)


def _scripted(*failures: tuple[float, str], **kw) -> RunPlan:
    return RunPlan(**{**BASE.__dict__, **kw,
                      "scripted": tuple(ScriptedFailure(t, c, c) for t, c in failures)})


def test_no_failures_no_checkpoints_goodput_is_one():
    out, rows = _run(RunPlan(step_time_s=0.5, total_steps=1000, startup_s=3.0))
    assert out["time_to_train_s"] == out["time_to_train_ideal_s"] == 503.0
    assert out["goodput"] == 1.0 and out["effective_training_time_ratio"] == 1.0
    assert out["failures_total"] == 0 and rows.empty and out["job_mtbf_s"] is None


def test_zero_failure_rates_in_a_scenario_give_goodput_one():
    """A scenario with failures configured but no rate: time_to_train_s is the failure-free one."""
    r = hwsim.run(_scenario({}, checkpoints=False))
    s = r.summary
    assert s["goodput"] == 1.0 and s["effective_training_time_ratio"] == 1.0
    assert s["time_to_train_s"] == s["time_to_train_ideal_s"] and s["failures_total"] == 0
    assert list(r.failures.columns) == ["time_s", "component", "cause", "lost_s", "downtime_s",
                                        "step"] and r.failures.empty


def test_checkpoints_alone_cost_their_stalls():
    """100 steps of 1 s, 9 checkpoints of 2 s (none after the last step)."""
    out, _ = _run(BASE)
    assert out["time_to_train_s"] == 100 + 9 * 2.0 and out["checkpoints"] == 9
    assert out["goodput"] == pytest.approx(100 / 118)
    assert out["checkpoint_interval_s"] == 10.0


def test_scripted_failure_loses_work_since_the_last_checkpoint():
    """Checkpoints complete at 12 s and 24 s (20 steps); a failure at 30 s loses 6 s, the job is
    back at 42 s and runs the remaining 80 steps with 7 checkpoints: done at 136 s."""
    out, rows = _run(_scripted((30.0, "gpu")))
    assert rows.values.tolist() == [[30.0, "gpu", "gpu", 6.0, 12.0, 20]]
    assert out["time_to_train_s"] == 42 + 80 + 7 * 2.0
    assert out["lost_work_s"] == 6.0 and out["downtime_s"] == 12.0
    assert out["failures_gpu"] == 1 and out["failures_total"] == 1


def test_failure_during_recovery_starts_it_again():
    """A second failure at 35 s, while the first recovery (30..42 s) runs: the first is down
    5 s, the second loses nothing and is down 12 s; the job trains again at 47 s."""
    out, rows = _run(_scripted((30.0, "gpu"), (35.0, "software")))
    assert rows[["time_s", "lost_s", "downtime_s", "step"]].values.tolist() == [
        [30.0, 6.0, 5.0, 20], [35.0, 0.0, 12.0, 20]]
    assert out["time_to_train_s"] == 47 + 80 + 7 * 2.0


def test_no_spare_left_waits_for_the_repair():
    """No spare: the job waits for the failed server's repair (back at 130 s), then reschedules
    and restores: training again at 138 s."""
    out, rows = _run(_scripted((30.0, "gpu"), spares=0, repair_s=100.0))
    assert rows["downtime_s"].tolist() == [108.0]
    assert out["time_to_train_s"] == 138 + 80 + 7 * 2.0
    # a software failure needs no spare
    out, _ = _run(_scripted((30.0, "software"), spares=0, repair_s=100.0))
    assert out["time_to_train_s"] == 42 + 80 + 7 * 2.0


def test_shrink_goes_on_with_fewer_replicas():
    """Four replicas, one lost at 30 s: the same batch on three makes a step 4/3 as long."""
    out, _ = _run(_scripted((30.0, "node"), policy="shrink", replicas=4))
    wall = 42 + 80 * 4 / 3 + 7 * 2.0
    assert out["time_to_train_s"] == pytest.approx(wall, rel=1e-12)
    assert out["goodput"] == pytest.approx(100 / wall)
    assert out["effective_training_time_ratio"] == pytest.approx((20 + 80 * 4 / 3) / wall)
    assert out["replicas_min"] == 3


def test_shrink_to_nothing_without_repair_is_infeasible():
    with pytest.raises(InfeasibleError, match="all 1 data-parallel replicas are lost and failed "
                                              "servers are never repaired"):
        _run(_scripted((30.0, "node"), policy="shrink", replicas=1))


def test_run_without_checkpoints_that_cannot_finish_is_infeasible():
    plan = RunPlan(step_time_s=1.0, total_steps=100_000, sources=(FailureSource("x", "gpu", 1e-3),))
    with pytest.raises(InfeasibleError, match="does not finish within 1000 times its failure-free "
                                              r"time \(1e\+05 s\): failures every 1e\+03 s"):
        _run(plan)


@pytest.mark.parametrize("policy", ["spares", "shrink"])
def test_random_failures_never_count_work_past_the_last_checkpoint(policy):
    """Every failure restarts from a committed checkpoint (a multiple of the interval, never
    behind an earlier one), loses at most one interval and a stall, and the wall time is the
    useful time plus stalls, lost work and downtime, nothing else."""
    plan = RunPlan(step_time_s=1.0, total_steps=20_000, checkpoint_every_steps=50,
                   checkpoint_stall_s=5.0, restore_s=20.0, detect_s=10.0, reschedule_s=5.0,
                   startup_s=2.0, policy=policy, replicas=8, repair_s=3000.0,
                   sources=(FailureSource("gpu", "gpu", 1 / 2000),
                            FailureSource("bug", "software", 1 / 5000)))
    out, rows = _run(plan, seed=7)
    assert len(rows) > 5
    assert (rows["step"] % 50 == 0).all() and rows["step"].is_monotonic_increasing
    assert (rows["step"] < 20_000).all()
    slow = 8 / out["replicas_min"]
    assert (rows["lost_s"] >= 0).all() and (rows["lost_s"] <= (50 * slow + 5 + 2) + 1e-9).all()
    assert (rows["downtime_s"] > 0).all() and rows["time_s"].is_monotonic_increasing
    wall = out["time_to_train_s"]
    parts = (out["effective_training_time_ratio"] * wall + out["checkpoint_time_s"]
             + out["lost_work_s"] + out["downtime_s"])
    assert parts == pytest.approx(wall, rel=1e-12)
    assert out["failures_total"] == out["failures_gpu"] + out["failures_bug"] == len(rows)
    if policy == "spares":  # the same but for the first warm-up, lost if no checkpoint followed
        gap = out["goodput"] - out["effective_training_time_ratio"]
        assert -1e-12 < gap < 2.0 / wall + 1e-12
    else:
        assert out["goodput"] < out["effective_training_time_ratio"]


def test_more_failures_less_goodput():
    def goodput(rate):
        plan = RunPlan(**{**BASE.__dict__, "total_steps": 50_000,
                          "sources": (FailureSource("gpu", "gpu", rate),)})
        return np.mean([_run(plan, s)[0]["goodput"] for s in range(5)])
    assert goodput(1e-4) > goodput(1e-3) > goodput(1e-2)


def test_same_seed_same_failures_other_seed_other_failures():
    a, b, c = (hwsim.run(_scenario({"gpu": "1 min"}, seed=k)) for k in (1, 1, 2))
    assert len(a.failures) > 10
    pd.testing.assert_frame_equal(a.failures, b.failures)
    assert a.summary == b.summary
    assert not a.failures["time_s"].equals(c.failures["time_s"])


def _scenario(mtbf: dict, seed: int = 0, checkpoints: bool = True) -> dict:
    """16 GPUs on two servers training an MLP for 2e8 samples (12,208 steps of about 4 ms),
    with a 1 s checkpoint every 100 steps."""
    every = {"checkpoint_every_steps": 100, "checkpoint_stall": 1} if checkpoints else {}
    return {"name": "f", "seed": seed,
            "cluster": {"nodes": 2, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8,
                                             "intra_node": "nvlink4", "nic": "ib-ndr-400",
                                             "nics_per_node": 8},
                        "fabric": {"topology": "fat-tree"}},
            "workload": {"kind": "training", "model": {"preset": "mlp"}, "precision": "bf16",
                         "global_batch": 16384, "steps": 3, "train_samples": 2.0e8,
                         "failures": {"mtbf": mtbf, "detect": 5, "restore": 2, **every}}}


def test_component_counts_of_a_two_server_cluster():
    s = load_scenario(_scenario({}))
    g = build_graph(s.cluster)
    gpus = [n for n, d in g.nodes(data=True) if d["kind"] == "gpu"]
    counts = component_counts(g, gpus)
    assert counts["gpu"] == 16 and counts["node"] == 2 and counts["nic"] == 16
    assert counts["switch"] >= 1 and counts["link"] >= 16 and counts["storage"] == 0


def test_mtbf_rates_scale_with_component_counts():
    spec = FailureSpec(mtbf_s={"gpu": 1000.0, "nic": 500.0, "software": 100.0})
    plan = run_plan(spec, step_time_s=1.0, total_steps=10, ideal_s=10.0,
                    counts={"gpu": 16, "node": 2, "nic": 4}, replicas=16, summary={})
    assert {s.cause: s.rate_per_s for s in plan.sources} == {
        "gpu": 16 / 1000, "nic": 4 / 500, "software": 1 / 100}
    assert plan.replicas_per_failure == 8  # one server holds 8 one-GPU replicas


def test_summary_checkpoint_keys_are_used_unless_the_spec_overrides():
    summary = {"checkpoint_every_steps": 7, "checkpoint_stall_s": 2.5, "checkpoint_restore_s": 9}
    counts = {"gpu": 8, "node": 1}
    p = run_plan(FailureSpec(), step_time_s=1, total_steps=10, ideal_s=10, counts=counts,
                 replicas=1, summary=summary)
    assert (p.checkpoint_every_steps, p.checkpoint_stall_s, p.restore_s) == (7, 2.5, 9.0)
    p = run_plan(FailureSpec(checkpoint_every_steps=3, checkpoint_stall_s=0.0, restore_s=1.0),
                 step_time_s=1, total_steps=10, ideal_s=10, counts=counts, replicas=1,
                 summary=summary)
    assert (p.checkpoint_every_steps, p.checkpoint_stall_s, p.restore_s) == (3, 0.0, 1.0)


def test_failures_parquet_is_written(tmp_path):
    r = hwsim.run(_scenario({"gpu": "1 min"}))
    r.save(tmp_path / "out")
    back = pd.read_parquet(tmp_path / "out" / "failures.parquet")
    pd.testing.assert_frame_equal(back, r.failures)


# --- the Llama 3 profile: 419 unexpected interruptions in 54 days on 16,384 GPUs ---------------
# The profile's rates are derived from the same Table 5 counts, so this checks the sampling and
# the scaling by GPU and server counts, not the model: an independent validation it is not.

LLAMA3 = FailureSpec(profile="llama3", checkpoint_every_steps=23, checkpoint_stall_s=2.84,
                     restore_s=2.84, detect_s=600.0)


def _llama3_plan(gpus: int = 16384) -> RunPlan:
    return run_plan(LLAMA3, step_time_s=10.97, total_steps=600_000, ideal_s=10.97 * 600_000,
                    counts={"gpu": gpus, "node": gpus // 8}, replicas=gpus // 128, summary={})


def test_llama3_profile_rates_add_up_to_table5():
    p = failure_profile("llama3")
    assert sum(c.count for c in p.causes) == 419
    assert p.duration_s == 54 * DAY and p.units == {"gpu": 16384, "node": 2048}
    plan = _llama3_plan()
    assert sum(s.rate_per_s for s in plan.sources) * 54 * DAY == pytest.approx(419, rel=1e-12)


def test_bloom_profile_is_one_gpu_failure_a_week_on_384_gpus():
    p = failure_profile("bloom")
    plan = run_plan(FailureSpec(profile="bloom"), step_time_s=1, total_steps=1, ideal_s=1,
                    counts={"gpu": 384, "node": 48}, replicas=48, summary={})
    assert plan.mtbf_s == pytest.approx(7 * DAY) and p.causes[0].component == "gpu"


def test_llama3_profile_gives_419_interruptions_in_54_days_within_15_percent():
    counts = [int((_run(_llama3_plan(), seed)[1]["time_s"] < 54 * DAY).sum())
              for seed in range(40)]
    assert abs(counts[0] - 419) <= 0.15 * 419  # one run, as the scenario reports it
    # the mean of 40 runs: standard error sqrt(419/40) = 3.2, so 3% is about 4 of them
    assert np.mean(counts) == pytest.approx(419, rel=0.03)


def test_llama3_profile_scales_with_the_cluster():
    half = [int((_run(_llama3_plan(8192), s)[1]["time_s"] < 54 * DAY).sum()) for s in range(40)]
    assert np.mean(half) == pytest.approx(419 / 2, rel=0.04)


def test_llama3_scenario_summary_reports_failures_by_cause():
    """The keys the scenario reports, on the run-scale model alone (the scenario itself is run
    by tests/test_scenarios.py)."""
    out, rows = _run(_llama3_plan())
    causes = [c.cause for c in failure_profile("llama3").causes]
    assert sum(out[f"failures_{c}"] for c in causes) == out["failures_total"] == len(rows)
    assert out["failures_faulty_gpu"] > out["failures_gpu_thermal"]
    assert 0.85 < out["goodput"] < 1.0
    assert out["checkpoint_every_steps_young_daly"] == 23


# --- Young and Daly ----------------------------------------------------------------------------

def test_young_and_daly_formulas():
    assert young_interval_s(50.0, 1e4) == 1000.0
    assert daly_interval_s(50.0, 1e4) == pytest.approx(1000 * (1 + 0.05 / 3 + 0.0025 / 9) - 50)
    assert daly_interval_s(300.0, 100.0) == 100.0  # checkpoint cost over 2 MTBF


def test_simulated_optimum_interval_is_near_young_daly():
    """Sweep the checkpoint interval over a run of 1e6 s of work with an MTBF of 1e4 s and
    checkpoints costing 50 s (Young: 1000 s, Daly: 967 s), 100 seeds each. The simulated mean
    wall time agrees with Daly's expected wall time within 0.5% at every interval (0.18% at
    most over five sets of 100 seeds), and the minimum of a parabola through the sweep (in log
    interval) lies within 5% of Daly's optimum (946 to 957 s over those five sets: the
    simulation, which takes no checkpoint after the last segment, puts it 1-2% lower)."""
    m, cost, restart = 1e4, 50.0, 100.0
    plan = RunPlan(step_time_s=1.0, total_steps=1_000_000, checkpoint_stall_s=cost,
                   restore_s=restart, sources=(FailureSource("x", "gpu", 1 / m),))
    intervals = [350, 500, 700, 1000, 1400, 2000, 2800]
    sweep = interval_sweep(plan, intervals, range(100))
    for k, wall in sweep:
        assert wall == pytest.approx(daly_expected_wall_s(1e6, k, cost, restart, m), rel=0.005)
    a, b, _ = np.polyfit(np.log(intervals), [w for _, w in sweep], 2)
    best = math.exp(-b / (2 * a))
    assert best == pytest.approx(daly_interval_s(cost, m), rel=0.05)
    assert min(sweep, key=lambda kw: kw[1])[0] in (700, 1000, 1400)


def test_cli_headline_reports_the_whole_run():
    from hwsim.analysis.headline import headline

    r = hwsim.run(_scenario({"gpu": "1 min"}, seed=1))
    s = r.summary
    line = headline(s, r.config)[0]
    assert line.startswith("time to train: ")
    assert (f"; {s['failures_total']:,} failures, {s['checkpoints']:,} checkpoints, goodput "
            f"{s['goodput']:.1%} (") in line and line.endswith(" without them)")
