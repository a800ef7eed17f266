"""Scale-out fabrics joining servers' NICs (docs/topology.md, "Fabrics"): fat-trees (two or
three levels, an oversubscription per tier), rail-optimised leaves, independent planes, and
dragonflies; and the bisection bandwidth of a built graph.

Pure functions that add switches and links to a graph whose servers (and NICs) exist; the
cluster builder (:func:`hwsim.topology.builders.cluster`) picks one from ``fabric.topology``.
"""

from __future__ import annotations

from itertools import combinations, product
from math import ceil
from typing import Any, Sequence

import networkx as nx

from hwsim.exceptions import ScenarioError
from hwsim.topology import attributes as A

__all__ = ["leaves", "upper", "tiers", "dragonfly", "bisection_bw"]


def tiers(over: float | Sequence[float]) -> tuple[float, float]:
    """``fabric.oversubscription`` as (leaf, spine): a number is the leaves' (spines
    non-blocking), a list ``[leaf]`` or ``[leaf, spine]`` one figure per tier, each >= 1."""
    values = [over] if isinstance(over, (int, float)) else list(over)
    if not 1 <= len(values) <= 2:
        raise ScenarioError(f"one figure per tier, [leaf] or [leaf, spine]; got {values}",
                            field="fabric.oversubscription")
    for i, v in enumerate(values):
        if (A.num_arg(v, "fabric.oversubscription") or 0) < 1:
            raise ScenarioError(f"every tier's figure must be >= 1 (down / up bandwidth), got {v}"
                                + (f" at position {i}" if len(values) > 1 else ""),
                                field="fabric.oversubscription")
    return float(values[0]), float(values[1]) if len(values) > 1 else 1.0


