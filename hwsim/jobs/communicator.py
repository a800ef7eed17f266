"""A communicator (:class:`CollectiveGroup`): the ranks of one process group, which run their
collectives (:mod:`hwsim.jobs.collectives`) one at a time in the order they were issued, in
closed form where they can (alone on their links, or while their links are idle:
:func:`~hwsim.jobs.phases.run_collective`), else as flows."""

from __future__ import annotations

import weakref
from typing import Sequence

import simpy

from hwsim.jobs.collectives import ALGORITHMS, choose, eligible, plan, recipe
from hwsim.jobs.nccl import PARAMS, memo_key, ring_order
from hwsim.jobs.phases import PhaseRun, Schedule, compile_phases, run_collective
from hwsim.jobs.system import System

__all__ = ["CollectiveGroup"]

_RECIPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CHANNELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class CollectiveGroup:
    """The ranks of one communicator (e.g. a data-parallel group). Each rank *joins* a
    collective by key; it starts when all have joined, after the group's previous collective
    (one communication stream, in order), and every rank's join event succeeds when it ends.
    Each rank's communication stream records the collective as one event.

    Parameters
    ----------
    system : System
    devices : sequence of str
        The ranks' devices, in rank order (a ``sendrecv`` group: source, destination).
    job : str
    op : str
        What every :meth:`join` runs (default ``allreduce``; see :func:`collective`).
    algorithm : str
        ``auto`` (NCCL's choice, :func:`choose`) or one of :data:`ALGORITHMS` for *op*.
    peers : sequence of device lists
        Groups that run the same collectives at the same time and are not simulated (symmetry
        folding, :func:`fold_factors`).
    owner : hashable, optional
        Claims, at construction, every channel the group and its peers can use with any
        algorithm (:meth:`System.claim`). If at its first collective the owner is their only
        claimant, the group is alone on its links: each collective then takes its closed-form
        time (:meth:`timing`) instead of running flows. Communicators that never run at the
        same time (e.g. the all-reduce and all-gather groups of one tensor-parallel group) may
        share an owner.
    record : sequence of str, optional
        The devices whose communication streams record each collective (default: all). When
        they are fewer than the group (folded), only the flows of the members on their servers
        run, standing for the group's (:func:`kept`).
    ranks : sequence of int, optional
        The rank recorded for each device of *devices* (default: its position).
    chain : CollectiveGroup, optional
        A group on the same communicator (same ranks, another op): collectives of both run
        one at a time, in the order they were issued, as on one NCCL communicator's stream.
    closed_form : bool
        A collective that shares links (see *owner*) takes its closed-form time while no other
        flow uses its channels, and becomes flows when one starts there
        (:func:`~hwsim.jobs.phases.run_collective`); False: it runs as flows throughout (the
        same times, for checking).
    """

    def __init__(self, system: System, devices: Sequence[str], job: str, op: str = "allreduce",
                 algorithm: str = "auto", *, peers: Sequence[Sequence[str]] = (),
                 owner: object = None, record: Sequence[str] | None = None,
                 ranks: Sequence[int] | None = None,
                 chain: CollectiveGroup | None = None, closed_form: bool = True) -> None:
        if op not in ALGORITHMS or algorithm not in ("auto", *ALGORITHMS[op]):
            raise ValueError(f"unknown collective {op!r} / algorithm {algorithm!r}")
        self.system = system
        self.ring = list(devices) if op == "sendrecv" else ring_order(system, devices)
        self.rank_of = dict(zip(devices, ranks if ranks is not None else range(len(devices))))
        self.job, self.op, self.algorithm = job, op, algorithm
        self.peers = [list(p) for p in peers]
        self.owner = owner
        self.closed_form = closed_form
        self.record = list(record) if record is not None else list(self.ring)
        self.sources = self._sources()
        self._pending: dict[object, tuple[list[int], simpy.Event, float]] = {}
        self._order: list = chain._order if chain is not None else [None]
        self._timings: dict[float, tuple | None] = {}
        self._alone: bool | None = None
        self._pulse_templates: dict[int, int] = {}
        self._recipes: dict[float, tuple] = {}
        self._closed_rows: dict[float, tuple[int, int | None]] = {}
        self._claimed: set = set()
        self.category = "comm:" + (self._ring_category() if len(devices) > 1 else "none")
        if owner is not None and len(devices) > 1:
            self._claimed = self._channels()
            system.claim(owner, self._claimed)

    def _sources(self) -> frozenset | None:
        """The members whose flows run when the group is folded (fewer recorded devices than
        members): those on the recorded devices' servers. Servers are alike, but the ranks of
        one server are not (a ring leaves a server from one GPU per rail), so a whole server's
        flows stand for the group's. None: all."""
        g = self.system.graph

        def server(d: str) -> tuple:
            at = g.nodes[d]
            return at.get("site"), at.get("server")
        mine = {server(d) for d in self.record}
        out = frozenset(d for d in self.ring if server(d) in mine)
        return out if len(out) < len(self.ring) else None

    def _channels(self) -> set:
        """Every channel the group or its peers can use, with any algorithm ``auto`` may choose
        for its op (or the one it was given). Memoised per graph (:func:`memo_key`)."""
        memo = _CHANNELS.setdefault(memo_key(self.system), {})
        k = (self.op, self.algorithm, tuple(self.ring), tuple(map(tuple, self.peers)))
        hit = memo.get(k)
        if hit is None:
            hit = memo[k] = frozenset(self._find_channels())
        return set(hit)

    def _find_channels(self) -> set:
        out: set = set()
        route = self.system.route
        for grp in [self.ring, *self.peers]:
            order = grp if self.op == "sendrecv" or grp is self.ring else ring_order(
                self.system, grp)
            rank_of = {d: i for i, d in enumerate(order)}
            algs = (eligible(self.system, order, self.op, 1.0, PARAMS)
                    if self.algorithm == "auto" else (self.algorithm,))
            for alg in algs:
                try:
                    phases = plan(self.system, self.op, alg, order, 1.0, rank_of, PARAMS)
                except ValueError:  # not possible here (e.g. NVLS without an NVSwitch)
                    continue
                for ph in phases:  # the channels of hops(..., key=0, ...): flow i's route
                    for i, f in enumerate(ph.flows):
                        out.update(route(f.src, f.dst, i)[0])
        return out

    def _ring_category(self) -> str:
        worst, label = float("inf"), ""
        for a, b in zip(self.ring, self.ring[1:] + self.ring[:1]):
            chans, _, _, cat = self.system.route(a, b)
            cap = min(self.system.net.channels[c].capacity for c in chans)
            if cap < worst:
                worst, label = cap, cat.removeprefix("comm:")
        return label

    def timing(self, nbytes: float) -> tuple[float, list[tuple]] | None:
        """``(seconds, loads)`` of a collective of *nbytes* when the group is alone on its links
        (see *owner*), else None. *loads* lists ``(start, end, channel, bytes/s)`` relative to
        the collective's start: each phase's mean load on each channel while its flows run. The
        time is what :func:`collective` gives alone: its
        :func:`~hwsim.jobs.phases.isolated_durations` per step, plus the pipeline overheads."""
        if nbytes in self._timings:
            return self._timings[nbytes]
        out = None
        if self.owner is not None and len(self.ring) > 1 and nbytes > 0:
            if self._alone is None:
                self._alone = self.system.alone(self.owner, self._claimed)
            if self._alone:
                out = self._closed_form(nbytes)
        self._timings[nbytes] = out
        return out

    def isolated(self, nbytes: float) -> tuple[float, list[tuple]]:
        """Like :meth:`timing`, but whether or not the group is alone on its links: the time
        its collective of *nbytes* takes on an otherwise idle graph (memoised)."""
        key = ("isolated", nbytes)
        hit = self._timings.get(key)
        if hit is None:
            hit = self._timings[key] = self._closed_form(nbytes)
        return hit

    def _closed_form(self, nbytes: float) -> tuple[float, list[tuple]]:
        system = self.system
        alg, proto = choose(system, self.ring, self.op, nbytes, algorithm=self.algorithm)
        rank_of = {d: i for i, d in enumerate(self.ring)}
        sched = Schedule(system, [(ph, hop, ()) for ph, hop in recipe(
            system, self.op, self.ring, nbytes, algorithm=alg, protocol=proto,
            ranks=[rank_of[d] for d in self.ring], peers=self.peers, sources=self.sources)])
        return sched.total, sched.loads

    def rows(self, start: float, end: float, nbytes: float, name: str,
             loads: Sequence[tuple] = ()) -> tuple[list[tuple], list[tuple]]:
        """The records of a collective from *start* to *end*: one event per recorded device's
        communication stream (:meth:`Recorder.event` fields), and the channel *loads* of
        :meth:`timing` as pulses ``(start, end, channel, load)``."""
        events = [(start, end, f"{d}/comm", "collective", name, self.job, self.rank_of[d], nbytes,
                   0.0, self.category) for d in self.record]
        return events, [(start + a, start + b, c, v) for a, b, c, v in loads]

    def record_at(self, start: float, end: float, nbytes: float, name: str,
                  loads: Sequence[tuple] = (), events: Sequence[tuple] = (),
                  fresh: bool = False) -> None:
        """Record a collective from *start* to *end* (:meth:`rows`), with flow *events* and
        channel *loads* (times relative to *start*), the loads as a recorder block: its template
        memoised for loads that are the same every time (:meth:`timing`,
        :class:`~hwsim.jobs.phases.Schedule`) unless *fresh*."""
        rec = self.system.recorder
        for e in self.rows(start, end, nbytes, name)[0]:
            rec.event(*e)
        if events:
            rec.event_rows(events, start)
        self._loads_block(start, loads, fresh)

    def _loads_block(self, start: float, loads: Sequence[tuple], fresh: bool = False) -> None:
        """Channel *loads* (times relative to *start*) as a recorder block; its template
        memoised per loads list unless *fresh*."""
        tid = self._loads_template(loads, fresh)
        if tid is not None:
            self.system.recorder.block(start, tid)

    def _loads_template(self, loads: Sequence[tuple], fresh: bool = False) -> int | None:
        """The recorder block of channel *loads* (None: no loads), memoised per loads list
        unless *fresh*."""
        if not loads:
            return None
        tid = None if fresh else self._pulse_templates.get(id(loads))
        if tid is None:
            tid = self.system.recorder.template([], [(a, b, c, v) for a, b, c, v in loads])
            if not fresh:
                self._pulse_templates[id(loads)] = tid
        return tid

    def join(self, key: object, rank: int, nbytes: float, name: str) -> simpy.Event:
        joined, done, size = self._pending.get(key, ([], None, nbytes))
        if done is None:
            done = self.system.env.event()
        joined.append(rank)
        self._pending[key] = (joined, done, size)
        if len(joined) == len(self.ring):
            del self._pending[key]
            self._launch(done, size, name)
        return done

    def join_all(self, key: object, nbytes: float, name: str) -> simpy.Event:
        """Every rank joins at once (the simulated rank stands for its folded peers)."""
        if key in self._pending:
            for r in range(len(self.ring)):
                ev = self.join(key, r, nbytes, name)
            return ev
        done = simpy.Event(self.system.env)
        self._launch(done, nbytes, name)
        return done

    def _launch(self, done: simpy.Event, nbytes: float, name: str) -> None:
        """Start a collective that every rank has joined, now or after the communicator's
        previous one; *done* succeeds when it ends. Driven by event callbacks: no SimPy
        process of its own."""
        prev, self._order[0] = self._order[0], done
        if prev is not None and not prev.processed:
            prev.callbacks.append(lambda _e: self._begin(done, nbytes, name))
        else:
            self._begin(done, nbytes, name)

    def _begin(self, done: simpy.Event, nbytes: float, name: str) -> None:
        env = self.system.env
        start = env.now
        fixed = self._timings.get(nbytes, False)
        if fixed is False:
            fixed = self.timing(nbytes)
        if fixed is not None:
            env.timeout(fixed[0]).callbacks.append(
                lambda _e: self._end(start, done, nbytes, name, fixed[1]))
            return
        r = self._recipes.get(nbytes)
        if r is None:
            # what depends on the graph alone (the recipe, its phases' isolated durations) is
            # kept per graph (memo_key: every run on a shared graph); the flows' paths per run
            memo = _RECIPES.setdefault(memo_key(self.system), {})
            ranks = [self.rank_of[d] for d in self.ring]
            k = (self.op, self.algorithm, tuple(self.ring), nbytes, tuple(ranks),
                 tuple(map(tuple, self.peers)), self.sources)
            hit = memo.get(k)
            if hit is None:
                hit = memo[k] = (recipe(self.system, self.op, self.ring, nbytes,
                                        algorithm=self.algorithm, ranks=ranks, peers=self.peers,
                                        sources=self.sources), [])
            phases = compile_phases(self.system, hit[0], self.job)
            r = self._recipes[nbytes] = (phases, Schedule(self.system, phases, hit[1])
                                         if self.closed_form else None)
        phases, schedule = r
        if schedule is None:
            PhaseRun(self.system, phases, self.job, name,
                     lambda: self._end(start, done, nbytes, name))
            return

        def end(fresh: tuple | None) -> None:
            if fresh is not None:
                self._end(start, done, nbytes, name, *fresh, fresh=True)
                return
            # in closed form throughout: the collective's events on the communication streams
            # and its flows' (memoised per size: times from its start, the name's suffix) and
            # its loads as a block
            rec = self.system.recorder
            hit = self._closed_rows.get(nbytes)
            if hit is None:  # (the flows end by the collective's end)
                hit = self._closed_rows[nbytes] = (rec.row_set(rec.kept(self.rows(
                    0.0, schedule.total, nbytes, "")[0] + schedule.rows("", self.job))),
                    self._loads_template(schedule.loads))
            rec.event_set(start, hit[0], name)
            if hit[1] is not None:
                rec.block(start, hit[1])
            done.succeed()
        run_collective(self.system, phases, schedule, self.job, name, end)

    def _end(self, start: float, done: simpy.Event, nbytes: float, name: str,
             loads: Sequence[tuple] = (), events: Sequence[tuple] = (),
             fresh: bool = False) -> None:
        self.record_at(start, self.system.env.now, nbytes, name, loads, events, fresh)
        done.succeed()
