"""The iteration-level scheduler of an LLM serving replica (:class:`Scheduler`, a part of
:class:`~hwsim.jobs.serving.ServingJob`) and the state it works on: the requests in a replica
(:class:`_Seq`) and the replica (:class:`_Replica`).

Each iteration the scheduler picks what runs: the decoding sequences (one token each, or ``k + 1``
positions under speculative decoding) and prefill work from the waiting queue, first come first
served, within ``max_batch_size`` sequences and ``max_batched_tokens`` tokens, the KV blocks
each needs (less the prefix-cache hits), preempting the newest sequence when a decoding one
cannot get its next block; static batching admits a batch whole and prefills it over as many
iterations as its prompts need (module docstring of :mod:`hwsim.jobs.serving`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import simpy

from hwsim.jobs.prefix_cache import PrefixCache
from hwsim.jobs.serving_log import IterationLog
from hwsim.workloads.arrivals import Request

__all__ = ["Scheduler"]


@dataclass
class _Seq:
    """A request in a replica. ``target``: tokens to prefill since its (re-)admission (the
    prompt, plus after a preemption what was generated); ``cached``: tokens in its KV cache."""

    req: Request
    replica: int
    target: int = 0
    prefilled: int = 0
    cached: int = 0
    generated: int = 0
    blocks: int = 0
    start_s: float = math.nan   # first admitted
    first_token_s: float = math.nan
    end_s: float = math.nan
    preemptions: int = 0
    done: simpy.Event | None = None
    swapped: int = 0            # blocks held in host memory (swap preemption)
    handoff: int = 0            # blocks its KV cache needs on arrival from a prefill replica
    arrived: simpy.Event | None = None  # its KV cache has arrived (disaggregation)
    hit_tokens: int = 0         # prompt tokens found in the prefix cache at first admission
    saved_tokens: int = 0       # prefill tokens the prefix cache saved, all admissions

    @property
    def decoding(self) -> bool:
        return self.target > 0 and self.prefilled >= self.target


@dataclass
class _Replica:
    index: int
    stages: list[list[str]]
    blocks_total: int
    blocks_free: int
    waiting: deque = field(default_factory=deque)
    running: list = field(default_factory=list)
    wake: simpy.Event | None = None
    iterations: int = 0
    batch_tokens: IterationLog = field(default_factory=IterationLog)  # its iterations
    role: str = "both"          # or "prefill", "decode" (disaggregated)
    kv_blocked: bool = False    # the head of the queue waits for KV blocks this iteration
    cache: PrefixCache | None = None  # shared prefix blocks (prefix caching)


class Scheduler:
    """The scheduling methods of :class:`~hwsim.jobs.serving.ServingJob` (which provides
    ``plan``, ``env``, ``_swaps``, ``_per_decode`` and ``_leave``)."""

    def _blocks(self, tokens: int) -> int:
        return math.ceil(tokens / self.plan.block_tokens)

    def _whole_blocks(self, s: _Seq) -> int:
        """The blocks of *s*'s prompt and whole output (its last iteration's positions
        included): what a static batch, or ``no_evict``, reserves at admission."""
        return self._blocks(s.req.prompt_tokens + s.req.output_tokens + self._per_decode - 1)

    def _admit(self, r: _Replica, s: _Seq, blocks: int, hit: tuple[int, int] = (0, 0),
               n: int = 0) -> None:
        """*s* starts with *blocks* KV blocks; *hit*: its tokens found in the prefix cache and
        the free blocks it takes (:meth:`PrefixCache.lookup`); *n*: the tokens it prefills now."""
        r.waiting.popleft()
        r.blocks_free -= hit[1] if r.cache is not None else blocks
        s.blocks, s.target = blocks, s.req.prompt_tokens + s.generated
        s.prefilled = s.cached = hit[0]
        if math.isnan(s.start_s):
            s.start_s = self.env.now
            s.hit_tokens = hit[0]
        s.saved_tokens += hit[0]
        if r.cache is not None:
            r.cache.admit(s.req, hit[0] // self.plan.block_tokens, hit[0] + n)
        r.running.append(s)

    def _release(self, r: _Replica, s: _Seq, keep: bool = False) -> None:
        """*s*'s blocks return to *r*'s free pool, less the shared ones others still use; with
        *keep* (a recompute preemption) its KV stays cached until evicted."""
        if r.cache is not None:
            r.blocks_free -= r.cache.release(s.req, s.blocks, s.cached if keep else 0)
        r.blocks_free += s.blocks
        s.blocks = 0

    def _schedule(self, r: _Replica) -> tuple[list, list] | None:
        """The next iteration's work: ``(prefills, decodes)``, prefills as ``(seq, tokens)``;
        None when there is nothing to do."""
        plan = self.plan
        r.kv_blocked = False
        if plan.policy == "static":
            return self._schedule_static(r)
        # every decoding sequence may need a block for its next token: preempt the newest
        # sequences until they fit (no_evict: their blocks were reserved at admission)
        bt = plan.block_tokens
        while True:
            decodes = [s for s in r.running if 0 < s.target <= s.prefilled]  # s.decoding
            if plan.no_evict:
                need = 0
            elif self.speculation is None:
                need = 0
                for s in decodes:
                    if s.cached % bt == 0:
                        need += 1
            else:
                need = self.speculation.need_blocks(decodes)
            if need <= r.blocks_free or not r.running:
                break
            self._preempt(r, max(r.running, key=lambda s: (s.start_s, s.req.id)))
        free = r.blocks_free - need
        mixed = plan.chunked_prefill or plan.prefill_with_decodes
        budget = plan.max_batched_tokens - (len(decodes) * self._per_decode if mixed else 0)
        prefills: list[tuple[_Seq, int]] = []
        if plan.chunked_prefill:  # unfinished chunked prefills continue first
            for s in r.running:
                if not s.decoding and budget > 0:
                    n = min(s.target - s.prefilled, budget)
                    prefills.append((s, n))
                    budget -= n
                    if r.cache is not None:
                        r.cache.register(s.req, s.prefilled + n)
        while r.waiting and len(r.running) < plan.max_batch_size and budget > 0:
            s = r.waiting[0]
            held = s.handoff or s.swapped  # its KV cache exists (prefilled elsewhere, swapped)
            if held:  # readmitted as it was: it decodes from the next iteration
                if held > free or (s.handoff and not s.arrived.processed):
                    r.kv_blocked = held > free
                    break
                r.waiting.popleft()
                r.blocks_free -= held
                free -= held
                # a swapped cache is copied back first; a handed-over one is already here
                self._swaps.append((s, "in" if s.swapped else "none"))
                s.blocks, s.handoff, s.swapped = held, 0, 0
                r.running.append(s)
                continue
            target = s.req.prompt_tokens + s.generated
            # no_evict (TensorRT-LLM's GUARANTEED_NO_EVICT): the blocks of its prompt and its
            # whole output, reserved now, so that it never has to be preempted
            blocks = self._whole_blocks(s) if plan.no_evict else self._blocks(target)
            hit = r.cache.lookup(s.req, target, blocks, free) if r.cache else (0, blocks)
            n = min(target - hit[0], budget) if plan.chunked_prefill else target - hit[0]
            # a whole prefill longer than the token budget (a recompute after a preemption:
            # its prompt and what it had generated) runs alone, the only way it ever fits
            alone = n > plan.max_batched_tokens and not prefills and not r.running
            if (n > budget and not alone) or hit[1] > free:
                r.kv_blocked = hit[1] > free and (n <= budget or alone)
                break  # first come, first served: nobody overtakes the head of the queue
            self._admit(r, s, blocks, hit, n)
            free -= hit[1]
            prefills.append((s, n))
            budget -= n
        if r.cache is not None:
            r.cache.trim(free)
        if not mixed and prefills:
            return prefills, []  # vLLM V0: a prefill iteration holds prefills only
        if not prefills and not decodes:
            return ([], []) if self._swaps else None  # a swap-in alone still has to run
        return prefills, decodes

    def _schedule_static(self, r: _Replica) -> tuple[list, list] | None:
        """Static batching: a batch is admitted whole when the previous one has finished (up to
        ``max_batch_size`` sequences whose prompt and output KV blocks fit, reserved up front),
        its prompts prefilled in iterations of at most ``max_batched_tokens`` tokens (whole
        prompts, or chunks with ``chunked_prefill``), then decoded together until its last
        sequence ends. A batch larger than the token budget is prefilled over several
        iterations, never cut."""
        plan = self.plan
        if not r.running:
            while r.waiting and len(r.running) < plan.max_batch_size:
                s = r.waiting[0]
                blocks = self._whole_blocks(s)
                hit = (r.cache.lookup(s.req, s.req.prompt_tokens, blocks, r.blocks_free)
                       if r.cache else (0, blocks))
                if hit[1] > r.blocks_free:
                    break
                self._admit(r, s, blocks, hit, s.req.prompt_tokens - hit[0])
            if r.cache is not None:
                r.cache.trim(r.blocks_free)
            if not r.running:
                return None
        pending = [s for s in r.running if not s.decoding]
        if not pending:
            return [], [s for s in r.running if s.decoding]
        prefills: list[tuple[_Seq, int]] = []
        budget = plan.max_batched_tokens
        for s in pending:
            left = s.target - s.prefilled
            n = min(left, budget) if plan.chunked_prefill else left
            if n <= 0 or n > budget:
                break
            prefills.append((s, n))
            budget -= n
        return prefills, []

    def _preempt(self, r: _Replica, s: _Seq) -> None:
        """Free the sequence's blocks and queue it first again. Recompute: it will prefill its
        prompt and the tokens generated so far. Swap: its KV cache goes to host memory (copied
        before the next iteration) and comes back when it is readmitted."""
        r.running.remove(s)
        blocks, swap = s.blocks, self.plan.preemption == "swap" and s.decoding
        self._release(r, s, keep=not swap)  # prefix caching: a shared prefix stays
        s.preemptions += 1
        if swap:
            s.swapped = blocks
            self._swaps.append((s, "out"))
        else:
            s.target = s.prefilled = s.cached = 0
        r.waiting.appendleft(s)

