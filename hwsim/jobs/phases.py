"""A collective's phases run as flows (:func:`~hwsim.jobs.collectives.recipe`), driven by event
callbacks rather than a SimPy process of their own.

A phase starts its flows together (:meth:`FlowNetwork.transfer_all`: one event when the last
one has arrived), then pays ``steps`` pipeline overheads (:func:`~hwsim.jobs.nccl.overhead`,
from the flows' own durations), then the next phase starts. A communicator runs thousands of
collectives a step: what is the same every time (each flow's checked path, its resource name,
its bytes) is worked out once (:func:`compile_phases`).
"""

from __future__ import annotations

from typing import Callable, Generator

import simpy

from hwsim.jobs.nccl import Phase, overhead
from hwsim.jobs.system import System

__all__ = ["compile_phases", "PhaseRun", "run_phases"]


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
    """Runs compiled phases (:func:`compile_phases`) from now; calls *on_end* (no arguments)
    when the last phase's overheads are paid. Flow events are named ``<name>.phase<i>``."""

    __slots__ = ("env", "net", "phases", "job", "name", "on_end", "i")

    def __init__(self, system: System, phases: list[tuple], job: str, name: str,
                 on_end: Callable[[], None]) -> None:
        self.env, self.net = system.env, system.net
        self.phases, self.job, self.name, self.on_end = phases, job, name, on_end
        self.i = 0
        self._next()

    def _next(self, _event: object = None) -> None:
        if self.i == len(self.phases):
            self.on_end()
            return
        self.net.transfer_all(self.phases[self.i][2], name=f"{self.name}.phase{self.i}",
                              job=self.job, then=self._arrived)

    def _arrived(self, flows: list) -> None:
        phase, hop, _ = self.phases[self.i]
        steps = phase.steps
        durs = [(f.end_s - f.start_s) / steps for f in flows]
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
