"""Periodic steady state (hwsim.jobs.steady): a step simulated until its pipeline repeats and
advanced exactly gives the answer of simulating every micro-batch."""

from __future__ import annotations

import math

import pytest

import hwsim
from hwsim.engine import Recorder
from hwsim.jobs.schedules import interleaved, one_f_one_b
from hwsim.jobs.steady import find_window, simulated_micro_batches, steady_range
from scenario_edit import edited

BASE = {
    "name": "steady",
    "seed": 0,
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8,
                                     "cpu": "EPYC-7742", "intra_node": "nvlink3"}},
    "workload": {"kind": "training",
                 "model": {"layers": 8, "hidden": 1024, "heads": 16, "vocab": 32000,
                           "activation": "gelu"},
                 "seq_len": 1024, "precision": "bf16", "global_batch": 32,
                 "parallelism": {"tp": 1, "pp": 4, "dp": 2, "micro_batch": 1},
                 "optimizer": "adam", "steps": 1},
}
H100 = {"cluster.node.gpu": "H100-SXM5-80GB", "cluster.node.intra_node": "nvlink4",
        "cluster.node.cpu": "Xeon-8480"}
FOLDED = {"cluster.nodes": 4, "cluster.node.nic": "ib-hdr-200", "cluster.node.nics_per_node": 8,
          "cluster.fabric": {"topology": "fat-tree"}, "workload.fold": True}

LAYOUTS = {
    "1f1b-pp4-dp2": {},
    "1f1b-pp2-tp2-dp2": {"workload.parallelism": {"tp": 2, "pp": 2, "dp": 2, "micro_batch": 1}},
    "1f1b-pp8-two-steps": {"workload.parallelism": {"pp": 8, "dp": 1, "micro_batch": 1},
                           "workload.steps": 2},
    "interleaved-pp2-v2": {"workload.parallelism": {"pp": 2, "dp": 2, "tp": 2, "micro_batch": 1,
                                                    "virtual_stages": 2},
                           "workload.global_batch": 64},
    "interleaved-pp4-v2-tp2": {"workload.parallelism": {"pp": 4, "tp": 2, "dp": 1,
                                                        "micro_batch": 1, "virtual_stages": 2},
                               "workload.global_batch": 48},
    "sp-zero1-selective": {"workload.parallelism": {"tp": 2, "pp": 2, "dp": 2, "micro_batch": 2,
                                                    "sequence_parallel": True, "zero": 1,
                                                    "recompute": "selective"},
                           "workload.global_batch": 64},
    "full-recompute-fp16": {"workload.parallelism": {"pp": 4, "dp": 2, "micro_batch": 2,
                                                     "recompute": "full"},
                            "workload.precision": "fp16", "workload.global_batch": 64},
    "fp8-megatron-core-h100": {**H100, "workload.precision": "fp8",
                               "workload.stack": "megatron-core",
                               "workload.parallelism": {"tp": 2, "pp": 4, "dp": 1,
                                                        "micro_batch": 1,
                                                        "sequence_parallel": True},
                               "workload.global_batch": 24},
    "folded-32-gpus": {**FOLDED, "workload.parallelism": {"tp": 2, "pp": 4, "dp": 4,
                                                          "micro_batch": 1},
                       "workload.global_batch": 64},
    "folded-interleaved-32-gpus": {**FOLDED,
                                   "workload.parallelism": {"tp": 4, "pp": 2, "dp": 4,
                                                            "micro_batch": 1,
                                                            "virtual_stages": 2},
                                   "workload.global_batch": 64},
    "context-parallel": {"workload.parallelism": {"tp": 1, "cp": 2, "pp": 4, "dp": 1,
                                                  "micro_batch": 1},
                         "workload.global_batch": 16},
}


