"""Device streams: FIFO queues of work on one device (compute, communication, copy...).

A stream runs one activity at a time, in the order submitted, like a CUDA stream; different
streams of a device run concurrently, so communication overlaps compute exactly where the job
puts them on different streams. Durations come from the caller (the roofline lives with the
device spec); the stream only knows time.
"""

from __future__ import annotations

from typing import Generator

import simpy

from hwsim.engine.recorder import Recorder

__all__ = ["Stream"]


class Stream:
    """One FIFO stream of a device; ``resource`` names it in traces (``"n0.gpu0/compute"``)."""

    def __init__(self, env: simpy.Environment, resource: str, recorder: Recorder | None = None,
                 kind: str = "compute") -> None:
        self.env = env
        self.resource = resource
        self.kind = kind
        self.recorder = recorder
        self._slot = simpy.Resource(env, capacity=1)
        self.busy_s = 0.0

    @property
    def busy(self) -> bool:
        return self._slot.count > 0

    def run(self, duration_s: float, *, name: str = "", kind: str | None = None, job: str = "",
            rank: int = -1, nbytes: float = 0.0, flops: float = 0.0,
            category: str = "compute", overhead_s: float = 0.0) -> simpy.Process:
        """Queue an activity of *duration_s*; the returned process ends when it has run.

        The first *overhead_s* of it (launch or dispatch overhead, included in *duration_s*) is
        recorded as a separate event of category ``"overhead"``.
        """
        if duration_s < 0 or not 0 <= overhead_s <= duration_s:
            raise ValueError(f"duration_s(={duration_s}) must be >= 0 and overhead_s(={overhead_s}) "
                             f"within [0, duration_s]")
        return self.env.process(self._run(duration_s, name, kind or self.kind, job, rank, nbytes,
                                          flops, category, overhead_s))

    def _run(self, duration_s: float, name: str, kind: str, job: str, rank: int, nbytes: float,
             flops: float, category: str, overhead_s: float) -> Generator:
        with self._slot.request() as req:
            yield req
            start = self.env.now
            yield self.env.timeout(duration_s)
            self.busy_s += duration_s
            rec = self.recorder
            if rec is not None:
                if overhead_s > 0:
                    rec.event(start, start + overhead_s, self.resource, kind, name, job, rank,
                              0.0, 0.0, "overhead")
                    start += overhead_s
                rec.event(start, self.env.now, self.resource, kind, name, job, rank, nbytes,
                          flops, category)

    def hold(self) -> simpy.resources.resource.Request:
        """Acquire the stream for an activity whose length the caller decides (e.g. a collective
        made of flows). Use as ``with stream.hold() as req: yield req; ...``."""
        return self._slot.request()
