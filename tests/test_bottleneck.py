"""Bottleneck attribution: hand-made event frames with exact answers, filtering, invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.analysis.bottleneck import bottleneck, bottleneck_label, critical_path_breakdown
from hwsim.analysis.result import BOTTLENECK_COLUMNS, EVENT_COLUMNS


def _ev(rows):
    """rows: (start, end, category[, job[, rank]])."""
    out = []
    for r in rows:
        start, end, cat = r[:3]
        job = r[3] if len(r) > 3 else "j0"
        rank = r[4] if len(r) > 4 else 0
        out.append((start, end, "res", "op", "x", job, rank, 0.0, 0.0, cat))
    return pd.DataFrame(out, columns=list(EVENT_COLUMNS))


def _secs(bd: pd.DataFrame) -> dict[str, float]:
    return dict(zip(bd["category"], bd["seconds"]))


def test_compute_overlapping_comm_counts_as_compute():
    bd = critical_path_breakdown(_ev([(0, 4, "compute"), (1, 6, "comm:nvlink")]))
    assert _secs(bd) == pytest.approx({"compute": 4.0, "comm:nvlink": 2.0})
    assert list(bd.columns) == list(BOTTLENECK_COLUMNS)
    assert bd["share"].sum() == pytest.approx(1.0)


def test_storage_stall_between_two_compute_ops_counts_as_storage():
    bd = critical_path_breakdown(_ev([(0, 2, "compute"), (2, 3.5, "storage"),
                                      (3.5, 5, "compute"), (0, 5, "host")]))
    assert _secs(bd) == pytest.approx({"compute": 3.5, "storage": 1.5})


def test_idle_gaps_are_uncovered_time():
    bd = critical_path_breakdown(_ev([(0, 1, "compute"), (3, 4, "memory")]))
    assert _secs(bd) == pytest.approx({"compute": 1.0, "memory": 1.0, "idle": 2.0})
    assert bd.iloc[0]["category"] == "idle"  # sorted by seconds descending


def test_priority_order_over_all_categories():
    cats = ["bubble", "host", "storage", "comm:ethernet", "overhead", "memory", "compute"]
    # nested intervals: category i is active on [i, 20 - i]; the innermost wins there
    rows = [(i, 20 - i, c) for i, c in enumerate(cats)]
    bd = critical_path_breakdown(_ev(rows))
    want = {c: 2.0 for c in cats[:-1]}
    want["compute"] = 20 - 2 * 6
    assert _secs(bd) == pytest.approx(want)
    assert bd["share"].sum() == pytest.approx(1.0)


def test_memory_beats_overhead_beats_comm():
    bd = critical_path_breakdown(_ev([(0, 3, "comm:pcie"), (0, 2, "overhead"), (0, 1, "memory")]))
    assert _secs(bd) == pytest.approx({"memory": 1.0, "overhead": 1.0, "comm:pcie": 1.0})


def test_comm_classes_most_active_events_win_then_name():
    rows = [(0, 4, "comm:wan"), (0, 2, "comm:nvlink"), (0, 2, "comm:nvlink"),
            (2, 3, "comm:infiniband"),   # 1 vs 1 with wan on [2, 3): the name decides
            (3, 4, "comm:pcie"), (3, 4, "comm:pcie")]
    bd = critical_path_breakdown(_ev(rows))
    assert _secs(bd) == pytest.approx({"comm:nvlink": 2.0, "comm:infiniband": 1.0,
                                       "comm:pcie": 1.0})
    # alphabetical alone would pick infiniband over nvlink on [0, 2) and wan nowhere
    rows = [(0, 2, "comm:wan"), (0, 2, "comm:wan"), (0, 2, "comm:ethernet")]
    assert _secs(critical_path_breakdown(_ev(rows))) == pytest.approx({"comm:wan": 2.0})


def test_filter_by_rank_and_job():
    ev = _ev([(0, 2, "compute", "a", 0), (2, 4, "comm:nvlink", "a", 0),
              (0, 4, "compute", "a", 1), (0, 8, "storage", "b", 0)])
    assert _secs(critical_path_breakdown(ev, job="a", rank=0)) == pytest.approx(
        {"compute": 2.0, "comm:nvlink": 2.0})
    assert _secs(critical_path_breakdown(ev, job="a", rank=1)) == pytest.approx({"compute": 4.0})
    # all ranks of job a: rank 1 computes while rank 0 communicates
    assert _secs(critical_path_breakdown(ev, job="a")) == pytest.approx({"compute": 4.0})
    assert _secs(critical_path_breakdown(ev, job="b")) == pytest.approx({"storage": 8.0})
    assert _secs(critical_path_breakdown(ev)) == pytest.approx({"compute": 4.0, "storage": 4.0})
    assert _secs(critical_path_breakdown(ev, rank=[0])) == pytest.approx(
        {"compute": 2.0, "comm:nvlink": 2.0, "storage": 4.0})


def test_explicit_window_clips_events_and_counts_idle():
    ev = _ev([(0, 2, "compute"), (3, 5, "storage")])
    bd = critical_path_breakdown(ev, start_s=1.0, end_s=10.0)
    assert _secs(bd) == pytest.approx({"compute": 1.0, "storage": 2.0, "idle": 6.0})
    assert bd["share"].sum() == pytest.approx(1.0)
    bd = critical_path_breakdown(ev, start_s=20.0, end_s=21.0)
    assert _secs(bd) == pytest.approx({"idle": 1.0})


def test_empty_input_gives_empty_frame_with_columns():
    empty = pd.DataFrame(columns=list(EVENT_COLUMNS))
    bd = critical_path_breakdown(empty)
    assert bd.empty and list(bd.columns) == list(BOTTLENECK_COLUMNS)
    bd = critical_path_breakdown(_ev([(0, 1, "compute")]), rank=7)
    assert bd.empty and list(bd.columns) == list(BOTTLENECK_COLUMNS)
    assert bottleneck(bd) == ("idle", 0.0)
    # zero-length events only: a zero interval
    assert critical_path_breakdown(_ev([(1, 1, "compute")])).empty


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="ends before it starts"):
        critical_path_breakdown(_ev([(2, 1, "compute")]))
    with pytest.raises(ValueError, match="end_s"):
        critical_path_breakdown(_ev([(0, 1, "compute")]), start_s=2.0, end_s=1.0)
    with pytest.raises(ValueError, match="column"):
        critical_path_breakdown(pd.DataFrame({"start_s": [0.0], "end_s": [1.0]}))


def test_bottleneck_picks_largest_non_idle():
    bd = critical_path_breakdown(_ev([(0, 1, "compute"), (1, 4, "comm:infiniband"),
                                      (10, 11, "host")]))
    assert bottleneck(bd) == ("comm:infiniband", pytest.approx(3 / 11))
    only_idle = pd.DataFrame({"category": ["idle"], "seconds": [2.0], "share": [1.0]})
    assert bottleneck(only_idle) == ("idle", 1.0)
    # idle dominates but something else ran
    bd = critical_path_breakdown(_ev([(0, 1, "memory")]), start_s=0, end_s=100)
    assert bottleneck(bd) == ("memory", pytest.approx(0.01))


def test_bottleneck_labels():
    assert bottleneck_label("compute") == "compute (compute-bound)"
    assert bottleneck_label("memory") == "compute (memory-bound)"
    assert bottleneck_label("overhead") == "launch/dispatch overhead"
    assert bottleneck_label("comm:nvlink") == "communication over nvlink"
    assert bottleneck_label("storage") == "storage I/O"
    assert bottleneck_label("host") == "host/CPU work"
    assert bottleneck_label("idle") == "idle"


def _brute(ev: pd.DataFrame, lo: float, hi: float) -> dict[str, float]:
    """Reference: walk the elementary intervals one by one in Python."""
    prio = {"compute": 0, "memory": 1, "overhead": 2, "storage": 4, "host": 5, "bubble": 6}
    t = sorted({lo, hi, *np.clip(ev["start_s"], lo, hi), *np.clip(ev["end_s"], lo, hi)})
    out: dict[str, float] = {}
    for a, b in zip(t[:-1], t[1:]):
        act = ev[(ev["start_s"] <= a) & (ev["end_s"] > a)]["category"].tolist()
        if not act:
            win = "idle"
        else:
            def key(c):
                if c.startswith("comm:"):
                    return (3, -act.count(c), c)
                return (prio[c], 0, c)
            win = min(act, key=key)
        out[win] = out.get(win, 0.0) + (b - a)
    return {k: v for k, v in out.items() if v > 0}


_CATS = ["compute", "memory", "overhead", "comm:nvlink", "comm:pcie", "comm:ethernet", "storage",
         "host", "bubble"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 6), st.sampled_from(_CATS)),
                min_size=1, max_size=25))
def test_agrees_with_brute_force_and_shares_sum_to_one(rows):
    ev = _ev([(float(s), float(s + d), c) for s, d, c in rows])
    lo, hi = ev["start_s"].min(), ev["end_s"].max()
    bd = critical_path_breakdown(ev)
    if hi <= lo:
        assert bd.empty
        return
    assert _secs(bd) == pytest.approx(_brute(ev, lo, hi))
    assert bd["share"].sum() == pytest.approx(1.0)
    assert bd["seconds"].sum() == pytest.approx(hi - lo)
    assert (np.diff(bd["seconds"].to_numpy()) <= 0).all()


def test_deterministic_and_order_independent():
    rng = np.random.default_rng(1)
    n = 2000
    s = rng.uniform(0, 100, n)
    ev = pd.DataFrame({"start_s": s, "end_s": s + rng.exponential(0.5, n),
                       "category": rng.choice(_CATS, n), "job": "j", "rank": rng.integers(0, 4, n)})
    a = critical_path_breakdown(ev)
    b = critical_path_breakdown(ev.sample(frac=1.0, random_state=3))
    pd.testing.assert_frame_equal(a, b)
    assert a["share"].sum() == pytest.approx(1.0)
