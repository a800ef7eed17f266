"""A storage benchmark as MLPerf Storage runs it (DLIO): emulated accelerators fed by the input
pipeline of :mod:`hwsim.jobs.inputs`.

Each emulated accelerator is a rank with its own :class:`~hwsim.jobs.inputs.Loader` (its
``workers`` are DLIO's ``read_threads``); per step it takes its next batch from host memory and
"computes" for ``computation_time_s`` (DLIO sleeps), on a stream of its own. Accelerator
utilization (AU) is compute time over wall time; the storage tier, the host's threads and the
page cache are shared as in a training job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator

from hwsim.jobs.inputs import DataPlan, Loader

if TYPE_CHECKING:  # the plan is built without the engine (hwsim validate)
    from hwsim.engine import Stream
    from hwsim.jobs.system import System

__all__ = ["DataLoaderPlan", "DataLoaderJob"]


@dataclass(frozen=True)
class DataLoaderPlan:
    """``accelerators`` emulated on the server whose host memory is ``host`` and CPU ``cpu``;
    ``batch`` samples per step, ``steps`` steps, ``computation_time_s`` per step."""

    job: str
    accelerators: int
    batch: int
    computation_time_s: float
    steps: int
    host: str
    cpu: str
    data: DataPlan


class DataLoaderJob:
    """Runs a :class:`DataLoaderPlan`; after ``env.run()``, ``step_ends[r]`` lists the end of
    every step of accelerator *r* and ``compute_s[r]`` its compute time."""

    def __init__(self, system: System, plan: DataLoaderPlan) -> None:
        self.system, self.plan = system, plan
        self.step_ends: list[list[float]] = [[] for _ in range(plan.accelerators)]
        self.resources = [f"accel{r}" for r in range(plan.accelerators)]

    def start(self) -> None:
        from hwsim.engine import Stream

        p, sys = self.plan, self.system
        for r in range(p.accelerators):
            loader = Loader(sys, p.data, job=p.job, rank=r, device=p.host, host=p.host,
                            cpu=p.cpu, samples=p.batch, batches=p.steps, on_cpu=True)
            loader.start()
            stream = Stream(sys.env, f"{self.resources[r]}/compute", sys.recorder)
            sys.env.process(self._rank(r, loader, stream))

    def _rank(self, r: int, loader: Loader, stream: Stream) -> Generator:
        p = self.plan
        for step in range(p.steps):
            yield from loader.next(step)
            yield stream.run(p.computation_time_s, name=f"compute.step{step}", job=p.job,
                             rank=r, category="compute")
            self.step_ends[r].append(self.system.env.now)
