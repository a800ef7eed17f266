"""Routing: shortest paths (by hops) whose middle nodes all forward, with deterministic ECMP.

Forwarders are :data:`~hwsim.topology.attributes.FORWARDING_KINDS`, and TPU chips from ICI link to
ICI link; GPUs, memory and storage never forward. At each hop, of the next hops on a shortest
route, those over the widest link are kept (NVLink beats a PCIe switch shared by two GPUs) and one
is picked by a stable hash of ``(src, dst, key)`` and the hop (ECMP, same in every process).

How it is fast on large clusters (docs/topology.md, "Speed"): distances to a node inside a server
are composed from one BFS per state that enters the server, shared by every destination behind
it; BFS skip sealed servers (left through one gateway); next hops are cached and shared by all
destinations alike (outside servers: picked for every state at once with numpy; inside other
servers: by the distances of the server's gateways), runs of single hops walked as one step.
"""

from __future__ import annotations

import difflib
import zlib
from array import array
from collections import Counter
from typing import Hashable, NamedTuple, Sequence

import networkx as nx
import numpy as np

from hwsim.exceptions import NoRouteError, ScenarioError
from hwsim.topology.attributes import (ENDPOINT_KINDS, FORWARDING_KINDS, NODE_KINDS,
                                       TRANSIT_LINK_CLASSES)
from hwsim.topology.routing_servers import _FAR, _PATH_CACHE, ServerSteps, _Server, _Step

__all__ = ["Router"]

_MIX = 0x9E3779B1  # Knuth's multiplicative-hash constant (2**32 / golden ratio)
_DEST_CACHE = 1 << 16  # destinations whose near distances and steps are kept
_STATE_BUDGET = 64_000_000  # states kept in each kind of whole-graph map (2 bytes each)
_SHARED = ENDPOINT_KINDS - set(TRANSIT_LINK_CLASSES)  # endpoint kinds whose routes are shared


class _Dest(NamedTuple):
    """What the router knows about routes to one destination node (see Router._dest).

    Its distance from a state is ``far[state] + off`` (``far``: the map of :meth:`Router._far`
    number *q*, -1 if unreachable), or ``near[state]`` for a state of its server when smaller.
    """

    q: int  # number of the far map (see Router._far)
    off: int  # added to the far map
    near: dict[int, int]  # state of the destination's server -> hops through that server only
    srv: int  # the destination's server, -2 if it has none
    edge: frozenset[int]  # states outside srv with a transition into it (or to the node itself)
    steps: dict[int, _Step]  # state of srv or edge -> its step toward the destination
    sig: dict[int, int]  # server -> key offset of its gateways' distances (see _sig)


class _Entry(NamedTuple):
    """The transitions that enter one server and its inside transitions, reversed."""

    ingress: dict[int, list[tuple[int, int, float]]]  # state outside -> its transitions inside
    edge: frozenset[int]  # the states of ingress
    pred: dict[int, list[int]]  # inside state -> inside states with a transition to it
    pred_node: dict[int, list[int]]  # inside node -> inside states with a transition to it