def _pair(changes: dict) -> tuple:
    s = edited(BASE, changes)
    full = hwsim.run(edited(s, {"workload.steady_state": False}))
    fast = hwsim.run(s)
    return full, fast


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_steady_state_advance_gives_the_full_simulation(layout):
    full, fast = _pair(LAYOUTS[layout])
    m = full.summary["micro_batches"]
    assert fast.summary["micro_batches"] == m == full.summary["micro_batches_simulated"]
    assert fast.summary.pop("micro_batches_simulated") < m  # advanced, not re-run whole
    full.summary.pop("micro_batches_simulated")
    assert fast.summary["step_time_s"] == pytest.approx(full.summary["step_time_s"], rel=5e-3)
    for key, want in full.summary.items():
        got = fast.summary[key]
        if isinstance(want, float) and not isinstance(want, bool):
            assert got == pytest.approx(want, rel=1e-2, abs=1e-9), key
        else:
            assert got == want, key
    # the advance repeats what it skipped: as many activities, as many pipeline waits (a
    # "wait" of a few ulps of the clock is none: hwsim.jobs.pipeline.idle), as many bytes and
    # FLOPs, the same wait time
    ef, es = full.events, fast.events
    assert len(es) == pytest.approx(len(ef), rel=1e-3)
    assert (es["kind"] == "bubble").sum() == (ef["kind"] == "bubble").sum()
    wait = [(e["end_s"] - e["start_s"])[e["kind"] == "bubble"].sum() for e in (ef, es)]
    assert wait[1] == pytest.approx(wait[0], rel=1e-9, abs=1e-12)
    for col in ("bytes", "flops"):
        assert es[col].sum() == pytest.approx(ef[col].sum(), rel=1e-6)
    util_f, util_s = full.utilization, fast.utilization
    assert util_s["utilization"].between(0.0, 1.0).all()
    assert util_s["utilization"].mean() == pytest.approx(util_f["utilization"].mean(), rel=1e-2)


def test_steady_state_simulates_fewer_micro_batches_and_is_deterministic():
    s = edited(BASE, {"workload.global_batch": 64})
    a, b = hwsim.run(s), hwsim.run(s)
    assert a.events.equals(b.events)
    full = hwsim.run(edited(s, {"workload.steady_state": False}))
    # 32 micro-batches per pipeline of 4 stages: 3 warm-up + 4 periods + ... simulated
    assert simulated_micro_batches("1f1b", 4, 32) == 7
    assert a.summary["simulated_time_s"] == pytest.approx(full.summary["simulated_time_s"],
                                                          rel=1e-9)
    assert a.summary["flows"] == full.summary["flows"]


def test_simulated_micro_batches_by_schedule():
    assert simulated_micro_batches("1f1b", 16, 192) == 19  # 15 warm-up + 4 periods of 1
    assert simulated_micro_batches("1f1b", 16, 20) == 20   # saves less than two periods
    assert simulated_micro_batches("1f1b", 1, 64) == 64    # no pipeline
    # interleaved, p 8 x v 12: periods of 8 micro-batches; 102 warm-up forwards = 2 periods
    assert simulated_micro_batches("interleaved", 8, 128, 12) == 40
    assert simulated_micro_batches("gpipe", 4, 64) == 64   # no alternating phase