def leaves(G: nx.Graph, groups: list[list[str]], radix: int, site: str, rail: bool = False,
           prefix: str = "leaf") -> list[str]:
    """Attach each group of NICs to its own run of leaves with ``radix // 2`` down ports."""
    down, out = max(1, radix // 2), []
    for g, nics in enumerate(groups):
        for c in range(0, len(nics), down):
            out.append(A.add_node(G, f"{prefix}{len(out)}", A.SWITCH, site=site,
                                  level="leaf", **({"rail": g} if rail else {})))
            for n in nics[c:c + down]:
                A.add_link(G, n, out[-1], A.link_spec(G.nodes[n]["spec"], "node.nic"))
    return out


def upper(G: nx.Graph, below: list[str], link: Any, radix: int, over: tuple[float, float],
          site: str, prefix: str = "") -> list[str]:
    """Spines (and cores if needed) above the leaves *below*; return the top-level switches.

    A leaf has ``radix // 2`` ports down and ``radix // (2 x leaf oversubscription)`` up. Up to
    ``radix`` leaves: two levels, every leaf joined to every spine. More: three levels, pods of
    ``radix // 2`` leaves each with its own spines, whose ``radix // (2 x spine
    oversubscription)`` up ports join the cores (a spine oversubscription > 1 on two levels is
    an error: there is no tier above the spines)."""
    leaf_over, spine_over = over
    if spine_over > 1 and len(below) <= radix:
        raise ScenarioError(
            f"the spine figure ({spine_over:g}) applies to a three-level fabric; {len(below)} "
            f"leaves of {radix}-port switches need no third level (it starts above {radix} "
            "leaves): give one figure", field="fabric.oversubscription")
    if len(below) == 1:
        return below
    up, half = max(1, int(radix // (2 * leaf_over))), max(1, radix // 2)

    def sw(name: str, level: str) -> str:
        return A.add_node(G, prefix + name, A.SWITCH, site=site, level=level)
    if len(below) <= radix:  # two levels: every leaf joins every spine, parallel links aggregated
        n_sp = next(d for d in range(1, up + 1) if up % d == 0 and d * radix >= len(below) * up)
        spines = [sw(f"spine{j}", "spine") for j in range(n_sp)]
        for leaf, spine in product(below, spines):
            A.add_link(G, leaf, spine, link, up // n_sp)
        return spines
    pods = [below[i:i + half] for i in range(0, len(below), half)]
    if len(pods) > radix:
        raise ScenarioError(f"{radix}-port switches cannot join {len(below)} leaves in three "
                            "levels; raise leaf_radix", field="fabric.leaf_radix")
    rise = max(1, int(half // spine_over))  # a spine's ports up to the cores
    n_core = next(d for d in range(1, rise + 1) if rise % d == 0 and d * radix >= len(pods) * rise)
    cores = [[sw(f"core{j * n_core + c}", "core") for c in range(n_core)] for j in range(up)]
    for p, pod in enumerate(pods):  # spine j of every pod joins core group j
        for j in range(up):
            spine = sw(f"spine{p * up + j}", "spine")
            for leaf in pod:
                A.add_link(G, leaf, spine, link)
            for core in cores[j]:
                A.add_link(G, spine, core, link, rise // n_core)
    return [c for group in cores for c in group]


def dragonfly(G: nx.Graph, nics: list[str], link: Any, radix: int, site: str,
              group_routers: int | None = None) -> list[str]:
    """A dragonfly (Kim, Dally, Scott, Abts, ISCA 2008) over *nics*: routers of *radix* ports
    in groups of ``a`` (*group_routers*, default ``radix // 2``), each router with ``p = radix
    // 4`` NICs and ``h = radix - p - (a - 1)`` global ports; the routers of a group are joined
    all to all (local links), every pair of groups by ``a x h // (g - 1)`` global links spread
    over their routers. Minimal routes (local, global, local) come from the router; the
    global links are the bisection. Returns the routers."""
    p = max(1, radix // 4)
    a = A.int_arg(group_routers if group_routers is not None else max(2, radix // 2),
                  "fabric.group_routers", 1)
    h = radix - p - (a - 1)
    if h < 1:
        raise ScenarioError(f"{a} routers a group leave no global port on a {radix}-port router "
                            f"({p} to NICs, {a - 1} local); at most {radix - p - 1} routers a group",
                            field="fabric.group_routers")
    routers = ceil(len(nics) / p)
    n_groups = ceil(routers / a)
    if n_groups - 1 > a * h:
        raise ScenarioError(f"{n_groups} groups of {a} routers need {n_groups - 1} global ports "
                            f"a group, more than its {a * h}; raise leaf_radix or group_routers",
                            field="fabric.leaf_radix")
    names = [A.add_node(G, f"g{r // a}.router{r % a}", A.SWITCH, site=site, level="leaf",
                        group=r // a) for r in range(routers)]
    for i, n in enumerate(nics):
        A.add_link(G, n, names[i // p], A.link_spec(G.nodes[n]["spec"], "node.nic"))
    groups = [names[g * a:(g + 1) * a] for g in range(n_groups)]
    for grp in groups:
        for u, v in combinations(grp, 2):
            A.add_link(G, u, v, link)
    if n_groups > 1:
        per_pair = max(1, (a * h) // (n_groups - 1))
        used = [0] * n_groups  # global ports used so far in each group, spread over its routers
        for g1, g2 in combinations(range(n_groups), 2):
            for _ in range(per_pair):
                r1 = groups[g1][used[g1] % len(groups[g1])]
                r2 = groups[g2][used[g2] % len(groups[g2])]
                used[g1] += 1
                used[g2] += 1
                count = G.edges[r1, r2]["count"] + 1 if G.has_edge(r1, r2) else 1
                A.add_link(G, r1, r2, link, count)
    return names


def bisection_bw(G: nx.Graph, servers: Sequence[object] | None = None) -> float:
    """Bytes/s that one half of a cluster can send to the other at once, through its network
    alone: the maximum flow between the halves with every link at its raw bandwidth per
    direction (``bw_bytes_per_s``).

    Servers with NICs (a fabric): the first half of the servers (in server order) against the
    second, through NICs and switches; for a non-blocking fat-tree it is half the servers' NIC
    bandwidth, oversubscription and a dragonfly's global links cut it. *servers*: the server
    indices to split (default all). A TPU pod (chips with torus ``coords`` and ICI links, no
    fabric): the chips below the middle of the first axis against the rest, through the ICI
    links (a 16 x 16 v5e pod: 32 links of 50 GB/s, the 1.6 TB/s Google publishes)."""
    chips = [(d["coords"], n) for n, d in G.nodes(data=True)
             if d.get("kind") == A.TPU and d.get("coords") is not None]
    nic_servers = {d["server"] for _, d in G.nodes(data=True) if d.get("kind") == A.NIC}
    H = nx.DiGraph()
    if chips and servers is None:
        width = max(c[0] for c, _ in chips) + 1
        inside = {n for _, n in chips}
        for u, v, d in G.edges(data=True):
            if u in inside and v in inside:
                H.add_edge(u, v, capacity=d["bw_bytes_per_s"])
                H.add_edge(v, u, capacity=d["bw_bytes_per_s"])
        for c, n in chips:
            H.add_edge(*(("src", n) if c[0] < width // 2 else (n, "dst")))
        if width < 2:
            raise ValueError("bisection_bw needs a torus at least 2 chips wide on its first axis")
        return float(nx.maximum_flow(H, "src", "dst")[0])
    ids = sorted(nic_servers if servers is None else servers)
    if len(ids) < 2:
        raise ValueError("bisection_bw needs at least two servers with NICs")
    half, other = set(ids[:len(ids) // 2]), set(ids[len(ids) // 2:])
    for u, v, d in G.edges(data=True):
        ku, kv = G.nodes[u]["kind"], G.nodes[v]["kind"]
        if {ku, kv} <= {A.NIC, A.SWITCH, A.ROUTER}:  # the network: NICs and fabric switches
            H.add_edge(u, v, capacity=d["bw_bytes_per_s"])
            H.add_edge(v, u, capacity=d["bw_bytes_per_s"])
    for n, d in G.nodes(data=True):
        if d.get("kind") == A.NIC and d.get("server") in half | other:
            H.add_edge(*(("src", n) if d["server"] in half else (n, "dst")))  # unbounded
    return float(nx.maximum_flow(H, "src", "dst")[0])
