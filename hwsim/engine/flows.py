"""Shared-bandwidth flows: the fluid (SimGrid-style) network and storage model.

A flow moves ``size_bytes`` over a list of channels (link directions, storage channels). Every
channel has a capacity in bytes/s; a flow may use a channel with a coefficient (bytes of channel
capacity per byte of flow, e.g. a small random read that costs more of a disk than its size).
Active flows get max-min fair rates by progressive filling; rates are recomputed only when flows
start or end, once per instant however many start or end at it, and only for the flows that the
change can reach (:func:`hwsim.engine.maxmin.repair`). A flow that starts on channels no other flow
uses, and flows that end leaving no bottlenecked flow behind, skip the solver: their rates are
known (the path's bottleneck capacity) or unchanged. The next completion is scheduled from the
rates. A flow's latency is paid once, after its last byte leaves: alone on a link of bandwidth B
and latency L, S bytes take ``S / B + L``.

Work whose time is known while it is alone on its channels (a collective in closed form) may
*reserve* idle channels (:meth:`FlowNetwork.reserve`): the first flow that starts on one of them
calls the reservation's ``contend`` first, which turns the work into flows for what is left of
it, so that the new flow shares the channels with them from that instant.

This module knows time and capacity only: no links, GPUs or jobs.
"""

from __future__ import annotations

import heapq
from itertools import count
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import simpy

from hwsim.engine.maxmin import REL_TOL, Channel, Flow, repair
from hwsim.engine.recorder import Recorder

__all__ = ["FlowNetwork", "Flow", "Channel", "FlowPath", "Reservation", "RECOMPUTE_PRIORITY"]

RECOMPUTE_PRIORITY = 2
"""SimPy event priority of the rate recomputation: after every NORMAL (1) event of the same
instant, so that all flows that start or end at one instant are handled by one recomputation."""


class FlowPath(tuple):
    """A flow's channels and coefficients, checked once (:meth:`FlowNetwork.path`): a transfer
    that repeats passes it instead of channel ids."""

    __slots__ = ()


class Reservation:
    """Idle *channels* held by work outside the network (:meth:`FlowNetwork.reserve`), which
    :meth:`contend` (a subclass's, or *on_contend*) turns into flows."""

    __slots__ = ("channels", "on_contend")

    def __init__(self, channels: Sequence[Channel],
                 on_contend: Callable[[], None] | None = None) -> None:
        self.channels: Sequence[Channel] | None = channels
        self.on_contend = on_contend

    def contend(self) -> None:
        """A flow starts on one of the channels (they are released already)."""
        if self.on_contend is not None:
            self.on_contend()


