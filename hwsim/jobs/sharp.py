"""In-network reduction on InfiniBand switches (SHARP) as an all-reduce on the graph.

NCCL runs it as CollNet (NVIDIA/nccl#320: "CollNet is a new algorithm in NCCL that allows GPUs on
multiple nodes to do in-network reductions", through the SHARP plugin; the "chain" flavour moves
each channel's data ``0 -> 1 -> ... -> 7 -> NIC -> 7 -> ... -> 0`` inside a DGX). Here, per rail
``r`` (one per NIC of the smallest server or NVLink domain, as for rings and trees):

- inside every server (or NVLink domain) a chain through its GPUs to its head, the GPU ``r g / R``
  whose NIC serves the rail, reduces ``S / R`` up and broadcasts it down (as the tree's chain);
- the head sends ``S / R`` once to its NIC's leaf switch and receives the result once: each
  switch of the aggregation tree (the leaves up to the lowest switch level that joins them all,
  the root) forwards one reduced stream of ``S / R`` to its parent and one result stream down.
  The reduction happens in the switches, so a NIC carries ``S / g`` each way instead of the
  ring's ``2 (n-1)/n S / g``: the inter-node traffic per rank is about half the ring's.

All flows run at once (reduce and broadcast are pipelined) and the phase pays
``2 x (chain length + switch levels + 1)`` hop costs, as the tree does. No constant is fitted to
SHARP: the hop latencies are the catalog's and NCCL's network step latency; the switches'
aggregation engines are assumed to keep up with their ports (NVIDIA presents SHARPv3 on
Quantum-2 as line-rate reduction). Validated against CoreWeave's published CollNet-chain run on
8 x 8 H100 (NCCL_ALGO=COLLNETCHAIN, 512 MiB to 8 GiB: +5.0% to +7.3%; docs/collectives.md).
"""

from __future__ import annotations

import weakref
from typing import Sequence

from hwsim.jobs.nccl import Flow, Phase, layout, memo_key
from hwsim.jobs.system import System

__all__ = ["sharp_tree", "available", "plan_sharp"]

_LEVEL = {"leaf": 0, "spine": 1, "core": 2}
_TREES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NICS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _nics(system: System) -> dict | None:
    """``(site, server)`` -> its NICs (sorted), or None where no switch of the graph has
    ``sharp`` (then SHARP never runs; nothing more is looked at). Memoised."""
    memo = _NICS.get(memo_key(system), False)
    if memo is False:
        g, memo = system.graph, None
        if any(d.get("sharp") for _, d in g.nodes(data=True) if d.get("kind") == "switch"):
            memo = {}
            for v, d in g.nodes(data=True):
                if d.get("kind") == "nic":
                    memo.setdefault((d.get("site"), d.get("server")), []).append(v)
            memo = {k: sorted(v) for k, v in memo.items()}
        _NICS[memo_key(system)] = memo
    return memo


def _leaf(system: System, gpu: str, rail: int) -> str | None:
    """The fabric switch *gpu* reaches through its own NIC: a NIC on its PCIe switch, else its
    server's NIC of index *rail* (modulo their number); None without one."""
    g = system.graph
    nics = sorted(v for sw in g.neighbors(gpu) if g.nodes[sw].get("kind") == "pcie_switch"
                  for v in g.neighbors(sw) if g.nodes[v].get("kind") == "nic")
    if not nics:
        at = g.nodes[gpu]
        own = (_nics(system) or {}).get((at.get("site"), at.get("server")), [])
        nics = [own[rail % len(own)]] if own else []
    if not nics:
        return None
    ups = sorted(v for v in g.neighbors(nics[0]) if g.nodes[v].get("kind") == "switch")
    return ups[0] if ups else None


def _up(system: System, sw: str) -> list[str]:
    """The switches one level above *sw*."""
    g = system.graph
    lvl = _LEVEL.get(g.nodes[sw].get("level"), 0)
    return sorted(v for v in g.neighbors(sw) if g.nodes[v].get("kind") == "switch"
                  and _LEVEL.get(g.nodes[v].get("level"), -1) == lvl + 1)


