"""What one serving iteration costs a stage's devices (:class:`~hwsim.jobs.serving.ServingJob`).

An iteration's ops (:func:`~hwsim.workloads.inference.iteration_ops`) depend on the decoding
sequences' context lengths only through the decode attention kernel, whose FLOPs and bytes are
linear in the keys it reads (``decode_pairs``). So the rest of the iteration is worked out once
per batch shape (:class:`StageCost`, memoised without ``decode_pairs``) and the attention kernel
in closed form at each iteration's ``decode_pairs``: the same roofline, floor and category as
op by op, without rebuilding the ops every time a context grows by one token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from hwsim.workloads.inference import iteration_ops

__all__ = ["StageCost", "StageCosts", "DECODE_ATTENTION"]

DECODE_ATTENTION = "layer.attention.decode"
"""The one op of an iteration whose cost depends on the decoding sequences' context lengths."""


@dataclass(frozen=True)
class StageCost:
    """One stage's share of an iteration of a given shape, but for the decode attention:
    ``base_s`` seconds, ``flops``, ``nbytes``, seconds ``by`` category, ``a2a_s`` of
    expert-parallel all-to-alls, the TP group's category (``comm``), and the decode attention
    kernels ``attention``: ``(times, flops per key, bytes, bytes per key)`` each, with the
    rates they run at (``flop_rate``, ``byte_rate``, ``speed``) and their ``floor``."""

    base_s: float
    flops: float
    nbytes: float
    by: tuple[tuple[str, float], ...]
    a2a_s: float
    comm: str
    attention: tuple[tuple[float, float, float, float], ...] = ()
    flop_rate: float = 1.0
    byte_rate: float = 1.0
    speed: float = 1.0
    floor: float = 0.0

    @cached_property
    def _bounds(self) -> dict[str, tuple]:
        """For each bound an attention kernel can add to: its place among ``by`` (None: not
        there), its seconds there, and the largest other entry of ``by`` (seconds, bound,
        place; the first of equals): what :meth:`at` needs to pick the iteration's bound
        without building the dictionary."""
        out = {}
        for cat in ("overhead", "compute", "memory"):
            place = next((i for i, (c, _) in enumerate(self.by) if c == cat), None)
            best = (-math.inf, None, -1)
            for i, (c, v) in enumerate(self.by):
                if c != cat and v > best[0]:
                    best = (v, c, i)
            out[cat] = (place, self.by[place][1] if place is not None else 0.0, *best)
        return out

    @cached_property
    def reach(self) -> dict[tuple, float]:
        """For each piece key (:meth:`piece`), the largest keys-read total where it was found so
        far: the key holds from any point where it is found up to there (filled by
        :func:`hwsim.jobs.serving_ff.run_pieces`)."""
        return {}

    def at(self, d_pairs: float) -> tuple[float, float, float, str, float]:
        """Seconds, FLOPs, bytes, bound and all-to-all seconds of the iteration whose decoding
        sequences read *d_pairs* keys in all."""
        return self.piece(d_pairs)[:5]

    def piece(self, d_pairs: float) -> tuple:
        """:meth:`at` *d_pairs* and the linear piece of the cost it lies on: ``(seconds, flops,
        nbytes, bound, a2a_s, key, ds, df, db)``. Each attention kernel runs at its launch
        floor, compute-bound or bandwidth-bound (its *regime*): while the regimes and the bound
        stay (``key``), seconds, FLOPs and bytes grow by ``ds``, ``df`` and ``db`` per key read.
        Along growing *d_pairs* a kernel's regimes and, within them, the bound come in order and
        never come back (its time and each category's seconds only grow), so a key that two
        points share holds between them (:mod:`hwsim.jobs.serving_ff`)."""
        if len(self.attention) == 1:  # one kernel: the general loop below, without the dict
            times, f1, b0, b1 = self.attention[0]
            f, b = f1 * d_pairs, b0 + b1 * d_pairs
            t_c = f / self.flop_rate if f > 0 else 0.0
            t_m = b / self.byte_rate if b > 0 else 0.0
            roof = (t_c if t_c >= t_m else t_m) / self.speed
            t = roof if roof >= self.floor else self.floor
            cat = "overhead" if t > roof else "compute" if t_c >= t_m else "memory"
            place, had, other, other_cat, other_place = self._bounds[cat]
            mine = had + times * t
            if other_cat is None or mine > other or (
                    mine == other and place is not None and place < other_place):
                category = cat
            else:
                category = other_cat
            slope = (0.0 if cat == "overhead" else f1 / self.flop_rate / self.speed
                     if cat == "compute" else b1 / self.byte_rate / self.speed)
            return (self.base_s + times * t, self.flops + times * f, self.nbytes + times * b,
                    self.comm if category == "comm" else category, self.a2a_s, (cat, category),
                    times * slope, times * f1, times * b1)
        seconds, flops, nbytes = self.base_s, self.flops, self.nbytes
        by = dict(self.by)
        regimes = []
        ds = df = db = 0.0
        for times, f1, b0, b1 in self.attention:
            f, b = f1 * d_pairs, b0 + b1 * d_pairs
            t_c = f / self.flop_rate if f > 0 else 0.0
            t_m = b / self.byte_rate if b > 0 else 0.0
            roof = max(t_c, t_m) / self.speed
            t = roof if roof >= self.floor else self.floor
            cat = "overhead" if t > roof else "compute" if t_c >= t_m else "memory"
            seconds += times * t
            flops += times * f
            nbytes += times * b
            by[cat] = by.get(cat, 0.0) + times * t
            regimes.append(cat)
            ds += times * (0.0 if cat == "overhead" else f1 / self.flop_rate / self.speed
                           if cat == "compute" else b1 / self.byte_rate / self.speed)
            df += times * f1
            db += times * b1
        category = max(by, key=by.get) if by else "compute"
        return (seconds, flops, nbytes, self.comm if category == "comm" else category,
                self.a2a_s, (tuple(regimes), category), ds, df, db)


