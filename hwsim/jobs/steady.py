"""Periodic steady state of a pipeline-parallel step: simulate until the pattern repeats, then
advance the rest exactly.

With identical micro-batches, a 1F1B step is periodic in its steady phase (each stage alternates
one forward and one backward) with a period of one micro-batch, an interleaved step with a
period of ``p`` micro-batches (the ``p x v`` forward and backward units of one round of every
chunk). A step of ``m`` micro-batches is then simulated with fewer, ``m_sim``
(:func:`simulated_micro_batches`): warm-up, at least three periods of the steady phase, and
cool-down. After the step the job checks the periodicity on what happened
(:func:`find_window`): every unit of every simulated stage that starts in two consecutive
periods starts, and ends, exactly one period after its counterpart of the period before, and is
a steady-phase unit. The records of the first such period are then repeated
``(m - m_sim) / P`` times (:func:`hwsim.engine.repeat.repeat_window`), which is what simulating
those micro-batches would have recorded. If the check fails (a pattern that does not repeat
within the simulated periods, e.g. traffic of another kind that drifts), the job reports it and
the caller simulates the whole step instead.

Only the schedules' steady phase is skipped: warm-up, cool-down, the gradient reduction of the
last micro-batch and the optimizer are always simulated.
"""

from __future__ import annotations

import math
from typing import Sequence

from hwsim.jobs.schedules import Unit

__all__ = ["period_micro_batches", "simulated_micro_batches", "steady_range", "find_window"]


def period_micro_batches(schedule: str, p: int, v: int) -> int:
    """Micro-batches per period of the steady phase: 1 for 1F1B, ``p`` interleaved; 0 when the
    schedule has no alternating phase (GPipe)."""
    if schedule == "interleaved" and v > 1:
        return p
    return 1 if schedule == "1f1b" or schedule == "interleaved" else 0


def simulated_micro_batches(schedule: str, p: int, m: int, v: int = 1) -> int:
    """Micro-batches to simulate for a step of *m*: the warm-up of stage 0, four periods of its
    steady phase (one to settle, two to check, one after them) and its cool-down, rounded to
    whole periods; *m* itself when that saves less than two periods or ``p == 1``."""
    per = period_micro_batches(schedule, p, v)
    if per == 0 or p < 2:
        return m
    warm_units = (p - 1) * 2 + (v - 1) * p if v > 1 else p - 1  # stage 0's warm-up forwards
    need = per * (math.ceil(warm_units / (v * per)) + 4)
    return need if need + 2 * per <= m else m


def steady_range(units: Sequence[Unit]) -> tuple[int, int]:
    """Indices ``[a, b)`` of a stage's alternating phase: from the forward before its first
    backward to the backward after its last forward, ending before the first unit that is a
    chunk's last backward (where the gradient reduction starts)."""
    first_b = next(i for i, u in enumerate(units) if u[0] == "B")
    last_f = max(i for i, u in enumerate(units) if u[0] == "F")
    last_b: dict[int, int] = {}
    for i, (phase, _, c) in enumerate(units):
        if phase == "B":
            last_b[c] = i
    return first_b - 1, min(last_f + 2, min(last_b.values()))


def find_window(units: Sequence[Sequence[Unit]], spans: dict[tuple[int, int], list],
                per_units: int, tol: float = 1e-9) -> tuple[int, float, float] | None:
    """``(index, start, period)`` of the first period of the steady phase that repeats (its
    first unit's index on stage 0 of the first lane, its start time, its length), or None.

    *units[s]*: stage *s*'s schedule; *spans[(s, lane)]*: ``(start, end)`` of each of its units
    in order, as run; *per_units*: units per stage per period (``2 v P``). The period is read
    on stage 0 of the first lane; the window is accepted when, for every stage and lane, each
    unit that starts in the window is in its stage's steady phase, has a unit one period later
    in that phase, and that unit starts and ends exactly one period later (to *tol* of the
    step's time); and so does each unit of the period after the window whose counterpart is
    still in the steady phase."""
    lanes = sorted({d for _, d in spans})
    ranges = [steady_range(u) for u in units]
    ref = spans[(0, lanes[0])]
    a0, b0 = ranges[0]
    for i in range(a0, b0 - 3 * per_units + 1, per_units):
        start = ref[i][0]
        period = ref[i + per_units][0] - start
        if period <= 0:
            continue
        eps = tol * max(1.0, ref[-1][1])
        if all(_repeats(spans[(s, d)], ranges[s], start, period, per_units, eps)
               for s in range(len(units)) for d in lanes):
            return i, start, period
    return None


def _repeats(span: list, rng: tuple[int, int], start: float, period: float, per: int,
             eps: float) -> bool:
    a, b = rng
    seen = 0
    for i, (t0, t1) in enumerate(span):
        if t0 < start - eps or t0 >= start + 2 * period - eps:
            continue
        if i < a or i + per >= b:
            if t0 < start + period - eps:  # the window itself must repeat whole
                return False
            continue  # the second period is checked as far as the steady phase reaches
        n0, n1 = span[i + per]
        if abs(n0 - t0 - period) > eps or abs(n1 - t1 - period) > eps:
            return False
        seen += 1
    return seen > 0
