"""The parts of serving fast-forward in closed form (hwsim/jobs/serving_ff.py): a run's pieces
against the iterations one by one, the iteration an arrival falls in, the iteration log a run
is recorded in (hwsim/jobs/serving_log.py); and what the run around it does: the heap frozen
while a run runs (hwsim/heap.py), the recorder's rows at once, the benchmarks' child
environment (benchmarks/_procenv.py)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.engine import Recorder
from hwsim.jobs.serving_cost import StageCost
from hwsim.jobs.serving_ff import _first_at_or_after, piece_end, run_pieces
from hwsim.jobs.serving_log import LOG_COLUMNS, IterationLog
from scenario_edit import edited
from test_serving_ff import BASE

KERNEL = st.tuples(st.floats(1.0, 96.0), st.floats(0.0, 1e9), st.floats(0.0, 1e9),
                   st.floats(0.0, 1e6))
BY = st.lists(st.tuples(st.sampled_from(["compute", "memory", "overhead", "comm"]),
                        st.floats(0.0, 1e-2)), max_size=4, unique_by=lambda x: x[0])


@settings(max_examples=300, deadline=None)
@given(BY, st.lists(KERNEL, min_size=1, max_size=2), st.floats(0.0, 1e-4),
       st.floats(0.25, 2.0), st.integers(1, 10 ** 6), st.integers(1, 64),
       st.integers(1, 3000))
def test_a_runs_pieces_are_its_iterations(by, kernels, floor, speed, pairs0, n, count):
    """Each piece holds one bound, its iterations take ``a + b * x`` seconds (the cost at each
    iteration's context total), and its end is their sum."""
    cost = StageCost(0.01, 1e12, 1e9, tuple(by), 0.0, "tp_nvlink", tuple(kernels),
                     flop_rate=5e14, byte_rate=3e12, speed=speed, floor=floor)
    pieces = run_pieces(cost, float(pairs0), n, count)
    assert [first for first, _, _ in pieces] == list(
        np.cumsum([0] + [k for _, k, _ in pieces])[:-1])
    assert sum(k for _, k, _ in pieces) == count
    for first, k, p in pieces:
        a, b = p[0], p[6] * n
        xs = range(k) if k <= 50 else [*range(25), *range(k - 25, k)]
        total = 0.0
        for x in xs:
            exact = cost.at(float(pairs0) + (first + x) * n)
            assert exact[3] == p[3]
            assert a + b * x == pytest.approx(exact[0], rel=1e-12, abs=1e-18)
        if k <= 50:
            for x in range(k):
                total += cost.at(float(pairs0) + (first + x) * n)[0]
            assert piece_end(0.0, a, b, k) == pytest.approx(total, rel=1e-12)
    # a second look finds the same pieces, with what the first one saw (StageCost.reach)
    assert run_pieces(cost, float(pairs0), n, count) == pieces


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 1e4), st.floats(1e-6, 1.0), st.floats(0.0, 1e-3),
       st.integers(1, 500), st.floats(0.0, 1.0))
def test_the_iteration_an_arrival_falls_in(ts, a, b, count, where):
    """The first iteration of a piece that ends at or after *t*: the quadratic's root checked
    against the ends, the last one when *t* is past the piece."""
    t = ts + where * 1.1 * piece_end(0.0, a, b, count)
    ends = [piece_end(ts, a, b, x) for x in range(1, count + 1)]
    want = next((x for x, e in enumerate(ends, 1) if e >= t), count)
    assert _first_at_or_after(ts, a, b, count, t) == want


