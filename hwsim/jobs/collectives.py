"""Collectives built from flows on the real graph.

Ring all-reduce (as NCCL's ring): the buffer of S bytes is cut into n chunks; in 2(n-1) steps
(n-1 reduce-scatter, n-1 all-gather) every rank sends one chunk to its ring successor, all at
once, and a step ends when its slowest flow ends. Alone on uniform links of bandwidth B and
per-step latency alpha it takes ``2(n-1)/n * S/B + 2(n-1) * alpha``; on a shared or
oversubscribed fabric the flows contend like any others.
"""

from __future__ import annotations

from typing import Generator, Sequence

import simpy

from hwsim.jobs.system import System
from hwsim.topology import natural_key

__all__ = ["ring_allreduce", "CollectiveGroup", "ring_order"]


def ring_order(system: System, ranks: Sequence[str]) -> list[str]:
    """Ranks ordered by server, then name, so that a ring crosses the network only between
    servers (what NCCL's ring search finds on a fat-tree)."""
    g = system.graph
    return sorted(ranks, key=lambda n: (str(g.nodes[n].get("site", "")),
                                        g.nodes[n].get("server") if g.nodes[n].get("server") is not None else -1,
                                        natural_key(n)))


def ring_allreduce(system: System, ring: Sequence[str], nbytes: float, *, job: str = "",
                   name: str = "allreduce", key: int = 0, ranks: Sequence[int] | None = None
                   ) -> Generator[simpy.Event, object, None]:
    """SimPy process body: ring all-reduce of *nbytes* over the devices *ring* (in ring order).
    *ranks* gives the rank number recorded for each position (default 0..n-1)."""
    n = len(ring)
    if n < 2 or nbytes <= 0:
        return
    chunk = nbytes / n
    env = system.env
    rank_of = list(ranks) if ranks is not None else list(range(n))
    for step in range(2 * (n - 1)):
        flows = [system.transfer(ring[i], ring[(i + 1) % n], chunk, key=key + i, job=job,
                                 rank=rank_of[i], name=f"{name}.step{step}")
                 for i in range(n)]
        yield env.all_of(flows)


class CollectiveGroup:
    """The ranks of one data-parallel group. Each rank *joins* a collective by key; it starts
    when all have joined, after the group's previous collective (one communication stream, in
    order), and every rank's join event succeeds when it ends. Each rank's communication stream
    records the collective as one event."""

    def __init__(self, system: System, devices: Sequence[str], job: str) -> None:
        self.system = system
        self.ring = ring_order(system, devices)
        self.rank_of = {d: i for i, d in enumerate(devices)}
        self.job = job
        self._pending: dict[object, tuple[list[int], simpy.Event, float]] = {}
        self._last: simpy.Event | None = None
        self.category = "comm:" + (self._ring_category() if len(devices) > 1 else "none")

    def _ring_category(self) -> str:
        worst, label = float("inf"), ""
        for a, b in zip(self.ring, self.ring[1:] + self.ring[:1]):
            chans, _, _, cat = self.system.route(a, b)
            cap = min(self.system.net.channels[c].capacity for c in chans)
            if cap < worst:
                worst, label = cap, cat.removeprefix("comm:")
        return label

    def join(self, key: object, rank: int, nbytes: float, name: str) -> simpy.Event:
        joined, done, size = self._pending.get(key, ([], None, nbytes))
        if done is None:
            done = self.system.env.event()
        joined.append(rank)
        self._pending[key] = (joined, done, size)
        if len(joined) == len(self.ring):
            del self._pending[key]
            prev, self._last = self._last, done
            self.system.env.process(self._run(prev, done, size, name))
        return done

    def _run(self, prev: simpy.Event | None, done: simpy.Event, nbytes: float, name: str):
        env = self.system.env
        if prev is not None and not prev.processed:
            yield prev
        start = env.now
        ring_ranks = [self.rank_of[d] for d in self.ring]
        yield from ring_allreduce(self.system, self.ring, nbytes, job=self.job, name=name,
                                  ranks=ring_ranks)
        rec = self.system.recorder
        for d in self.ring:
            rec.event(start, env.now, f"{d}/comm", "collective", name, self.job, self.rank_of[d],
                      nbytes, 0.0, self.category)
        done.succeed()
