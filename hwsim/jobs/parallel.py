"""Megatron-style 3D-parallel (tensor x pipeline x data) training as SimPy processes.

Per step and data-parallel replica, the pipeline schedule runs (:func:`run_pipeline`). A unit
(forward or backward of one micro-batch of one model chunk) runs the chunk's ops on the compute
stream of every tensor-parallel rank of its stage, in lock-step: an op whose ``comm`` is a TP
collective runs over the stage's TP group (blocking, or with ``comm_async`` overlapping the next
compute op only). Activations and their gradients cross stage boundaries by send/recv between the
corresponding TP ranks of adjacent stages. During each chunk's last backward the gradients are
reduced over the data-parallel group of corresponding ranks in buckets as they are produced
(Megatron-LM ``overlap_grad_reduce``): all-reduce, or reduce-scatter under ZeRO-1/2 (the
distributed optimizer), which then updates its ``1/dp`` shard and all-gathers the parameters.
ZeRO-3 / FSDP instead all-gathers each block's parameters before its forward and backward
(prefetching the next block's) and reduce-scatters each block's gradients after its backward.
Each stage's optimizer runs as soon as its own reduction is done; a step ends when every rank
has finished (the global gradient-norm all-reduce of Megatron synchronises them).

Idle compute time between units is not recorded (the bottleneck sweep counts uncovered time as
idle); the warm-up and cool-down gaps of every stage are recorded as events of kind and category
``bubble`` on its compute streams (kept out of stream utilization).

The work of one (stage, DP replica) is one set of processes driving all its TP ranks, so a
symmetry-folded run can later simulate one replica per stage and account the others' traffic.
"""

from __future__ import annotations

from typing import Generator

import simpy

from hwsim.engine import OutOfCapacity
from hwsim.jobs.collectives import CollectiveGroup, sendrecv
from hwsim.jobs.parallel_plan import (IMPLEMENTED_ZERO, TP_COMMS, ParallelPlan,
                                      parallel_plan)
from hwsim.jobs.pipeline import run_pipeline
from hwsim.jobs.schedules import Unit, schedule
from hwsim.jobs.system import Device, System
from hwsim.jobs.training import slowest_step_ends
from hwsim.workloads.memory import storage_bytes

__all__ = ["ParallelPlan", "ParallelTrainingJob", "parallel_plan", "IMPLEMENTED_ZERO"]


