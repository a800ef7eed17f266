"""Routing inside servers (:class:`~hwsim.topology.routing.Router`'s half that walks a route
out of a server): each server's gateways and its states' hops to them, the key under which
destinations alike share a server's next hops, and the steps of a walk inside a server, sealed
or not. A mixin over the router's state (its transitions ``_fwd``, servers ``_srv``, maps and
caches); docs/topology.md, "Speed"."""

from __future__ import annotations

from operator import add
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from hwsim.topology.routing import _Dest

_PATH_CACHE = 200_000
_FAR = 1 << 40  # "unreachable" in inside-server distances

_Step = tuple  # ((state, node, names), ...): the choices of one step of a walk (see Router._run)


class _Server(NamedTuple):
    """The transitions that leave one server (gateways) and the hops to them inside it."""

    gates: dict[tuple[int, int], int]  # (state or -1, node) outside the server -> gateway index
    d_in: dict[int, list[int]]  # inside state -> hops to each gateway through the server only
    touch: frozenset[int]  # servers the gateways lead into (-1: outside servers)


class ServerSteps:
    """The next hops of states inside servers, for :class:`~hwsim.topology.routing.Router`."""

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
        touch = frozenset(srv[g] if g >= 0 else self._node_srv[b] for g, b in gates)
        return self._servers.setdefault(sid, _Server(gates, d_in, touch))

    def _sig(self, D: _Dest, t: int, sid: int) -> int:
        """Key offset of the distances from server *sid*'s gateways to *t*, less their minimum
        (-1: unreachable); destinations with equal offsets share the server's next hops. Unless a
        gateway leads into *t*'s server, they depend on *t* only through its far map."""
        sv = self._servers.get(sid) or self._server(sid)
        shared = D.srv not in sv.touch
        off = self._q_sigs.get((D.q, sid)) if shared else None
        if off is None:
            if shared:  # no gateway into t's server: its far map tells (less the same offset)
                far = self._fars.get(D.q) or self._far(D.q)
                vals = [far[g] if g >= 0 else (0 if b == t else -1) for g, b in sv.gates]
            else:
                vals = [self._dist(D, g) if g >= 0 else (0 if b == t else -1)
                        for g, b in sv.gates]
            low = min((v for v in vals if v >= 0), default=0)
            key = (sid, tuple(v - low if v >= 0 else -1 for v in vals))
            n = self._sig_ids.setdefault(key, len(self._sig_of))
            if n == len(self._sig_of):
                self._sig_of.append(key)
            off = (n + 1) * self._n_states
            if shared:
                if len(self._q_sigs) >= _PATH_CACHE * 4:
                    self._q_sigs.clear()
                self._q_sigs[D.q, sid] = off
        return D.sig.setdefault(sid, off)

    def _sealed_choices(self, state: int) -> tuple[tuple[int, int], ...]:
        """Next hops of *state*, in a sealed server, toward anything outside it: to its gateway
        (as :meth:`_server_choices` with the gateway's offset)."""
        din, sid, gate = self._din, self._srv[state], self._gate[state]
        want = din[state] - 1
        return self._widest(
            [y for y in self._fwd[state] if y[0] == gate] if want == 0 else
            [y for y in self._fwd[state] if y[0] >= 0 and self._srv[y[0]] == sid
             and din[y[0]] == want])

    def _sealed_step(self, state: int) -> _Step:
        """Step of *state*, in a sealed server, toward anything outside it (cached by state)."""
        sid = self._srv[state]
        return self._shops.setdefault(state, self._run(
            self._sealed_choices(state), lambda ts, b: self._sealed_choices(ts)
            if ts >= 0 and self._srv[ts] == sid else None))

    def _server_choices(self, state: int, off: int) -> tuple[tuple[int, int], ...]:
        """Next hops of inside *state* toward any destination outside its server with key *off*."""
        memo = self._sig_memo  # hops from inside states under the last offset asked for
        if memo[0] != off:
            sid, sig = self._sig_of[off // self._n_states - 1]
            gates, d_in, _ = self._servers[sid]
            memo[:] = off, gates, [_FAR if g < 0 else g for g in sig], d_in, {}
        _, gates, far, d_in, known = memo

        def dist(x: int) -> int:  # through the nearest gateway
            d = known.get(x)
            if d is None:
                d = known[x] = min(map(add, d_in[x], far))
            return d
        want = dist(state) - 1
        return self._widest([(ts, b, bw) for ts, b, bw in self._fwd[state]
                             if ((ts, b) in gates and far[gates[ts, b]] == want)
                             or ((ts, b) not in gates and ts in d_in and dist(ts) == want)])

    def _server_step(self, state: int, off: int) -> _Step:
        """Step of inside *state* toward any destination outside its server with key *off*."""
        sid = self._srv[state]
        return self._shops.setdefault(state + off, self._run(
            self._server_choices(state, off), lambda ts, b: self._server_choices(ts, off)
            if ts >= 0 and self._srv[ts] == sid else None))
