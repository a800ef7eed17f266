"""A collective's phases run as flows (:func:`~hwsim.jobs.collectives.recipe`), driven by event
callbacks rather than a SimPy process of their own.

A phase starts its flows together (:meth:`FlowNetwork.transfer_all`: one event when the last
one has arrived), then pays ``steps`` pipeline overheads (:func:`~hwsim.jobs.nccl.overhead`,
from the flows' own durations), then the next phase starts. A communicator runs thousands of
collectives a step: what is the same every time (each flow's checked path, its resource name,
its bytes) is worked out once (:func:`compile_phases`).

While no other flow uses its channels, a collective needs no flows: alone, each phase's flows
take their isolated durations (:func:`isolated_durations`: the same max-min filling, on a
scratch network) and the collective its closed-form time (:class:`Schedule`).
:func:`run_collective` reserves the channels (:meth:`FlowNetwork.reserve`) and waits that long;
if a flow starts on one of them meanwhile, the collective becomes flows at that instant: the
phases already over are kept, the phase in progress continues as flows of the bytes its flows
have left (:class:`PhaseRun` resumed), the later ones run as flows. The times are those of the
collective run as flows throughout (tests/test_reserved_collectives.py).
"""

from __future__ import annotations

from typing import Callable, Generator

import simpy

from hwsim.engine import FlowNetwork, Reservation
from hwsim.jobs.nccl import Phase, overhead
from hwsim.jobs.system import System

__all__ = ["compile_phases", "PhaseRun", "run_phases", "isolated_durations", "Schedule",
           "run_collective"]

_DONE = 1e-12
"""Relative tolerance under which a flow counts as over (its bytes, a time at a phase's end)."""


def compile_phases(system: System, phases: list[tuple[Phase, list[tuple]]], job: str,
                   claimed: bool = False) -> list[tuple[Phase, list[tuple], list[tuple]]]:
    """Each phase of a :func:`~hwsim.jobs.collectives.recipe` with the specs of its flows for
    :meth:`FlowNetwork.transfer_all` (a phase's ``steps`` move as one flow per sender and
    receiver). Claims the channels for ``("flows", job)`` (:meth:`System.claim`) unless
    *claimed*."""
    net = system.net
    out = []
    for phase, hop in phases:
        if not claimed:
            system.claim(("flows", job), [c for h in hop for c in h[0]])
        specs = [(f.nbytes * phase.steps, net.path(h[0], h[1]), None, 0.0, f"{f.src}->{f.dst}",
                  f.rank, h[4]) for f, h in zip(phase.flows, hop)]
        out.append((phase, hop, specs))
    return out


class PhaseRun:
    """Runs compiled phases (:func:`compile_phases`) from now, from phase *first*; calls *on_end*
    (no arguments) when the last phase's overheads are paid. Flow events are named
    ``<name>.phase<i>``. *resume* ``(t0, left, ends)``: phase *first* began at *t0* and is
    continued: its flows move the bytes *left* (None: the flow is over, at ``ends[j]``)."""

    __slots__ = ("env", "net", "phases", "job", "name", "on_end", "i", "t0", "ends")

    def __init__(self, system: System, phases: list[tuple], job: str, name: str,
                 on_end: Callable[[], None], first: int = 0,
                 resume: tuple[float, list, list] | None = None) -> None:
        self.env, self.net = system.env, system.net
        self.phases, self.job, self.name, self.on_end = phases, job, name, on_end
        self.i = first
        self.ends: list | None = None
        if resume is None:
            self._next()
            return
        self.t0, left, self.ends = resume
        specs = self.phases[first][2]
        going = [j for j, b in enumerate(left) if b is not None]
        self.net.transfer_all([(left[j], *specs[j][1:]) for j in going],
                              name=f"{self.name}.phase{first}", job=self.job, then=self._arrived,
                              resume=(self.t0, [specs[j][0] for j in going]))

    def _next(self, _event: object = None) -> None:
        if self.i == len(self.phases):
            self.on_end()
            return
        self.t0 = self.env.now
        self.net.transfer_all(self.phases[self.i][2], name=f"{self.name}.phase{self.i}",
                              job=self.job, then=self._arrived)

    def _arrived(self, flows: list) -> None:
        phase, hop, _ = self.phases[self.i]
        steps, t0 = phase.steps, self.t0
        if self.ends is None:
            durs = [(f.end_s - t0) / steps for f in flows]
        else:  # resumed: the flows over before it, then the ones it ran, in order
            ran = iter(flows)
            durs = [((e if e is not None else next(ran).end_s) - t0) / steps for e in self.ends]
            self.ends = None
        cost = steps * overhead(phase, hop, durs)
        self.i += 1
        if cost > 0:
            self.env.timeout(cost).callbacks.append(self._next)
        else:
            self._next()