def sharp_tree(system: System, leaves: Sequence[str], rail: int
               ) -> tuple[str, dict[str, str]] | None:
    """The aggregation tree over *leaves* for *rail*: ``(root, parent of each other switch)``.
    The root is a switch of the lowest level that every leaf reaches going up (rail ``r`` takes
    the ``r``-th of them, modulo, to spread the rails' trees); each leaf's path up to it takes
    the first switch (by name) that leads there. None if a switch on the way cannot reduce
    (``sharp`` not set) or no common switch exists."""
    g = system.graph
    leaves = sorted(set(leaves))
    if any(not g.nodes[v].get("sharp") for v in leaves):
        return None
    if len(leaves) == 1:
        return leaves[0], {}
    above: dict[str, frozenset] = {}
    common = frozenset.intersection(*(_above(system, v, above) for v in leaves))
    if not common:
        return None
    low = min(_LEVEL.get(g.nodes[v].get("level"), 0) for v in common)
    roots = sorted(v for v in common if _LEVEL.get(g.nodes[v].get("level"), 0) == low)
    root = roots[rail % len(roots)]
    parent: dict[str, str] = {}
    for leaf in leaves:
        u = leaf
        while u != root:  # the first switch above that still reaches the root
            v = next(v for v in _up(system, u) if root in _above(system, v, above))
            parent.setdefault(u, v)
            u = v
    if any(not g.nodes[v].get("sharp") for v in {root, *parent}):
        return None
    return root, parent


def _above(system: System, sw: str, memo: dict[str, frozenset]) -> frozenset:
    """*sw* and the switches reachable from it going up level by level."""
    hit = memo.get(sw)
    if hit is None:
        hit = memo[sw] = frozenset({sw}).union(*(_above(system, v, memo)
                                                  for v in _up(system, sw)))
    return hit


def _trees(system: System, devices: Sequence[str]) -> list | None:
    """Per rail: ``(chains, heads' leaves, (root, parents))``, or None where SHARP cannot run
    (one server or domain, a head without a NIC, a switch without ``sharp``). Memoised."""
    memo = _TREES.setdefault(memo_key(system), {})
    k = tuple(devices)
    if k in memo:
        return memo[k]
    if _nics(system) is None:
        memo[k] = None
        return None
    groups, rails = layout(system, devices)
    out: list | None = [] if len(groups) > 1 else None
    for r in range(rails if out is not None else 0):
        chains = [grp[r * len(grp) // rails:] + grp[:r * len(grp) // rails] for grp in groups]
        leaves = [_leaf(system, c[0], r) for c in chains]
        tree = None if None in leaves else sharp_tree(system, leaves, r)
        if tree is None:
            out = None
            break
        out.append((chains, leaves, tree))
    memo[k] = out
    return out


def available(system: System, devices: Sequence[str]) -> bool:
    """Whether the ``sharp`` all-reduce can run over *devices*: they span several servers (or
    NVLink domains) and every switch of every rail's aggregation tree has ``sharp``."""
    return _trees(system, devices) is not None


def plan_sharp(system: System, devices: Sequence[str], nbytes: float,
               rank_of: dict[str, int]) -> list[Phase]:
    """The one phase of the ``sharp`` all-reduce of *nbytes* per rank (see the module doc).
    ValueError where it cannot run (:func:`available`)."""
    trees = _trees(system, devices)
    if trees is None:
        raise ValueError("sharp needs ranks on several servers (or NVLink domains) whose NICs "
                         "reach InfiniBand switches with SHARP (cluster.fabric.sharp: true)")
    rails = len(trees)
    part = nbytes / rails
    flows: list[Flow] = []
    depth = 0
    for chains, leaves, (root, parent) in trees:
        for chain, leaf in zip(chains, leaves):
            for a, b in zip(chain, chain[1:]):
                flows += [Flow(b, a, part, rank_of[b]), Flow(a, b, part, rank_of[a])]
            head = chain[0]
            flows += [Flow(head, leaf, part, rank_of[head]), Flow(leaf, head, part, rank_of[head])]
        for child, up in sorted(parent.items()):
            flows += [Flow(child, up, part, rank_of[chains[0][0]]),
                      Flow(up, child, part, rank_of[chains[0][0]])]
        levels = max((_height(c, parent) for c in leaves), default=0)
        depth = max(depth, 2 * (max(len(c) for c in chains) - 1 + levels + 1))
    return [Phase(tuple(flows), 1, max(depth, 1))]


def _height(leaf: str, parent: dict[str, str]) -> int:
    """Switch hops from *leaf* up to the root."""
    h = 0
    while leaf in parent:
        leaf, h = parent[leaf], h + 1
    return h
