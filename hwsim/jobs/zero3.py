"""ZeRO-3 / FSDP units of the 3D-parallel job (:mod:`hwsim.jobs.parallel`): parameters gathered
per bucket of blocks before each forward and backward, gradients reduce-scattered after each
backward, as the software stack's profile says (bucket size, prefetch depth, collectives per
block, list collectives with their per-rank copies, a device synchronise before each gather;
:mod:`hwsim.catalog.stacks`)."""

from __future__ import annotations

from typing import Generator

import simpy

from hwsim.jobs.schedules import Unit
from hwsim.workloads.memory import storage_bytes

__all__ = ["Zero3Units"]


PERSISTENCE_ELEMENTS = 1e5
"""Parameters of at most this many elements stay whole on every rank, never gathered: DeepSpeed's
``stage3_param_persistence_threshold`` default (deepspeed/runtime/zero/constants.py, 1e5 since
the ZeRO-3 release, v0.3.13; the norms and biases of a transformer layer)."""


class _Split(tuple):
    """A block's backward ops in parts (:meth:`Zero3Units._recompute_split`), with the bytes
    and collective count of the parameters gathered again between the first and the second."""

    regather_bytes: float
    regather_pieces: int

    def __new__(cls, parts: tuple, regather_bytes: float = 0.0, regather_pieces: int = 1):
        obj = super().__new__(cls, parts)
        obj.regather_bytes, obj.regather_pieces = regather_bytes, regather_pieces
        return obj