def test_steady_range_is_the_alternating_phase():
    units = one_f_one_b(4, 8)
    assert steady_range(units[0]) == (3, 13)   # F3 B0 ... F7 B4, then B5 B6 B7
    # the last stage alternates from the start; its last backward (the gradient reduction's)
    # is not steady
    assert steady_range(units[3]) == (0, 15)
    il = interleaved(2, 4, 2)[0]
    a, b = steady_range(il)
    assert [u[0] for u in il[a:b]] == ["F", "B"] * ((b - a) // 2)
    assert all(u[0] == "F" for u in il[:a])


def _spans(units, period, jitter_at=None):
    """Closed-form 1F1B timing: every unit 1 s, stage s offset by s; *jitter_at* delays one."""
    out = {}
    for s, us in enumerate(units):
        spans, t = [], float(s)
        for i, _ in enumerate(us):
            d = 1.0 + (0.5 if jitter_at == (s, i) else 0.0)
            spans.append((t, t + d))
            t += d if i < len(us) - 1 else 0.0
        out[(s, 0)] = spans
    return out


def test_find_window_accepts_a_repeating_pattern_and_refuses_a_broken_one():
    units = one_f_one_b(2, 12)
    found = find_window(units, _spans(units, 2.0), 2)
    assert found is not None
    i, start, period = found
    assert period == 2.0 and i == steady_range(units[0])[0]
    # a unit that runs late inside the checked periods breaks the pattern there: the window
    # moves past it, or there is none
    late = find_window(units, _spans(units, 2.0, jitter_at=(1, 3)), 2)
    assert late is None or late[1] > _spans(units, 2.0)[(1, 0)][3][0]


def test_repeat_window_closed_form():
    rec = Recorder()
    rec.hold()
    for t in range(6):  # one op per second, [t, t + 0.5)
        rec.event(float(t), t + 0.5, "dev/compute", "compute", f"op{t}", "j", 0, 10.0, 1.0,
                  "compute")
        rec.level(float(t), "link", 1.0)
        rec.level(t + 0.5, "link", 0.0)
    shift = rec.repeat(2.0, 1.0, 3)
    assert shift == 3.0
    starts = sorted(e[0] for e in rec.events)
    assert starts == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    names = [e[4] for e in sorted(rec.events)]
    assert names[2:6] == ["op2", "op2", "op2", "op2"] and names[6:] == ["op3", "op4", "op5"]
    assert sum(e[7] for e in rec.events) == 90.0                      # bytes: 9 ops of 10
    times = [t for t, _, _ in rec.levels]
    assert times == sorted(times) and len(times) == 18
    assert rec.repeat(0.0, 1.0, 0) == 0.0
    with pytest.raises(ValueError, match="period"):
        rec.repeat(0.0, 0.0, 1)


def test_steady_state_off_in_a_scenario_file_is_validated():
    with pytest.raises(hwsim.ScenarioError, match="steady_state"):
        hwsim.run(edited(BASE, {"workload.steady_state": "sometimes"}))
    assert math.isfinite(hwsim.run(edited(BASE, {"workload.steady_state": False}))
                         .summary["step_time_s"])


@pytest.mark.parametrize("layout", ["1f1b-pp8-two-steps", "folded-interleaved-32-gpus"])
def test_steady_state_advance_at_every_record_level(layout, tmp_path):
    """The advance repeats the held records before they are streamed or reduced: the events
    streamed to a spill file (``hwsim run --out``) are the ones kept in memory, and a run that
    keeps only the summary gives the same summary."""
    from hwsim.scenario import load_scenario
    from hwsim.scenario.build import run_scenario

    s = load_scenario(edited(BASE, LAYOUTS[layout]))
    kept = run_scenario(s)
    spilled = run_scenario(s, spill=tmp_path / "spill")
    summary = run_scenario(s, record="summary")
    assert kept.summary["micro_batches_simulated"] < kept.summary["micro_batches"]
    streamed = [f.to_pandas() for f in spilled.event_batches()]
    import pandas as pd

    together = pd.concat(streamed, ignore_index=True)
    assert together.astype(str).equals(kept.events.astype(str))
    assert summary.summary == kept.summary == spilled.summary
    spilled.release()
    assert not (tmp_path / "spill").exists()


def test_a_step_that_does_not_repeat_is_simulated_whole(monkeypatch):
    """No repeating window found: the compressed run stops after that step (its later steps
    would be thrown away) and the run is simulated whole, giving the full simulation's answer."""
    import hwsim.jobs.steady as steady

    s = edited(BASE, LAYOUTS["1f1b-pp8-two-steps"])
    full = hwsim.run(edited(s, {"workload.steady_state": False}))
    checks = []
    monkeypatch.setattr(steady, "find_window", lambda *a: checks.append(a) and None)
    fell_back = hwsim.run(s)
    assert len(checks) == 1                                  # step 1 only, then whole
    assert fell_back.summary["micro_batches_simulated"] == fell_back.summary["micro_batches"]
    assert fell_back.summary == full.summary
    assert fell_back.events.equals(full.events)
