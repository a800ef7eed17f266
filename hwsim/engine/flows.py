"""Shared-bandwidth flows: the fluid (SimGrid-style) network and storage model.

A flow moves ``size_bytes`` over a list of channels (link directions, storage channels). Every
channel has a capacity in bytes/s; a flow may use a channel with a coefficient (bytes of channel
capacity per byte of flow, e.g. a small random read that costs more of a disk than its size).
Active flows get max-min fair rates by progressive filling; rates are recomputed only when flows
start or end, once per instant however many start or end at it, and only for the flows that the
change can reach (see :meth:`FlowNetwork._recompute`). The next completion is scheduled from the
rates. A flow's latency is paid once, after its last byte leaves: alone on a link of bandwidth B
and latency L, S bytes take ``S / B + L``.

This module knows time and capacity only: no links, GPUs or jobs.
"""

from __future__ import annotations

import heapq
from itertools import count
from typing import Any, Hashable, Iterable, Mapping, Sequence

import simpy

from hwsim.engine.recorder import Recorder

__all__ = ["FlowNetwork", "Flow", "Channel", "RECOMPUTE_PRIORITY"]

RECOMPUTE_PRIORITY = 2
"""SimPy event priority of the rate recomputation: after every NORMAL (1) event of the same
instant, so that all flows that start or end at one instant are handled by one recomputation."""

_REL_TOL = 1e-9


class Channel:
    """One direction of a link, or a storage channel: a capacity shared by flows."""

    __slots__ = ("id", "idx", "capacity", "label", "flows", "load", "saturated")

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


