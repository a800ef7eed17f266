# The router as it was before per-ingress distances (hwsim/topology/routing.py at df5afcd), kept
# verbatim as the reference that tests/test_routing_scale.py compares the new one against: one
# full BFS per destination. Not used by hwsim itself.
"""Routing: shortest paths (by hops) whose middle nodes all forward, with deterministic ECMP.

Forwarders are :data:`~hwsim.topology.attributes.FORWARDING_KINDS`, and TPU chips from ICI link to
ICI link; GPUs, memory and storage never forward. At each hop, of the next hops on a shortest
route, those over the widest link are kept (NVLink beats a PCIe switch shared by two GPUs) and one
is picked by a stable hash of ``(src, dst, key)`` and the hop (ECMP, same in every process).
How it is fast (per-destination numpy BFS, next hops cached and shared by identical endpoints and,
inside other servers, by all destinations alike from the server's gateways): docs/topology.md.
"""

from __future__ import annotations

import difflib
import zlib
from array import array
from typing import Hashable, NamedTuple, Sequence

import networkx as nx
import numpy as np

from hwsim.exceptions import NoRouteError, ScenarioError
from hwsim.topology.attributes import (ENDPOINT_KINDS, FORWARDING_KINDS, NODE_KINDS,
                                       TRANSIT_LINK_CLASSES)

__all__ = ["Router"]

_MIX = 0x9E3779B1  # Knuth's multiplicative-hash constant (2**32 / golden ratio)
_PATH_CACHE = 200_000
_STATE_BUDGET = 64_000_000  # states kept in per-destination distance maps (2 bytes each)
_FAR = 1 << 40  # "unreachable" in inside-server distances
_SHARED = ENDPOINT_KINDS - set(TRANSIT_LINK_CLASSES)  # endpoint kinds whose routes are shared


class _Dest(NamedTuple):
    """What the router knows about routes to one destination."""

    dist: array  # hops from each state to the destination, -1 if unreachable
    hops: dict[int, tuple[tuple[int, int], ...]]  # state -> ((next state, node), ...)
    sig: dict[int, int]  # server -> key offset of its gateways' distances (see _sig)


class _Server(NamedTuple):
    """The transitions that leave one server (gateways) and the hops to them inside it."""

    gates: dict[tuple[int, int], int]  # (state or -1, node) outside the server -> gateway index
    d_in: dict[int, list[int]]  # inside state -> hops to each gateway through the server only


