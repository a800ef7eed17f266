"""Data-parallel training as SimPy processes.

Per rank and step: take the next batch from the input pipeline (a loader reads it from the
dataset's storage tier into host memory, decodes it on the host CPU, and keeps up to
``prefetch`` batches ready), copy it to the device (GPUs), run the forward and backward ops on the
compute stream, all-reduce gradients in buckets on the communication stream as backward produces
them (PyTorch DDP's overlap, 25 MiB buckets), wait for the last bucket, then run the optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Sequence

from hwsim.jobs.checkpoint import CheckpointPlan, Checkpointer
from hwsim.jobs.inputs import DataPlan, Loader
from hwsim.workloads import ModelOps, training_memory

if TYPE_CHECKING:  # the plan is built without SimPy and the engine (hwsim validate)
    import simpy

    from hwsim.engine import OutOfCapacity
    from hwsim.jobs.system import Device, System

__all__ = ["DataPlan", "TrainingPlan", "TrainingJob", "DDP_BUCKET_BYTES", "slowest_step_ends"]

DDP_BUCKET_BYTES = 25 * 2**20
"""PyTorch DistributedDataParallel's default gradient bucket (bucket_cap_mb=25)."""


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a training run needs, resolved against the graph.

    ``ranks`` are device nodes (one model replica each), ``hosts`` the host-memory node and
    ``cpus`` the CPU node serving each rank. ``model`` holds the ops of one rank's batch.
    ``steps`` are simulated; ``total_steps`` (when a budget is given) are extrapolated from them.
    Each step runs ``micro_batches`` micro-batches of ``model`` (gradient accumulation; the
    gradients are all-reduced during the last one's backward). ``memory`` is the per-device
    breakdown in bytes (default: :func:`hwsim.workloads.training_memory`). ``collective`` is the gradient
    all-reduce algorithm (see :mod:`hwsim.jobs.collectives`; ``auto`` chooses as NCCL does);
    ``closed_form`` as for :class:`~hwsim.jobs.parallel_plan.ParallelPlan`.
    ``step_overhead_s`` is host time per step outside the ops (framework loop, e.g. Keras
    ``fit``), run on the compute stream before the forward pass. ``speed`` overrides a rank's
    op-rate factor (default: the graph node's ``speed``, see :meth:`System.device`).
    ``checkpoint``: periodic checkpoints (:mod:`hwsim.jobs.checkpoint`), taken when every rank
    has ended the step. ``stack``: the software stack the job runs
    (:class:`~hwsim.catalog.stacks.StackProfile`: framework factors, attention kernel), applied
    to every rank's device (:meth:`Device.running`); None: the catalog figures as they are.
    """

    job: str
    model: ModelOps
    ranks: tuple[str, ...]
    hosts: tuple[str, ...]
    cpus: tuple[str, ...]
    precision: str
    optimizer: str
    steps: int
    micro_batches: int = 1
    total_steps: int | None = None
    data: DataPlan | None = None
    bucket_bytes: float = DDP_BUCKET_BYTES
    on_cpu: bool = False
    step_overhead_s: float = 0.0
    memory: dict[str, float] | None = None
    collective: str = "auto"
    speed: dict[str, float] = field(default_factory=dict)
    checkpoint: CheckpointPlan | None = None
    stack: Any = None
    closed_form: bool = True


def slowest_step_ends(step_ends: Sequence[Sequence[float]]) -> list[float]:
    """End of each step over all ranks (the slowest rank ends it), from per-rank end times;
    ranks with no end times (folded away, see :mod:`hwsim.jobs.parallel`) are skipped."""
    ran = [ends for ends in step_ends if ends]
    return [max(ends[i] for ends in ran) for i in range(len(ran[0]))] if ran else []


class TrainingJob:
    """Runs a :class:`TrainingPlan` on a :class:`System`. After ``env.run()``,
    ``step_ends[r]`` lists the end time of every step of rank *r*; ``fits`` is False (and
    ``oom`` holds the error) when a device's memory cannot hold the job, in which case no step
    runs."""

    def __init__(self, system: System, plan: TrainingPlan) -> None:
        from hwsim.jobs.communicator import CollectiveGroup

        self.system = system
        self.plan = plan
        self.env = system.env
        self.devices: list[Device] = [system.device(n, plan.speed.get(n)).running(plan.stack)
                                      for n in plan.ranks]
        self.step_ends: list[list[float]] = [[] for _ in plan.ranks]
        self.oom: OutOfCapacity | None = None
        self.breakdown = dict(plan.memory) if plan.memory is not None else training_memory(
            plan.model, precision=plan.precision, optimizer=plan.optimizer, dp=len(plan.ranks))
        self.group = CollectiveGroup(system, plan.ranks, plan.job, algorithm=plan.collective,
                                     closed_form=plan.closed_form)
        self.checkpoint = (None if plan.checkpoint is None else Checkpointer(
            system, plan.checkpoint, plan.job, dict(enumerate(plan.ranks))))
        self._arrived: dict[int, list] = {}
        self.loaders: dict[int, Loader | None] = {}   # rank -> its input pipeline

    @property
    def fits(self) -> bool:
        return self.oom is None

    def start(self) -> None:
        from hwsim.engine import OutOfCapacity

        try:
            for dev in self.devices:
                for label, nbytes in self.breakdown.items():
                    dev.memory.allocate(nbytes, label)
        except OutOfCapacity as err:
            self.oom = err
            return
        plan = self.plan
        if self.checkpoint is not None:
            self.checkpoint.claim()
        for r in range(len(self.devices)):
            loader = self.loaders[r] = None
            if plan.data is not None:
                loader = Loader(self.system, plan.data, job=plan.job, rank=r,
                                device=plan.ranks[r], host=plan.hosts[r], cpu=plan.cpus[r],
                                samples=plan.model.samples,
                                batches=plan.steps * plan.micro_batches, on_cpu=plan.on_cpu)
                loader.start()
                self.loaders[r] = loader
            self.env.process(self._rank(r, loader))

    # -- processes ------------------------------------------------------------------------------
    def _rank(self, r: int, loader: Loader | None) -> Generator:
        plan, env, dev = self.plan, self.env, self.devices[r]
        job, prec = plan.job, plan.precision
        model = plan.model
        for step in range(plan.steps):
            if plan.step_overhead_s > 0:
                yield dev.compute.run(plan.step_overhead_s, name="framework.step", kind="host",
                                      job=job, rank=r, category="overhead")
            pending: list[simpy.Event] = []
            for mb in range(plan.micro_batches):
                last = mb == plan.micro_batches - 1
                if loader is not None:
                    yield from loader.next(step)
                for op in model.forward:
                    yield dev.op(op.flops, op.bytes, op.dtype or prec, name=op.name, job=job,
                                 rank=r, shape=op.shape)
                bucket, nb = 0.0, 0
                for op in model.backward:
                    yield dev.op(op.flops, op.bytes, op.dtype or prec, name=op.name, job=job,
                                 rank=r, shape=op.shape)
                    if not last or len(plan.ranks) == 1:
                        continue  # DDP no_sync: gradients accumulate locally until the last
                    bucket += op.grad_bytes
                    if bucket >= plan.bucket_bytes:
                        pending.append(self.group.join((step, nb), r, bucket,
                                                       f"dp.allreduce.step{step}.b{nb}"))
                        bucket, nb = 0.0, nb + 1
                if last and bucket > 0 and len(plan.ranks) > 1:
                    pending.append(self.group.join((step, nb), r, bucket,
                                                   f"dp.allreduce.step{step}.b{nb}"))
            if pending:
                yield env.all_of(pending)
            for op in model.optimizer:
                yield dev.op(op.flops, op.bytes, op.dtype or prec, name=op.name, job=job,
                             rank=r)
            self.step_ends[r].append(env.now)
            ck = self.checkpoint
            if ck is not None and (ck.due(step, plan.steps) or step == plan.steps - 1):
                yield self._step_over(step)

    def _step_over(self, step: int) -> simpy.Event:
        """An event that succeeds when every rank has ended *step* and the checkpoint work after
        it (if any) is done: the ranks meet, as at the barrier of a checkpoint save."""
        seen = self._arrived.setdefault(step, [0, self.env.event()])
        seen[0] += 1
        if seen[0] == len(self.devices):
            done = self.env.process(self.checkpoint.after_step(step, self.plan.steps))
            done.callbacks.append(lambda _ev: seen[1].succeed())
        return seen[1]
