"""Max-min fair sharing by progressive filling, repaired locally (for :mod:`hwsim.engine.flows`).

The channels and flows of the fluid model, and the solver that gives the active flows their
max-min fair rates when flows start or end: only the flows a change can reach are refilled
(:func:`repair`), on the capacities the others leave. Bookkeeping on these objects only: no
SimPy, no recording.
"""

from __future__ import annotations

import heapq
from typing import Any, Hashable

__all__ = ["Channel", "Flow", "REL_TOL", "repair", "fill", "seed", "violations",
           "held_elsewhere"]

REL_TOL = 1e-9
"""Relative tolerance of the solver's comparisons (saturation, equal rates)."""


class Channel:
    """One direction of a link, or a storage channel: a capacity shared by flows."""

    __slots__ = ("id", "idx", "capacity", "label", "flows", "load", "saturated", "pending",
                 "reserved")

    def __init__(self, cid: Hashable, idx: int, capacity: float, label: str) -> None:
        self.id = cid
        self.idx = idx
        """Declaration order: the deterministic tie-break wherever channels are ordered."""
        self.capacity = capacity
        self.label = label
        self.flows: dict[Flow, float] = {}
        """Active flows on the channel and their coefficients."""
        self.load = 0.0
        """Sum of coefficient x rate over the active flows (bytes/s of capacity in use)."""
        self.saturated = False
        """True when the last allocation left no spare capacity (a bottleneck)."""
        self.pending = 0
        """New flows waiting for this instant's recomputation to join :attr:`flows`."""
        self.reserved = None
        """The :class:`~hwsim.engine.flows.Reservation` holding the channel, if any."""


class Flow:
    """An active or finished transfer. ``rate`` is bytes/s; ``remaining`` is settled at
    ``last_s``."""

    __slots__ = ("id", "size", "remaining", "rate", "last_s", "channels", "max_rate", "latency_s",
                 "start_s", "end_s", "done", "version", "meta")

    def __init__(self, fid: int, size: float, channels: tuple[tuple[Channel, float], ...],
                 max_rate: float | None, latency_s: float, now: float, done: Any,
                 meta: tuple) -> None:
        self.id = fid
        self.size = size
        self.remaining = size
        self.rate = 0.0
        self.last_s = now
        self.channels = channels
        self.max_rate = max_rate
        self.latency_s = latency_s
        self.start_s = now
        self.end_s: float | None = None
        self.done = done
        """The event its arrival succeeds, or the group of flows it belongs to."""
        self.version = 0
        self.meta = meta

    def __hash__(self) -> int:  # deterministic set order (ids), whatever the addresses
        return self.id

    def __eq__(self, other: object) -> bool:
        return self is other


def repair(comp: set[Flow], seeds: list[Channel]
           ) -> tuple[dict[Flow, float], dict[Channel, float]]:
    """Max-min fair rates for the flows a change can reach, by local repair, from *comp* (the
    new flows, already on their channels; grown in place) and *seeds* (the saturated channels
    that new or finished flows touch). Returns the new rates of the final *comp* and the
    channels it touched with their fill levels (:func:`fill`); flows outside keep theirs.

    Max-min fairness holds when every flow has a bottleneck: a saturated channel on which no
    flow runs faster. A change can break that only near the flows whose rates change, so the
    component starts from the new flows and from the flows bottlenecked on the seeds. The
    component is filled on residual capacities, then every channel it touched is checked: an
    outside flow joins if it now runs faster than flows the channel froze, or if it lost its
    bottleneck (a channel that is no longer saturated, or on which a component flow now runs
    faster) and has no other one. Filling repeats until nothing joins. The result equals a
    global progressive filling (tested against one).
    """
    seed(comp, seeds)
    was_saturated: dict[Channel, bool] = {}
    while True:
        for f in comp:
            for ch, _ in f.channels:
                if ch not in was_saturated:
                    was_saturated[ch] = ch.saturated
        rates, touched = fill(comp)
        extra = violations(comp, touched, was_saturated, rates)
        if not extra:
            return rates, touched
        comp.update(extra)