def run_phases(system: System, phases: list[tuple[Phase, list[tuple]]], *, job: str,
               name: str, claimed: bool = False) -> Generator[simpy.Event, object, None]:
    """SimPy process body: the phases of a :func:`~hwsim.jobs.collectives.recipe` as flows,
    each phase then paying its pipeline overheads. *claimed*: the caller has already claimed
    the recipe's channels (:meth:`System.claim`)."""
    done = system.env.event()
    PhaseRun(system, compile_phases(system, phases, job, claimed), job, name,
             lambda: done.succeed())
    yield done


def _scratch(system: System, phase: Phase, hop: list[tuple], sizes: list[float]
             ) -> tuple[simpy.Environment, FlowNetwork, list[simpy.Event]]:
    """*phase*'s flows of *sizes* started at 0 on a scratch network that holds only their
    channels (in path order: the declaration order breaks the solver's ties)."""
    env = simpy.Environment()
    net = FlowNetwork(env)
    net.add_channels((c, system.net.channels[c].capacity, "")
                     for c in dict.fromkeys(c for h in hop for c in h[0]))
    evs = [net.transfer(b, h[0], 0.0, coefficients=h[1]) for b, h in zip(sizes, hop)]
    return env, net, evs


def isolated_durations(system: System, phase: Phase, hop: list[tuple]) -> list[float]:
    """Duration of each flow of one step of *phase* alone on the graph: the same max-min
    progressive filling as the run, on a scratch network holding only the phase's channels."""
    env, _, evs = _scratch(system, phase, hop, [f.nbytes for f in phase.flows])
    env.run()
    return [e.value.end_s - e.value.start_s for e in evs]


def _flow_row(start: float, end: float, spec: tuple, name: str, i: int, job: str) -> tuple:
    """The event :class:`PhaseRun` records for the flow of *spec* (:func:`compile_phases`) of
    phase *i*, from *start* to *end*."""
    return (start, end, spec[4], "flow", f"{name}.phase{i}", job, spec[5], spec[0], 0.0,
            spec[6])


class Schedule:
    """A compiled collective (:func:`compile_phases`) alone on its channels: each phase's start
    (``offsets``), flow time (``spans``: ``steps`` times its slowest flow's isolated step),
    overheads (``costs``), its flows' ends (``ends``) and mean load on each channel while they
    run (``phase_loads``, ``(start, end, channel, bytes/s)``), all from the collective's start;
    ``total`` seconds, the ``channels`` it uses. *phases* may come without their flows' specs
    (``(phase, hop, ())``: a recipe's, for its time and loads only). *durations*: each phase's
    :func:`isolated_durations`, known already (else worked out, and appended to it when it is an
    empty list)."""

    def __init__(self, system: System, phases: list[tuple],
                 durations: list[list[float]] | None = None) -> None:
        self.phases = phases
        known = durations if durations and len(durations) == len(phases) else None
        if durations is not None and known is None:
            durations.clear()
        self.offsets, self.spans, self.costs, self.ends = [], [], [], []
        self.phase_loads: list[list[tuple]] = []
        held: dict = {}
        t = 0.0
        for i, (phase, hop, specs) in enumerate(phases):
            for spec in specs:
                held.update((ch, None) for ch, _ in spec[1])
            if known:
                durs = known[i]
            else:
                durs = isolated_durations(system, phase, hop)
                if durations is not None:
                    durations.append(durs)
            span = phase.steps * max(durs, default=0.0)
            load: dict = {}
            if span > 0:
                for f, h in zip(phase.flows, hop):
                    for c in h[0]:
                        load[c] = load.get(c, 0.0) + f.nbytes * phase.steps * h[1][c] / span
            self.offsets.append(t)
            self.spans.append(span)
            self.ends.append([t + phase.steps * d for d in durs])
            self.phase_loads.append([(t, t + span, c, v) for c, v in load.items()])
            self.costs.append(phase.steps * overhead(phase, hop, durs))
            t += span + self.costs[-1]
        self.total = t
        self.loads = self.loads_before(len(phases))
        self.channels = list(held)

    def loads_before(self, i: int) -> list[tuple]:
        """The channel loads of phases ``< i``."""
        return [x for part in self.phase_loads[:i] for x in part]

    def rows(self, name: str, job: str, upto: int | None = None) -> list[tuple]:
        """The flow events (:meth:`~hwsim.engine.recorder.Recorder.event` fields, times from
        the collective's start) of phases ``< upto`` (default all), as :class:`PhaseRun`
        records them."""
        out = []
        for i, ((_, _, specs), off, ends) in enumerate(zip(self.phases[:upto], self.offsets,
                                                           self.ends)):
            out += [_flow_row(off, e, spec, name, i, job) for spec, e in zip(specs, ends)]
        return out


