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
  them; only unlocked nodes are evicted, least recently used first by default.

The model here is that common part, at block granularity. A prefix is named by the request's
``prefix_id``; its block *k* (tokens ``k*B .. (k+1)*B - 1``) is the key ``(prefix_id, k)``, so
two requests with the same id and different prefix lengths share the full blocks they have in
common (a path in a radix tree; the chain of hashes in vLLM). A request's other blocks (its own
prompt and its output) are never shared: nobody else can hit them, so they return to the free
pool at once (vLLM keeps them hashed in its free queue, where they are evicted as any free
block; for capacity and hits that is the same). Reuse is exact: a hit block holds what a
recomputation would give, so a hit saves its prefill compute (the attention of the new tokens
still reads it).

Block accounting with the replica's free count (``blocks_free``): a cached block that no running
sequence references (*idle*) counts as free, as in vLLM's free queue; when free blocks are
taken, idle ones are evicted, least recently released first, only as far as the empty blocks do
not suffice (:meth:`PrefixCache.trim`). Pure bookkeeping: no SimPy, no randomness.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["PrefixCache"]

Key = tuple[int, int]  # (prefix id, block index within the prefix)


class PrefixCache:
    """The shared prefix blocks of one replica, ``block_tokens`` tokens each.

    ``refs[key]``: how many running sequences use the block; ``idle``: the unreferenced
    blocks, least recently released first (the eviction order). Per sequence (its request
    id): the keys it references and how far its prefix has been registered."""

    def __init__(self, block_tokens: int) -> None:
        if block_tokens < 1:
            raise ValueError(f"block_tokens={block_tokens} must be >= 1")
        self.block_tokens = block_tokens
        self.refs: dict[Key, int] = {}
        self.idle: OrderedDict[Key, None] = OrderedDict()
        self.evictions = 0
        self._held: dict[int, list[Key]] = {}
        self._next: dict[int, int] = {}

    @property
    def blocks(self) -> int:
        """Blocks holding a shared prefix, referenced or idle."""
        return len(self.refs)

    def match(self, prefix_id: int, prefix_tokens: int, limit_tokens: int) -> tuple[int, int]:
        """The longest run of cached blocks ``(prefix_id, 0), (prefix_id, 1), ...`` within the
        prefix's full blocks and the first *limit_tokens* tokens (the prompt less its last
        token, whose logits must be computed): ``(blocks hit, of which idle)``. Changes
        nothing."""
        if prefix_id < 0:
            return 0, 0
        most = min(prefix_tokens, limit_tokens) // self.block_tokens
        hit = idle = 0
        while hit < most:
            n = self.refs.get((prefix_id, hit))
            if n is None:
                break
            idle += n == 0
            hit += 1
        return hit, idle

    def lookup(self, req, target: int, blocks: int, free: int) -> tuple[int, int]:
        """A scheduler's question about request *req* (its ``prefix_id``, ``prefix_tokens``)
        whose sequence of *target* tokens needs *blocks* blocks, with *free* blocks free:
        ``(tokens of its prompt cached, free blocks its admission takes)``, the latter
        *blocks* less the cached ones plus the idle ones among those (taken back from the free
        pool). Idle blocks beyond *free* are evicted first (:meth:`trim`): their room is
        taken."""
        self.trim(free)
        hit, idle = self.match(req.prefix_id, req.prefix_tokens, target - 1)
        return hit * self.block_tokens, blocks - hit + idle

    def admit(self, seq: int, prefix_id: int, prefix_tokens: int, hit: int,
              scheduled_tokens: int) -> None:
        """Sequence *seq* starts (or restarts) with its first *hit* prefix blocks from the
        cache (as :meth:`match` found them): it references them (idle ones leave the eviction
        order); then its prefix blocks within its first *scheduled_tokens* tokens, computed by
        it, are registered (:meth:`register`)."""
        if seq in self._held:
            raise ValueError(f"sequence {seq} is already admitted; release it first")
        keys = [(prefix_id, k) for k in range(hit)]
        for key in keys:
            n = self.refs[key]
            if n == 0:
                del self.idle[key]
            self.refs[key] = n + 1
        self._held[seq] = keys
        self._next[seq] = hit
        self.register(seq, prefix_id, prefix_tokens, scheduled_tokens)

    def register(self, seq: int, prefix_id: int, prefix_tokens: int, upto_tokens: int) -> None:
        """The full blocks of *seq*'s prefix within its first *upto_tokens* tokens, now
        scheduled, become shared: later requests hit them. A block another sequence registered
        first stays *seq*'s own copy (not shared; vLLM's block tables are append-only and keep
        such duplicates until the request ends)."""
        if prefix_id < 0 or seq not in self._held:
            return
        end = min(prefix_tokens, upto_tokens) // self.block_tokens
        keys = self._held[seq]
        for k in range(self._next[seq], end):
            key = (prefix_id, k)
            if key not in self.refs:
                self.refs[key] = 1
                keys.append(key)
        self._next[seq] = max(self._next[seq], end)

    def release(self, seq: int) -> int:
        """*seq* stops using its shared blocks (it ended, was preempted, or moved to another
        replica): each one's count drops, and those no longer used become idle, its last
        block first (evicted first). Returns how many of them other sequences still use: the
        blocks *seq* held that do not return to the free pool."""
        keys = self._held.pop(seq, [])
        self._next.pop(seq, None)
        kept = 0
        for key in reversed(keys):
            n = self.refs[key] - 1
            self.refs[key] = n
            if n == 0:
                self.idle[key] = None
            else:
                kept += 1
        return kept

    def trim(self, free: int) -> int:
        """With *free* blocks free (idle cached ones included), evict idle blocks, least
        recently released first, until they are no more than *free*: the others have been
        taken for new KV. Returns the blocks evicted."""
        n = 0
        while len(self.idle) > max(free, 0):
            key, _ = self.idle.popitem(last=False)
            del self.refs[key]
            n += 1
        self.evictions += n
        return n

    def referenced(self) -> int:
        """Blocks that running sequences use (0 when all have ended)."""
        return sum(1 for n in self.refs.values() if n > 0)
