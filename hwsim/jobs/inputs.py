"""The input pipeline of a training rank, shared by the data-parallel, 3D-parallel and
data-loader jobs; modelled on PyTorch's DataLoader (and DALI's CPU threads).

A rank has ``workers`` loader workers; worker *w* prepares whole batches *w*, *w + workers*, ...
in turn, and keeps at most ``prefetch`` of its batches outstanding (loading or ready, not yet
taken by the step: PyTorch's ``prefetch_factor``). Preparing a batch is

1. reading its bytes from the dataset's tier into host memory, one flow (random reads of
   ``request_bytes`` are IOPS-bound, sequential ones bandwidth-bound, see :meth:`System.route`),
   less what the server's page cache already holds (:class:`~hwsim.jobs.system.PageCache`: after
   the first epoch a dataset that fits in host memory is read from RAM);
2. decoding and augmenting it on one hardware thread of the server
   (``samples x decode_s_per_sample``): all workers of all ranks of a server share its threads
   (:meth:`System.cores`), so the CPU becomes the bottleneck when they are too few.

The step takes batches in order (:meth:`Loader.next`) and copies each to the device over the host
link. With ``prefetch: 0`` the step loads its batch itself (the main process loads, no workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator

if TYPE_CHECKING:  # annotations only: the plan is built without SimPy (hwsim validate)
    import simpy

    from hwsim.jobs.system import System

__all__ = ["DataPlan", "Loader"]


@dataclass(frozen=True)
class DataPlan:
    """Where a rank's batches come from and how they are prepared.

    ``storage``: graph node of the tier (None = data already in host memory); ``request_bytes``:
    I/O size at the tier; ``workers`` per rank, each keeping ``prefetch`` batches outstanding;
    ``decode_s_per_sample``: CPU time of one sample on one hardware thread; ``dataset_bytes`` and
    ``epoch_batches`` (batches per rank per epoch): the page-cache model, off when
    ``page_cache`` is False or ``epoch_batches`` is None.
    """

    storage: str | None
    sample_bytes: float
    request_bytes: float
    prefetch: int
    decode_s_per_sample: float
    workers: int = 1
    dataset_bytes: float = 0.0
    epoch_batches: float | None = None
    page_cache: bool = True
    page_cache_bytes: float | None = None


class Loader:
    """The input pipeline of one rank: device *device*, host memory *host*, CPU *cpu*,
    *samples* per batch, *batches* in all. :meth:`start` launches the workers; :meth:`next` (a
    generator to ``yield from``) waits for the next batch and copies it to the device (not when
    the device is the CPU itself)."""

    def __init__(self, system: System, data: DataPlan, *, job: str, rank: int, device: str,
                 host: str, cpu: str, samples: int, batches: int, on_cpu: bool = False) -> None:
        self.system, self.data, self.job, self.rank = system, data, job, rank
        self.device, self.host, self.cpu = device, host, cpu
        self.samples, self.batches, self.on_cpu = samples, batches, on_cpu
        self.cache = None
        if data.storage is not None and data.page_cache and data.epoch_batches:
            self.cache = system.page_cache(host, data.dataset_bytes, key=(job, data.storage),
                                            capacity=data.page_cache_bytes)
        self.waits: list[tuple[float, float]] = []   # (start, end) the step waited for a batch
        self._ready: list[simpy.Event] = []
        self._slots: list[simpy.Container] = []
        self._taken = 0

    def start(self) -> None:
        import simpy

        data, env = self.data, self.system.env
        if data.prefetch > 0:
            # the workers run ahead of the last step as far as their slots allow, as they would
            # in a longer run, so the last steps' batches do not load alone on a shared tier
            ahead = self.batches + data.workers * data.prefetch
            self._ready = [env.event() for _ in range(ahead)]
            self._slots = [simpy.Container(env, capacity=data.prefetch, init=data.prefetch)
                           for _ in range(data.workers)]
            for w in range(data.workers):
                env.process(self._worker(w))

    def _worker(self, w: int) -> Generator:
        for i in range(w, len(self._ready), self.data.workers):
            yield self._slots[w].get(1)
            yield from self._load(i)
            self._ready[i].succeed()

    def _load(self, i: int) -> Generator:
        data, sys = self.data, self.system
        nbytes = self.samples * data.sample_bytes
        if data.storage is not None:
            miss = nbytes
            if self.cache is not None:
                miss = nbytes * (1.0 - self.cache.hit_fraction(int(i // data.epoch_batches)))
            if miss > 0:
                yield sys.transfer(data.storage, self.host, miss, key=self.rank,
                                   request_bytes=data.request_bytes, name=f"read.step{i}",
                                   job=self.job, rank=self.rank, kind="storage")
                if self.cache is not None:
                    self.cache.add(miss)
        if data.decode_s_per_sample > 0:
            yield sys.cores(self.cpu).run(
                self.samples * data.decode_s_per_sample, name=f"decode.step{i}", kind="host",
                job=self.job, rank=self.rank, category="host")

    def next(self, step: int) -> Generator:
        """Wait for the next batch (load it now without prefetch), then copy it to the device;
        *step* names the copy."""
        i, t0 = self._taken, self.system.env.now
        if self._ready:
            yield self._ready[i]
            self._slots[i % self.data.workers].put(1)
        else:
            yield from self._load(i)
        if self.system.env.now > t0:
            self.waits.append((t0, self.system.env.now))
        self._taken += 1
        nbytes = self.samples * self.data.sample_bytes
        if not self.on_cpu and nbytes > 0:
            yield self.system.transfer(self.host, self.device, nbytes, key=self.rank,
                                       name=f"h2d.step{step}", job=self.job, rank=self.rank,
                                       kind="copy")