def run_collective(system: System, phases: list[tuple], schedule: Schedule, job: str,
                   name: str, on_end: Callable[[tuple | None], None]) -> None:
    """Run compiled *phases* from now: in closed form (*schedule*) while their channels carry
    no other flow, else, or from when one starts there, as flows (module docstring). Calls
    ``on_end(None)`` at the end of a run in closed form throughout (the schedule's flow events
    and loads are to be recorded), else ``on_end((loads, events))``: the channel loads and flow
    events to record that the flows did not (times from the start)."""
    run = _Reserved(system, phases, schedule, job, name, on_end)
    if schedule.total > 0 and system.net.reserve(run):
        system.env.timeout(schedule.total).callbacks.append(run.finish)
    else:
        PhaseRun(system, phases, job, name, lambda: on_end(((), ())))


class _Reserved(Reservation):
    """A collective waiting out its closed-form time on reserved channels
    (:func:`run_collective`)."""

    __slots__ = ("system", "phases", "schedule", "job", "name", "on_end", "start")

    def __init__(self, system: System, phases: list[tuple], schedule: Schedule, job: str,
                 name: str, on_end: Callable[[tuple | None], None]) -> None:
        self.channels = schedule.channels
        self.system, self.phases, self.schedule = system, phases, schedule
        self.job, self.name, self.on_end = job, name, on_end
        self.start = system.env.now

    def finish(self, _event: object = None) -> None:
        if self.channels is None:
            return  # turned into flows (or over when a flow came at its last instant)
        self.system.net.release(self)
        self.on_end(None)

    def contend(self) -> None:
        """A flow starts on a reserved channel (the reservation is released): go on as flows."""
        sched, env = self.schedule, self.system.env
        e = env.now - self.start
        for i, (off, span, cost) in enumerate(zip(sched.offsets, sched.spans, sched.costs)):
            if e < off + span * (1 - _DONE):  # in the phase's flows
                self._resume(i, e - off)
                return
            if e < (off + span + cost) * (1 - _DONE):  # in its overheads: the rest as flows
                done = (sched.loads_before(i + 1), sched.rows(self.name, self.job, i + 1))
                if i + 1 == len(self.phases):
                    env.timeout(off + span + cost - e).callbacks.append(
                        lambda _e: self.on_end(done))
                else:
                    env.timeout(off + span + cost - e).callbacks.append(
                        lambda _e: PhaseRun(self.system, self.phases, self.job, self.name,
                                            lambda: self.on_end(done), first=i + 1))
                return
        self.on_end(None)  # over at this instant: its end is due now

    def _resume(self, i: int, elapsed: float) -> None:
        """Phase *i* has run *elapsed* seconds alone: its flows' bytes left (from the same
        filling on a scratch network) continue as flows; what ran alone is recorded as the
        closed form records it (the flows over by now, the loads until now)."""
        sched, (phase, hop, specs) = self.schedule, self.phases[i]
        off = sched.offsets[i]
        sizes = [spec[0] for spec in specs]
        left: list = list(sizes)
        ends: list = [None] * len(sizes)
        loads = sched.loads_before(i)
        events = sched.rows(self.name, self.job, i)
        if elapsed > 0:
            env, net, evs = _scratch(self.system, phase, hop, sizes)
            env.run(until=elapsed)
            running = {f.id: f for f in net.settle()}  # ids in the order the flows started
            moved: dict = {}
            for j, (ev, h, spec) in enumerate(zip(evs, hop, specs)):
                f = running.get(j)
                if f is None or f.remaining <= sizes[j] * _DONE:  # over (now, at the latest)
                    left[j] = None
                    ends[j] = off + (ev.value.end_s if ev.processed else elapsed)
                    events.append(_flow_row(off, ends[j], spec, self.name, i, self.job))
                else:
                    left[j] = f.remaining
                for c in h[0]:
                    moved[c] = moved.get(c, 0.0) + (sizes[j] - (left[j] or 0.0)) * h[1][c]
            loads += [(off, off + elapsed, c, b / elapsed) for c, b in moved.items() if b > 0]
        start = self.start
        PhaseRun(self.system, self.phases, self.job, self.name,
                 lambda: self.on_end((loads, events)), first=i,
                 resume=(start + off, left, [None if e is None else start + e for e in ends]))