def _reversed(frm: np.ndarray, to: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of transitions ``frm -> to`` by arrival: ``frm[ptr[v]:ptr[v + 1]]`` arrive at v."""
    order = np.argsort(to, kind="stable")
    return np.searchsorted(to[order], np.arange(n + 1)), frm[order]


def _spread(dist: np.ndarray, ptr: np.ndarray, rev: np.ndarray) -> None:
    """Breadth-first from the states at distance 1 in *dist* (-1: not reached yet) over the
    reversed transitions ``(ptr, rev)`` (see _reversed), one numpy step a level, in place."""
    level = 1
    front = np.flatnonzero(dist == 1)
    while front.size:
        starts = ptr[front]
        lens = ptr[front + 1] - starts
        total = int(lens.sum())
        if not total:
            break
        cand = rev[np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(total)]
        level += 1
        dist[cand[dist[cand] < 0]] = level
        front = np.flatnonzero(dist == level)


class _Outside(NamedTuple):
    """The transitions of the states outside servers, state by state, as numpy arrays."""

    frm: np.ndarray  # state
    to: np.ndarray  # next state
    bw: np.ndarray  # link bandwidth
    bit: np.ndarray  # 1 << (position among the state's kept transitions % 64)
    runs: np.ndarray  # first transition of each run of 64 of one state
    firsts: np.ndarray  # first transition of each state
    counts: np.ndarray  # transitions of each state


class Router(ServerSteps):
    """Routes between nodes of a topology graph; build once per graph (it does not watch changes).
    The walk inside servers (gateways, shared next hops) is :class:`~hwsim.topology.
    routing_servers.ServerSteps`.

    Parameters
    ----------
    G : networkx.Graph
        A topology (see :mod:`hwsim.topology.attributes`); every node needs a valid ``kind``.
        Its ``ecmp_seed`` graph attribute (``fabric.ecmp_seed``) seeds the hash that picks
        among equal-cost routes (default 0).
    """

    def __init__(self, G: nx.Graph) -> None:
        self.G = G
        self._seed = int(G.graph.get("ecmp_seed") or 0) & 0xFFFFFFFF
        self._names = names = list(G)
        self._index = index = {v: i for i, v in enumerate(names)}
        kinds = [G.nodes[v].get("kind") for v in names]
        for v, k in zip(names, kinds):
            if k not in NODE_KINDS:
                raise ScenarioError(f"node {v!r}: kind {k!r} is not one of {', '.join(NODE_KINDS)}")
        n = len(names)
        transit = {i: n + j for j, i in enumerate(i for i, k in enumerate(kinds)
                                                  if k in TRANSIT_LINK_CLASSES)}
        self._transit, ns = transit, n + len(transit)
        self._fwd: list[list[tuple[int, int, float]]] = [[] for _ in range(ns)]
        frm, to_state, to_node, bws = [], [], [], []  # all transitions
        for u, v, d in G.edges(data=True):
            cls, bw = d.get("link_class"), float(d.get("bw_bytes_per_s", 0.0))
            for a, b in ((index[u], index[v]), (index[v], index[u])):
                ts = (b if kinds[b] in FORWARDING_KINDS else
                      transit[b] if cls in TRANSIT_LINK_CLASSES.get(kinds[b], ()) else -1)
                relay = a in transit and cls in TRANSIT_LINK_CLASSES[kinds[a]]
                for s in (a, transit[a]) if relay else (a,):
                    self._fwd[s].append((ts, b, bw))
                    frm.append(s), to_state.append(ts), to_node.append(b), bws.append(bw)
        def attachment(v: str) -> tuple:  # endpoints alike in it share routes but the last hop
            d, links = G.nodes[v], G[v].items()
            return (d["kind"], d.get("site"), d.get("server"), tuple(sorted(
                (index[b], e.get("link_class"), e.get("bw_bytes_per_s")) for b, e in links)))
        alike: dict[tuple, int] = {}
        self._rep = [alike.setdefault(attachment(v), i) if k in _SHARED else i
                     for i, (v, k) in enumerate(zip(names, kinds))]
        # server of every node and state: an int id, -1 outside servers
        ids: dict[tuple, int] = {}
        self._node_srv = [-1 if d.get("server") is None else ids.setdefault(
            (d.get("site"), d["server"]), len(ids)) for _, d in G.nodes(data=True)]
        self._srv = self._node_srv + [self._node_srv[i] for i in transit]
        self._members: dict[int, list[int]] = {}  # server -> its states
        for st, sid in enumerate(self._srv):
            self._members.setdefault(sid, []).append(st)
        self._servers: dict[int, _Server] = {}
        self._entries: dict[int, _Entry] = {}
        self._sig_ids: dict[tuple[int, tuple[int, ...]], int] = {}  # (server, sig) -> number
        self._sig_of: list[tuple[int, tuple[int, ...]]] = []  # number -> (server, sig)
        self._sig_memo: list = [-1, None, None, None, None]  # see _server_choices
        self._shops: dict[int, _Step] = {}  # state (+ offset of _sig) -> step inside a server
        self._q_sigs: dict[tuple[int, int], int] = {}  # (far map, server) -> offset (see _sig)
        self._q_ids: dict[object, int] = {}  # key of a far map -> its number (see _far)
        self._q_of: list[object] = []  # number -> key
        self._fars: dict[int, array] = {}  # number -> far map
        self._rows: dict[int, array] = {}  # state -> hops of every state to it (see _row)
        self._picks: dict[int, array] = {}  # far map number -> next hops outside (see _pick)
        self._hopsets: dict[int, _Step] = {}  # steps outside servers, see _far_step
        self._dests: dict[int, _Dest] = {}
        self._max_maps = max(16, _STATE_BUDGET // max(1, ns))
        self._paths: dict[tuple[Hashable, Hashable, Hashable], tuple[str, ...]] = {}
        self._single: dict[tuple[Hashable, Hashable], tuple[str, ...]] = {}  # see key_free
        self._n_states = ns
        frm_a, ts_a, tn_a = (np.asarray(x, dtype=np.int64) for x in (frm, to_state, to_node))
        srv_a = np.asarray(self._srv, dtype=np.int64)
        ssrv = srv_a[frm_a]  # server of each transition's start and of its end
        dsrv = np.where(ts_a >= 0, srv_a[ts_a], np.asarray(self._node_srv, dtype=np.int64)[tn_a])
        # Sealed servers: left only through transitions to one state outside servers (a fat-tree
        # server's leaf). A route never crosses one (it would leave where it came in) and every
        # route from inside one passes that gateway, so BFS do not enter them: hops from their
        # states are filled in afterwards as hops to the gateway plus the gateway's (see _bfs).
        leave = (ssrv >= 0) & (dsrv != ssrv)
        lo, hi = np.full(len(ids) + 1, ns, dtype=np.int64), np.full(len(ids) + 1, -1)
        np.minimum.at(lo, ssrv[leave], ts_a[leave])
        np.maximum.at(hi, ssrv[leave], ts_a[leave])
        sealed = (lo == hi) & (hi >= 0)
        sealed[sealed] = srv_a[hi[sealed]] < 0
        cut = (srv_a >= 0) & sealed[srv_a]
        inner = cut[frm_a] & (dsrv == ssrv) & (ts_a >= 0)
        din = np.full(ns, -1, dtype=np.int64)
        din[frm_a[leave & cut[frm_a]]] = 1
        _spread(din, *_reversed(frm_a[inner], ts_a[inner], ns))
        self._fill_x = np.flatnonzero(cut & (din >= 0))
        self._fill_d, self._fill_g = din[self._fill_x], hi[srv_a[self._fill_x]]
        self._gate = np.where(cut, hi[srv_a], -1).tolist()  # state -> its sealed server's gateway
        self._din = din.tolist()  # state of a sealed server -> hops to the gateway, -1: none
        # BFS run over the other states, renumbered 0.. in order (-1: sealed): numpy CSR of their
        # transitions reversed, by arrival state; and of all transitions by arrival node
        self._open = np.flatnonzero(~cut)
        self._local = np.full(ns, -1, dtype=np.int64)
        self._local[self._open] = np.arange(len(self._open))
        keep = (ts_a >= 0) & ~cut[frm_a] & ~cut[np.maximum(ts_a, 0)]
        self._rev_ptr, self._rev_from = _reversed(self._local[frm_a[keep]],
                                                  self._local[ts_a[keep]], len(self._open))
        self._in_ptr, self._in_from = _reversed(frm_a, tn_a, n)
        # the transitions entering each server, by the state outside they come from
        self._ingress: dict[int, dict[int, list[tuple[int, int, float]]]] = {}
        into = dsrv.tolist()
        for i in np.flatnonzero((dsrv >= 0) & (dsrv != ssrv)).tolist():
            self._ingress.setdefault(into[i], {}).setdefault(frm[i], []).append(
                (to_state[i], to_node[i], bws[i]))
        # servers whose destinations get distances through their ingress (see _dest): those that
        # cost at most one BFS, each BFS shared by all the servers its state enters (a fat-tree
        # or rail server: 1/4 for its leaf or 8/32 for its 8 rail leaves); the others (a TPU
        # host entered from its torus neighbours) get one BFS per destination
        shared = Counter(o for entering in self._ingress.values() for o in entering)
        self._by_ingress = {sid for sid, entering in self._ingress.items()
                            if sum(1 / shared[o] for o in entering) <= 1}
        # the transitions of the states outside servers that may lie on a shortest route to a
        # destination outside the server they enter (all but those into sealed servers and to
        # nodes that do not forward): bit j of a state's key in _far_step, 64 to a numpy word
        cutl = cut.tolist()
        self._kept: dict[int, list[tuple[int, int]]] = {}
        self._runs: list[tuple[int, int]] = [(0, 0)] * ns  # state -> its words in _pick
        frm, to, bw, bit, runs, firsts = [], [], [], [], [], []
        for x in np.flatnonzero(srv_a < 0).tolist():
            kept = [y for y in self._fwd[x] if y[0] >= 0 and not cutl[y[0]]]
            if not kept:
                continue
            firsts.append(len(frm))
            self._runs[x] = (len(runs), len(runs) + (len(kept) + 63) // 64)
            runs.extend(range(len(frm), len(frm) + len(kept), 64))
            self._kept[x] = [y[:2] for y in kept]
            for j, (y, _, w) in enumerate(kept):
                frm.append(x), to.append(y), bw.append(w), bit.append(1 << (j % 64))
        self._out = _Outside(np.asarray(frm, dtype=np.int64), np.asarray(to, dtype=np.int64),
                             np.asarray(bw, dtype=np.float64), np.asarray(bit, dtype=np.uint64),
                             np.asarray(runs, dtype=np.int64), np.asarray(firsts, dtype=np.int64),
                             np.diff(np.asarray(firsts + [len(frm)], dtype=np.int64)))

    def path(self, src: Hashable, dst: Hashable, key: Hashable = 0) -> list[str]:
        """The route from *src* to *dst* as a node list (``[src]`` when they are equal).

        *key* picks one of the equal-cost routes (ECMP): the same key always gives the same route,
        in any process; different keys spread over the alternatives. Raises ScenarioError for an
        unknown node and NoRouteError when no route joins them.
        """
        ck = (src, dst, key)
        hit = self._paths.get(ck) or self._single.get(ck[:2])
        if hit is not None:
            return list(hit)
        index = self._index
        s, t = index.get(src), index.get(dst)
        if s is None or t is None:
            s, t = self._node(src, "src"), self._node(dst, "dst")
        if s == t:
            return [src]
        rep = self._rep[t]
        if rep != t and self._rep[s] == rep:
            rep = t  # src is in dst's class: route to dst itself
        t = rep
        D = self._dests.get(t) or self._dest(t)
        if (self._fars.get(D.q) or self._far(D.q))[s] < 0 and s not in D.near:
            raise self._no_route(src, dst)
        steps, sigs, srv, shops, gate = D.steps, D.sig, self._srv, self._shops, self._gate
        hopsets, runs, t_srv, edge, picks = self._hopsets, self._runs, D.srv, D.edge, None
        h = zlib.crc32(f"{src}\x00{dst}\x00{key}".encode(), self._seed)
        out, state, chose = [src], s, False
        while True:
            sid = srv[state]
            if sid == t_srv or state in edge:
                c = steps.get(state) or self._dest_step(D, t, state)
            elif sid < 0:  # outside servers: shared by all destinations alike from here
                if picks is None:
                    picks = self._picks.get(D.q) or self._pick(D.q)
                first, stop = runs[state]
                c = hopsets.get(picks[first] << 32 | state) if stop == first + 1 else None
                if c is None:
                    c = self._far_step(picks, state)
            elif gate[state] >= 0:  # inside another, sealed server: out through its gateway
                c = shops.get(state) or self._sealed_step(state)
            else:  # inside another server: shared by destinations with the same offset
                off = sigs.get(sid)
                if off is None:
                    off = self._sig(D, t, sid)
                c = shops.get(state + off) or self._server_step(state, off)
            if len(c) > 1:
                h = (h * _MIX + state + 1) & 0xFFFFFFFF
                state, node, run = c[(h >> 7) % len(c)]
                chose = True
            else:
                state, node, run = c[0]
            out += run
            if node == t:
                break
        out[-1] = dst
        if len(self._paths) + len(self._single) >= _PATH_CACHE:  # the two caches' bound
            self._paths.clear()
            self._single.clear()
        if chose:
            self._paths[ck] = tuple(out)
        else:  # no step had a choice: the route of every key
            self._single[ck[:2]] = tuple(out)
        return out

    def key_free(self, src: Hashable, dst: Hashable) -> bool:
        """Whether :meth:`path` found the route from *src* to *dst* the same for every key
        (no step of it had equal-cost alternatives): known once it has been asked for."""
        return (src, dst) in self._single

    def paths(self, src: Hashable, dst: Hashable) -> list[list[str]]:
        """Every route :meth:`path` may return, sorted; computed hop by hop from the distances,
        without the steps that :meth:`path` caches and shares."""
        s, t, D = self._prepare(src, dst)
        if s == t:
            return [[src]]
        out, stack = [], [(s, [src])]
        while stack:
            state, acc = stack.pop()
            for nxt, node in self._choices(D, t, state):
                p = acc + [self._names[node]]
                out.append(p) if node == t else stack.append((nxt, p))
        return sorted(out)

    def distance(self, src: Hashable, dst: Hashable) -> int:
        """Hops of the route from *src* to *dst* (0 when equal); NoRouteError if none."""
        s, t, D = self._prepare(src, dst)
        return self._dist(D, s) if s != t else 0

    @staticmethod
    def edges(path: Sequence[str]) -> list[tuple[str, str]]:
        """The directed hops ``(u, v)`` of *path*."""
        return list(zip(path[:-1], path[1:]))

    def _node(self, v: Hashable, role: str) -> int:
        try:
            return self._index[v]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(v), list(map(str, self._names)), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ScenarioError(f"{role}: unknown node {v!r} in topology "
                                f"{self.G.graph.get('name', '')!r}{hint}") from None

    def _prepare(self, src: Hashable, dst: Hashable) -> tuple[int, int, _Dest]:
        s, t = self._node(src, "src"), self._node(dst, "dst")
        D = self._dest(t)
        if s != t and self._dist(D, s) < 0:
            raise self._no_route(src, dst)
        return s, t, D

    def _no_route(self, src: Hashable, dst: Hashable) -> NoRouteError:
        if nx.has_path(self.G, src, dst):
            return NoRouteError(src, dst, "every path crosses a node that does not forward "
                                          "traffic (a gpu, memory, storage, or a tpu off its ICI)")
        return NoRouteError(src, dst, "they are in different connected components")

    def _dist(self, D: _Dest, state: int) -> int:
        """Hops from *state* to *D*'s destination, -1 if unreachable."""
        f = (self._fars.get(D.q) or self._far(D.q))[state]
        v = f + D.off if f >= 0 else -1
        w = D.near.get(state)
        return w if w is not None and (v < 0 or w < v) else v

    def _dest(self, t: int) -> _Dest:
        """Distances to node *t*, exact from every state.

        In a server T of ``_by_ingress``, a shortest route from a state outside T enters T for
        the last time from some state o outside it: it reaches o in ``row_o`` hops (:meth:`_row`,
        a BFS shared by every destination behind o), then takes ``c_o`` hops inside T, so its
        length is ``min over o (row_o + c_o)``. That minimum less the smallest ``c_o`` (*off*) is
        the far map, shared by all destinations whose ``c_o - off`` are the same (all the GPUs
        behind one fat-tree leaf). From a state of T, a route either stays in T (``near``, a BFS
        inside T) or leaves it and comes back, as above. Any other node gets a BFS of its own as
        far map (``near`` empty, *off* 0)."""
        D = self._dests.get(t)
        if D is not None:
            return D
        sid = self._node_srv[t]
        if sid < 0:
            start, stop = self._in_ptr[t], self._in_ptr[t + 1]
            D = _Dest(self._q_id(t), 0, {}, -2, frozenset(self._in_from[start:stop].tolist()),
                      {}, {})
        elif sid not in self._by_ingress:
            E = self._entries.get(sid) or self._entry(sid)
            D = _Dest(self._q_id(t), 0, {}, sid, E.edge, {}, {})
        else:
            E = self._entries.get(sid) or self._entry(sid)
            near = {t: 0}
            if t in self._transit:
                near[self._transit[t]] = 0
            front, level = [], 1
            for x in E.pred_node.get(t, ()):
                if x not in near:
                    near[x] = 1
                    front.append(x)
            while front:
                level += 1
                nxt = []
                for y in front:
                    for x in E.pred.get(y, ()):
                        if x not in near:
                            near[x] = level
                            nxt.append(x)
                front = nxt
            cost = {}
            for o, into in E.ingress.items():
                c = min((1 if b == t else 1 + near[ts] if ts in near else _FAR
                         for ts, b, _ in into), default=_FAR)
                if c < _FAR:
                    cost[o] = c
            low = min(cost.values(), default=0)
            D = _Dest(self._q_id(tuple(sorted((o, c - low) for o, c in cost.items()))), low,
                      near, sid, E.edge, {}, {})
        if len(self._dests) >= _DEST_CACHE:  # forget the oldest
            del self._dests[next(iter(self._dests))]
        return self._dests.setdefault(t, D)

    def _entry(self, sid: int) -> _Entry:
        """How server *sid* is entered, and its inside transitions reversed."""
        pred: dict[int, list[int]] = {}
        pred_node: dict[int, list[int]] = {}
        for x in self._members[sid]:
            for ts, b, _ in self._fwd[x]:
                if self._node_srv[b] == sid:
                    pred_node.setdefault(b, []).append(x)
                    if ts >= 0:
                        pred.setdefault(ts, []).append(x)
        ingress = self._ingress.get(sid, {})
        return self._entries.setdefault(sid, _Entry(ingress, frozenset(ingress), pred, pred_node))

    def _q_id(self, key: object) -> int:
        """Number of the far map of *key*: a node (its own BFS) or ``((o, c_o - low), ...)``."""
        q = self._q_ids.setdefault(key, len(self._q_of))
        if q == len(self._q_of):
            self._q_of.append(key)
        return q

    def _far(self, q: int) -> array:
        """Far map number *q*: a BFS from its node, or ``min over o (row_o + c)``."""
        key = self._q_of[q]
        if isinstance(key, int):
            start, stop = self._in_ptr[key], self._in_ptr[key + 1]
            far = self._bfs([key] + ([self._transit[key]] if key in self._transit else []),
                            self._in_from[start:stop])
        elif len(key) == 1 and key[0][1] == 0:
            far = self._rows.get(key[0][0]) or self._row(key[0][0])
        else:
            none = np.int32(1 << 30)
            acc = np.full(self._n_states, none, dtype=np.int32)
            for o, c in key:
                row = np.frombuffer(self._rows.get(o) or self._row(o), dtype=np.int16)
                np.minimum(acc, np.where(row >= 0, row.astype(np.int32) + c, none), out=acc)
            acc[acc == none] = -1
            far = array("h")
            far.frombytes(acc.astype(np.int16).tobytes())
        if len(self._fars) >= self._max_maps:  # forget the oldest
            del self._fars[next(iter(self._fars))]
        return self._fars.setdefault(q, far)

    def _row(self, o: int) -> array:
        """Hops from every state to state *o* (a BFS over the reversed state graph)."""
        k = self._local[o]
        row = self._bfs([o], self._open[self._rev_from[self._rev_ptr[k]:self._rev_ptr[k + 1]]])
        if len(self._rows) >= self._max_maps:  # forget the oldest
            del self._rows[next(iter(self._rows))]
        return self._rows.setdefault(o, row)

    def _bfs(self, zero: list[int], one: np.ndarray) -> array:
        """Hop distances to the states *zero*, *one* being the states one hop away: a numpy BFS
        over the reversed state graph less the sealed servers, one level at a time, then the
        sealed servers through their gateways; int16, -1 if unreachable."""
        loc = self._local
        near = np.full(len(self._open), -1, dtype=np.int64)
        near[loc[zero]] = 0  # never sealed: a state entering a server or a node outside servers
        one = loc[one]
        one = one[one >= 0]
        near[one[near[one] < 0]] = 1
        _spread(near, self._rev_ptr, self._rev_from)
        dist = np.full(self._n_states, -1, dtype=np.int16)
        dist[self._open] = near
        gate = dist[self._fill_g]
        dist[self._fill_x] = np.where(gate >= 0, gate + self._fill_d, -1)
        compact = array("h")  # int16: 2 bytes a state, indexed as fast as a list
        compact.frombytes(dist.tobytes())
        return compact

    @staticmethod
    def _widest(down: list[tuple[int, int, float]]) -> tuple[tuple[int, int], ...]:
        best = max(bw for _, _, bw in down) * (1 - 1e-9)
        return tuple((ts, b) for ts, b, bw in down if bw >= best)

    def _choices(self, D: _Dest, t: int, state: int) -> tuple[tuple[int, int], ...]:
        """Next hops ``(state, node)`` of *state* toward *t*: on a shortest route, then over the
        widest link (in the order of the state's transitions)."""
        ds = self._dist(D, state) - 1
        cand = self._fwd[state]
        if ds == 0:
            return self._widest([x for x in cand if x[1] == t])
        if not D.near:  # a BFS of its own: the far map is the distance
            far = self._fars.get(D.q) or self._far(D.q)
            return self._widest([x for x in cand if x[0] >= 0 and far[x[0]] == ds])
        if state in D.edge and ds + 1 == D.off:  # no shorter way round: only the links into
            cand = self._entries[D.srv].ingress[state]  # the server lead on
        return self._widest([x for x in cand if x[0] >= 0 and self._dist(D, x[0]) == ds])

    def _run(self, choices: tuple[tuple[int, int], ...], more) -> _Step:
        """The step of a walk from some state with next hops *choices*: each choice followed
        while the hops after it are single and ``more(state, node)`` (the next hops from there,
        or None where the cache key of this step no longer determines them) gives them. The
        walk appends the names and goes on from the last state; the hash changes only where it
        chooses, so a run of single hops is the same route as the hops one by one."""
        names, out = self._names, []
        for ts, b in choices:
            run = [names[b]]
            c = more(ts, b)
            while c is not None and len(c) == 1:
                ts, b = c[0]
                run.append(names[b])
                c = more(ts, b)
            out.append((ts, b, tuple(run)))
        return tuple(out)

    def _dest_step(self, D: _Dest, t: int, state: int) -> _Step:
        """Step of *state*, in *t*'s server or on its edge, toward *t* (cached in *D*)."""
        return D.steps.setdefault(state, self._run(
            self._choices(D, t, state), lambda ts, b: None if b == t else
            self._choices(D, t, ts)))

    def _far_step(self, picks: array, state: int) -> _Step:
        """Step of *state*, outside servers, as picked by :meth:`_pick` (*picks*); cached by
        ``state | bits << 32``, bit j for the state's kept transition j (see __init__)."""
        first, stop = self._runs[state]
        bits = 0
        for r in range(first, stop):
            bits |= picks[r] << 64 * (r - first)
        step = self._hopsets.get(bits << 32 | state)
        if step is None:
            kept, names, choices, rest = self._kept[state], self._names, [], bits
            while rest:
                low = rest & -rest
                ts, b = kept[low.bit_length() - 1]
                choices.append((ts, b, (names[b],)))
                rest ^= low
            step = self._hopsets.setdefault(bits << 32 | state, tuple(choices))
        return step

    def _pick(self, q: int) -> array:
        """The next hops of every state outside servers toward a destination whose far map is
        number *q* and that the state has no transition into (nor into its server): of its kept
        transitions (see __init__), those on a shortest route and then the widest, as in
        :meth:`_choices`, as bits in words of 64, at once with numpy."""
        far = np.frombuffer(self._fars.get(q) or self._far(q), dtype=np.int16)
        P = self._out
        on = far[P.to] == far[P.frm] - 1
        best = np.maximum.reduceat(np.where(on, P.bw, -1.0), P.firsts) * (1 - 1e-9)
        on &= P.bw >= np.repeat(best, P.counts)
        picks = array("Q")
        picks.frombytes(np.bitwise_or.reduceat(np.where(on, P.bit, np.uint64(0)), P.runs)
                        .astype(np.uint64).tobytes())
        if len(self._picks) >= self._max_maps:  # forget the oldest
            del self._picks[next(iter(self._picks))]
        return self._picks.setdefault(q, picks)
