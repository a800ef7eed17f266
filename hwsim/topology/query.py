"""Questions about a built graph that jobs and the front ask: natural ordering of node names,
and the node of a kind that serves a given node on its server."""

from __future__ import annotations

import re
import weakref
from typing import Sequence

import networkx as nx

__all__ = ["natural_key", "server_peer", "server_index", "nodes_of_kind", "compute_devices",
           "component_counts", "torus_rings", "torus_ordered", "TORUS_AXES"]

TORUS_AXES = ("x", "y", "z")
"""Names of a torus's axes, in the order of a chip's ``coords``."""


def natural_key(name: str) -> tuple:
    """Sort key that orders ``n2.gpu10`` after ``n2.gpu9`` (numbers compared as numbers)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def nodes_of_kind(G: nx.Graph, kind: str) -> list[str]:
    """Nodes whose ``kind`` attribute is *kind*, in natural order."""
    return sorted((n for n, d in G.nodes(data=True) if d.get("kind") == kind), key=natural_key)


def server_index(G: nx.Graph) -> dict[tuple, str]:
    """``(site, server, kind)`` -> the first node (natural order) of that kind on that server;
    build it once to look up many nodes (:func:`server_peer`)."""
    index: dict[tuple, str] = {}
    for n in sorted(G, key=natural_key):
        e = G.nodes[n]
        index.setdefault((e.get("site"), e.get("server"), e.get("kind")), n)
    return index


def server_peer(G: nx.Graph, node: str, kind: str, index: dict[tuple, str] | None = None
                ) -> str | None:
    """The first node (natural order) of *kind* on the same server and site as *node*, or None.
    Pass a :func:`server_index` of *G* when looking up many nodes."""
    d = G.nodes[node]
    return (index or server_index(G)).get((d.get("site"), d.get("server"), kind))


def compute_devices(G: nx.Graph, kind: str) -> list[str]:
    """The devices a job of *kind* (``gpu``, ``tpu``, ``cpu``) runs on, in natural order: every
    accelerator, or one CPU per server (its first socket: one process per server)."""
    devices = nodes_of_kind(G, kind)
    if kind == "cpu":
        index = server_index(G)
        devices = [n for n in devices if server_peer(G, n, "cpu", index) == n]
    return devices


def component_counts(G: nx.Graph, devices: list[str]) -> dict[str, int]:
    """How many of each component class a job on *devices* depends on, for failure rates:
    ``gpu`` (the devices), ``node`` (their servers), ``nic`` (NICs on those servers), ``switch``
    (fabric switches), ``link`` (cables with a fabric switch or router at one end, parallel links
    counted by their ``count``), ``storage`` (storage nodes: local drives and shared tiers, each
    node's ``count``)."""
    def key(n: str) -> tuple:
        d = G.nodes[n]
        return d.get("site"), d.get("server")

    servers = {key(n) for n in devices}
    kinds = {n: d.get("kind") for n, d in G.nodes(data=True)}
    fabric = {"switch", "router"}
    return {
        "gpu": len(devices),
        "node": len(servers),
        "nic": sum(1 for n, k in kinds.items() if k == "nic" and key(n) in servers),
        "switch": sum(1 for k in kinds.values() if k == "switch"),
        "link": sum(int(d.get("count", 1)) for u, v, d in G.edges(data=True)
                    if kinds[u] in fabric or kinds[v] in fabric),
        "storage": sum(int(G.nodes[n].get("count", 1)) for n, k in kinds.items()
                       if k == "storage"),
    }


def torus_ordered(G: nx.Graph, devices: Sequence[str], order: Sequence[str]) -> list[str]:
    """*devices* (TPU chips with torus ``coords``) in the order that makes ranks fill the torus
    axes *order* (names of :data:`TORUS_AXES`) fastest first, as a JAX device mesh over physical
    axes does: consecutive ranks (a tensor-parallel group) step along ``order[0]``, then
    ``order[1]``... Chips of different slices or sites stay apart, in their given order.
    Raises ValueError when a device has no torus coordinates or *order* does not name each of
    the torus's axes once."""
    coords = [G.nodes[d].get("coords") for d in devices]
    missing = [d for d, c in zip(devices, coords) if c is None]
    if missing:
        raise ValueError(f"{missing[0]!r} is not a chip of a TPU torus (no torus coordinates); "
                         "valid: a cluster with fabric topology: torus")
    names = TORUS_AXES[:len(coords[0])]
    if sorted(order) != sorted(names):
        raise ValueError(f"{list(order)} must name each axis of the {len(names)}-D torus once; "
                         f"valid: an order of {', '.join(names)}")
    axes = [names.index(a) for a in reversed(order)]  # the slowest first
    group = {}
    for d in devices:
        at = G.nodes[d]
        group.setdefault((at.get("site"), at.get("slice")), len(group))

    def key(i: int) -> tuple:
        at = G.nodes[devices[i]]
        return (group[(at.get("site"), at.get("slice"))], *(coords[i][a] for a in axes))
    return [devices[i] for i in sorted(range(len(devices)), key=key)]


_DIMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def torus_rings(G: nx.Graph, devices: Sequence[str]
                ) -> tuple[list[list[list[str]]], list[list[str]]] | None:
    """How *devices* sit on TPU tori: ``(axes, across)``. ``axes``: the rings along each torus
    axis they span, axis by axis, each ring in coordinate order, the rings of every slice
    together (axes they do not span left out); ``across``: with chips on several slices
    (Multislice, :func:`~hwsim.topology.builders.tpu_pod` ``slices``), for each position the
    chips there in slice order, else empty. None unless every device is a chip with torus
    ``coords``, every slice holds the same positions, and these fill whole axes of the pod
    (every position of each spanned axis, the same positions on the others: a sub-torus) with
    every ring closed by its wrap-around link."""
    if len(devices) < 2:
        return None
    nodes = [G.nodes[d] for d in devices]
    coords = [d.get("coords") for d in nodes]
    if any(c is None for c in coords) or len({len(c) for c in coords}) != 1:
        return None
    by_slice: dict[object, dict[tuple, str]] = {}
    for dev, d, c in zip(devices, nodes, coords):
        at = by_slice.setdefault(d.get("slice"), {})
        if tuple(c) in at:
            return None
        at[tuple(c)] = dev
    slices = sorted(by_slice, key=lambda k: -1 if k is None else k)
    first = by_slice[slices[0]]
    if any(set(by_slice[k]) != set(first) for k in slices):
        return None
    dims = _torus_dims(G, nodes[0].get("site"), nodes[0].get("slice"), len(coords[0]))
    values = [sorted({c[a] for c in first}) for a in range(len(dims))]
    size = 1
    for v in values:
        size *= len(v)
    if size != len(first):  # not a product of per-axis positions
        return None
    axes: list[list[list[str]]] = []
    for a, v in enumerate(values):
        if len(v) == 1:
            continue
        if v != list(range(dims[a])):  # part of an axis: no wrap-around ring
            return None
        rings: list[list[str]] = []
        for k in slices:
            per: dict[tuple, list[str]] = {}
            for c in sorted(by_slice[k]):
                per.setdefault(c[:a] + c[a + 1:], []).append(by_slice[k][c])
            rings += per.values()
        if any(not G.has_edge(r[-1], r[0]) for r in rings):
            return None
        axes.append(rings)
    across = [[by_slice[k][c] for k in slices] for c in sorted(first)] if len(slices) > 1 else []
    return (axes, across) if axes or across else None


def _torus_dims(G: nx.Graph, site: object, slice_: object, rank: int) -> list[int]:
    """The torus dimensions of the pod (slice) at *site*: the largest coordinate on each axis
    plus one."""
    memo = _DIMS.setdefault(G, {})
    hit = memo.get((site, slice_, rank))
    if hit is None:
        hit = [0] * rank
        for _, d in G.nodes(data=True):
            c = d.get("coords")
            if c is not None and d.get("site") == site and d.get("slice") == slice_ \
                    and len(c) == rank:
                hit = [max(h, x + 1) for h, x in zip(hit, c)]
        memo[(site, slice_, rank)] = hit
    return hit
