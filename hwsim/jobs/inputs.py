"""The input pipeline of a training rank, shared by the data-parallel and 3D-parallel jobs.

A batch is read from the dataset's storage tier into the rank's host memory (a flow; small
random reads are IOPS-bound, see :meth:`System.route`), decoded on the host CPU's stream, and
copied to the device when the step needs it. A loader process keeps up to ``prefetch`` batches
ready ahead of the step (PyTorch DataLoader workers with ``prefetch_factor``); with
``prefetch: 0`` the step loads its batch itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator

import simpy

from hwsim.jobs.system import System

__all__ = ["DataPlan", "Loader"]


@dataclass(frozen=True)
class DataPlan:
    """Where a rank's batches come from: ``storage`` node, bytes per sample, request size."""

    storage: str | None          # graph node of the tier; None = data already in host memory
    sample_bytes: float
    request_bytes: float
    prefetch: int
    decode_s_per_sample: float


class Loader:
    """The input pipeline of one rank: device *device*, host memory *host*, CPU *cpu*,
    *samples* per batch, *batches* in all. :meth:`start` launches the prefetching loader;
    :meth:`next` (a generator to ``yield from``) waits for the next batch and copies it to the
    device (not when the device is the CPU itself)."""

    def __init__(self, system: System, data: DataPlan, *, job: str, rank: int, device: str,
                 host: str, cpu: str, samples: int, batches: int, on_cpu: bool = False) -> None:
        self.system, self.data, self.job, self.rank = system, data, job, rank
        self.device, self.host, self.cpu = device, host, cpu
        self.samples, self.batches, self.on_cpu = samples, batches, on_cpu
        self.queue: simpy.Store | None = None
        self._taken = 0

    def start(self) -> None:
        if self.data.prefetch > 0:
            self.queue = simpy.Store(self.system.env, capacity=self.data.prefetch)
            self.system.env.process(self._prefetch())

    def _prefetch(self) -> Generator:
        for i in range(self.batches):
            yield from self._load(i)
            yield self.queue.put(i)

    def _load(self, i: int) -> Generator:
        data, sys = self.data, self.system
        nbytes = self.samples * data.sample_bytes
        if data.storage is not None:
            yield sys.transfer(data.storage, self.host, nbytes, key=self.rank,
                               request_bytes=data.request_bytes, name=f"read.step{i}",
                               job=self.job, rank=self.rank, kind="storage")
        if data.decode_s_per_sample > 0:
            yield sys.device(self.cpu).host.run(
                self.samples * data.decode_s_per_sample, name=f"decode.step{i}", kind="host",
                job=self.job, rank=self.rank, category="host")

    def next(self, step: int) -> Generator:
        """Wait for the next batch (load it now without prefetch), then copy it to the device;
        *step* names the copy."""
        if self.queue is not None:
            yield self.queue.get()
        else:
            yield from self._load(self._taken)
        self._taken += 1
        nbytes = self.samples * self.data.sample_bytes
        if not self.on_cpu and nbytes > 0:
            yield self.system.transfer(self.host, self.device, nbytes, key=self.rank,
                                       name=f"h2d.step{step}", job=self.job, rank=self.rank,
                                       kind="copy")