def test_the_log_expands_runs_between_iterations_in_order():
    """Rows and runs come out in the order recorded, a run's blocks growing by the blocks its
    iterations open (by position modulo the block size), its other columns its batch's."""
    log = IterationLog()
    log.append((0.0, 1.0, 3, 3072, 200, 3072, True, 0, 0))
    first = piece_end(1.0, 0.5, 0.25, 3)
    log.run(((1.0, 3, 0.5, 0.25), (first, 2, 1.0, 0.0)), 3, 3, 210, False, (2, 0, 1, 0),
            piece_end(first, 1.0, 0.0, 2), 213)
    log.run(((9.0, 2, 0.1, 0.0),), 1, 1, 7, True, None, piece_end(9.0, 0.1, 0.0, 2), 7)
    log.append((9.2, 9.5, 1, 1024, 70, 1024, False, 4, 2))
    assert len(log) == 9
    rows = log.tuples()
    assert rows[0] == (0.0, 1.0, 3, 3072, 200, 3072, True, 0, 0)
    assert rows[-1] == (9.2, 9.5, 1, 1024, 70, 1024, False, 4, 2)
    run = rows[1:6]
    ends = [piece_end(1.0, 0.5, 0.25, x) for x in range(1, 4)]
    ends += [piece_end(ends[-1], 1.0, 0.0, x) for x in (1, 2)]
    assert [r[1] for r in run] == ends
    assert [r[0] for r in run] == [1.0, *ends[:-1]]
    assert [r[4] for r in run] == [210, 212, 212, 213, 213]  # opens 2, 0, 1, 0, then 2
    assert {r[2:4] + r[5:] for r in run} == {(3, 3, 0, False, 0, 0)}
    assert [r[:5] for r in rows[6:8]] == [(9.0, 9.1, 1, 1, 7), (9.1, 9.2, 1, 1, 7)]
    cols = log.columns()
    assert list(cols) == list(LOG_COLUMNS)
    assert [c.dtype.kind for c in cols.values()] == list("ffiiiibii")
    assert log[3] == rows[3] and list(log) == rows
    # the totals the summary reads, kept as the iterations came
    dur = np.array([r[1] - r[0] for r in rows])
    assert log.busy == pytest.approx(dur.sum())
    assert log.batch_busy == pytest.approx(sum(r[2] * d for r, d in zip(rows, dur)))
    assert log.blocked_busy == pytest.approx(sum(d for r, d in zip(rows, dur) if r[6]))
    assert log.used_max == max(r[4] for r in rows) == 213


def test_an_empty_log_and_one_without_runs():
    log = IterationLog()
    assert len(log) == 0 and log.tuples() == []
    assert all(len(c) == 0 for c in log.columns().values())
    log.append((0.5, 0.75, 2, 2, 9, 0, False, 0, 0))
    assert log.tuples() == [(0.5, 0.75, 2, 2, 9, 0, False, 0, 0)]


def test_the_heap_is_frozen_only_while_the_simulation_runs():
    """Objects made before the run are left out of collections during it, and given back after
    (also when something else froze objects: then nothing is done)."""
    seen = []
    from hwsim.jobs import serving

    orig = serving.ServingJob._schedule

    def schedule(self, r):
        seen.append(gc.get_freeze_count())
        return orig(self, r)
    s = edited(BASE, {"workload.arrivals.requests": 5})
    serving.ServingJob._schedule = schedule
    try:
        assert gc.get_freeze_count() == 0
        hwsim.run(s)
        assert gc.get_freeze_count() == 0 and min(seen) > 0
        seen.clear()
        gc.freeze()
        before = gc.get_freeze_count()
        try:
            hwsim.run(s)
            # (frozen objects that die leave the count: it only falls)
            assert 0 < gc.get_freeze_count() <= before and max(seen) <= before
        finally:
            gc.unfreeze()
    finally:
        serving.ServingJob._schedule = orig


def test_event_rows_are_events():
    a, b = Recorder(), Recorder()
    rows = [(0.0, 1.0, f"n0.gpu{i}/compute", "compute", "iteration", "j", 0, 5.0, 7.0, "memory")
            for i in range(4)]
    for row in rows:
        a.event(*row)
    b.event_rows(rows)
    assert a.events == b.events


def test_the_benchmarks_children_get_a_private_bytecode_cache(monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from _procenv import bytecode_note, child_env
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    with child_env() as env:
        cache = env["PYTHONPYCACHEPREFIX"]
        assert "PYTHONDONTWRITEBYTECODE" not in env and os.path.isdir(cache)
        assert env["PATH"] == os.environ["PATH"]
    assert not os.path.exists(cache)
    with child_env(inherit=True) as env:
        assert env == dict(os.environ)
    assert "PYTHONDONTWRITEBYTECODE=1" in bytecode_note(True)
    assert bytecode_note(False) == "private cache, warmed"
