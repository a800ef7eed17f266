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

**Timelines.** Consecutive compute ops of a rank, and the tensor-parallel collectives between
them whose group is alone on its links (:meth:`CollectiveGroup.timing`: a closed form equal to
the flows alone), have known durations: they are laid out on a timeline and cost one SimPy
timeout, their events recorded when it ends. A unit breaks its timeline only where something
else must happen at that instant: a collective that shares links (flows), a gradient bucket
whose reduction starts.

**Symmetry folding** (``plan.fold``; DESIGN.md, scale by symmetry). The ranks of one pipeline
stage do identical work on identical hardware, so one (data-parallel replica 0, tensor rank 0)
represents the stage (so a plan whose devices differ, mixed hardware or stragglers, is never
folded: :func:`device_kinds`). Its collectives run over its real groups, joined on behalf of the
folded members, and every group of the same class that is not simulated (the TP groups of the other
replicas, the DP groups of the other TP ranks, the other pairs of a stage boundary) is a *peer*
whose identical traffic scales the coefficients of the simulated flows on the links they share
(:func:`~hwsim.jobs.collectives.fold_factors`). Events, memory and step ends exist for the
simulated ranks only.

Idle compute time between units is not recorded (the bottleneck sweep counts uncovered time as
idle); the warm-up and cool-down gaps of every stage are recorded as events of kind and category
``bubble`` on its compute streams (kept out of stream utilization).

"""

from __future__ import annotations

import weakref
from typing import Generator

import simpy

from hwsim.catalog.kernels import interfered
from hwsim.engine import OutOfCapacity
from hwsim.jobs.checkpoint import Checkpointer
from hwsim.jobs.communicator import CollectiveGroup
from hwsim.jobs.nccl import memo_key
from hwsim.jobs.inputs import Loader
from hwsim.jobs.offload_step import OffloadSteps
from hwsim.jobs.parallel_plan import (COMMS, IMPLEMENTED_ZERO, ParallelPlan, device_kinds,
                                      parallel_plan)
from hwsim.jobs.pipeline import idle, run_pipeline
from hwsim.jobs.schedules import Unit, schedule
from hwsim.jobs.steady import SteadyState
from hwsim.jobs.system import Device, System
from hwsim.jobs.timeline import program
from hwsim.jobs.training import slowest_step_ends
from hwsim.jobs.zero3 import Zero3Units
from hwsim.workloads.memory import storage_bytes

_OP_COSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per graph (:func:`~hwsim.jobs.nccl.memo_key`: one run, or every run on a shared graph), the
``(stack, seconds, bound)`` of each op on each device kind (:meth:`ParallelTrainingJob._costs`)."""

__all__ = ["ParallelPlan", "ParallelTrainingJob", "parallel_plan", "IMPLEMENTED_ZERO",
           "device_kinds"]


