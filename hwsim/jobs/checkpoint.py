"""Periodic checkpoints of a training job: what each rank saves, writing it to a storage tier
(synchronously, or staged in host memory and drained in the background), and reading it back.

**Size.** A rank saves its share of the model state as its memory breakdown holds it
(:func:`~hwsim.workloads.training_memory`): the weights in the training precision and, with
``include_optimizer``, the optimizer states, which for mixed precision include the fp32 master
weights (ZeRO's 2 + 12 bytes per parameter under Adam). Tensor and pipeline parallelism have
already split both. What data-parallel replicas hold in common is saved once, by replica 0: the
weights unless ZeRO-3 shards them, the optimizer states unless ZeRO >= 1 shards them (Megatron-LM
and DeepSpeed checkpoints: ``mp_rank_*`` / ``layer_*`` model files from data-parallel rank 0, one
``*_optim_states.pt`` per rank under ZeRO). A restore reads back what every rank holds: its
weights and, with ``include_optimizer``, its optimizer states.

**Timing.** ``sync`` (``torch.save`` of device tensors, DeepSpeed ``save_checkpoint``): at the
end of a step every rank copies its share to host memory over PCIe and writes it to the tier;
training resumes when the slowest rank's write is durable. ``async`` (PyTorch DCP
``async_save``, Megatron-LM ``--async-save``): the step stalls only for the device-to-host copy
into host memory, which must hold every rank's share at once; a background drain then writes it
to the tier while later steps run, sharing links and the tier with their traffic; a checkpoint
whose predecessor is still draining waits for it first. Every rank's transfers are flows on the
graph, one per rank, also where the job is folded (the tier sees every rank's writes); a write's
rate is capped by ``writer_bw`` when given (one process's serialisation and file write).

**Restore** (no failure happens in a steady-state run, so it is measured once, after the last
step, with nothing else running): every rank reads its share from the tier into host memory and
copies it to the device; ``restore_s`` is the slowest rank's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Generator, Sequence

if TYPE_CHECKING:  # annotations only: the plan is built without SimPy (hwsim validate)
    import simpy

    from hwsim.jobs.system import System

__all__ = ["CheckpointPlan", "Shard", "Checkpointer", "checkpoint_shards", "MODES"]

MODES = ("sync", "async")
"""How a checkpoint is written (see the module docstring)."""


@dataclass(frozen=True)
class Shard:
    """What global rank *rank* on *device* saves (``save_bytes``) and restores (``load_bytes``),
    staged in the host-memory node *host*, on the storage node *storage*."""

    rank: int
    device: str
    host: str
    storage: str
    save_bytes: float
    load_bytes: float


@dataclass(frozen=True)
class CheckpointPlan:
    """Checkpoints of a job: one :class:`Shard` per rank, taken after every ``every_steps``
    steps, in ``mode`` (``sync`` or ``async``). ``writer_bw`` (bytes/s) caps one rank's write
    and read (None: the path and the tier alone limit it); ``request_bytes`` is the I/O size
    at the tier. ``host_capacity`` maps host-memory nodes to bytes available for staging
    (``async`` checks that every rank's share fits)."""

    shards: tuple[Shard, ...]
    every_steps: int
    mode: str = "sync"
    writer_bw: float | None = None
    request_bytes: float = float(16 << 20)
    host_capacity: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; valid: {', '.join(MODES)}")
        if not isinstance(self.every_steps, int) or self.every_steps < 1:
            raise ValueError(f"every_steps={self.every_steps!r} must be a positive integer")
        if not self.shards:
            raise ValueError("a checkpoint needs at least one shard")
        if self.mode == "async":
            staged: dict[str, float] = {}
            for sh in self.shards:
                staged[sh.host] = staged.get(sh.host, 0.0) + sh.save_bytes
            for host, cap in self.host_capacity:
                if staged.get(host, 0.0) > cap:
                    raise ValueError(
                        f"async checkpoints stage {staged[host] / 1e9:.1f} GB in host memory "
                        f"{host!r}, which holds {cap / 1e9:.1f} GB; valid: mode: sync, or "
                        "include_optimizer: false, or more host memory")

    @property
    def total_bytes(self) -> float:
        """Bytes of one checkpoint, all ranks."""
        return sum(s.save_bytes for s in self.shards)

    @property
    def max_rank_bytes(self) -> float:
        return max(s.save_bytes for s in self.shards)


def checkpoint_shards(breakdowns: Sequence[dict[str, float]], devices: Sequence[str], *,
                      replica: Callable[[int], int], zero: int, include_optimizer: bool,
                      host: Callable[[str], str], storage: Callable[[str], str]
                      ) -> tuple[Shard, ...]:
    """One :class:`Shard` per rank: rank *r* on ``devices[r]`` holds ``breakdowns[r]`` (bytes by
    label: ``weights``, ``optimizer_states``) and is data-parallel replica ``replica(r)``;
    ``host(device)`` and ``storage(device)`` give its staging memory and tier. Replicated state
    is saved by replica 0 only (see the module docstring)."""
    out = []
    for r, (mem, dev) in enumerate(zip(breakdowns, devices)):
        weights = mem.get("weights", 0.0)
        states = mem.get("optimizer_states", 0.0) if include_optimizer else 0.0
        first = replica(r) == 0
        save = (weights if zero >= 3 or first else 0.0) + (states if zero >= 1 or first else 0.0)
        out.append(Shard(r, dev, host(dev), storage(dev), save, weights + states))
    return tuple(out)


class Checkpointer:
    """Runs a :class:`CheckpointPlan` for *job* on *system*. A job calls :meth:`after_step`
    (a generator to ``yield from``) once per step, from one process, when the step is over.
    After the run: ``saves`` holds ``(step, start_s, resume_s, durable_s)`` per checkpoint,
    ``stalls`` the ``(start_s, resume_s)`` intervals the training lost, ``restore_s`` the
    time to load the last checkpoint. ``record`` maps simulated ranks to their devices: the
    stall shows there as a ``checkpoint`` event of category ``storage``."""

    def __init__(self, system: System, plan: CheckpointPlan, job: str,
                 record: dict[int, str]) -> None:
        self.system, self.plan, self.job, self.record = system, plan, job, record
        self.env = system.env
        self.saves: list[tuple[int, float, float, float]] = []
        self.restore_s: float | None = None
        self._draining: simpy.Event | None = None

    def claim(self) -> None:
        """Claim, before the run, every channel a checkpoint can use (:meth:`System.claim`), so
        that no communicator takes those links for itself alone."""
        sysm, plan, owner = self.system, self.plan, ("flows", self.job)
        for sh in plan.shards:
            for src, dst, req in ((sh.device, sh.host, None), (sh.host, sh.storage, plan.request_bytes),
                                  (sh.storage, sh.host, plan.request_bytes), (sh.host, sh.device, None)):
                if src != dst:
                    sysm.claim(owner, sysm.route(src, dst, sh.rank, req)[0])

    @property
    def stalls(self) -> list[tuple[float, float]]:
        return [(a, b) for _, a, b, _ in self.saves]

    def due(self, step: int, steps: int) -> bool:
        """Whether a checkpoint follows *step* (0-based) of *steps*: every ``every_steps``, and
        after the last step when none fell inside the simulated steps (to measure it)."""
        every = self.plan.every_steps
        return (step + 1) % every == 0 or (step == steps - 1 and steps < every)

    def after_step(self, step: int, steps: int) -> Generator:
        """A checkpoint if one is due after *step*; after the last step, wait for the drain and
        measure a restore."""
        if self.due(step, steps):
            yield from self._save(step)
        if step == steps - 1:
            if self._draining is not None:
                yield self._draining
            t0 = self.env.now
            yield self.env.all_of([self.env.process(self._restore(sh)) for sh in self.plan.shards])
            self.restore_s = self.env.now - t0

    # -- processes ------------------------------------------------------------------------------
    def _save(self, step: int) -> Generator:
        env, plan = self.env, self.plan
        start = env.now
        if plan.mode == "sync":
            yield env.all_of([env.process(self._copy_then_write(step, sh))
                              for sh in plan.shards if sh.save_bytes > 0])
            self._stall(step, start, env.now)
            self.saves.append((step, start, env.now, env.now))
            return
        if self._draining is not None:  # the previous checkpoint must be durable first
            yield self._draining
        yield env.all_of([self._copy(step, sh, "d2h") for sh in plan.shards if sh.save_bytes > 0])
        resume = env.now
        self._stall(step, start, resume)
        index = len(self.saves)
        self.saves.append((step, start, resume, float("nan")))
        self._draining = env.process(self._drain(step, index))

    def _drain(self, step: int, index: int) -> Generator:
        yield self.env.all_of([self._write(step, sh) for sh in self.plan.shards
                               if sh.save_bytes > 0])
        s, a, b, _ = self.saves[index]
        self.saves[index] = (s, a, b, self.env.now)

    def _copy_then_write(self, step: int, sh: Shard) -> Generator:
        yield self._copy(step, sh, "d2h")
        yield self._write(step, sh)

    def _copy(self, step: int, sh: Shard, way: str) -> simpy.Event:
        src, dst, nbytes = ((sh.device, sh.host, sh.save_bytes) if way == "d2h"
                            else (sh.host, sh.device, sh.load_bytes))
        what = f"checkpoint.save.step{step}" if way == "d2h" else "checkpoint.restore"
        return self.system.transfer(src, dst, nbytes, key=sh.rank, name=f"{what}.{way}",
                                    job=self.job, rank=sh.rank, kind="checkpoint",
                                    category="storage")

    def _write(self, step: int, sh: Shard) -> simpy.Event:
        # a background drain blocks nothing: its own category ranks below every wait
        # (hwsim.analysis.bottleneck); a sync write is the step's storage I/O stall
        return self.system.transfer(sh.host, sh.storage, sh.save_bytes, key=sh.rank,
                                    request_bytes=self.plan.request_bytes,
                                    name=f"checkpoint.save.step{step}.write", job=self.job,
                                    rank=sh.rank, kind="checkpoint",
                                    category="storage" if self.plan.mode == "sync"
                                    else "checkpoint", max_rate=self.plan.writer_bw)

    def _restore(self, sh: Shard) -> Generator:
        if sh.load_bytes <= 0:
            return
        yield self.system.transfer(sh.storage, sh.host, sh.load_bytes, key=sh.rank,
                                   request_bytes=self.plan.request_bytes,
                                   name="checkpoint.restore.read", job=self.job, rank=sh.rank,
                                   kind="checkpoint", category="storage",
                                   max_rate=self.plan.writer_bw)
        yield self._copy(-1, sh, "h2d")

    def _stall(self, step: int, a: float, b: float) -> None:
        if b <= a:
            return
        rec = self.system.recorder
        for r, dev in self.record.items():
            rec.event(a, b, f"{dev}/checkpoint", "checkpoint", f"checkpoint.stall.step{step}",
                      self.job, r, 0.0, 0.0, "storage")
