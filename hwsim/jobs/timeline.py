"""Work of known duration laid out ahead of the simulation (:mod:`hwsim.jobs.parallel`).

A unit's ops run on a stage's tensor-parallel ranks in lock-step. Consecutive compute ops, and the
TP collectives between them whose group is alone on its links (a closed-form time), have known
durations: :class:`Timeline` lays them out back to back (with an asynchronous collective overlapping
the next compute op, which runs on the SMs the collective leaves while both run: interference) and
:func:`program` cuts a unit's ops into such runs and the things that must happen at an instant of
the simulation (a collective that shares links, a gradient bucket whose reduction starts).
"""

from __future__ import annotations

from hwsim.jobs.communicator import CollectiveGroup
from hwsim.jobs.parallel_plan import COMMS

__all__ = ["Timeline", "program"]


def program(job, s: int, d: int, ops, reduce: bool) -> list[tuple]:
    """What :meth:`ParallelTrainingJob._ops` of *job* does for *ops* on stage *s*, replica *d*: runs of
    work of known duration (:class:`_Timeline`) as ``("run", seconds, block template)``,
    and between them ``("comm", op, index)`` (a collective that shares links, or a CP/EP
    one: flows, blocking, or overlapping the next compute op when asynchronous),
    ``("wait",)`` (for that asynchronous one) and ``("reduce", bytes, expert)`` (a full
    gradient bucket, of expert parameters or not)."""
    plan = job.plan
    tl = Timeline(job, [plan.rank(s, d, t) for t in job.tps])
    prog, pending, bucket = [], False, {False: 0.0, True: 0.0}
    degree = {"tp": plan.tp, "cp": plan.cp, "ep": plan.ep}
    for i, op in enumerate(ops):
        if op.comm:
            kind, coll = COMMS[op.comm]
            if degree[kind] == 1 or op.comm_bytes <= 0:
                continue
            if kind == "tp" and not pending:
                g = job._group("tp", s, d, 0, coll)
                fixed = g.timing(op.comm_bytes)
                if fixed is not None:
                    tl.collective(g, op, fixed)
                    continue
            prog += tl.flush()
            if pending:
                prog.append(("wait",))
            prog.append(("comm", op, i))
            pending = op.comm_async
            continue
        tl.compute(op)
        if pending:
            prog += tl.flush()
            prog.append(("wait",))
            pending = False
        if reduce and op.grad_bytes > 0:
            expert = op.expert and plan.ep > 1
            bucket[expert] += op.grad_bytes
            if bucket[expert] >= plan.bucket:
                prog += tl.flush()
                prog.append(("reduce", bucket[expert], expert))
                bucket[expert] = 0.0
    prog += tl.flush()
    if pending:
        prog.append(("wait",))
    for expert, nbytes in bucket.items():
        if reduce and nbytes > 0:
            prog.append(("reduce", nbytes, expert))
    return prog


class Timeline:
    """Work of known duration for some ranks in lock-step, laid out back to back: compute ops
    on the compute streams, collectives with a closed-form time
    (:meth:`CollectiveGroup.timing`) on the communication streams, blocking the compute stream
    or, for an asynchronous one, overlapping the next compute op only. :meth:`flush` turns it
    into one ``("run", seconds, template)`` item (a recorder block) and starts afresh."""

    def __init__(self, job, ranks: list[int]) -> None:
        self.job, self.ranks = job, ranks
        self.cursor = 0.0
        self.overlap_until: float | None = None  # end of an asynchronous collective
        self.events: list[tuple] = []
        self.pulses: list[tuple[float, list]] = []  # (start, the collective's loads)
        # ranks on alike devices (catalog id and speed) have the same op costs: the first's
        alike: dict[tuple, int] = {}
        self.rows = [(r, f"{job.plan.devices[r]}/compute",
                      alike.setdefault((job.devices[r].spec.id, job.devices[r].speed), r))
                     for r in ranks]
        self.cost_ranks = list(alike.values())

    def _cost(self, c: int, op, left: float, squeeze: bool) -> tuple[float, str]:
        dur, cat = self.job._costs(c, op)
        if squeeze:
            slow = self.job._costs(c, op, squeezed=True)[0]
            dur = slow if slow <= left else left + (1 - left / slow) * dur
        return dur, cat

    def compute(self, op) -> None:
        job, start = self.job, self.cursor
        # an asynchronous collective still running holds comm_sms SMs (interference): the op
        # runs on the rest until it ends, then at full speed (progress carried over)
        left = (self.overlap_until - start) if self.overlap_until is not None else 0.0
        squeeze = bool(left > 0 and job.comm_sms and op.shape)
        name, jid, nbytes, flops = op.name, job.plan.job, op.bytes, op.flops
        costs = {c: self._cost(c, op, left, squeeze) for c in self.cost_ranks}
        self.events += [(start, start + costs[c][0], stream, "compute", name, jid, r, nbytes,
                         flops, costs[c][1]) for r, stream, c in self.rows]
        longest = max((dur for dur, _ in costs.values()), default=0.0)
        self.cursor += longest
        if self.overlap_until is not None:
            self.cursor = max(self.cursor, self.overlap_until)
            self.overlap_until = None

    def collective(self, g: CollectiveGroup, op, fixed: tuple[float, list]) -> None:
        if self.overlap_until is not None:  # the previous asynchronous one must end first
            self.cursor = max(self.cursor, self.overlap_until)
            self.overlap_until = None
        start, end = self.cursor, self.cursor + fixed[0]
        self.events += g.rows(start, end, op.comm_bytes, op.name)[0]
        if fixed[1]:
            self.pulses.append((start, fixed[1]))
        if op.comm_async:
            self.overlap_until = end
        else:
            self.cursor = end

    def flush(self) -> list[tuple]:
        if self.overlap_until is not None:
            self.cursor = max(self.cursor, self.overlap_until)
            self.overlap_until = None
        if self.cursor <= 0 and not self.events:
            return []
        tid = self.job.system.recorder.template(self.events, shifted=self.pulses)
        item = ("run", self.cursor, tid)
        self.cursor, self.events, self.pulses = 0.0, [], []
        return [item]