class ParallelTrainingJob(OffloadSteps, Zero3Units, SteadyState):
    """Runs a :class:`ParallelPlan` on a :class:`System`. After ``env.run()``, ``step_ends[r]``
    lists the end time of every step of global rank *r* (empty for ranks folded away);
    ``fits`` is False (``oom`` holds the error) when a device cannot hold its stage, and then no
    step runs. ``breakdown`` is the memory of the most loaded stage by label (bytes per device),
    ``stage_breakdowns`` every stage's."""

    def __init__(self, system: System, plan: ParallelPlan) -> None:
        self.system, self.plan, self.env = system, plan, system.env
        if plan.fold:
            kinds = device_kinds(system.graph, plan.devices)
            if len(kinds) > 1:
                raise ValueError(f"fold needs identical devices, but the plan's are "
                                 f"{', '.join(kinds)} (mixed hardware or stragglers): one rank "
                                 "cannot stand for the others; use fold=False")
        self.dps = [0] if plan.fold else list(range(plan.lanes))  # simulated lanes
        self.tps = [0] if plan.fold else list(range(plan.tp))
        self.simulated = [plan.rank(s, d, t) for s in range(plan.pp) for d in self.dps
                          for t in self.tps]
        self.devices: dict[int, Device] = {r: system.device(plan.devices[r]).running(plan.stack)
                                           for r in self.simulated}
        self.step_ends: list[list[float]] = [[] for _ in plan.devices]
        self.oom: OutOfCapacity | None = None
        self.stage_breakdowns = [dict(m) for m in plan.memory]
        self.breakdown = dict(max(self.stage_breakdowns, key=lambda m: sum(m.values())))
        self._steady_init()  # fewer micro-batches simulated, the rest advanced
        self.units = schedule(plan.schedule, plan.pp, self.m_sim, plan.virtual_stages)
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
        # op costs, shared by the runs on one shared graph (hwsim.jobs.system.share_graph)
        self._cost: dict[tuple, tuple] = _OP_COSTS.setdefault(memo_key(system), {})
        self._programs: dict[tuple, list[tuple]] = {}
        self._memo: dict[tuple, object] = {}
        self._busy: dict[tuple[int, int], list[tuple[float, float]]] = {}
        self._tp: dict[tuple, CollectiveGroup] = {}  # (stage, lane, op): its TP communicator
        self._debt: dict[tuple[int, int], float] = {}
        self._covered: dict[tuple[int, int], float] = {}
        self.comm_sms = getattr(plan.stack, "comm_sms", 0)  # no stack (a bare plan): none
        self.checkpoint = (None if plan.checkpoint is None else Checkpointer(
            system, plan.checkpoint, plan.job, {r: plan.devices[r] for r in self.simulated}))

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
            for r in self.simulated:
                s = r // (plan.lanes * plan.tp)
                for label, nbytes in self.stage_breakdowns[s].items():
                    self.devices[r].memory.allocate(nbytes, label)
        except OutOfCapacity as err:
            self.oom = err
            return
        if self.compressed:  # the steady phase's records are repeated after the run
            self.system.recorder.hold()
        self._claim()
        if self.checkpoint is not None:
            self.checkpoint.claim()
        self._loaders: dict[int, Loader] = {}
        if plan.data is not None:
            for lane in self.dps:
                r = plan.rank(0, lane, 0)
                mem, cpu, _ = plan.host_nodes[r]
                self._loaders[lane] = Loader(
                    self.system, plan.data, job=plan.job, rank=r, device=plan.devices[r],
                    host=mem, cpu=cpu, samples=plan.stages[0][0].samples,
                    batches=plan.steps * plan.micro_batches,
                    on_cpu=self.devices[r].spec.kind == "cpu")
                self._loaders[lane].start()
        self.loaders = {ld.rank: ld for ld in self._loaders.values()}   # rank -> input pipeline
        self.env.process(self._run())

    # -- groups ---------------------------------------------------------------------------------
    def _claim(self) -> None:
        """Create, before the run, every communicator the step can use, so that each claims its
        links (:meth:`System.claim`) before any collective asks whether it is alone."""
        p = self.plan
        kinds = {COMMS[op.comm] for chunks in p.stages for m in chunks
                 for op in m.forward + m.backward if op.comm}
        dp_ops = {0: ("allreduce",), 3: ("allgather", "reduce_scatter")}.get(
            p.zero, (self._dp_reduce_op(), "allgather"))
        for s in range(p.pp):
            for lane in self.dps:
                for t in self.tps:
                    for kind, op in kinds:
                        self._group(kind, s, lane, t, op)
                    for op in dp_ops:
                        self._group("dp", s, lane, t, op)
                    if p.ep > 1:
                        self._group("edp", s, lane, t, "allreduce" if p.zero == 0
                                    else "reduce_scatter")
                    if p.offload != "none":
                        nvme = p.offload == "nvme"
                        for kind in ("grads_d2h", "params_h2d") + (
                                ("states_read", "states_write") if nvme else ()) + (
                                ("params_fetch",) + (("params_read",) if nvme else ())
                                if p.offload_params else ()):
                            self._offload_pair(kind, p.rank(s, lane, t))
                    # stage boundaries; the last stage feeds the first only when interleaved
                    if p.pp > 1 and p.p2p_bytes > 0 and (s + 1 < p.pp or p.virtual_stages > 1):
                        self._pair(s, (s + 1) % p.pp, lane, t)
                        self._pair((s + 1) % p.pp, s, lane, t)

    def _gid(self, kind: str, lane: int, t: int) -> tuple:
        """Which group of *kind* the rank at (*lane*, *t*) of a stage belongs to:
        ``tp`` (its lane's TP ranks), ``cp`` (the cp ranks of its dp index), ``ep`` (``ep``
        consecutive dp indices), ``dp`` (every lane: dense gradients), ``edp`` (the dp indices
        holding the same experts, every cp index: expert gradients)."""
        p = self.plan
        d, c = divmod(lane, p.cp)
        if kind == "tp":
            return (lane,)
        if kind == "cp":
            return (d, t)
        if kind == "ep":
            return (d // p.ep, c, t)
        if kind == "dp":
            return (t,)
        return (d % p.ep, t)  # edp

    def _members(self, kind: str, s: int) -> dict[tuple, list[int]]:
        """Every group of *kind* in stage *s*: group id -> its ranks, in rank order."""
        key = ("members", kind, s)
        hit = self._memo.get(key)
        if hit is None:
            p = self.plan
            hit = {}
            for lane in range(p.lanes):
                for t in range(p.tp):
                    hit.setdefault(self._gid(kind, lane, t), []).append(p.rank(s, lane, t))
            self._memo[key] = hit
        return hit

    def _group(self, kind: str, s: int, lane: int, t: int, op: str) -> CollectiveGroup:
        """The communicator of *kind* (see :meth:`_gid`) holding rank (*s*, *lane*, *t*), one
        per collective op; folded, with the other groups of its kind in the stage as peers."""
        gid = self._gid(kind, lane, t)
        key = (kind, s, gid, op)
        g = self._groups.get(key)
        if g is None:
            p = self.plan
            groups = self._members(kind, s)
            ranks = groups[gid]
            devs = [p.devices[r] for r in ranks]
            peers = ([[p.devices[r] for r in rs] for k, rs in groups.items() if k != gid]
                     if p.fold else [])
            mine = set(ranks)
            record = [p.devices[r] for r in self.simulated if r in mine]
            # one communicator per group, whatever the op: its collectives run one at a time in
            # issue order (PyTorch's one NCCL stream per process group; FSDP's all-gathers and
            # reduce-scatters queue behind each other)
            owner = (p.job, kind, s, gid)
            chain = next((x for k, x in self._groups.items() if k[:3] == (kind, s, gid)), None)
            alg = p.collective if op == "allreduce" else "auto"
            g = self._groups[key] = CollectiveGroup(self.system, devs, p.job, op=op,
                                                    algorithm=alg, peers=peers, owner=owner,
                                                    record=record, ranks=ranks, chain=chain,
                                                    closed_form=p.closed_form)
        return g

    def _pair(self, src: int, dst: int, lane: int, t: int) -> CollectiveGroup:
        """The send/recv communicator from stage *src* to *dst* of (*lane*, TP rank *t*)."""
        key = ("pp", src, dst, lane, t)
        g = self._groups.get(key)
        if g is not None:
            return g
        p = self.plan
        return self._point_to_point(key, p.rank(src, lane, t),
                                    lambda q: [p.devices[q], p.devices[q + (dst - src) *
                                                                       p.lanes * p.tp]],
                                    range(src * p.lanes * p.tp, (src + 1) * p.lanes * p.tp))

    def _point_to_point(self, key: tuple, r: int, ends, ranks) -> CollectiveGroup:
        """A one-flow communicator ``ends(r)`` (source, destination) for rank *r*; folded, the
        same transfer of every other rank of *ranks* is a peer."""
        g = self._groups.get(key)
        if g is None:
            p = self.plan
            a, b = ends(r)
            peers = [ends(q) for q in ranks if q != r] if p.fold else []
            index = self._memo.get("rank_of")
            if index is None:
                index = self._memo["rank_of"] = {d: q for q, d in enumerate(p.devices)}
            g = self._groups[key] = CollectiveGroup(
                self.system, [a, b], p.job, op="sendrecv", peers=peers, owner=(p.job, *key),
                record=[d for d in (a, b) if d == p.devices[r]], ranks=[r, index.get(b, r)],
                closed_form=p.closed_form)
        return g

    def _join(self, kind: str, s: int, lane: int, op: str, key: object, nbytes: float,
              name: str) -> simpy.Event:
        """The simulated ranks of (*s*, *lane*) join a collective of their *kind* groups:
        TP, one group the lane drives whole; otherwise one group per simulated TP rank, joined
        at the rank's place or, folded, on behalf of every member."""
        if kind == "tp":
            g = self._tp.get((s, lane, op))
            if g is None:
                g = self._tp[(s, lane, op)] = self._group("tp", s, lane, 0, op)
            return g.join_all(key, nbytes, name)
        p = self.plan
        evs = []
        for t in self.tps:
            g = self._group(kind, s, lane, t, op)
            if p.fold:
                evs.append(g.join_all(key, nbytes, name))
            else:
                evs.append(g.join(key, g.rank_of[p.devices[p.rank(s, lane, t)]], nbytes, name))
        ev = evs[0] if len(evs) == 1 else self.env.all_of(evs)
        if self.comm_sms:
            t0 = self.env.now
            ev.callbacks.append(lambda _e: self._interfere(s, lane, t0))
        return ev

    def _interfere(self, s: int, lane: int, t0: float) -> None:
        """A collective of (*s*, *lane*) that ran as flows from *t0* to now held ``comm_sms``
        SMs: the compute it overlapped (the stage's run blocks since *t0*) lost that share of
        the SMs' work, which delays the lane's next run block (``comm_interference`` events).
        Wave effects are left out here (the block's kernels are not known at this point): a
        compute-bound stream loses ``comm_sms / sms`` of its progress while overlapped."""
        k = self.devices[self.plan.rank(s, lane, self.tps[0])].spec.kernels
        if k is None:
            return
        # collectives in flight together hold the SMs once (NCCL runs a communicator's kernels
        # one after another): count only the time no earlier-finished one has covered
        now, overlap = self.env.now, 0.0
        t0 = max(t0, self._covered.get((s, lane), t0))
        self._covered[(s, lane)] = max(now, t0)
        for a, b in reversed(self._busy.get((s, lane), ())):
            if b <= t0:
                break
            overlap += max(0.0, min(b, now) - max(a, t0))
        if overlap > 0:
            key = (s, lane)
            self._debt[key] = self._debt.get(key, 0.0) + overlap * min(self.comm_sms, k.sms) / k.sms

    def _dp_reduce_op(self) -> str:
        """The data-parallel gradient reduction: an all-reduce without ZeRO, or under ZeRO-1/2
        where the stack all-reduces and each rank keeps its shard (``zero1_grad_allreduce``),
        else a reduce-scatter."""
        p = self.plan
        if p.zero == 0 or (p.zero in (1, 2) and getattr(p.stack, "zero1_grad_allreduce", False)):
            return "allreduce"
        return "reduce_scatter"

    def _grad_scale(self) -> float:
        """Bytes a data-parallel gradient reduction moves per byte of gradients at the
        training precision: the main gradients' over the training precision's where the stack
        reduces its main gradients (``grad_reduce: main``), else 1."""
        p = self.plan
        if getattr(p.stack, "grad_reduce", "training") != "main":
            return 1.0
        main = p.stack.memory_overheads(p.precision, "gpu", 0)["grad_bytes"]
        return main / storage_bytes(p.precision) if main else 1.0

    def _dp_reduce(self, step: int, s: int, lane: int, c: int, nb: int, nbytes: float,
                   expert: bool = False) -> None:
        # expert gradients under ZeRO reduce-scatter over their own group (as _claim made it)
        op = "reduce_scatter" if expert and self.plan.zero else self._dp_reduce_op()
        kind = "edp" if expert else "dp"
        size = len(next(iter(self._members(kind, s).values())))
        if size < 2:
            return
        self._pending[(s, lane)].append(self._join(
            kind, s, lane, op, (step, c, nb, expert), nbytes * self._grad_scale(),
            f"dp.{op}.step{step}.c{c}.b{nb}" + (".experts" if expert else "")))

    # -- processes ------------------------------------------------------------------------------
    def _run(self) -> Generator:
        plan, env = self.plan, self.env
        for step in range(plan.steps):
            t0 = env.now
            tails: list[simpy.Process] = []
            self._pending = {(s, d): [] for s in range(plan.pp) for d in self.dps}
            self._busy, self._debt, self._covered = {}, {}, {}
            self._span = {}
            self._spans, self._snaps = {}, []
            pipes = []
            for d in self.dps:
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
            if self.compressed and self.periodic:
                self._steady_window()
                if not self.periodic:  # no repeating window: the caller simulates the run
                    return             # whole (hwsim.simulation.simulate), so stop here
            self._bubbles(step, t0)
            if self.checkpoint is not None:
                yield from self.checkpoint.after_step(step, plan.steps)

    def _start_unit(self, step: int, s: int, d: int, unit: Unit, tails: list) -> simpy.Process:
        idx = self._span.setdefault((s, d), [self.env.now, 0.0, 0])
        if self.compressed:
            self._unit_starts(s, d)
        proc = self.env.process(self._unit(step, s, d, unit, idx[2]))
        idx[2] += 1
        if idx[2] == len(self.units[s]):
            tails.append(self.env.process(self._tail(step, s, d, proc)))
        return proc

    def _unit(self, step: int, s: int, d: int, unit: Unit, index: int) -> Generator:
        plan, env = self.plan, self.env
        phase, mb, c = unit
        model = plan.stages[s][c]
        if s == 0 and c == 0 and phase == "F" and d in self._loaders:
            yield from self._loaders[d].next(step)  # the micro-batch's input
        last = phase == "B" and self._last_b[s].get(c) == index and plan.lanes > 1
        if plan.zero == 3 and plan.lanes > 1 and model.blocks:
            yield from self._fsdp_unit(step, s, d, unit, model, last)
        else:
            ops = model.forward if phase == "F" else model.backward
            yield from self._ops(step, s, d, unit, ops, 0, last)
        self._span[(s, d)][1] = env.now
        if self.compressed:
            self._spans[(s, d)][index][1] = env.now

    def _costs(self, r: int, op, squeezed: bool = False) -> tuple[float, str]:
        """Duration and bound category of *op* on rank *r*'s device (memoised per device type);
        *squeezed*: while communication kernels hold ``comm_sms`` of its SMs (interference)."""
        dev = self.devices[r]
        stack, prec = self.plan.stack, op.dtype or self.plan.precision  # an FP8 recipe: per op
        # what the cost depends on (ops alike in these cost the same, whatever their name)
        k = (op.flops, op.bytes, prec, op.shape, id(stack), dev.spec.id, dev.speed,
             squeezed and self.comm_sms)
        hit = self._cost.get(k)
        if hit is None or hit[0] is not stack:  # an id is unique only while its object lives
            spec = interfered(dev.spec, self.comm_sms) if squeezed else dev.spec
            hit = self._cost[k] = (stack, *spec.op_cost(op.flops, op.bytes, prec,
                                                        speed=dev.speed, shape=op.shape))
        return hit[1], hit[2]

    def _ops(self, step: int, s: int, d: int, unit: Unit, ops, base: int,
             reduce: bool) -> Generator:
        """Run *ops* on the stage's simulated TP ranks in lock-step; with *reduce*, start
        bucketed DP gradient reductions as gradients become ready (:meth:`_program`)."""
        env, rec, debt = self.env, self.system.recorder, self._debt
        timeout, block = env.timeout, rec.block  # (bound once: the loop's hottest calls)
        waiting: simpy.Event | None = None  # an asynchronous collective running as flows
        nb = 0
        lane = (s, d)
        # the compute intervals _interfere measures overlap against
        busy = self._busy.setdefault(lane, []) if self.comm_sms else None
        for item in self._program(s, d, ops, reduce):
            kind = item[0]
            if kind == "run":
                t0 = env.now
                extra = debt.pop(lane, 0.0) if debt else 0.0
                if busy is not None:
                    busy.append((t0, t0 + item[1] + extra))
                yield timeout(item[1] + extra)
                block(t0, item[2])
                if extra > 0:  # SM time the overlapped collectives took (interference)
                    for t in self.tps:
                        r = self.plan.rank(s, d, t)
                        rec.event(t0 + item[1], env.now, f"{self.plan.devices[r]}/compute",
                                  "compute", "comm_interference", self.plan.job, r, 0.0, 0.0,
                                  "compute")
            elif kind == "comm":
                op, i = item[1], item[2]
                group, coll = COMMS[op.comm]
                ev = self._join(group, s, d, coll, (step, unit, base + i), op.comm_bytes,
                                op.name)
                if op.comm_async:
                    waiting = ev
                else:
                    yield ev
            elif kind == "wait":
                yield waiting
                waiting = None
            else:  # "reduce"
                self._dp_reduce(step, s, d, unit[2], nb, item[1], item[2])
                nb += 1

    def _program(self, s: int, d: int, ops, reduce: bool) -> list[tuple]:
        """What :meth:`_ops` does for *ops* (:func:`~hwsim.jobs.timeline.program`), worked out
        once per (ops, stage, replica)."""
        key = (id(ops), s, d, reduce)
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = program(self, s, d, ops, reduce)
        return prog

    def _send(self, step: int, src: int, dst: int, d: int, unit: Unit) -> simpy.Event | None:
        plan = self.plan
        if plan.p2p_bytes <= 0:
            return None
        phase, mb, c = unit
        evs = [self._pair(src, dst, d, t).join_all(
            (step, unit), plan.p2p_bytes, f"p2p.{phase}.step{step}.mb{mb}.c{c}")
            for t in self.tps]
        return evs[0] if len(evs) == 1 else self.env.all_of(evs)

    def _tail(self, step: int, s: int, d: int, last_unit: simpy.Process) -> Generator:
        """After the stage's last unit: wait for its DP reduction, run the optimizer (on the
        ``1/dp`` shard under ZeRO), all-gather the updated parameters (ZeRO)."""
        plan, env = self.plan, self.env
        yield last_unit
        if self._pending[(s, d)]:
            yield env.all_of(self._pending[(s, d)])
        shard = plan.lanes if plan.zero else 1
        ranks = [plan.rank(s, d, t) for t in self.tps]
        if plan.offload != "none":
            yield from self._offloaded_step(step, s, d, shard)
        else:
            for model in plan.stages[s]:
                for op in model.optimizer:
                    yield env.all_of([self.devices[r].op(
                        op.flops / shard, op.bytes / shard, op.dtype or plan.precision,
                        name=op.name,
                        job=plan.job, rank=r) for r in ranks])
        if plan.zero in (1, 2) and plan.lanes > 1:
            nbytes = sum(m.params for m in plan.stages[s]) * storage_bytes(plan.precision)
            first = self._first_chunk(s)
            if getattr(plan.stack, "overlap_param_gather", False) and 0 < first < 1:
                # Megatron-Core overlap_param_gather: gathered per layer beside the next step's
                # forward; the step waits for the first layer's share only, the rest runs on
                # the communication stream (not waited for by this step)
                ev = self._join("dp", s, d, "allgather", step, nbytes * first,
                                f"dp.allgather_params.step{step}.first")
                self._join("dp", s, d, "allgather", (step, "rest"), nbytes * (1 - first),
                           f"dp.allgather_params.step{step}.overlapped")
                yield ev
            else:
                yield self._join("dp", s, d, "allgather", step, nbytes,
                                 f"dp.allgather_params.step{step}")
        for r in ranks:
            self.step_ends[r].append(env.now)

    def _first_chunk(self, s: int) -> float:
        """Share of stage *s*'s parameters in its first model chunk's first layer block (the
        part of an overlapped parameter all-gather the next forward waits for)."""
        total = sum(m.params for m in self.plan.stages[s])
        blocks = [b for b in self.plan.stages[s][0].blocks if b.params > 0]
        return blocks[0].params / total if blocks and total > 0 else 1.0

    def _bubbles(self, step: int, t0: float) -> None:
        """Warm-up (step start to the stage's first unit) and cool-down (its last unit to the
        replica's last unit anywhere) gaps as ``bubble`` events on the compute streams; the
        waits in between are recorded as they happen (``pipeline.wait``)."""
        plan = self.plan
        for d in self.dps:
            end = max(self._span[(s, d)][1] for s in range(plan.pp))
            for s in range(plan.pp):
                first, last, _ = self._span[(s, d)]
                for a, b, name in ((t0, first, "warmup"), (last, end, "cooldown")):
                    if idle(a, b):
                        self._bubble(step, s, d, a, b, name)

    def _bubble(self, step: int, s: int, d: int, a: float, b: float, name: str) -> None:
        """A ``bubble`` event from *a* to *b* on the compute stream of every simulated TP rank
        of stage *s* of replica *d*."""
        plan, rec = self.plan, self.system.recorder
        for t in self.tps:
            r = plan.rank(s, d, t)
            rec.event(a, b, f"{plan.devices[r]}/compute", "bubble",
                      f"pipeline.{name}.step{step}", plan.job, r, 0.0, 0.0, "bubble")