class _Group:
    """Flows started together by :meth:`FlowNetwork.transfer_all`: one event (or one callback,
    *then*) for all."""

    __slots__ = ("left", "flows", "event", "then")

    def __init__(self, flows: list[Flow], event: simpy.Event | None,
                 then: Callable[[list[Flow]], None] | None) -> None:
        self.left = len(flows)
        self.flows = flows
        self.event = event
        self.then = then


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
        self._waking = False
        self._ready: list[_Group] = []
        self._level = recorder.level if recorder is not None else None
        self._reservations = 0
        self.recomputations = 0
        """How many times rates were recomputed by the solver (for benchmarks)."""
        self.alone = 0
        """How many flows started alone on their channels, skipping the solver."""
        self.flows_finished = 0

    # -- set-up ---------------------------------------------------------------------------------
    def add_channel(self, cid: Hashable, capacity_bytes_per_s: float, label: str = "") -> None:
        """Declare a channel. Raises ValueError if *capacity_bytes_per_s* <= 0 or *cid* exists."""
        self.add_channels([(cid, capacity_bytes_per_s, label)])

    def add_channels(self, rows: Iterable[tuple[Hashable, float, str]]) -> None:
        """Declare many channels ``(cid, capacity_bytes_per_s, label)`` in order, each as
        :meth:`add_channel`."""
        channels, rec = self.channels, self.recorder
        for cid, capacity, label in rows:
            if not capacity > 0:
                raise ValueError(f"channel {cid!r}: capacity_bytes_per_s(={capacity}) must be > 0")
            if cid in channels:
                raise ValueError(f"channel {cid!r} already exists")
            channels[cid] = Channel(cid, len(channels), float(capacity), label)
            if rec is not None:
                rec.declare(cid, float(capacity), label)

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
        done = self.env.event()
        if self._start(self._flow(size_bytes, channels, latency_s, coefficients, max_rate, done,
                                  (resource, kind, name, job, rank, category))):
            self._schedule_wakeup()
        return done

    def transfer_all(self, specs: Iterable[tuple], *, kind: str = "flow", name: str = "",
                     job: str = "", then: Callable[[list[Flow]], None] | None = None,
                     resume: tuple[float, Sequence[float]] | None = None
                     ) -> simpy.Event | None:
        """Start several flows now, as :meth:`transfer` would one by one; return one event that
        succeeds, with their :class:`Flow` objects in the order given, when the last has
        arrived. Each of *specs* is ``(size_bytes, channels, coefficients, latency_s, resource,
        rank, category)`` (*coefficients* may be None; *channels* may be a
        :class:`FlowPath`). With *then*, no event: ``then(flows)`` is called instead, from the
        engine's own event processing once its state is settled (it may start flows).
        *resume* ``(start, sizes)``: the flows continue transfers begun at *start* (work
        that ran outside the network until now, :meth:`reserve`): each moves its spec's bytes
        from now, and is recorded as the transfer of its *sizes* entry from *start*."""
        env = self.env
        event = env.event() if then is None else None
        flows: list[Flow] = []
        group = _Group(flows, event, then)
        now, ids = env.now, self._ids
        for size, chans, coefs, latency, resource, rank, category in specs:
            meta = (resource, kind, name, job, rank, category)
            if type(chans) is FlowPath and size >= 0 and latency >= 0:  # checked already
                flows.append(Flow(next(ids), float(size), chans, None, latency, now, group, meta))
            else:
                flows.append(self._flow(size, chans, latency, coefs, None, group, meta))
        group.left = len(flows)
        if resume is not None:
            for f, size in zip(flows, resume[1]):
                f.start_s, f.size = resume[0], float(size)
        if not flows:
            self._complete(group)
        alone = False
        for f in flows:
            alone |= self._start(f)
        if alone:
            self._schedule_wakeup()
        return event

    def reserve(self, held: Reservation) -> bool:
        """Hold ``held.channels`` (:class:`Channel` objects, e.g. of :meth:`path`) for work
        that runs outside the network while they carry nothing else; False (nothing held) when
        one of them carries a flow, has one starting at this instant or is reserved already.
        The first flow that starts on a held channel releases the reservation and calls
        ``held.contend()`` before it is put on its channels (which may start flows: they then
        share the channels with it from that instant). :meth:`release` gives them back."""
        channels = held.channels
        for ch in channels:
            if ch.flows or ch.pending or ch.reserved is not None:
                return False
        for ch in channels:
            ch.reserved = held
        self._reservations += 1
        return True

    def release(self, held: Reservation) -> None:
        """Give back the channels of *held* (:meth:`reserve`); nothing if already given."""
        if held.channels is None:
            return
        for ch in held.channels:
            ch.reserved = None
        held.channels = None
        self._reservations -= 1

    def settle(self) -> list[Flow]:
        """The flows in progress, each with ``remaining`` settled at this instant (a flow's
        ``remaining`` is otherwise settled only when its rate changes)."""
        now = self.env.now
        for f in self._active:
            f.remaining = max(f.remaining - f.rate * (now - f.last_s), 0.0)
            f.last_s = now
        return sorted(self._active, key=lambda f: f.id)

    def path(self, channels: Iterable[Hashable],
             coefficients: Mapping[Hashable, float] | None = None) -> FlowPath:
        """The :class:`FlowPath` of *channels* with *coefficients* (as :meth:`transfer` takes
        them). Raises ValueError on an unknown channel or a coefficient <= 0."""
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
        return FlowPath(chans.items())

    def _flow(self, size_bytes: float, channels: Iterable[Hashable] | FlowPath,
              latency_s: float,
              coefficients: Mapping[Hashable, float] | None, max_rate: float | None,
              done: simpy.Event | _Group, meta: tuple) -> Flow:
        if size_bytes < 0:
            raise ValueError(f"size_bytes(={size_bytes}) must be >= 0")
        if latency_s < 0:
            raise ValueError(f"latency_s(={latency_s}) must be >= 0")
        if max_rate is not None and not max_rate > 0:
            raise ValueError(f"max_rate(={max_rate}) must be > 0")
        path = channels if type(channels) is FlowPath else self.path(channels, coefficients)
        return Flow(next(self._ids), float(size_bytes), path, max_rate, latency_s,
                    self.env.now, done, meta)

    def _start(self, flow: Flow) -> bool:
        """Put a new flow on its channels: at once when no other flow uses any of them (its rate
        is then the smallest of its cap and its channels' capacities over its coefficients,
        what progressive filling gives it), else at this instant's recomputation. True if it
        started alone (the caller then schedules the wake-up)."""
        if flow.size == 0 or (not flow.channels and flow.max_rate is None):
            self._finish(flow)
            return False
        if self._reservations:  # work holding one of its channels turns into flows first
            for ch, _ in flow.channels:
                held = ch.reserved
                if held is not None:
                    self.release(held)
                    held.contend()
        rate = flow.max_rate if flow.max_rate is not None else float("inf")
        for ch, coef in flow.channels:
            if ch.flows or ch.pending:
                break
            r = ch.capacity / coef
            if r < rate:
                rate = r
        else:
            self._alone(flow, rate)
            return True
        for ch, _ in flow.channels:
            ch.pending += 1
        self._new.append(flow)
        self._request_recompute()
        return False

    def _alone(self, f: Flow, rate: float) -> None:
        """Commit a flow that is alone on its channels at *rate*: the same loads, saturation,
        level records and completion that :func:`~hwsim.engine.maxmin.fill` and
        :meth:`_commit` would give it (the caller schedules the wake-up)."""
        self.alone += 1
        now = f.last_s
        self._active.add(f)
        level = self._level
        for ch, coef in f.channels:
            ch.flows[f] = coef
            ch.load = load = coef * rate  # the channel was empty: its load was 0.0
            cap = ch.capacity
            ch.saturated = cap - load <= cap * REL_TOL
            if level is not None:
                level(now, ch.id, load)
        f.rate = rate
        f.version = 1
        heapq.heappush(self._heap, (now + f.remaining / rate, next(self._seq), f, 1))

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
        """Max-min fair rates for the flows this instant's starts and ends can reach, by local
        repair (:func:`~hwsim.engine.maxmin.repair`), committed."""
        self._recompute_pending = False
        self.recomputations += 1
        now = self.env.now
        comp: set[Flow] = set(self._new)
        seeds = [ch for ch in self._freed if ch.saturated]
        for f in self._new:
            self._active.add(f)
            for ch, coef in f.channels:
                ch.flows[f] = coef
                ch.pending = 0
            seeds.extend(ch for ch, _ in f.channels if ch.saturated)
        self._new = []
        self._freed = []
        rates, _ = repair(comp, seeds)
        self._commit(comp, rates, now)

    def _commit(self, comp: set[Flow], rates: dict[Flow, float], now: float) -> None:
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
        heap, freed, active = self._heap, self._freed, self._active
        heappop = heapq.heappop
        limit = now * (1 + 1e-12) + 1e-15
        finished = False
        self._waking = True
        while heap and (heap[0][0] <= limit or heap[0][3] != heap[0][2].version):
            _, _, f, ver = heappop(heap)
            if ver != f.version:
                continue
            active.discard(f)
            rate = f.rate
            for ch, coef in f.channels:
                flows = ch.flows
                del flows[f]
                ch.load = ch.load - coef * rate if flows else 0.0
                freed.append(ch)
            f.remaining = 0.0
            f.rate = 0.0
            f.last_s = now
            if f.latency_s > 0:
                self._finish(f)
            else:  # what _finish does, without the call
                self.flows_finished += 1
                self._done(f)
            finished = True
        self._waking = False
        if not finished:
            self._schedule_wakeup()
        else:
            level = self._level
            if level is not None:
                for ch in dict.fromkeys(freed):
                    level(now, ch.id, ch.load)
            held = self._recompute_pending
            if not held:
                for ch in freed:
                    if ch.saturated and ch.flows:
                        held = True  # a flow left there may have been held by it
                        break
            if held:
                self._request_recompute()
            else:
                # no flow left was held by a freed channel: no rate changes (the solver
                # would find an empty component)
                self._freed = []
                self._schedule_wakeup()
        if self._ready:  # groups whose last flow arrived, now that the state is settled
            ready, self._ready = self._ready, []
            for g in ready:
                g.then(g.flows)

    def _finish(self, f: Flow) -> None:
        self.flows_finished += 1
        if f.latency_s > 0:
            ev = self.env.timeout(f.latency_s)
            ev.callbacks.append(lambda _e, f=f: self._done(f))
        else:
            self._done(f)

    def _done(self, f: Flow) -> None:
        f.end_s = self.env.now
        if self.recorder is not None:
            resource, kind, name, job, rank, category = f.meta
            self.recorder.event(f.start_s, f.end_s, resource, kind, name, job, rank, f.size, 0.0,
                                category)
        done = f.done
        if type(done) is _Group:
            done.left -= 1
            if not done.left:
                self._complete(done)
        else:
            done.succeed(f)

    def _complete(self, g: _Group) -> None:
        """The last flow of *g* has arrived: succeed its event, or call its *then* at the end
        of this wake-up (or from an event of its own, outside one)."""
        if g.then is None:
            g.event.succeed(g.flows)
        elif self._waking:
            self._ready.append(g)
        else:
            ev = self.env.event()
            ev.callbacks.append(lambda _e: g.then(g.flows))
            ev.succeed()


def path_channels(path: Sequence[Hashable]) -> list[tuple[Hashable, Hashable]]:
    """Directed hops of a node path: ``[(a, b), (b, c)]`` for ``[a, b, c]``."""
    return list(zip(path[:-1], path[1:]))