class Zero3Units:
    """Methods of :class:`~hwsim.jobs.parallel.ParallelTrainingJob` for ZeRO-3 / FSDP units."""

    def _fsdp_unit(self, step: int, s: int, d: int, unit: Unit, model, last: bool
                   ) -> Generator:
        """ZeRO-3 / FSDP: all-gather each bucket of blocks' parameters before its forward and its
        backward, keeping the stack's ``zero3_prefetch`` buckets' gathers in flight ahead of the
        one computing (FSDP's ``BACKWARD_PRE`` / forward prefetch: 1), and reduce-scatter each
        bucket's gradients after its backward, every micro-batch (FSDP without ``no_sync``). A
        bucket is one block, or consecutive blocks until their parameters reach the stack's
        ``zero3_bucket_bytes`` (DeepSpeed's prefetch bucket); with parameter offload, one block.
        ``zero3_prefetch`` 0: each gather is issued when its bucket is needed; with
        ``zero3_sync_before_gather`` only once the device's earlier work, reduce-scatters
        included, has finished."""
        plan = self.plan
        vb = storage_bytes(plan.precision)
        fwd = unit[0] == "F"
        blocks = list(model.blocks) if fwd else list(reversed(model.blocks))
        stack = plan.stack
        cap = getattr(stack, "zero3_bucket_bytes", 0.0) if not plan.offload_params else 0.0
        ahead = getattr(stack, "zero3_prefetch", 1)
        sync = getattr(stack, "zero3_sync_before_gather", False)
        buckets: list[list] = []
        for block in blocks:
            if buckets and cap > 0 and sum(b.params for b in buckets[-1]) * vb < cap:
                buckets[-1].append(block)
            else:
                buckets.append([block])

        pieces = max(1, getattr(stack, "zero3_collectives_per_block", 1))
        copies = self._list_copies(s, d) if getattr(stack, "zero3_list_collectives", False) \
            else None

        def collectives(op: str, key: tuple, nbytes: float, name: str, n: int = pieces
                        ) -> simpy.Event:
            """One collective of *nbytes*, or *n* pieces one after another (the stack's
            per-module pieces: each pays its own latency, and with list collectives its
            per-rank copies)."""
            if n == 1 and copies is None:
                return self._join("dp", s, d, op, key, nbytes, name)

            def seq() -> Generator:
                for i in range(n):
                    part, tag = nbytes / n, f"{name}.{i}" if n > 1 else name
                    if copies is not None and op == "reduce_scatter":
                        yield from copies(part, f"{tag}.flatten")
                    yield self._join("dp", s, d, op, (*key, i), part, tag)
                    if copies is not None and op == "allgather":
                        yield from copies(part, f"{tag}.unflatten")
            return self.env.process(seq())

        def gather(k: int) -> simpy.Event:
            group = buckets[k]
            join = lambda: collectives(  # noqa: E731
                "allgather", (step, unit, k), sum(b.params for b in group) * vb,
                f"dp.fsdp_allgather.{group[0].name}" + (f"-{group[-1].name}"
                                                        if len(group) > 1 else ""))
            if not plan.offload_params:
                return join()
            return self.env.process(self._fetch_then(step, s, d, group[0], join))
        inflight = [gather(k) for k in range(min(ahead, len(buckets)))]
        base = 0
        for k, group in enumerate(buckets):
            if sync and self._pending[(s, d)]:  # the device drains: earlier reduce-scatters
                yield self.env.all_of(self._pending[(s, d)])
            cur = inflight.pop(0) if ahead else gather(k)
            if ahead and k + ahead < len(buckets):
                inflight.append(gather(k + ahead))
            yield cur
            grads = 0.0
            for block in group:
                ops = block.forward if fwd else block.backward
                parts = (ops,) if fwd else self._recompute_split(block, vb)
                for i, part in enumerate(parts):
                    if i == 1:  # submodules released after their recomputed forward
                        yield collectives("allgather", (step, unit, k, "regather", block.name),
                                          parts.regather_bytes, f"dp.fsdp_regather.{block.name}",
                                          parts.regather_pieces)
                    yield from self._ops(step, s, d, unit, part, base, False)
                    base += len(part)
                grads += sum(op.grad_bytes for op in ops)
            if not fwd and grads > 0:
                self._pending[(s, d)].append(collectives(
                    "reduce_scatter", (step, unit, k), grads * self._grad_scale(),
                    f"dp.fsdp_reduce_scatter.{group[0].name}" + (
                        f"-{group[-1].name}" if len(group) > 1 else "")))

    def _recompute_split(self, block, vb: float) -> "_Split":
        """*block*'s backward ops as one part, or, where the stack re-gathers
        (``zero3_reuse_distance`` > 0) and the block's backward opens with a recomputed forward
        (full recompute), as two: the recomputed forward, then the backward proper, with the
        bytes and collective count of the submodules re-gathered between them.

        DeepSpeed's ZeRO-3 releases a submodule's parameters after its forward unless it is used
        again within ``stage3_max_reuse_distance`` parameter elements: the recomputed forward
        runs the block's submodules, each released unless the parameters of the submodules
        used between its recomputed forward and its backward (those after it in the forward,
        once forward and once backward) stay within the distance. The block's submodules are
        its ops that carry gradients, in backward order (the last in the forward first).
        Memoised per block, so that the parts keep their identity (:meth:`_program`)."""
        memo = self.__dict__.setdefault("_splits", {})
        hit = memo.get(id(block))
        if hit is not None and hit[0] is block:
            return hit[1]
        ops = block.backward
        limit = getattr(self.plan.stack, "zero3_reuse_distance", 0.0)
        n = next((i for i, op in enumerate(ops) if not op.recompute), len(ops))
        released: list[float] = []
        if limit > 0 and n > 0 and vb > 0:
            sizes = [e for e in (op.grad_bytes / vb for op in ops[n:])  # backward order
                     if e > PERSISTENCE_ELEMENTS]  # partitioned submodules only
            released = [e for i, e in enumerate(sizes) if 2 * sum(sizes[:i]) > limit]
        split = (_Split((ops[:n], ops[n:]), sum(released) * vb, len(released)) if released
                 else _Split((ops,)))
        memo[id(block)] = (block, split)
        return split

    def _list_copies(self, s: int, d: int):
        """The per-rank copies of a collective called with a list of tensors (PyTorch's
        ``all_gather(list, ...)`` / ``reduce_scatter(out, list)`` on NCCL: the flat result is
        copied into, or the inputs copied out of, one tensor per group member, each copy one op
        on the communication stream). Returns ``copies(nbytes, name)``, a generator that takes
        the time of the group's copies of a collective of *nbytes* and records it."""
        size = len(next(iter(self._members("dp", s).values())))
        ranks = [self.plan.rank(s, d, t) for t in self.tps]
        spec = self.devices[ranks[0]].spec
        precision, env, rec, job = self.plan.precision, self.env, self.system.recorder, \
            self.plan.job
        host = getattr(self.plan.stack, "zero3_rank_host_s", 0.0)

        def copies(nbytes: float, name: str) -> Generator:
            t0 = env.now
            per = spec.op_time_s(0.0, 2.0 * nbytes / size, precision)
            yield env.timeout(size * max(per, host))
            for r in ranks:
                rec.event(t0, env.now, f"{self.plan.devices[r]}/comm", "collective", name, job,
                          r, 2.0 * nbytes, 0.0, "communication")
        return copies