class Flow:
    """An active or finished transfer. ``rate`` is bytes/s; ``remaining`` is settled at
    ``last_s``."""

    __slots__ = ("id", "size", "remaining", "rate", "last_s", "channels", "max_rate", "latency_s",
                 "start_s", "end_s", "done", "version", "meta")

    def __init__(self, fid: int, size: float, channels: tuple[tuple[Channel, float], ...],
                 max_rate: float | None, latency_s: float, now: float, done: simpy.Event,
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
        self.version = 0
        self.meta = meta

    def __hash__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return self is other


class FlowNetwork:
    """Channels and the flows crossing them.

    Parameters
    ----------
    env : simpy.Environment
    recorder : Recorder, optional
        Receives one event per finished flow and one level record per channel load change.

    Examples
    --------
    >>> env = simpy.Environment(); net = FlowNetwork(env)
    >>> net.add_channel("a->b", 1e9)
    >>> done = net.transfer(2e9, ["a->b"], latency_s=1e-6)
    >>> env.run(); round(env.now, 6)
    2.000001
    """

    def __init__(self, env: simpy.Environment, recorder: Recorder | None = None) -> None:
        self.env = env
        self.recorder = recorder
        self.channels: dict[Hashable, Channel] = {}
        self._ids = count()
        self._seq = count()
        self._active: set[Flow] = set()
        self._new: list[Flow] = []
        self._freed: list[Channel] = []
        self._recompute_pending = False
        self._heap: list[tuple[float, int, Flow, int]] = []
        self._wakeup_at = float("inf")
        self.recomputations = 0
        """How many times rates were recomputed (for benchmarks)."""
        self.flows_finished = 0

    # -- set-up ---------------------------------------------------------------------------------
    def add_channel(self, cid: Hashable, capacity_bytes_per_s: float, label: str = "") -> None:
        """Declare a channel. Raises ValueError if *capacity_bytes_per_s* <= 0 or *cid* exists."""
        if not capacity_bytes_per_s > 0:
            raise ValueError(f"channel {cid!r}: capacity_bytes_per_s(={capacity_bytes_per_s}) must be > 0")
        if cid in self.channels:
            raise ValueError(f"channel {cid!r} already exists")
        self.channels[cid] = Channel(cid, len(self.channels), float(capacity_bytes_per_s), label)
        if self.recorder is not None:
            self.recorder.declare(cid, float(capacity_bytes_per_s), label)

    @property
    def active_flows(self) -> int:
        return len(self._active) + len(self._new)

    # -- transfers ------------------------------------------------------------------------------
    def transfer(self, size_bytes: float, channels: Iterable[Hashable], latency_s: float = 0.0, *,
                 coefficients: Mapping[Hashable, float] | None = None,
                 max_rate: float | None = None, resource: str = "flow",
                 kind: str = "flow", name: str = "", job: str = "", rank: int = -1,
                 category: str = "comm") -> simpy.Event:
        """Start a flow now; return an event that succeeds (with the :class:`Flow`) when its last
        byte has arrived.

        *channels* lists channel ids; *coefficients* maps some of them to the bytes of capacity
        used per byte moved (default 1; must be > 0). *max_rate* caps the flow's own rate (bytes/s). A flow with
        no channels and no *max_rate* takes only its latency.
        """
        if size_bytes < 0:
            raise ValueError(f"size_bytes(={size_bytes}) must be >= 0")
        if latency_s < 0:
            raise ValueError(f"latency_s(={latency_s}) must be >= 0")
        if max_rate is not None and not max_rate > 0:
            raise ValueError(f"max_rate(={max_rate}) must be > 0")
        chans: dict[Channel, float] = {}
        coefs = coefficients or {}
        for cid in channels:
            coef = coefs.get(cid, 1.0)
            try:
                ch = self.channels[cid]
            except KeyError:
                raise ValueError(f"unknown channel {cid!r}") from None
            if not coef > 0:
                raise ValueError(f"coefficient(={coef}) on channel {cid!r} must be > 0")
            chans[ch] = chans.get(ch, 0.0) + coef
        env = self.env
        done = env.event()
        flow = Flow(next(self._ids), float(size_bytes), tuple(chans.items()), max_rate, latency_s,
                    env.now, done, (resource, kind, name, job, rank, category))
        if flow.size == 0 or (not flow.channels and max_rate is None):
            self._finish(flow)
            return done
        self._new.append(flow)
        self._request_recompute()
        return done

    # -- internals ------------------------------------------------------------------------------
    def _request_recompute(self) -> None:
        if self._recompute_pending:
            return
        self._recompute_pending = True
        ev = simpy.Event(self.env)
        ev._ok = True
        ev._value = None
        ev.callbacks.append(self._recompute)
        self.env.schedule(ev, RECOMPUTE_PRIORITY)

    def _recompute(self, _event: Any = None) -> None:
        """Max-min fair rates for the flows a change can reach, found by local repair.

        Max-min fairness holds when every flow has a bottleneck: a saturated channel on which no
        flow runs faster. A change can break that only near the flows whose rates change, so
        the component starts from the new flows and from the flows that were bottlenecked on
        the saturated channels that finished flows freed. The component is filled on residual
        capacities (flows outside keep their rates), then every channel it touched is checked:
        an outside flow joins if it now runs faster than flows the channel froze, or if it lost
        its bottleneck (a channel that is no longer saturated, or on which a component flow now
        runs faster) and has no other one. Filling repeats until nothing joins. The result
        equals a global progressive filling (tested against one).
        """
        self._recompute_pending = False
        self.recomputations += 1
        now = self.env.now
        comp: set[Flow] = set(self._new)
        seeds = [ch for ch in self._freed if ch.saturated]
        for f in self._new:
            self._active.add(f)
            for ch, coef in f.channels:
                ch.flows[f] = coef
            seeds.extend(ch for ch, _ in f.channels if ch.saturated)
        self._new = []
        self._freed = []
        self._rates = {}
        self._seed(comp, seeds)
        was_saturated: dict[Channel, bool] = {}
        while True:
            for f in comp:
                for ch, _ in f.channels:
                    if ch not in was_saturated:
                        was_saturated[ch] = ch.saturated
            touched = self._fill(comp, now)
            extra = self._violations(comp, touched, was_saturated)
            if not extra:
                break
            comp.update(extra)
        self._commit(comp, touched, now)

    @staticmethod
    def _seed(comp: set[Flow], seeds: list[Channel]) -> None:
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
            top = max(g.rate for g in ch.flows) * (1 - _REL_TOL)
            for g in ch.flows:
                if g.rate >= top and g not in comp:
                    comp.add(g)
                    stack.extend(c for c, _ in g.channels if c.saturated and c.idx not in seen)

    def _violations(self, comp: set[Flow], touched: dict[Channel, float],
                    was_saturated: dict[Channel, bool]) -> set[Flow]:
        """Outside flows whose max-min condition the new rates of *comp* may break."""
        rates = self._rates
        extra: set[Flow] = set()
        self._tops: dict[int, float] = {}
        for ch, level in touched.items():
            if ch.saturated:
                outside = [g for g in ch.flows if g not in comp]
                if not outside:
                    continue
                top_in = max(rates[f] for f in ch.flows if f in comp)
                for g in outside:
                    if g.rate > level * (1 + _REL_TOL):
                        extra.add(g)       # faster than the flows this channel froze
                    elif g.rate < top_in * (1 - _REL_TOL) and not self._held_elsewhere(g, ch):
                        extra.add(g)       # lost its bottleneck here to a faster flow
            elif was_saturated[ch]:
                outside = [g for g in ch.flows if g not in comp]
                if not outside:
                    continue
                top = max(g.rate for g in ch.flows) * (1 - _REL_TOL)  # old rates: not committed
                extra.update(g for g in outside
                             if g.rate >= top and not self._held_elsewhere(g, ch))
        return extra

    def _held_elsewhere(self, g: Flow, here: Channel) -> bool:
        """True if *g* has a bottleneck other than *here* under the new rates."""
        rates, tops = self._rates, self._tops
        for c, _ in g.channels:
            if c is here or not c.saturated:
                continue
            top = tops.get(c.idx)
            if top is None:
                top = tops[c.idx] = max(rates.get(f, f.rate) for f in c.flows)
            if g.rate >= top * (1 - _REL_TOL):
                return True
        return False

    def _fill(self, comp: set[Flow], now: float) -> dict[Channel, float]:
        """Progressive filling of *comp* on residual capacities. Leaves the new rates in
        ``self._rates``, updates ``saturated`` of the touched channels and returns them with
        their fill level (the rate of the flows that channel froze, or inf if it froze none).

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
                if current > level * (1 + _REL_TOL) + 1e-300:
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
        self._rates = rates
        for ch, r in residual.items():
            ch.saturated = r <= ch.capacity * _REL_TOL
        return level_of

    def _commit(self, comp: set[Flow], touched: dict[Channel, float], now: float) -> None:
        rates = self._rates
        changed: dict[Channel, None] = {}
        for f in comp:
            new = rates[f]
            if new == f.rate and f.version:
                continue
            for ch, coef in f.channels:
                ch.load += coef * (new - f.rate)
                changed[ch] = None
            f.remaining -= f.rate * (now - f.last_s)
            if f.remaining < 0:
                f.remaining = 0.0
            f.last_s = now
            f.rate = new
            f.version += 1
            if new > 0:
                heapq.heappush(self._heap, (now + f.remaining / new, next(self._seq), f, f.version))
        rec = self.recorder
        if rec is not None:
            for ch in changed:
                rec.level(now, ch.id, ch.load)
        self._schedule_wakeup()

    def _schedule_wakeup(self) -> None:
        heap = self._heap
        if len(heap) > 64 and len(heap) > 4 * len(self._active):
            # Rate changes leave stale entries behind; drop them before they pile up.
            self._heap = heap = [e for e in heap if e[3] == e[2].version]
            heapq.heapify(heap)
        while heap and heap[0][3] != heap[0][2].version:
            heapq.heappop(heap)
        if not heap:
            return
        t = heap[0][0]
        if t < self._wakeup_at:
            self._wakeup_at = t
            ev = self.env.timeout(max(t - self.env.now, 0.0))
            ev.callbacks.append(lambda _e, t=t: self._wakeup(t))

    def _wakeup(self, t: float) -> None:
        if t != self._wakeup_at:
            return  # superseded by an earlier wake-up
        self._wakeup_at = float("inf")
        now = self.env.now
        heap = self._heap
        finished = False
        while heap and (heap[0][0] <= now * (1 + 1e-12) + 1e-15 or heap[0][3] != heap[0][2].version):
            _, _, f, ver = heapq.heappop(heap)
            if ver != f.version:
                continue
            self._active.discard(f)
            for ch, coef in f.channels:
                del ch.flows[f]
                ch.load = ch.load - coef * f.rate if ch.flows else 0.0
                self._freed.append(ch)
            f.remaining = 0.0
            f.rate = 0.0
            f.last_s = now
            self._finish(f)
            finished = True
        if finished:
            rec = self.recorder
            if rec is not None:
                for ch in dict.fromkeys(self._freed):
                    rec.level(now, ch.id, ch.load)
            self._request_recompute()
        else:
            self._schedule_wakeup()

    def _finish(self, f: Flow) -> None:
        env = self.env
        self.flows_finished += 1
        if f.latency_s > 0:
            ev = env.timeout(f.latency_s)
            ev.callbacks.append(lambda _e, f=f: self._done(f))
        else:
            self._done(f)

    def _done(self, f: Flow) -> None:
        f.end_s = self.env.now
        if self.recorder is not None:
            resource, kind, name, job, rank, category = f.meta
            self.recorder.event(f.start_s, f.end_s, resource, kind, name, job, rank, f.size, 0.0,
                                category)
        f.done.succeed(f)


def path_channels(path: Sequence[Hashable]) -> list[tuple[Hashable, Hashable]]:
    """Directed hops of a node path: ``[(a, b), (b, c)]`` for ``[a, b, c]``."""
    return list(zip(path[:-1], path[1:]))