def seed(comp: set[Flow], seeds: list[Channel]) -> None:
    """Add the flows bottlenecked on the seed channels (those at a channel's top rate), and
    transitively the flows bottlenecked on their saturated channels: the flows a change
    there is most likely to move. Fewer refills; correctness does not depend on it."""
    seen: set[int] = set()
    stack = seeds
    while stack:
        ch = stack.pop()
        if ch.idx in seen or not ch.flows:
            continue
        seen.add(ch.idx)
        top = max(g.rate for g in ch.flows) * (1 - REL_TOL)
        for g in ch.flows:
            if g.rate >= top and g not in comp:
                comp.add(g)
                stack.extend(c for c, _ in g.channels if c.saturated and c.idx not in seen)


def violations(comp: set[Flow], touched: dict[Channel, float],
               was_saturated: dict[Channel, bool], rates: dict[Flow, float]) -> set[Flow]:
    """Outside flows whose max-min condition the new *rates* of *comp* may break."""
    extra: set[Flow] = set()
    tops: dict[int, float] = {}
    for ch, level in touched.items():
        if ch.saturated:
            outside = [g for g in ch.flows if g not in comp]
            if not outside:
                continue
            top_in = max(rates[f] for f in ch.flows if f in comp)
            for g in outside:
                if g.rate > level * (1 + REL_TOL):
                    extra.add(g)       # faster than the flows this channel froze
                elif (g.rate < top_in * (1 - REL_TOL)
                      and not held_elsewhere(g, ch, rates, tops)):
                    extra.add(g)       # lost its bottleneck here to a faster flow
        elif was_saturated[ch]:
            outside = [g for g in ch.flows if g not in comp]
            if not outside:
                continue
            top = max(g.rate for g in ch.flows) * (1 - REL_TOL)  # old rates: not committed
            extra.update(g for g in outside
                         if g.rate >= top and not held_elsewhere(g, ch, rates, tops))
    return extra


def held_elsewhere(g: Flow, here: Channel, rates: dict[Flow, float],
                   tops: dict[int, float]) -> bool:
    """True if *g* has a bottleneck other than *here* under the new *rates* (*tops* caches
    the top rate of each saturated channel under them)."""
    for c, _ in g.channels:
        if c is here or not c.saturated:
            continue
        top = tops.get(c.idx)
        if top is None:
            top = tops[c.idx] = max(rates.get(f, f.rate) for f in c.flows)
        if g.rate >= top * (1 - REL_TOL):
            return True
    return False


def fill(comp: set[Flow]) -> tuple[dict[Flow, float], dict[Channel, float]]:
    """Progressive filling of *comp* on residual capacities (flows outside keep their rates and
    loads). Updates ``saturated`` of the touched channels; returns the new rates and the
    touched channels with their fill level (the rate of the flows that channel froze, or inf
    if it froze none).

    Levels only rise as flows freeze, so a channel's heap entry is a lower bound of its
    current level: on pop, an entry that has gone stale is pushed back with the current
    level instead of being re-pushed at every change.
    """
    residual: dict[Channel, float] = {}
    weight: dict[Channel, float] = {}
    for f in comp:
        r = f.rate
        for ch, coef in f.channels:
            # ch.load counts this flow at its old rate; give that share back.
            if ch in residual:
                residual[ch] += coef * r
                weight[ch] += coef
            else:
                residual[ch] = ch.capacity - ch.load + coef * r
                weight[ch] = coef
    heap: list[tuple[float, int, Any]] = [
        (max(residual[ch], 0.0) / w, 0, ch.idx, ch) for ch, w in weight.items()]
    heap.extend((f.max_rate, -1, f.id, f) for f in comp if f.max_rate is not None)
    heapq.heapify(heap)
    heappop, heappush = heapq.heappop, heapq.heappush
    rates: dict[Flow, float] = {}
    level_of: dict[Channel, float] = dict.fromkeys(residual, float("inf"))
    n = len(comp)
    while heap and len(rates) < n:
        level, kind, _, obj = heappop(heap)
        if kind < 0:  # a flow's own cap
            if obj in rates:
                continue
            frozen = (obj,)
        else:
            w = weight[obj]
            if w <= 1e-12:
                continue
            current = max(residual[obj], 0.0) / w
            if current > level * (1 + REL_TOL) + 1e-300:
                heappush(heap, (current, 0, obj.idx, obj))
                continue
            level = current
            frozen = tuple(f for f in obj.flows if f not in rates and f in comp)
            if not frozen:
                continue
            level_of[obj] = level
        for f in frozen:
            rates[f] = level
            for ch, coef in f.channels:
                residual[ch] -= coef * level
                weight[ch] -= coef
    for ch, r in residual.items():
        ch.saturated = r <= ch.capacity * REL_TOL
    return rates, level_of