class ParallelTrainingJob:
    """Runs a :class:`ParallelPlan` on a :class:`System`. After ``env.run()``, ``step_ends[r]``
    lists the end time of every step of global rank *r*; ``fits`` is False (``oom`` holds the
    error) when a device cannot hold its stage, and then no step runs. ``breakdown`` is the
    memory of the most loaded stage by label (bytes per device), ``stage_breakdowns`` every
    stage's."""

    def __init__(self, system: System, plan: ParallelPlan) -> None:
        self.system, self.plan, self.env = system, plan, system.env
        self.devices: list[Device] = [system.device(n) for n in plan.devices]
        self.step_ends: list[list[float]] = [[] for _ in plan.devices]
        self.oom: OutOfCapacity | None = None
        self.stage_breakdowns = [dict(m) for m in plan.memory]
        self.breakdown = dict(max(self.stage_breakdowns, key=lambda m: sum(m.values())))
        self.units = schedule(plan.schedule, plan.pp, plan.micro_batches, plan.virtual_stages)
        # index, per stage, of each chunk's last backward unit (where the DP reduction starts)
        self._last_b: list[dict[int, int]] = []
        for units in self.units:
            last = {}
            for i, (phase, _, c) in enumerate(units):
                if phase == "B":
                    last[c] = i
            self._last_b.append(last)
        self._groups: dict[tuple, CollectiveGroup] = {}
        self._pending: dict[tuple[int, int], list[simpy.Event]] = {}
        self._span: dict[tuple[int, int], list[float]] = {}

    @property
    def fits(self) -> bool:
        return self.oom is None

    @property
    def step_times(self) -> list[float]:
        """Wall time of each step (slowest rank)."""
        ends = slowest_step_ends(self.step_ends)
        return [b - a for a, b in zip([0.0] + ends[:-1], ends)]

    def start(self) -> None:
        plan = self.plan
        try:
            for s in range(plan.pp):
                for d in range(plan.dp):
                    for t in range(plan.tp):
                        dev = self.devices[plan.rank(s, d, t)]
                        for label, nbytes in self.stage_breakdowns[s].items():
                            dev.memory.allocate(nbytes, label)
        except OutOfCapacity as err:
            self.oom = err
            return
        self.env.process(self._run())

    # -- groups ---------------------------------------------------------------------------------
    def _group(self, kind: str, s: int, i: int, op: str) -> CollectiveGroup:
        """The TP group of (stage *s*, replica *i*) or the DP group of (stage *s*, TP rank *i*),
        one communicator per collective op."""
        key = (kind, s, i, op)
        g = self._groups.get(key)
        if g is None:
            p = self.plan
            devs = ([p.device(s, i, t) for t in range(p.tp)] if kind == "tp"
                    else [p.device(s, d, i) for d in range(p.dp)])
            alg = p.collective if op == "allreduce" else "auto"
            g = self._groups[key] = CollectiveGroup(self.system, devs, p.job, op=op,
                                                    algorithm=alg)
        return g

    def _tp_comm(self, s: int, d: int, op, key: tuple) -> simpy.Event:
        g = self._group("tp", s, d, TP_COMMS[op.comm])
        ev = None
        for t in range(self.plan.tp):
            ev = g.join(key, t, op.comm_bytes, op.name)
        return ev

    def _dp_reduce(self, step: int, s: int, d: int, c: int, nb: int, nbytes: float) -> None:
        op = "allreduce" if self.plan.zero == 0 else "reduce_scatter"
        for t in range(self.plan.tp):
            g = self._group("dp", s, t, op)
            self._pending[(s, d)].append(g.join((step, c, nb), d, nbytes,
                                                f"dp.{op}.step{step}.c{c}.b{nb}"))

    # -- processes ------------------------------------------------------------------------------
    def _run(self) -> Generator:
        plan, env = self.plan, self.env
        for step in range(plan.steps):
            t0 = env.now
            tails: list[simpy.Process] = []
            self._pending = {(s, d): [] for s in range(plan.pp) for d in range(plan.dp)}
            self._span = {}
            pipes = []
            for d in range(plan.dp):
                def run(s: int, unit: Unit, d: int = d) -> simpy.Process:
                    return self._start_unit(step, s, d, unit, tails)

                def send(src: int, dst: int, unit: Unit, d: int = d) -> simpy.Event | None:
                    return self._send(step, src, dst, d, unit)
                def wait(s: int, unit: Unit, index: int, a: float, b: float, d: int = d) -> None:
                    if index > 0:  # the first unit's wait is the warm-up, recorded after the step
                        self._bubble(step, s, d, a, b, "wait")
                pipes.append(run_pipeline(env, self.units, plan.virtual_stages, run, send, wait))
            yield env.all_of(pipes)
            yield env.all_of(tails)
            self._bubbles(step, t0)

    def _start_unit(self, step: int, s: int, d: int, unit: Unit, tails: list) -> simpy.Process:
        idx = self._span.setdefault((s, d), [self.env.now, 0.0, 0])
        proc = self.env.process(self._unit(step, s, d, unit, idx[2]))
        idx[2] += 1
        if idx[2] == len(self.units[s]):
            tails.append(self.env.process(self._tail(step, s, d, proc)))
        return proc

    def _unit(self, step: int, s: int, d: int, unit: Unit, index: int) -> Generator:
        plan, env = self.plan, self.env
        phase, mb, c = unit
        model = plan.stages[s][c]
        last = phase == "B" and self._last_b[s].get(c) == index and plan.dp > 1
        if plan.zero == 3 and plan.dp > 1 and model.blocks:
            yield from self._fsdp_unit(step, s, d, unit, model, last)
        else:
            ops = model.forward if phase == "F" else model.backward
            yield from self._ops(step, s, d, unit, ops, 0, last)
        self._span[(s, d)][1] = env.now

    def _ops(self, step: int, s: int, d: int, unit: Unit, ops, base: int,
             reduce: bool) -> Generator:
        """Run *ops* on the stage's TP ranks; with *reduce*, start bucketed DP gradient
        reductions as gradients become ready."""
        plan, env = self.plan, self.env
        ranks = [plan.rank(s, d, t) for t in range(plan.tp)]
        waiting: simpy.Event | None = None
        bucket, nb = 0.0, 0
        for i, op in enumerate(ops):
            if op.comm:
                if plan.tp == 1 or op.comm_bytes <= 0:
                    continue
                if waiting is not None:
                    yield waiting
                    waiting = None
                ev = self._tp_comm(s, d, op, (step, unit, base + i))
                if op.comm_async:
                    waiting = ev
                else:
                    yield ev
                continue
            yield env.all_of([self.devices[r].op(op.flops, op.bytes, plan.precision,
                                                 name=op.name, job=plan.job, rank=r)
                              for r in ranks])
            if waiting is not None:
                yield waiting
                waiting = None
            if reduce and op.grad_bytes > 0:
                bucket += op.grad_bytes
                if bucket >= plan.bucket_bytes:
                    self._dp_reduce(step, s, d, unit[2], nb, bucket)
                    bucket, nb = 0.0, nb + 1
        if waiting is not None:
            yield waiting
        if reduce and bucket > 0:
            self._dp_reduce(step, s, d, unit[2], nb, bucket)

    def _fsdp_unit(self, step: int, s: int, d: int, unit: Unit, model, last: bool
                   ) -> Generator:
        """ZeRO-3 / FSDP: all-gather each block's parameters before its forward and its
        backward (the next block's gather prefetched while this one computes, FSDP's default
        ``BACKWARD_PRE``/forward prefetch), reduce-scatter each block's gradients after its
        backward, every micro-batch (FSDP without ``no_sync``)."""
        plan = self.plan
        vb = storage_bytes(plan.precision)
        fwd = unit[0] == "F"
        blocks = list(model.blocks) if fwd else list(reversed(model.blocks))

        def gather(k: int) -> simpy.Event:
            return self.env.all_of([self._group("dp", s, t, "allgather").join(
                (step, unit, k), d, blocks[k].params * vb,
                f"dp.fsdp_allgather.{blocks[k].name}") for t in range(plan.tp)])
        nxt = gather(0)
        base = 0
        for k, block in enumerate(blocks):
            cur, nxt = nxt, gather(k + 1) if k + 1 < len(blocks) else None
            yield cur
            ops = block.forward if fwd else block.backward
            yield from self._ops(step, s, d, unit, ops, base, False)
            base += len(ops)
            grads = sum(op.grad_bytes for op in ops)
            if not fwd and grads > 0:
                for t in range(plan.tp):
                    g = self._group("dp", s, t, "reduce_scatter")
                    self._pending[(s, d)].append(g.join(
                        (step, unit, k), d, grads, f"dp.fsdp_reduce_scatter.{block.name}"))

    def _send(self, step: int, src: int, dst: int, d: int, unit: Unit) -> simpy.Event | None:
        plan = self.plan
        if plan.p2p_bytes <= 0:
            return None
        phase, mb, c = unit
        procs = []
        for t in range(plan.tp):
            a, b = plan.rank(src, d, t), plan.rank(dst, d, t)
            procs.append(self.env.process(sendrecv(
                self.system, plan.devices[a], plan.devices[b], plan.p2p_bytes, job=plan.job,
                name=f"p2p.{phase}.step{step}.mb{mb}.c{c}", ranks=[a, b], key=a)))
        return self.env.all_of(procs)

    def _tail(self, step: int, s: int, d: int, last_unit: simpy.Process) -> Generator:
        """After the stage's last unit: wait for its DP reduction, run the optimizer (on the
        ``1/dp`` shard under ZeRO), all-gather the updated parameters (ZeRO)."""
        plan, env = self.plan, self.env
        yield last_unit
        if self._pending[(s, d)]:
            yield env.all_of(self._pending[(s, d)])
        shard = plan.dp if plan.zero else 1
        ranks = [plan.rank(s, d, t) for t in range(plan.tp)]
        for model in plan.stages[s]:
            for op in model.optimizer:
                yield env.all_of([self.devices[r].op(op.flops / shard, op.bytes / shard,
                                                     plan.precision, name=op.name, job=plan.job,
                                                     rank=r) for r in ranks])
        if plan.zero in (1, 2) and plan.dp > 1:
            nbytes = sum(m.params for m in plan.stages[s]) * storage_bytes(plan.precision)
            yield env.all_of([self._group("dp", s, t, "allgather").join(
                step, d, nbytes, f"dp.allgather_params.step{step}") for t in range(plan.tp)])
        for r in ranks:
            self.step_ends[r].append(env.now)

    def _bubbles(self, step: int, t0: float) -> None:
        """Warm-up (step start to the stage's first unit) and cool-down (its last unit to the
        replica's last unit anywhere) gaps as ``bubble`` events on the compute streams; the
        waits in between are recorded as they happen (``pipeline.wait``)."""
        plan = self.plan
        for d in range(plan.dp):
            end = max(self._span[(s, d)][1] for s in range(plan.pp))
            for s in range(plan.pp):
                first, last, _ = self._span[(s, d)]
                for a, b, name in ((t0, first, "warmup"), (last, end, "cooldown")):
                    if b - a > 0:
                        self._bubble(step, s, d, a, b, name)

    def _bubble(self, step: int, s: int, d: int, a: float, b: float, name: str) -> None:
        """A ``bubble`` event from *a* to *b* on the compute stream of every TP rank of stage *s*
        of replica *d*."""
        plan, rec = self.plan, self.system.recorder
        for t in range(plan.tp):
            r = plan.rank(s, d, t)
            rec.event(a, b, f"{plan.devices[r]}/compute", "bubble",
                      f"pipeline.{name}.step{step}", plan.job, r, 0.0, 0.0, "bubble")
