"""LLM serving as SimPy processes: a router over replicas, each an iteration-level scheduler
(vLLM/Orca continuous batching, Sarathi-style chunked prefill, or static batching) over a paged
KV cache.

A replica is ``tp x pp`` devices. Each iteration the scheduler picks what runs: the decoding
sequences (one token each) and prefill work from the waiting queue, first come first served,
within ``max_batch_size`` sequences and ``max_batched_tokens`` tokens. Without chunked prefill an
iteration is either prefills (admitted whole) or decodes, prefills first (vLLM's default); with
it, decodes go first and prefill chunks fill the rest of the token budget. A request needs KV
blocks of ``block_tokens`` tokens for its prompt at admission and one more block each time its
length crosses a block boundary; when a running sequence cannot get one, the most recently
admitted sequence is preempted: with ``recompute`` (vLLM's default) its blocks are freed and it
re-enters the queue to prefill its prompt and the tokens generated so far again; with ``swap``
its KV cache is copied to host memory over PCIe and copied back when it is readmitted, before
the iteration that resumes it.

The iteration's time is the roofline of its ops (:func:`~hwsim.workloads.inference.iteration_ops`)
on each pipeline stage's device, plus the stage's tensor-parallel collectives (their closed-form
time on idle links), plus the activations sent between stages; the
stages of one iteration run one after another (no pipelining of successive iterations). A MoE
model's experts may be split by expert parallelism, with attention data-parallel over the
expert groups (:mod:`hwsim.jobs.moe`: a stage is then ``tp x ep`` devices). The
KV-cache capacity of a replica is what its devices' memory holds after the weights, times
``memory_fraction`` (vLLM's ``gpu_memory_utilization``).

With ``prefix_caching`` each replica keeps the KV blocks of shared prompt prefixes after their
sequences end (:mod:`hwsim.jobs.prefix_cache`): a request whose prefix is cached prefills only
the rest of its prompt (its attention still reads the cached tokens) and takes fewer free
blocks; freed blocks stay cached, evicted least recently used first when blocks are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Generator, Sequence

from hwsim.catalog.engines import EngineProfile, get_engine
from hwsim.jobs.communicator import CollectiveGroup
from hwsim.jobs.front import Front
from hwsim.jobs.moe import ExpertParallel
from hwsim.jobs.speculative import Speculation
from hwsim.jobs.prefix_cache import PrefixCache
from hwsim.jobs.serving_cost import StageCost, StageCosts
from hwsim.jobs.serving_ff import DecodeRuns
from hwsim.jobs.serving_scheduler import Scheduler, _Replica, _Seq
from hwsim.jobs.system import System
from hwsim.workloads.arrivals import Request
from hwsim.workloads.inference import ServingCost, serving_cost
from hwsim.workloads.memory import storage_bytes
from hwsim.workloads.speculative import SpeculativeConfig

__all__ = ["ServingPlan", "ServingJob", "POLICIES", "ROUTERS", "PREEMPTION"]

POLICIES = ("continuous", "static")
PREEMPTION = ("recompute", "swap")
ROUTERS = ("round_robin", "least_outstanding", "kv_aware")


@dataclass(frozen=True)
class ServingPlan:
    """Everything a serving run needs, resolved. ``replicas[i]`` lists replica *i*'s devices,
    stage-major (stage *s* holds ``replicas[i][s*tp:(s+1)*tp]``). ``requests`` arrive open-loop
    in time order or, with ``clients`` > 0, closed-loop: each client sends the next request
    (its ``arrival_s`` is then set when sent) after its previous one completed and a think time
    (``think_s[i]`` before request *i*; a client's first request goes at once).
    ``prefill_replicas`` > 0 disaggregates: the first ones only prefill, the others only decode,
    and each sequence's KV cache moves between them over the graph's links. ``speculative``:
    speculative decoding (:mod:`hwsim.jobs.speculative`), None for plain decoding. ``ep``,
    ``attention_dp``, ``expert_skew``: expert parallelism (:mod:`hwsim.jobs.moe`; with
    ``attention_dp`` a stage is ``tp x ep`` devices, group-major, and ``max_batch_size`` /
    ``max_batched_tokens`` are the replica's, all groups together). ``fast_forward``: decode
    iterations of an unchanged batch advanced in one step (:mod:`hwsim.jobs.serving_ff`; the
    same results as one at a time); ``record_iterations``: every fast-forwarded iteration
    its own event (else one per device for each stretch of them with the same bound)."""

    job: str
    spec: object
    replicas: tuple[tuple[str, ...], ...]
    tp: int
    pp: int
    precision: str
    requests: tuple[Request, ...]
    policy: str = "continuous"
    max_batch_size: int = 256
    max_batched_tokens: int = 8192
    chunked_prefill: bool = False
    no_evict: bool = False
    block_tokens: int = 16
    memory_fraction: float = 0.9
    router: str = "round_robin"
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    clients: int = 0
    think_s: tuple[float, ...] = ()
    preemption: str = "recompute"
    hosts: tuple[tuple[str, str], ...] = ()
    prefill_replicas: int = 0
    engine: EngineProfile | None = None
    kv_precision: str | None = None
    weight_precision: str | None = None
    weight_group: int = 128
    prefill_with_decodes: bool = False
    speculative: SpeculativeConfig | None = None
    prefix_caching: bool = False
    ep: int = 1
    attention_dp: bool = False
    expert_skew: float = 0.0
    fast_forward: bool = True
    record_iterations: bool = False

    @property
    def reserves(self) -> bool:
        """A sequence's KV blocks for its prompt and whole output are reserved at admission
        (static batching, or ``no_evict``): it never takes a block while decoding."""
        return self.policy == "static" or self.no_evict

    def __post_init__(self) -> None:
        if self.preemption not in PREEMPTION:
            raise ValueError(f"unknown preemption {self.preemption!r}; valid: "
                             f"{', '.join(PREEMPTION)}")
        if self.preemption == "swap" and not self.hosts:
            raise ValueError("preemption 'swap' needs hosts: (device, host memory) pairs")
        if self.prefill_replicas and not 0 < self.prefill_replicas < len(self.replicas):
            raise ValueError(f"prefill_replicas={self.prefill_replicas} must leave at least one "
                             f"of the {len(self.replicas)} replicas to decode")
        if self.prefill_replicas and self.policy != "continuous":
            raise ValueError("prefill/decode disaggregation needs policy 'continuous'")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown scheduler policy {self.policy!r}; valid: "
                             f"{', '.join(POLICIES)}")
        if self.router not in ROUTERS:
            raise ValueError(f"unknown router {self.router!r}; valid: {', '.join(ROUTERS)}")
        dp = self.ep if self.attention_dp else 1
        for r in self.replicas:
            if len(r) != self.tp * dp * self.pp:
                raise ValueError(
                    f"a replica has {len(r)} devices, not tp x pp = {self.tp * self.pp}"
                    if dp == 1 else f"a replica has {len(r)} devices, not tp x ep x pp = "
                    f"{self.tp} x {self.ep} x {self.pp} = {self.tp * dp * self.pp} (attention_dp)")
        if self.attention_dp:
            bad = [what for what, on in (("prefill_replicas", self.prefill_replicas),
                                         ("preemption 'swap'", self.preemption == "swap"),
                                         ("speculative decoding", self.speculative)) if on]
            if bad:
                raise ValueError(f"attention_dp with {', '.join(bad)} is not modelled (a "
                                 f"sequence's KV cache lives in one attention group); valid: "
                                 f"attention_dp: false, or none of these")
        if not self.chunked_prefill and self.requests:
            longest = max(q.prompt_tokens for q in self.requests)
            if longest > self.max_batched_tokens:
                raise ValueError(f"a prompt of {longest} tokens exceeds max_batched_tokens="
                                 f"{self.max_batched_tokens} without chunked prefill; valid: "
                                 f"max_batched_tokens >= {longest} or chunked_prefill: true")


class ServingJob(Front, Scheduler, StageCosts, DecodeRuns):
    """Runs a :class:`ServingPlan` on a :class:`System`. After ``env.run()``: ``seqs`` holds
    every request's record; ``fits`` is False (``oom`` says why) when a replica's devices cannot
    hold the weights and at least one sequence's KV cache, and then nothing runs."""

    def __init__(self, system: System, plan: ServingPlan) -> None:
        super().__init__(system.env)
        self.system, self.plan = system, plan
        self.engine = plan.engine or get_engine()
        self.costs: list[ServingCost] = [serving_cost(
            plan.spec, tp=plan.tp, pp=plan.pp, stage=s, precision=plan.precision,
            kv_precision=plan.kv_precision, weight_precision=plan.weight_precision,
            weight_group=plan.weight_group, ep=plan.ep, attention_dp=plan.attention_dp)
            for s in range(plan.pp)]
        self.experts = ExpertParallel(self) if plan.ep > 1 else None
        self._dp = self.experts.dp if self.experts is not None else 1
        self.speculation = Speculation(self) if plan.speculative is not None else None
        self._per_decode = 1  # tokens a decoding sequence puts through the target per iteration
        if self.speculation is not None:  # the proposer's weights and KV cache; k + 1 verified
            self.costs = self.speculation.costs(self.costs)
            self._per_decode = self.speculation.k + 1
        self.oom: str | None = None
        self.replicas: list[_Replica] = []
        self._cost_memo: dict[tuple, StageCost] = {}
        self._run_costs: dict[tuple[int, int], StageCost] = {}  # (replica, decodes)
        self._names: dict[tuple[int, int], list[str]] = {}  # (replica, stage): streams
        self._groups: dict[tuple, CollectiveGroup] = {}
        self._swaps: list[tuple[_Seq, str]] = []
        self.breakdown: dict[str, float] = {}

    @property
    def fits(self) -> bool:
        return self.oom is None

    @property
    def devices(self) -> list[str]:
        return [d for r in self.plan.replicas for d in r]

    # -- set-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        plan = self.plan
        per = plan.tp * self._dp  # devices of a stage
        for i, devs in enumerate(plan.replicas):
            stages = [list(devs[s * per:(s + 1) * per]) for s in range(plan.pp)]
            blocks = None
            for s, stage in enumerate(stages):
                cost = self.costs[s]
                for d in stage:
                    dev = self.system.device(d)
                    room = (dev.spec.memory_bytes * plan.memory_fraction - cost.weight_bytes
                            if self.engine.kv_memory == "total" else
                            (dev.spec.memory_bytes - cost.weight_bytes) * plan.memory_fraction)
                    per_block = cost.kv_bytes_per_token * plan.block_tokens
                    n = int(room // per_block) if per_block > 0 else 0
                    blocks = n if blocks is None else min(blocks, n)
                    if i == 0 and not self.breakdown:
                        self.breakdown = {"weights": cost.weight_bytes,
                                          "kv_cache": max(n, 0) * per_block}
                    if room <= 0:
                        self.oom = (f"{d}: the weights ({cost.weight_bytes / 1e9:.3g} GB) exceed "
                                    f"{plan.memory_fraction:g} of its "
                                    f"{dev.spec.memory_bytes / 1e9:.3g} GB")
                        return
                    dev.memory.allocate(cost.weight_bytes, "weights")
                    dev.memory.allocate(n * per_block, "kv_cache")
            longest = max((q.prompt_tokens + q.output_tokens for q in plan.requests), default=0)
            longest += self._per_decode - 1  # speculation's lookahead slots
            need = math.ceil(longest / plan.block_tokens)
            if blocks < need:
                self.oom = (f"replica {i}: KV cache of {blocks} blocks of {plan.block_tokens} "
                            f"tokens cannot hold the longest request ({longest} tokens)")
                return
            role = ("both" if not plan.prefill_replicas else
                    "prefill" if i < plan.prefill_replicas else "decode")
            blocks *= self._dp  # attention groups' pools, pooled (hwsim.jobs.moe)
            self.replicas.append(_Replica(i, stages, blocks, blocks, role=role,
                                          cache=PrefixCache(plan.block_tokens, blocks)
                                          if plan.prefix_caching else None))
        for r in self.replicas:
            self.env.process(self._replica(r))
        self.env.process(self._arrivals())

    def _group(self, devices: Sequence[str]) -> CollectiveGroup:
        key = tuple(devices)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = CollectiveGroup(self.system, devices, self.plan.job)
        return g

    # -- arrivals and routing -------------------------------------------------------------------
    def _arrivals(self) -> Generator:
        env, plan = self.env, self.plan
        if plan.clients:
            nxt = iter(range(len(plan.requests)))
            yield env.all_of([env.process(self._client(c, nxt)) for c in range(plan.clients)])
            return
        yield from self._open_loop(plan.requests, self._send)

    def _client(self, c: int, nxt) -> Generator:
        """One closed-loop client: send, wait for the last token, think, send the next."""
        env, plan = self.env, self.plan
        first = True
        for i in nxt:
            if not first and plan.think_s[i] > 0:
                yield env.timeout(plan.think_s[i])
            first = False
            seq = self._send(replace(plan.requests[i], arrival_s=env.now))
            seq.done = env.event()
            yield seq.done

    def _send(self, req: Request) -> _Seq:
        r = self._route()
        return self._enqueue(_Seq(req, r.index), r)

    def _route(self, role: str = "prefill") -> _Replica:
        """The replica a new request (or, with *role* ``decode``, a prefilled sequence) goes
        to, by the plan's router among the replicas that take it."""
        reps = [r for r in self.replicas if r.role in ("both", role)]
        how = self.plan.router if role == "prefill" else "least_outstanding"
        if how == "round_robin":
            return self._round_robin(reps)
        if how == "least_outstanding":
            return min(reps, key=lambda r: (len(r.waiting) + len(r.running), r.index))
        return max(reps, key=lambda r: (r.blocks_free - sum(
            math.ceil(s.target / self.plan.block_tokens) for s in r.waiting), -r.index))

    # -- the scheduler --------------------------------------------------------------------------
    def _replica(self, r: _Replica) -> Generator:
        env, plan = self.env, self.plan
        while True:
            batch = self._schedule(r)
            if batch is None:
                if not (yield from self._idle(r, len(plan.requests))):
                    return
                continue
            prefills, decodes = batch
            if self._swaps:
                yield from self._swap(r)
            if self._can_run(r, prefills, decodes):
                yield from self._decode_run(r, decodes)
                continue
            t0 = env.now
            yield from self._iterate(r, prefills, decodes)
            self._finish_iteration(r, prefills, decodes, t0)

    def _handoff(self, src: _Replica, s: _Seq) -> Generator:
        """Disaggregation: a prefilled sequence's KV cache goes from every device of the
        prefill replica to the same place in a decode replica (the least loaded), which then
        queues it for decoding."""
        dst = self._route("decode")
        plan = self.plan
        evs = []
        for st, (a_devs, b_devs) in enumerate(zip(src.stages, dst.stages)):
            nbytes = s.cached * self.costs[st].kv_bytes_per_token
            for a, b in zip(a_devs, b_devs):
                evs.append(self.system.transfer(a, b, nbytes, name="kv.handoff", job=plan.job,
                                                rank=src.index))
        # the decode replica takes its cache and, with no_evict, the blocks of its whole output
        held = self._whole_blocks(s) if plan.no_evict else self._blocks(s.cached + 1)
        s.blocks, s.handoff, s.replica = 0, held, dst.index
        dst.waiting.append(s)  # reserve its place in arrival order; admitted once arrived
        s.arrived = self.env.event()
        yield self.env.all_of(evs)
        s.arrived.succeed()
        if dst.wake is not None and not dst.wake.triggered:
            dst.wake.succeed()

    def _swap(self, r: _Replica) -> Generator:
        """The KV copies the scheduler decided, each sequence's cache on every device of the
        replica to or from its host memory, all at once (PCIe)."""
        plan, pending = self.plan, self._swaps
        self._swaps = []
        hosts = dict(plan.hosts)
        evs = []
        for s, way in pending:
            if way == "none":
                continue
            for st, devs in enumerate(r.stages):
                nbytes = s.cached * self.costs[st].kv_bytes_per_token
                for d in devs:
                    a, b = (d, hosts[d]) if way == "out" else (hosts[d], d)
                    evs.append(self.system.transfer(a, b, nbytes, name=f"kv.swap_{way}",
                                                    job=plan.job, rank=r.index, kind="copy"))
        if evs:
            yield self.env.all_of(evs)

    # -- one iteration --------------------------------------------------------------------------
    def _iterate(self, r: _Replica, prefills: list, decodes: list) -> Generator:
        plan = self.plan
        p_tokens, p_pairs, logits = 0, 0, len(decodes)  # logits: the positions that sample
        for s, n in prefills:
            p_tokens += n
            p_pairs += n * s.prefilled + n * (n + 1) / 2
            if s.prefilled + n >= s.target:
                logits += 1
        d_pairs = 0
        for s in decodes:
            d_pairs += s.cached + 1
        d_pairs = float(d_pairs)
        env, rec = self.env, self.system.recorder
        shape = (p_tokens, p_pairs, len(decodes), d_pairs, logits, None)
        if self.speculation is not None:  # propose, then verify k + 1 positions per sequence
            shape = self.speculation.verify(shape, decodes) if decodes else shape
            yield from self.speculation.propose(r, prefills, decodes)
        p_seqs, loads = max(1, len(prefills)), None
        if self.experts is not None:  # the busiest attention group; the experts' drawn loads
            shape, p_seqs, loads = self.experts.iteration(r, shape, prefills, decodes)
        for st, devs in enumerate(r.stages):
            load = loads[st] if loads else None
            seconds, flops, nbytes, category, a2a = self._stage_time(
                st, devs, *shape[:5], kv_tokens=shape[5], p_seqs=p_seqs, moe=load)
            t0 = env.now
            yield env.timeout(seconds)
            rec.event_rows([(t0, env.now - a2a, name, "compute", "iteration", plan.job,
                             r.index, nbytes, flops, category)
                            for name in self._stream_names(r, st)])
            if self.experts is not None:
                self.experts.record(r, devs, env.now - a2a, env.now, seconds)
            if st + 1 < plan.pp:  # activations to the next stage
                vb = storage_bytes(plan.precision)
                hidden = plan.spec.hidden
                yield self.system.transfer(devs[0], r.stages[st + 1][0],
                                           (shape[0] + shape[2]) * hidden * vb / plan.tp,
                                           name="p2p", job=plan.job, rank=r.index)

    def _stream_names(self, r: _Replica, st: int) -> list[str]:
        """The compute streams of replica *r*'s stage *st* (its events' resources)."""
        names = self._names.get((r.index, st))
        if names is None:
            names = self._names[r.index, st] = [f"{d}/compute" for d in r.stages[st]]
        return names

    def _finish_iteration(self, r: _Replica, prefills: list, decodes: list, t0: float,
                          now: float | None = None) -> None:
        """Account one iteration that ran from *t0* to *now* (default: the clock)."""
        plan = self.plan
        now = self.env.now if now is None else now
        r.iterations += 1
        r.batch_tokens.append((t0, now, len(prefills) + len(decodes),
                               sum(n for _, n in prefills) + self._per_decode * len(decodes),
                               r.blocks_total - r.blocks_free,
                               sum(n for _, n in prefills), r.kv_blocked,
                               *((r.cache.blocks, r.cache.idle) if r.cache else (0, 0))))
        for s, n in prefills:
            s.prefilled += n
            s.cached += n
            if s.prefilled >= s.target:  # the last prompt position gives the next token
                s.generated += 1
                if math.isnan(s.first_token_s):
                    s.first_token_s = now
        if r.role == "prefill":  # prefilled sequences move to a decode replica
            for s in [s for s in r.running if s.decoding
                      and s.generated < s.req.output_tokens]:
                r.running.remove(s)
                self._release(r, s)
                self.env.process(self._handoff(r, s))
        if self.speculation is not None:  # accepted guesses plus one token each
            self.speculation.advance(r, decodes)
        for s in (decodes if self.speculation is None else ()):
            if s.cached % plan.block_tokens == 0 and not plan.reserves:
                r.blocks_free -= 1
                s.blocks += 1
            s.cached += 1
            s.generated += 1
        self._complete(r, now)

    def _complete(self, r: _Replica, now: float, ended: list | None = None) -> None:
        """The sequences of *r* that have generated their whole output (*ended*, in running
        order, when known) leave at *now*."""
        if ended is None:
            ended = [s for s in r.running if s.decoding and s.generated >= s.req.output_tokens]
        for s in ended:
            s.end_s = now
            r.running.remove(s)
            self._release(r, s)
            self._leave()
            if s.done is not None:
                s.done.succeed()
