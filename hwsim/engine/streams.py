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
    """One FIFO stream of a device; ``resource`` names it in traces (``"n0.gpu0/compute"``).
    ``slots`` > 1 makes it a pool of identical servers (a server's CPU cores): up to ``slots``
    activities run at once, the rest wait in FIFO order."""

    def __init__(self, env: simpy.Environment, resource: str, recorder: Recorder | None = None,
                 kind: str = "compute", slots: int = 1) -> None:
        self.env = env
        self.resource = resource
        self.kind = kind
        self.recorder = recorder
        self.slots = slots
        self._slot = simpy.Resource(env, capacity=slots)
        if recorder is not None and slots > 1:
            recorder.slots[resource] = slots
        self.busy_s = 0.0

    @property
    def busy(self) -> bool:
        return self._slot.count > 0

    def run(self, duration_s: float, *, name: str = "", kind: str | None = None, job: str = "",
            rank: int = -1, nbytes: float = 0.0, flops: float = 0.0,
            category: str = "compute") -> simpy.Process:
        """Queue an activity of *duration_s*; the returned process ends when it has run."""
        if duration_s < 0:
            raise ValueError(f"duration_s(={duration_s}) must be >= 0")
        return self.env.process(self._run(duration_s, name, kind or self.kind, job, rank, nbytes,
                                          flops, category))

    def _run(self, duration_s: float, name: str, kind: str, job: str, rank: int, nbytes: float,
             flops: float, category: str) -> Generator:
        with self._slot.request() as req:
            yield req
            start = self.env.now
            yield self.env.timeout(duration_s)
            self.busy_s += duration_s
            if self.recorder is not None:
                self.recorder.event(start, self.env.now, self.resource, kind, name, job, rank,
                                    nbytes, flops, category)

    def hold(self) -> simpy.resources.resource.Request:
        """Acquire the stream for an activity whose length the caller decides (e.g. a collective
        made of flows). Use as ``with stream.hold() as req: yield req; ...``."""
        return self._slot.request()
