"""Run a pipeline schedule as SimPy processes: one process per stage executes its units in order;
a unit starts when its stage is free and its input (activation or gradient from the neighbouring
stage) has arrived. What a unit costs and how a boundary transfer travels are callbacks, so the
same executor serves a closed-form test and a training job on a real graph."""

from __future__ import annotations

from typing import Callable, Generator

import simpy

from hwsim.jobs.schedules import Unit, downstream, upstream

__all__ = ["run_pipeline", "idle", "IDLE_REL"]

IDLE_REL = 1e-12
"""A stage is idle between two instants only if they differ by more than this fraction of the
later one (about 4,500 units in the last place of a float time): the end of one activity and the
start of the next that floating-point sums put a few ulps apart (1e-17 s at 0.1 s) are the same
instant, not a wait; a real pipeline wait is microseconds or more."""


def idle(a: float, b: float) -> bool:
    """Whether the interval from *a* to *b* (seconds) is a wait (:data:`IDLE_REL`)."""
    return b - a > IDLE_REL * abs(b)

RunUnit = Callable[[int, Unit], simpy.Event]
"""``run(stage, unit)`` starts the unit's work and returns an event that fires when it is done."""
Send = Callable[[int, int, Unit], simpy.Event | None]
"""``send(src_stage, dst_stage, unit)`` starts moving *unit*'s output; None means it is free."""
Wait = Callable[[int, Unit, int, float, float], None]
"""``wait(stage, unit, index, start_s, end_s)``: the stage sat idle waiting for *unit*'s input
(the *index*-th unit of the stage) from *start_s* to *end_s*: a pipeline bubble."""


def run_pipeline(env: simpy.Environment, units: list[list[Unit]], v: int, run: RunUnit,
                 send: Send | None = None, wait: Wait | None = None) -> simpy.Event:
    """Start every stage's process; the returned event fires when all stages have finished.
    *wait*, if given, hears of every interval a stage spent waiting for an input."""
    p = len(units)
    arrived: dict[tuple[int, Unit], simpy.Event] = {}

    def arrival(stage: int, unit: Unit) -> simpy.Event:
        key = (stage, unit)
        if key not in arrived:
            arrived[key] = env.event()
        return arrived[key]

    def forward_output(stage: int, unit: Unit) -> None:
        """Send *unit*'s output downstream; its consumer may start when it has arrived (a
        callback on the send, not a process: one per send adds up at scale)."""
        nxt = downstream(unit, stage, p, v)
        if nxt is None:
            return
        dst, consumer = nxt
        ev = send(stage, dst, unit) if send is not None and dst != stage else None
        if ev is None or ev.callbacks is None:  # nothing to send, or already delivered
            arrival(dst, consumer).succeed()
        else:
            ev.callbacks.append(lambda _ev: arrival(dst, consumer).succeed())

    def stage_proc(s: int) -> Generator:
        for index, unit in enumerate(units[s]):
            need = upstream(unit, s, p, v)
            if need is not None:
                t0 = env.now
                yield arrival(s, unit)
                if wait is not None and idle(t0, env.now):
                    wait(s, unit, index, t0, env.now)
            yield run(s, unit)
            if downstream(unit, s, p, v) is not None:
                forward_output(s, unit)
            elif unit[0] == "F":  # the last chunk's forward: its own backward may start
                arrival(s, ("B", unit[1], unit[2])).succeed()

    return env.all_of([env.process(stage_proc(s)) for s in range(p)])
