"""Bulk data movement between tiers and sites: each transfer is one or more parallel flows
(``streams``) that start at a given time and share every link and storage channel they cross
with whatever else runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator

from hwsim.units import format_quantity

if TYPE_CHECKING:  # the plan is built without the engine (hwsim validate)
    from hwsim.engine import OutOfCapacity
    from hwsim.jobs.system import System

__all__ = ["TransferPlan", "TransferJob"]


@dataclass(frozen=True)
class TransferPlan:
    """One transfer: graph nodes *src* and *dst*, bytes, start time, I/O request size, streams."""

    name: str
    src: str
    dst: str
    size_bytes: float
    start_s: float = 0.0
    request_bytes: float = 1 << 20
    streams: int = 1


def _no_room(p: TransferPlan, err: OutOfCapacity) -> str:
    """Why transfer *p* cannot start: its destination's capacity, what else holds it, and the
    bytes it needs (``does not fit: ...``, as a job that does not fit in device memory)."""
    held = err.needed_bytes - p.size_bytes
    free = max(0.0, err.capacity_bytes - held)
    return (f"does not fit: {p.dst} holds {format_quantity(err.capacity_bytes, 'B')} "
            f"({format_quantity(free, 'B')} free), the transfer needs "
            f"{format_quantity(p.size_bytes, 'B')}")


class TransferJob:
    """Runs transfers; ``results`` maps name to (start_s, end_s) once done, and ``failed`` to the
    reason (``does not fit: ...``) when the destination tier cannot hold the data: a result,
    not a crash (the run's summary then has ``fits`` false and ``hwsim run`` exits 3).
    ``limits`` maps name to what bounds the transfer alone: ``"storage"`` or
    ``"comm:<link class>"`` (the narrowest part of its path)."""

    def __init__(self, system: System, plans: list[TransferPlan], job: str = "transfer") -> None:
        self.system = system
        self.plans = plans
        self.job = job
        self.results: dict[str, tuple[float, float]] = {}
        self.failed: dict[str, str] = {}
        self.limits = {p.name: system.route(p.src, p.dst, 0, p.request_bytes)[3] for p in plans}

    def start(self) -> None:
        for i, p in enumerate(self.plans):
            self.system.env.process(self._run(i, p))

    def _run(self, i: int, p: TransferPlan) -> Generator:
        from hwsim.engine import OutOfCapacity

        env, sysm = self.system.env, self.system
        yield env.timeout(p.start_s)
        if sysm.is_storage(p.dst):
            try:
                sysm.storage(p.dst)[1].allocate(p.size_bytes, p.name)
            except OutOfCapacity as err:
                self.failed[p.name] = _no_room(p, err)
                return
        start = env.now
        part = p.size_bytes / p.streams
        flows = [sysm.transfer(p.src, p.dst, part, key=i * 1000 + s,
                               request_bytes=p.request_bytes, name=p.name, job=self.job, rank=i,
                               kind="storage" if sysm.is_storage(p.src) or sysm.is_storage(p.dst) else "flow")
                 for s in range(p.streams)]
        yield env.all_of(flows)
        self.results[p.name] = (start, env.now)
