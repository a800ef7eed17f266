"""Whole training runs with failures and checkpoints, at run scale.

The hybrid (docs/model.md, "Failures and whole runs"): the step-level simulation gives the
steady-state ``step_time_s``; this module then plays the run of ``total_steps`` steps as a
sequence of attempts without simulating steps one by one. Inputs are numbers only (no graph, no
SimPy): step time, step count, checkpoint interval and stall, restore, detection and rescheduling
times, and failure sources as rates for the whole job.

An attempt runs steps from the last committed checkpoint; every ``checkpoint_every_steps`` steps
it stalls ``checkpoint_stall_s`` and commits at the end of the stall (no checkpoint after the
last step). Failures arrive in wall time, each source with exponential inter-arrival times drawn
from the Generator passed in (a Poisson process per source; a failure can strike while the job
trains, checkpoints or recovers). A failure stops the job: the work since the last commit is
lost (``lost_s``), and the job is down for detection, rescheduling (waiting for a spare server,
or continuing on fewer data-parallel replicas), the restore and the first step's warm-up; a
failure during a recovery starts it again.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from hwsim.catalog.failures import COMPONENTS, failure_profile
from hwsim.exceptions import InfeasibleError

__all__ = ["FailureSource", "ScriptedFailure", "FailureSpec", "RunPlan", "FAILURE_COLUMNS",
           "HARDWARE", "failure_sources", "run_plan", "simulate_run", "young_interval_s",
           "daly_interval_s", "daly_expected_wall_s", "interval_sweep", "interval_keys",
           "MAX_SLOWDOWN", "MAX_FAILURES"]

HARDWARE = frozenset({"gpu", "node", "nic", "storage"})
"""Components whose failure takes a server out of the job (it is swapped for a spare or, under
``shrink``, its replicas are dropped); a link, switch or software failure restarts the job on the
same servers."""
FAILURE_COLUMNS = ("time_s", "component", "cause", "lost_s", "downtime_s", "step")
"""Columns of the per-failure table: wall time of the failure, component class, cause, work lost
(wall time since the last committed checkpoint), time until the job trained again (or until the
next failure, when one interrupts the recovery), steps committed when it struck."""
MAX_SLOWDOWN = 1000.0
"""A run that has not finished after this many times its failure-free time is reported as one
that does not finish (:class:`~hwsim.exceptions.InfeasibleError`)."""
MAX_FAILURES = 1_000_000
"""Nor one that has suffered this many failures (it would take minutes to play)."""


@dataclass(frozen=True)
class FailureSource:
    """Failures of *cause*, charged to *component*, arriving at *rate_per_s* for the whole job."""

    cause: str
    component: str
    rate_per_s: float


@dataclass(frozen=True)
class ScriptedFailure:
    """A failure of *component* at wall time *at_s* (counted under *cause*)."""

    at_s: float
    component: str
    cause: str


@dataclass(frozen=True)
class FailureSpec:
    """What a scenario asks for (``workload.failures``), in SI units: a named *profile* or
    per-unit *mtbf_s* by component class, *scripted* failures, the recovery times and policy, and
    checkpoint overrides (None: taken from the run's summary, else none)."""

    profile: str | None = None
    mtbf_s: dict[str, float] = field(default_factory=dict)
    scripted: tuple[ScriptedFailure, ...] = ()
    detect_s: float = 0.0
    reschedule_s: float = 0.0
    policy: str = "spares"
    spares: int | None = None
    repair_s: float | None = None
    checkpoint_every_steps: int | None = None
    checkpoint_stall_s: float | None = None
    restore_s: float | None = None


@dataclass(frozen=True)
class RunPlan:
    """One whole run, as numbers.

    ``startup_s`` is the first step's extra time (pipeline fill, first batch) over a steady
    step; it is paid again after every restart. ``checkpoint_every_steps`` None: no checkpoint,
    a failure loses everything. ``spares`` None: a spare server is always there. ``repair_s``:
    when a failed server is back (a spare again, or, under ``shrink``, its replicas rejoin at the
    next restart); None: never within the run. ``replicas_per_failure``: data-parallel replicas a
    lost server takes with it under ``shrink``.
    """

    step_time_s: float
    total_steps: int
    startup_s: float = 0.0
    checkpoint_every_steps: int | None = None
    checkpoint_stall_s: float = 0.0
    restore_s: float = 0.0
    detect_s: float = 0.0
    reschedule_s: float = 0.0
    sources: tuple[FailureSource, ...] = ()
    scripted: tuple[ScriptedFailure, ...] = ()
    policy: str = "spares"
    spares: int | None = None
    repair_s: float | None = None
    replicas: int = 1
    replicas_per_failure: int = 1

    @property
    def ideal_s(self) -> float:
        """Failure-free, checkpoint-free time of the run."""
        return self.startup_s + self.total_steps * self.step_time_s

    @property
    def mtbf_s(self) -> float | None:
        """Mean time between failures of the whole job (random sources only); None without."""
        rate = sum(s.rate_per_s for s in self.sources)
        return 1.0 / rate if rate > 0 else None


def failure_sources(spec: FailureSpec, counts: dict[str, float]) -> tuple[FailureSource, ...]:
    """The job's failure sources: a profile's causes at their per-unit rate times the job's units
    (``counts['gpu']`` or ``counts['node']``), or one source per component class of
    ``spec.mtbf_s`` at ``counts[class] / mtbf`` (``software``: one per job)."""
    if spec.profile is not None:
        p = failure_profile(spec.profile)
        return tuple(FailureSource(c.cause, c.component, c.rate_per_unit_s * counts[c.per])
                     for c in p.causes)
    return tuple(FailureSource(k, k, (1.0 if k == "software" else counts.get(k, 0)) / m)
                 for k, m in spec.mtbf_s.items() if k in COMPONENTS)


def run_plan(spec: FailureSpec, *, step_time_s: float, total_steps: int, ideal_s: float,
             counts: dict[str, float], replicas: int, summary: dict[str, Any]) -> RunPlan:
    """The :class:`RunPlan` of a run whose steady-state summary is *summary*: checkpoint interval,
    stall and restore from *spec* when it sets them, else from the summary keys
    ``checkpoint_every_steps``, ``checkpoint_stall_s`` and ``checkpoint_restore_s``. A lost
    server takes ``gpus per server / model-parallel size`` replicas (at least one)."""
    every = spec.checkpoint_every_steps or summary.get("checkpoint_every_steps")
    stall = spec.checkpoint_stall_s
    stall = summary.get("checkpoint_stall_s") if stall is None else stall
    restore = spec.restore_s
    restore = summary.get("checkpoint_restore_s") if restore is None else restore
    gpus, nodes = counts.get("gpu", 1), counts.get("node", 1)
    per_server = max(1, int(gpus // max(1, nodes)) // max(1, int(gpus // replicas)))
    return RunPlan(step_time_s=step_time_s, total_steps=total_steps,
                   startup_s=max(0.0, ideal_s - total_steps * step_time_s),
                   checkpoint_every_steps=int(every) if every else None,
                   checkpoint_stall_s=float(stall or 0.0), restore_s=float(restore or 0.0),
                   detect_s=spec.detect_s, reschedule_s=spec.reschedule_s,
                   sources=failure_sources(spec, counts), scripted=spec.scripted,
                   policy=spec.policy, spares=spec.spares, repair_s=spec.repair_s,
                   replicas=replicas, replicas_per_failure=per_server)


class _Arrivals:
    """Next failure over the random sources (one exponential clock each) and the script."""

    def __init__(self, plan: RunPlan, rng: np.random.Generator) -> None:
        self.sources, self.rng = plan.sources, rng
        self.clock = [self._draw(0.0, s.rate_per_s) for s in plan.sources]
        self.script = sorted(plan.scripted, key=lambda f: f.at_s)
        self.next_script = 0
        self.pending: tuple[float, str, str] | None = None

    def push_back(self, failure: tuple[float, str, str]) -> None:
        """Put back the failure just popped: the next :meth:`pop` returns it again."""
        self.pending = failure

    def _draw(self, now: float, rate: float) -> float:
        return now + self.rng.exponential(1.0 / rate) if rate > 0 else math.inf

    def pop(self) -> tuple[float, str, str]:
        if self.pending is not None:
            failure, self.pending = self.pending, None
            return failure
        i = int(np.argmin(self.clock)) if self.clock else -1
        t_random = self.clock[i] if i >= 0 else math.inf
        if self.next_script < len(self.script) and self.script[self.next_script].at_s <= t_random:
            f = self.script[self.next_script]
            self.next_script += 1
            return f.at_s, f.component, f.cause
        if i < 0 or math.isinf(t_random):
            return math.inf, "", ""
        s = self.sources[i]
        self.clock[i] = self._draw(t_random, s.rate_per_s)
        return t_random, s.component, s.cause


class _Pool:
    """Servers out of the job and when they come back: spares (``spares``) or lost replicas
    (``shrink``)."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.free = plan.spares
        self.out = 0  # replicas dropped (shrink)
        self.back: list[float] = []  # repair completion times
        self.replicas_min = plan.replicas

    def take(self, t_fail: float, ready: float) -> float:
        """A server failed at *t_fail*; the restart can begin at *ready* or later: when it may."""
        p = self.plan
        if p.repair_s is not None:
            heapq.heappush(self.back, t_fail + p.repair_s)
        if p.policy == "spares":
            if self.free is None:
                return ready
            self.free += self._returned(ready)
            if self.free == 0:
                if not self.back:
                    raise InfeasibleError("no spare server is left and failed servers are never "
                                          "repaired; give failures.repair or more spares")
                ready = heapq.heappop(self.back)
                self.free += 1 + self._returned(ready)
            self.free -= 1
            return ready
        self.out += p.replicas_per_failure
        self.out -= p.replicas_per_failure * self._returned(ready)
        while self.out >= p.replicas:
            if not self.back:
                raise InfeasibleError(f"all {p.replicas} data-parallel replicas are lost and "
                                      "failed servers are never repaired; give failures.repair "
                                      "or use policy: spares")
            ready = heapq.heappop(self.back)
            self.out -= p.replicas_per_failure * (1 + self._returned(ready))
        self.replicas_min = min(self.replicas_min, p.replicas - self.out)
        return ready

    def _returned(self, t: float) -> int:
        n = 0
        while self.back and self.back[0] <= t:
            heapq.heappop(self.back)
            n += 1
        return n

    def step_time(self, step_time_s: float) -> float:
        """Under ``shrink``, the same global batch on fewer replicas: each runs proportionally
        more micro-batches (communication and bubble are scaled alike: an approximation)."""
        return step_time_s * self.plan.replicas / (self.plan.replicas - self.out)


def simulate_run(plan: RunPlan, rng: np.random.Generator) -> tuple[dict[str, Any], list[tuple]]:
    """Play the whole run; returns the summary keys (docs/model.md, "Failures and whole runs")
    and one row per failure (:data:`FAILURE_COLUMNS`).

    Raises :class:`~hwsim.exceptions.InfeasibleError` when the run does not finish within
    :data:`MAX_SLOWDOWN` times its failure-free time, or cannot continue (no replica left).
    """
    total, ideal = plan.total_steps, plan.ideal_s
    every = plan.checkpoint_every_steps or total  # without checkpoints nothing commits early
    stall = plan.checkpoint_stall_s if plan.checkpoint_every_steps else 0.0
    arrivals, pool = _Arrivals(plan, rng), _Pool(plan)
    recover_s = plan.reschedule_s + plan.restore_s + plan.startup_s
    rows: list[list] = []
    t, lead, committed = 0.0, plan.startup_s, 0
    useful = stalls = 0.0
    checkpoints = 0
    while True:
        step = pool.step_time(plan.step_time_s)
        remaining = total - committed
        cycles = math.ceil(remaining / every) - 1  # checkpoints this attempt takes if unhurt
        cycle = every * step + stall
        done_at = t + lead + cycles * cycle + (remaining - cycles * every) * step
        t_fail, component, cause = arrivals.pop()
        if t_fail >= done_at:
            useful += lead + remaining * step
            stalls += cycles * stall
            checkpoints += cycles
            wall = done_at
            break
        n = min(max(0, math.floor((t_fail - t - lead) / cycle)), cycles) if cycle > 0 else 0
        committed += n * every
        useful += n * every * step + (lead if n else 0.0)  # a warm-up is lost with its steps
        stalls += n * stall
        checkpoints += n
        last_commit = t + lead + n * cycle if n else t
        rows.append([t_fail, component, cause, t_fail - last_commit, 0.0, committed])
        while True:  # recover; a failure during the recovery starts it again
            ready = t_fail + plan.detect_s
            if component in HARDWARE:
                ready = pool.take(t_fail, ready)
            ready += recover_s
            if ready > MAX_SLOWDOWN * ideal or len(rows) > MAX_FAILURES:
                raise _no_finish(plan)
            t_next, c_next, cause_next = arrivals.pop()
            if t_next >= ready:
                rows[-1][4] = ready - t_fail
                arrivals.push_back((t_next, c_next, cause_next))
                break
            # the interrupted recovery ends here; the next failure's row carries on
            rows[-1][4] = t_next - t_fail
            rows.append([t_next, c_next, cause_next, 0.0, 0.0, committed])
            t_fail, component = t_next, c_next
        t, lead = ready, 0.0
    lost = sum(r[3] for r in rows)
    down = sum(r[4] for r in rows)
    causes = list(dict.fromkeys([s.cause for s in plan.sources]
                                + [f.cause for f in plan.scripted]))
    out: dict[str, Any] = {
        "time_to_train_s": wall,
        "time_to_train_ideal_s": ideal,
        "goodput": ideal / wall if wall > 0 else 1.0,
        "effective_training_time_ratio": useful / wall if wall > 0 else 1.0,
        "failures_total": len(rows),
        **{f"failures_{c}": sum(1 for r in rows if r[2] == c) for c in causes},
        "lost_work_s": lost,
        "downtime_s": down,
        "checkpoints": checkpoints,
        "checkpoint_time_s": stalls,
        "replicas_min": pool.replicas_min,
    }
    out.update(interval_keys(plan))
    return out, [tuple(r) for r in rows]


def _no_finish(plan: RunPlan) -> InfeasibleError:
    mtbf = plan.mtbf_s
    return InfeasibleError(
        f"the run does not finish within {MAX_SLOWDOWN:g} times its failure-free time "
        f"({plan.ideal_s:.3g} s): failures every {mtbf:.3g} s on average" if mtbf else
        f"the run does not finish within {MAX_SLOWDOWN:g} times its failure-free time")


def interval_keys(plan: RunPlan) -> dict[str, Any]:
    """``checkpoint_interval_s`` (compute time between checkpoints), ``job_mtbf_s`` and the
    optimal intervals of Young and Daly for the plan's checkpoint cost and job MTBF (None where
    there is no failure rate or no checkpoint cost)."""
    mtbf, cost = plan.mtbf_s, plan.checkpoint_stall_s
    young = young_interval_s(cost, mtbf) if mtbf and cost > 0 else None
    every = plan.checkpoint_every_steps
    return {
        "checkpoint_interval_s": every * plan.step_time_s if every else None,
        "job_mtbf_s": mtbf,
        "checkpoint_interval_young_daly_s": young,
        "checkpoint_interval_daly_s": daly_interval_s(cost, mtbf) if young else None,
        "checkpoint_every_steps_young_daly": (max(1, round(young / plan.step_time_s))
                                              if young else None),
    }


def young_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Young's optimal compute time between checkpoints, ``sqrt(2 x checkpoint cost x MTBF)``
    (J. W. Young, "A first order approximation to the optimum checkpoint interval", CACM 1974)."""
    return math.sqrt(2.0 * checkpoint_s * mtbf_s)


def daly_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum (J. T. Daly, "A higher order estimate of the optimum
    checkpoint interval for restart dumps", FGCS 2006, eq. 37): ``sqrt(2dM)(1 + sqrt(d/2M)/3 +
    (d/2M)/9) - d`` for ``d < 2M``, else ``M``."""
    d, m = checkpoint_s, mtbf_s
    if d >= 2 * m:
        return m
    x = d / (2 * m)
    return math.sqrt(2 * d * m) * (1 + math.sqrt(x) / 3 + x / 9) - d


def daly_expected_wall_s(work_s: float, interval_s: float, checkpoint_s: float, restart_s: float,
                         mtbf_s: float) -> float:
    """Daly's expected wall time of *work_s* of computing split into segments of *interval_s*,
    each followed by a checkpoint, failures at rate 1/*mtbf_s* at any time (restarts included),
    each costing *restart_s* before the lost segment is redone (FGCS 2006, eq. 13):
    ``M e^(R/M) (e^((tau + d)/M) - 1) T_s / tau``."""
    m = mtbf_s
    return m * math.exp(restart_s / m) * math.expm1((interval_s + checkpoint_s) / m) * (
        work_s / interval_s)


def interval_sweep(plan: RunPlan, every_steps: Sequence[int], seeds: Sequence[int]
                   ) -> list[tuple[int, float]]:
    """Mean ``time_to_train_s`` over *seeds* for each checkpoint interval in *every_steps*;
    every interval sees the same seeds (common random numbers), so their differences are not
    seed noise. The Young/Daly check (docs/model.md) looks for the minimum."""
    out = []
    for k in every_steps:
        p = replace(plan, checkpoint_every_steps=int(k))
        walls = [simulate_run(p, np.random.default_rng(s))[0]["time_to_train_s"] for s in seeds]
        out.append((int(k), float(np.mean(walls))))
    return out
