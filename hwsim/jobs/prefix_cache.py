"""Prefix caching: the KV-cache blocks of shared prompt prefixes on one serving replica, kept
after the sequences that computed them end and reused by later requests that start with the
same prefix (vLLM's automatic prefix caching, SGLang's RadixAttention).

What the engines do, from their documentation and source (retrieved for this model):

- vLLM, "Automatic Prefix Caching" (docs/design/prefix_caching.md, vllm-project/vllm): only
  *full* blocks are cached, each identified by its tokens and the tokens before it (a hash
  chain), so a request reuses the longest run of full blocks from its prompt's start that is
  cached; a block carries a reference count (the requests using it); blocks with count zero
  stay cached in a free queue and are evicted least recently used first when a new block is
  needed, a finished request's blocks entering that queue in reverse order so that its tail
  blocks go first; a hit block is "touched" (taken out of the free queue) before new blocks
  are allocated. vllm/v1/core/kv_cache_manager.py: when every prompt token hits, the last one
  is computed anyway, for its logits (``max_cache_hit_length = prompt_length - 1``); and a
  request's full blocks are registered in the cache when they are scheduled
  (``allocate_slots`` -> ``cache_blocks``), so a request scheduled after them, even in the
  same step, hits them.
- SGLang, python/sglang/srt/mem_cache/radix_cache.py (sgl-project/sglang): a radix tree over
  token sequences whose nodes hold KV indices and a ``lock_ref`` count of the requests using
  them; a finished request's tokens are inserted in the tree (``cache_finished_req``); only
  unlocked nodes are evicted, least recently used first by default.

The model here is that common part, at block granularity. A prefix is named by the request's
``prefix_id``; its block *k* (tokens ``k*B .. (k+1)*B - 1``) is the key ``(prefix_id, k)``, so
two requests with the same id and different prefix lengths share the full blocks they have in
common (a path in a radix tree; the chain of hashes in vLLM). A request's other blocks (its own
prompt and its output) are never shared, nobody else can hit them; but as in both engines they
stay in the cache when freed and take their place in the eviction order, so a finished
request's blocks push older idle prefixes towards eviction. A sequence preempted to be
recomputed finds its own full blocks again (key ``(-2 - request id, k)``) if they have not been
evicted meanwhile, as a vLLM request does. Reuse is exact: a hit block holds what a
recomputation would give, so a hit saves its prefill compute (the attention of the new tokens
still reads it).

Block accounting with the replica's free count (``blocks_free``): the free blocks are the
blocks never used, then, in the order they were freed, blocks whose content is kept (*idle*
cached blocks, which a request may hit and take back) or not (a partial last block, a
duplicate, a swapped-out sequence's blocks): vLLM's free queue. Blocks are taken from its head,
the never-used ones first; taking a cached block evicts it. The scheduler takes free blocks in
several places; :meth:`PrefixCache.trim` catches the queue up with the free count before each
look-up. Pure bookkeeping: no SimPy, no randomness.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import count
from typing import Protocol

__all__ = ["PrefixCache"]

Key = tuple[int, int]  # (prefix id, or -2 - request id for its own blocks; block index)


class _Request(Protocol):
    id: int
    prefix_id: int
    prefix_tokens: int


class PrefixCache:
    """The KV blocks of one replica of ``blocks_total`` blocks of ``block_tokens`` tokens, as a
    prefix cache sees them.

    ``refs[key]``: for a cached block, how many running sequences use it (0: idle, in the free
    queue). ``queue``: the freed blocks, least recently freed first (the eviction order),
    cached ones by key and the others as ``(-1, n)``; ``empty``: the never-used free blocks,
    taken before them. Per sequence (its request id): the shared keys it references and how
    far its prefix has been registered."""

    def __init__(self, block_tokens: int, blocks_total: int) -> None:
        if block_tokens < 1:
            raise ValueError(f"block_tokens={block_tokens} must be >= 1")
        if blocks_total < 0:
            raise ValueError(f"blocks_total={blocks_total} must be >= 0")
        self.block_tokens = block_tokens
        self.empty = blocks_total
        self.refs: dict[Key, int] = {}
        self.queue: OrderedDict[Key, None] = OrderedDict()
        self.idle = 0
        self.evictions = 0
        self._anon = count()
        self._held: dict[int, list[Key]] = {}
        self._next: dict[int, int] = {}

    @property
    def blocks(self) -> int:
        """Cached blocks: shared prefixes in use or idle, and preempted sequences' own."""
        return len(self.refs)

    def referenced(self) -> int:
        """Cached blocks that running sequences use (0 when all have ended)."""
        return len(self.refs) - self.idle

    def _key(self, req: _Request, k: int) -> Key:
        if req.prefix_id >= 0 and k < req.prefix_tokens // self.block_tokens:
            return req.prefix_id, k
        return -2 - req.id, k

    def match(self, req: _Request, limit_tokens: int) -> tuple[int, int]:
        """The longest run of cached blocks from the start of *req*'s sequence, within its
        first *limit_tokens* tokens (the sequence less its last token, whose logits must be
        computed): its shared prefix's blocks, then, after a recompute preemption, its own.
        Returns ``(blocks hit, of which idle)``; changes nothing."""
        hit = idle = 0
        for k in range(max(limit_tokens, 0) // self.block_tokens):
            n = self.refs.get(self._key(req, k))
            if n is None:
                break
            idle += n == 0
            hit += 1
        return hit, idle

    def lookup(self, req: _Request, target: int, blocks: int, free: int) -> tuple[int, int]:
        """A scheduler's question about *req*, whose sequence of *target* tokens needs
        *blocks* blocks, with *free* blocks free: ``(tokens of it cached, free blocks its
        admission takes)``, the latter *blocks* less the cached ones plus the idle ones among
        those (taken back from the free queue). First the queue is caught up with *free*
        (:meth:`trim`)."""
        self.trim(free)
        hit, idle = self.match(req, target - 1)
        return hit * self.block_tokens, blocks - hit + idle

    def admit(self, req: _Request, hit: int, scheduled_tokens: int) -> None:
        """*req*'s sequence starts (or restarts) with its first *hit* blocks from the cache (as
        :meth:`match` found them): it references the shared ones, takes its own back, and
        idle ones leave the free queue; then its prefix blocks within its first
        *scheduled_tokens* tokens, computed by it, are registered (:meth:`register`)."""
        if req.id in self._held:
            raise ValueError(f"sequence {req.id} is already admitted; release it first")
        shared = []
        for k in range(hit):
            key = self._key(req, k)
            n = self.refs[key]
            if n == 0:
                del self.queue[key]
                self.idle -= 1
            if key[0] >= 0:
                self.refs[key] = n + 1
                shared.append(key)
            else:
                del self.refs[key]  # its own block again, private
        self._held[req.id] = shared
        self._next[req.id] = hit
        self.register(req, scheduled_tokens)

    def register(self, req: _Request, upto_tokens: int) -> None:
        """The full blocks of *req*'s prefix within its first *upto_tokens* tokens, now
        scheduled, become shared: later requests hit them. A block another sequence registered
        first stays *req*'s own copy (vLLM's block tables are append-only and keep such
        duplicates until the request ends)."""
        if req.prefix_id < 0 or req.id not in self._held:
            return
        end = min(req.prefix_tokens, upto_tokens) // self.block_tokens
        keys = self._held[req.id]
        for k in range(self._next[req.id], end):
            key = (req.prefix_id, k)
            if key not in self.refs:
                self.refs[key] = 1
                keys.append(key)
        self._next[req.id] = max(self._next[req.id], end)

    def release(self, req: _Request, blocks: int, keep_tokens: int = 0) -> int:
        """*req*'s sequence frees its *blocks* blocks (it ended, was preempted, or moved to
        another replica): the shared ones lose a reference, and every block no longer used
        joins the free queue, its last block first (evicted first). Its own full blocks within
        its first *keep_tokens* tokens (a recompute preemption: the tokens in its KV cache) stay
        cached for its return. Returns the blocks that other sequences still use: those that
        do not return to the free pool."""
        shared = set(self._held.pop(req.id, []))
        self._next.pop(req.id, None)
        own = keep_tokens // self.block_tokens
        kept = 0
        for k in range(blocks - 1, -1, -1):
            key = self._key(req, k)
            if key in shared:
                n = self.refs[key] - 1
                self.refs[key] = n
                if n:
                    kept += 1
                    continue
                self.idle += 1
            elif key[0] < -1 and k < own and key not in self.refs:  # (else a copy is kept)
                self.refs[key] = 0
                self.idle += 1
            else:
                key = (-1, next(self._anon))  # nothing anyone can hit
            self.queue[key] = None
        return kept

    def trim(self, free: int) -> int:
        """With *free* blocks free, take from the head of the free queue (never-used blocks
        first) the blocks that have been taken since: cached ones are evicted. Returns the
        blocks evicted."""
        extra = self.empty + len(self.queue) - max(free, 0)
        taken = min(extra, self.empty) if extra > 0 else 0
        self.empty -= taken
        n = 0
        for _ in range(extra - taken):
            key, _ = self.queue.popitem(last=False)
            if key[0] != -1:
                del self.refs[key]
                self.idle -= 1
                n += 1
        self.evictions += n
        return n