class StageCosts:
    """The cost methods of :class:`~hwsim.jobs.serving.ServingJob` (which provides ``plan``,
    ``engine``, ``system``, ``experts``, ``_group`` and ``_cost_memo``)."""

    def _stage_time(self, st: int, devs: list[str], p_tokens: int, p_pairs: float,
                    d_seqs: int, d_pairs: float, logits: int, *, kv_tokens: int | None = None,
                    model: tuple | None = None, p_seqs: int = 1, moe: tuple | None = None
                    ) -> tuple[float, float, float, str, float]:
        """Seconds, FLOPs, bytes and bound of one stage's share of an iteration on one device,
        and the seconds of it that are expert-parallel all-to-alls (the bound is the largest
        category of the rest): :meth:`_stage_cost` of the shape, at *d_pairs*."""
        return self._stage_costed(st, devs, p_tokens, p_pairs, d_seqs, logits,
                                  kv_tokens=kv_tokens, model=model, p_seqs=p_seqs,
                                  moe=moe).at(d_pairs)

    def _stage_costed(self, st: int, devs: list[str], p_tokens: int, p_pairs: float,
                      d_seqs: int, logits: int, *, kv_tokens: int | None = None,
                      model: tuple | None = None, p_seqs: int = 1, moe: tuple | None = None
                      ) -> StageCost:
        """:meth:`_stage_cost` of the shape, memoised (prefill pairs rounded)."""
        key = (st, tuple(devs), p_tokens, round(p_pairs), d_seqs, logits, kv_tokens,
               None if model is None else id(model[0]), None if model is None else model[1],
               p_seqs, moe)
        cost = self._cost_memo.get(key)
        if cost is None:
            cost = self._cost_memo[key] = self._stage_cost(
                st, devs, p_tokens, p_pairs, d_seqs, logits, kv_tokens=kv_tokens, model=model,
                p_seqs=p_seqs, moe=moe)
        return cost

    def _stage_cost(self, st: int, devs: list[str], p_tokens: int, p_pairs: float,
                    d_seqs: int, logits: int, *, kv_tokens: int | None = None,
                    model: tuple | None = None, p_seqs: int = 1, moe: tuple | None = None
                    ) -> StageCost:
        """One stage's share of an iteration of this shape (:class:`StageCost`).

        Ops run as the engine runs them (:mod:`hwsim.catalog.engines`): GEMMs and prefill
        attention through the device's kernel model at the engine's factors, the other kernels
        (norms, activations, decode attention, dequantisation) by their bytes and their FLOPs
        at the plateau rate; every kernel at least the engine's launch floor for an iteration of
        this size (a CUDA graph's, or its runtime's), which stands for the fixed cost of a small
        kernel (the training ops' FLOP ramp is not applied); ops the engine fuses (and in-kernel
        dequantisation) launching nothing of their own. Tensor-parallel collectives at their
        time on idle links (:meth:`CollectiveGroup.isolated`: KV hand-overs or swaps sharing
        those links do not slow them); an all-reduce small enough for the engine's custom
        all-reduce, over links it runs it on (NVLink; vllm-rocm: the Infinity Fabric mesh too),
        pays the ring's bandwidth term and one kernel's launch instead of the ring's per-step
        latency. *kv_tokens*: the prefill chunks'
        distinct keys (``prefill_kv_tokens``); *model*: ``(spec, pp)`` of another model on
        these devices (a speculative proposer), default the plan's; *p_seqs*: the sequences of
        the prefill chunks; *moe*: the stage's drawn expert load
        (:meth:`ExpertParallel.iteration`). The engine's host work per sequence of the iteration
        (``seq_overhead``: scheduling, input preparation, sampling, output processing; not
        overlapped with the GPU) is added once, on the first stage. The decode attention
        kernels are left to
        :meth:`StageCost.at`, from the ops at two context totals (their cost is linear in it)."""
        plan, eng = self.plan, self.engine
        model_spec, model_pp = model if model is not None else (plan.spec, plan.pp)
        base = self.system.device(devs[0]).spec
        spec = eng.device_spec(base)
        speed = min(self.system.device(d).speed for d in devs)  # the slowest paces the group
        tile_m = spec.kernels.tile[0] if spec.kernels is not None else 128

        def ops_at(d_pairs: float) -> list:
            return iteration_ops(
                model_spec, tp=plan.tp, pp=model_pp, stage=st, precision=plan.precision,
                prefill_tokens=p_tokens, prefill_pairs=p_pairs, decode_seqs=d_seqs,
                decode_pairs=d_pairs, logit_tokens=logits, prefill_kv_tokens=kv_tokens,
                kv_precision=plan.kv_precision, weight_precision=plan.weight_precision,
                weight_group=plan.weight_group, prefill_seqs=p_seqs, tile_m=tile_m,
                kv_per_query_head=eng.decode_kv_per_query_head,
                **(self.experts.op_args(moe) if self.experts is not None
                   and model is None else {}))
        ops = ops_at(float(d_seqs))
        floor = eng.op_floor_s(p_tokens + d_seqs, base.launch_overhead_s)
        group = self._group(devs[:plan.tp]) if plan.tp > 1 else None
        seconds = flops = nbytes = 0.0
        by: dict[str, float] = {}
        attention: list[tuple[float, float, float, float]] = []
        attention_dtype = None
        for i, (op, times) in enumerate(ops):
            if op.comm:
                a2a = op.comm == "ep_alltoall"
                g = self.experts.alltoall_group(devs) if a2a else group
                if g is not None and op.comm_bytes > 0:
                    t = g.isolated(op.comm_bytes)[0]
                    if op.comm == "tp_allreduce" and eng.custom_allreduce(g.category,
                                                                           op.comm_bytes):
                        t = floor + max(0.0, t - g.isolated(1.0)[0])
                    seconds += times * t
                    part = "alltoall" if a2a else "comm"
                    by[part] = by.get(part, 0.0) + times * t
                continue
            dtype = op.dtype or plan.precision
            if op.name == DECODE_ATTENTION and not op.shape:
                attention.append((i, times, op))
                attention_dtype = dtype
                continue
            if op.shape:
                t_c, t_m = spec.roofline_s(op.flops, op.bytes, dtype, op.shape)
            else:  # a memory-bound kernel: its FLOPs at the plateau rate, no small-op ramp
                t_c = op.flops / (spec.peak(dtype) * spec.compute_efficiency
                                  * spec.framework_factor(dtype)) if op.flops > 0 else 0.0
                t_m = op.bytes / spec.framework_bandwidth() if op.bytes > 0 else 0.0
            t = max(t_c, t_m) / speed
            if not (op.fused or eng.fuses(op.name)):
                t = max(t, floor)
            cat = ("overhead" if t > max(t_c, t_m) / speed else
                   "compute" if t_c >= t_m else "memory")
            seconds += times * t
            flops += times * op.flops
            nbytes += times * op.bytes
            by[cat] = by.get(cat, 0.0) + times * t
        if st == 0 and eng.seq_overhead_s > 0:  # the engine's host work per sequence, once
            host = eng.seq_overhead_s * (d_seqs + (p_seqs if p_tokens > 0 else 0))
            seconds += host
            by["overhead"] = by.get("overhead", 0.0) + host
        a2a_s = by.pop("alltoall", 0.0)
        coef: list[tuple[float, float, float, float]] = []
        if attention:  # linear in the keys read: the ops again at twice the minimum
            again = ops_at(2.0 * d_seqs)
            for i, times, op in attention:
                op2 = again[i][0]
                b1 = (op2.bytes - op.bytes) / d_seqs
                coef.append((times, op.flops / d_seqs, op.bytes - b1 * d_seqs, b1))
        fused = bool(attention) and (attention[0][2].fused or eng.fuses(DECODE_ATTENTION))
        rate = (spec.peak(attention_dtype) * spec.compute_efficiency
                * spec.framework_factor(attention_dtype)) if attention else 1.0
        return StageCost(seconds, flops, nbytes, tuple(by.items()), a2a_s,
                         group.category if group is not None else "comm", tuple(coef),
                         flop_rate=rate, byte_rate=spec.framework_bandwidth(), speed=speed,
                         floor=0.0 if fused else floor)
