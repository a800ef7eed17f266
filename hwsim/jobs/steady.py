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
``(m - m_sim) / P`` times (:meth:`hwsim.engine.recorder.Recorder.repeat`, on the events the
recorder held from the job's start), which is what simulating those micro-batches would have
recorded. If the check fails (a pattern that does not repeat
within the simulated periods, e.g. traffic of another kind that drifts), the job reports it and
the caller simulates the whole step instead.

Only the schedules' steady phase is skipped: warm-up, cool-down, the gradient reduction of the
last micro-batch and the optimizer are always simulated.
"""

from __future__ import annotations

import math
from typing import Sequence

from hwsim.jobs.schedules import Unit

__all__ = ["period_micro_batches", "simulated_micro_batches", "steady_range", "find_window",
           "SteadyState"]


def period_micro_batches(schedule: str, p: int, v: int) -> int:
    """Micro-batches per period of the steady phase: 1 for 1F1B, ``p`` interleaved; 0 when the
    schedule has no alternating phase (GPipe)."""
    if schedule == "interleaved" and v > 1:
        return p
    return 1 if schedule == "1f1b" or schedule == "interleaved" else 0


def simulated_micro_batches(schedule: str, p: int, m: int, v: int = 1) -> int:
    """Micro-batches to simulate for a step of *m*: the warm-up of stage 0, three periods of its
    steady phase under the interleaved schedule and four under 1F1B, and its cool-down, rounded
    to whole periods; *m* itself when that saves less than two periods or ``p == 1``."""
    per = period_micro_batches(schedule, p, v)
    if per == 0 or p < 2:
        return m
    warm_units = (p - 1) * 2 + (v - 1) * p if v > 1 else p - 1  # stage 0's warm-up forwards
    # steady periods: one to settle, the window, the one that checks it, and (1F1B, whose
    # periods cost one micro-batch) one more so that every stage's counterparts exist
    need = per * (math.ceil(warm_units / (v * per)) + (3 if v > 1 else 4))
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
    for i in range(a0, b0 - 2 * per_units + 1, per_units):
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


class SteadyState:
    """The steady-state part of :class:`~hwsim.jobs.parallel.ParallelTrainingJob` (a mixin: it
    uses the job's ``plan``, ``env``, ``system``, ``devices``, ``dps``, ``units`` and
    ``step_ends``). ``m_sim``: micro-batches each step simulates; ``periodic``: False once a
    step's steady phase did not repeat (the caller then simulates every micro-batch)."""

    def _steady_init(self) -> None:
        plan = self.plan
        self.m_sim = plan.micro_batches
        if plan.steady_state and plan.data is None and plan.checkpoint is None:
            self.m_sim = simulated_micro_batches(plan.schedule, plan.pp, plan.micro_batches,
                                                 plan.virtual_stages)
        self.periodic = True
        # per step: (window start, period, repeats, flows per period, busy per period by rank)
        self._windows: list[tuple[float, float, int, int, dict[int, float]]] = []
        self._spans: dict[tuple[int, int], list[list[float]]] = {}
        self._snaps: list[tuple[int, dict[int, float]]] = []

    @property
    def compressed(self) -> bool:
        """Whether each step simulates fewer micro-batches than it has."""
        return self.m_sim < self.plan.micro_batches

    def _unit_starts(self, s: int, d: int) -> None:
        """A unit of stage *s*, lane *d* starts now: its span opens (its end is set when it
        ends); on stage 0 of the first lane, the counters a period adds to are read."""
        now = self.env.now
        self._spans.setdefault((s, d), []).append([now, now])
        if s == 0 and d == self.dps[0]:
            self._snaps.append((self.system.net.flows_finished,
                                {r: dev.compute.busy_s for r, dev in self.devices.items()}))

    def _steady_window(self) -> None:
        """After a compressed step: find its repeating period and keep what repeating it needs
        (:meth:`advance`), or mark the run not periodic."""
        plan = self.plan
        per = period_micro_batches(plan.schedule, plan.pp, plan.virtual_stages)
        units = 2 * per * plan.virtual_stages
        found = find_window(self.units, self._spans, units)
        if found is None:
            self.periodic = False
            return
        i, start, period = found
        (f0, b0), (f1, b1) = self._snaps[i], self._snaps[i + units]
        times = (plan.micro_batches - self.m_sim) // per
        self._windows.append((start, period, times, f1 - f0, {r: b1[r] - b0[r] for r in b0}))

    def advance(self) -> float:
        """After the run: repeat every step's verified period as often as the micro-batches not
        simulated need (records, step ends, flow count, stream busy time) and return the time
        added to the run. Only when :attr:`periodic`."""
        net, total = self.system.net, 0.0
        for start, period, times, flows, busy in reversed(self._windows):
            shift = self.system.recorder.repeat(start, period, times)
            self.step_ends = [[e + shift if e >= start + period else e for e in ends]
                              for ends in self.step_ends]
            net.flows_finished += times * flows
            for r, b in busy.items():
                self.devices[r].compute.busy_s += times * b
            total += shift
        self._windows = []
        return total