class Router:
    """Routes between nodes of a topology graph; build once per graph (it does not watch changes).

    Parameters
    ----------
    G : networkx.Graph
        A topology (see :mod:`hwsim.topology.attributes`); every node needs a valid ``kind``.
    """

    def __init__(self, G: nx.Graph) -> None:
        self.G = G
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
        frm, to_state, to_node = [], [], []
        for u, v, d in G.edges(data=True):
            cls, bw = d.get("link_class"), float(d.get("bw_bytes_per_s", 0.0))
            for a, b in ((index[u], index[v]), (index[v], index[u])):
                ts = (b if kinds[b] in FORWARDING_KINDS else
                      transit[b] if cls in TRANSIT_LINK_CLASSES.get(kinds[b], ()) else -1)
                relay = a in transit and cls in TRANSIT_LINK_CLASSES[kinds[a]]
                for s in (a, transit[a]) if relay else (a,):
                    self._fwd[s].append((ts, b, bw))
                    frm.append(s), to_state.append(ts), to_node.append(b)
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
        self._sig_ids: dict[tuple[int, tuple[int, ...]], int] = {}  # (server, sig) -> number
        self._sig_of: list[tuple[int, tuple[int, ...]]] = []  # number -> (server, sig)
        self._shops: dict[int, tuple[tuple[int, int], ...]] = {}  # state + offset -> next hops
        self._dests: dict[int, _Dest] = {}
        self._max_dests = max(16, _STATE_BUDGET // max(1, ns))
        self._paths: dict[tuple[Hashable, Hashable, Hashable], tuple[str, ...]] = {}
        # numpy CSR of the reversed transitions, by arrival state and by arrival node
        frm_a, ts_a, tn_a = (np.asarray(x, dtype=np.int64) for x in (frm, to_state, to_node))
        keep = ts_a >= 0
        order = np.argsort(ts_a[keep], kind="stable")
        self._rev_from = frm_a[keep][order]
        self._rev_ptr = np.searchsorted(ts_a[keep][order], np.arange(ns + 1))
        order = np.argsort(tn_a, kind="stable")
        self._in_from = frm_a[order]
        self._in_ptr = np.searchsorted(tn_a[order], np.arange(n + 1))
        self._n_states = ns

    def path(self, src: Hashable, dst: Hashable, key: Hashable = 0) -> list[str]:
        """The route from *src* to *dst* as a node list (``[src]`` when they are equal).

        *key* picks one of the equal-cost routes (ECMP): the same key always gives the same route,
        in any process; different keys spread over the alternatives. Raises ScenarioError for an
        unknown node and NoRouteError when no route joins them.
        """
        ck = (src, dst, key)
        hit = self._paths.get(ck)
        if hit is not None:
            return list(hit)
        s, t = self._node(src, "src"), self._node(dst, "dst")
        if s == t:
            return [src]
        rep = self._rep[t]
        if rep != t and self._rep[s] == rep:
            rep = t  # src is in dst's class: route to dst itself
        t = rep
        D = self._dests.get(t) or self._dest(t)
        if D.dist[s] < 0:
            raise self._no_route(src, dst)
        names, hops, sigs, srv, shops = self._names, D.hops, D.sig, self._srv, self._shops
        t_srv = self._node_srv[t]
        h = zlib.crc32(f"{src}\x00{dst}\x00{key}".encode())
        out, state = [src], s
        while True:
            sid = srv[state]
            if sid < 0 or sid == t_srv:
                c = hops.get(state) or self._hops(D, t, state)
            else:  # inside another server: hops shared by destinations with the same offset
                off = sigs.get(sid)
                if off is None:
                    off = self._sig(D, t, sid)
                c = shops.get(state + off) or self._server_hops(state, off)
            if len(c) > 1:
                h = (h * _MIX + state + 1) & 0xFFFFFFFF
                state, node = c[(h >> 7) % len(c)]
            else:
                state, node = c[0]
            out.append(names[node])
            if node == t:
                break
        out[-1] = dst
        if len(self._paths) >= _PATH_CACHE:
            self._paths.clear()
        self._paths[ck] = tuple(out)
        return out

    def paths(self, src: Hashable, dst: Hashable) -> list[list[str]]:
        """Every route :meth:`path` may return, sorted; computed without its shared caches."""
        s, t, D = self._prepare(src, dst)
        if s == t:
            return [[src]]
        out, stack = [], [(s, [src])]
        while stack:
            state, acc = stack.pop()
            for nxt, node in self._hops(D, t, state):
                p = acc + [self._names[node]]
                out.append(p) if node == t else stack.append((nxt, p))
        return sorted(out)

    def distance(self, src: Hashable, dst: Hashable) -> int:
        """Hops of the route from *src* to *dst* (0 when equal); NoRouteError if none."""
        s, t, D = self._prepare(src, dst)
        return D.dist[s] if s != t else 0

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
        if s != t and D.dist[s] < 0:
            raise self._no_route(src, dst)
        return s, t, D

    def _no_route(self, src: Hashable, dst: Hashable) -> NoRouteError:
        if nx.has_path(self.G, src, dst):
            return NoRouteError(src, dst, "every path crosses a node that does not forward "
                                          "traffic (a gpu, memory, storage, or a tpu off its ICI)")
        return NoRouteError(src, dst, "they are in different connected components")

    def _dest(self, t: int) -> _Dest:
        """Hop distances of every state to node *t*: a BFS over the reversed state graph."""
        D = self._dests.get(t)
        if D is not None:
            return D
        dist = np.full(self._n_states, -1, dtype=np.int64)
        dist[t] = 0
        if t in self._transit:
            dist[self._transit[t]] = 0
        dist[self._in_from[self._in_ptr[t]:self._in_ptr[t + 1]]] = 1
        level, ptr, rev = 1, self._rev_ptr, self._rev_from
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
        if len(self._dests) >= self._max_dests:  # forget the oldest
            del self._dests[next(iter(self._dests))]
        compact = array("h")  # int16: 2 bytes a state, indexed as fast as a list
        compact.frombytes(dist.astype(np.int16).tobytes())
        return self._dests.setdefault(t, _Dest(compact, {}, {}))

    @staticmethod
    def _widest(down: list[tuple[int, int, float]]) -> tuple[tuple[int, int], ...]:
        best = max(bw for _, _, bw in down) * (1 - 1e-9)
        return tuple((ts, b) for ts, b, bw in down if bw >= best)

    def _hops(self, D: _Dest, t: int, state: int) -> tuple[tuple[int, int], ...]:
        """Next hops of *state* toward *t*: on a shortest route, over the widest link (cached)."""
        hops = D.hops.get(state)
        if hops is None:
            dist, ds = D.dist, D.dist[state] - 1
            hops = D.hops[state] = self._widest(
                [x for x in self._fwd[state] if x[1] == t] if ds == 0 else
                [x for x in self._fwd[state] if x[0] >= 0 and dist[x[0]] == ds])
        return hops

    def _server(self, sid: int) -> _Server:
        """Gateways of server *sid* and each inside state's hops to each, inside the server."""
        srv, inside = self._srv, self._members[sid]
        gates: dict[tuple[int, int], int] = {}
        rev: dict[int, list[int]] = {x: [] for x in inside}
        for x in inside:
            for ts, b, _ in self._fwd[x]:
                if (srv[ts] if ts >= 0 else self._node_srv[b]) != sid:
                    gates.setdefault((ts, b), len(gates))
                elif ts >= 0:
                    rev[ts].append(x)
        d_in = {x: [_FAR] * len(gates) for x in inside}
        for (ts, b), k in gates.items():
            front = [x for x in inside if any(y[0] == ts and y[1] == b for y in self._fwd[x])]
            level = 1
            while front:
                nxt = []
                for x in front:
                    if d_in[x][k] == _FAR:
                        d_in[x][k] = level
                        nxt.extend(rev[x])
                front, level = nxt, level + 1
        return self._servers.setdefault(sid, _Server(gates, d_in))

    def _sig(self, D: _Dest, t: int, sid: int) -> int:
        """Key offset of the distances from server *sid*'s gateways to *t*, less their minimum
        (-1: unreachable); destinations with equal offsets share the server's next hops."""
        dist, sv = D.dist, self._servers.get(sid) or self._server(sid)
        vals = [dist[g] if g >= 0 else (0 if b == t else -1) for g, b in sv.gates]
        low = min((v for v in vals if v >= 0), default=0)
        key = (sid, tuple(v - low if v >= 0 else -1 for v in vals))
        n = self._sig_ids.setdefault(key, len(self._sig_of))
        if n == len(self._sig_of):
            self._sig_of.append(key)
        return D.sig.setdefault(sid, (n + 1) * self._n_states)

    def _server_hops(self, state: int, off: int) -> tuple[tuple[int, int], ...]:
        """Next hops of inside *state* toward any destination outside its server with key *off*."""
        sid, sig = self._sig_of[off // self._n_states - 1]
        gates, d_in = self._servers[sid]
        far = [_FAR if g < 0 else g for g in sig]

        def dist(x: int) -> int:
            return min(d + g for d, g in zip(d_in[x], far))
        want = dist(state) - 1
        down = [(ts, b, bw) for ts, b, bw in self._fwd[state]
                if ((ts, b) in gates and far[gates[ts, b]] == want)
                or ((ts, b) not in gates and ts in d_in and dist(ts) == want)]
        return self._shops.setdefault(state + off, self._widest(down))
