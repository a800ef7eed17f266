"""Hardware that runs below its datasheet, marked on a built graph: stragglers (compute devices
with a ``speed`` factor) and degraded links (an edge's bandwidth scaled by a factor).

A straggler's ``speed`` is read by the jobs' devices (:class:`hwsim.jobs.system.Device`): every
op takes ``1 / speed`` of its roofline time. A degraded link's ``bw_bytes_per_s`` is multiplied
by ``factor`` in place (both directions; its latency is unchanged) and the factor is kept as
``degraded``. Build the :class:`~hwsim.topology.Router` after degrading: routes are shortest by
hops, and only a tie between equal-hop next hops looks at bandwidth (docs/topology.md, Ties).
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping, Sequence

import networkx as nx

from hwsim.exceptions import ScenarioError
from hwsim.topology import attributes as A
from hwsim.topology.query import natural_key

__all__ = ["degrade", "COMPUTE_KINDS"]

COMPUTE_KINDS = (A.GPU, A.TPU, A.CPU)


def _some(ids: Sequence[str], word: object) -> str:
    """A few of *ids* (first, last, and the closest to *word*) for an error message."""
    shown = list(ids[:4]) + (["...", ids[-1]] if len(ids) > 5 else list(ids[4:]))
    hint = difflib.get_close_matches(str(word), list(ids), n=1)
    return ", ".join(shown) + (f"; did you mean {hint[0]!r}?" if hint else "")


def _factor(value: object, field: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 < value <= 1):
        raise ScenarioError(f"must be a number in (0, 1], got {value!r}", field=field)
    return float(value)


def degrade(G: nx.Graph, stragglers: Sequence[Mapping[str, Any]] = (),
            links: Sequence[Mapping[str, Any]] = ()) -> nx.Graph:
    """Mark *stragglers* (``{device, speed}``: a gpu, tpu or cpu node id and its speed in
    (0, 1]) and *links* (``{a, b, factor}``: two adjacent node ids and a factor in (0, 1]) on
    *G*, in place; return *G*. ScenarioError names the field (``stragglers[i].device``,
    ``degraded_links[i].b``, ...) and what is valid."""
    devices: list[str] | None = None
    for i, raw in enumerate(stragglers):
        f = f"stragglers[{i}]"
        d = A.dict_arg(raw, f, ("device", "speed"))
        node = d.get("device")
        if node not in G or G.nodes[node].get("kind") not in COMPUTE_KINDS:
            if devices is None:
                devices = sorted((v for v, at in G.nodes(data=True)
                                  if at.get("kind") in COMPUTE_KINDS), key=natural_key)
            raise ScenarioError(f"unknown compute device {node!r}; valid: a gpu, tpu or cpu "
                                f"node id: {_some(devices, node)}", field=f"{f}.device")
        if "speed" in G.nodes[node]:
            raise ScenarioError(f"{node!r} is listed twice", field=f"{f}.device")
        G.nodes[node]["speed"] = _factor(d.get("speed"), f"{f}.speed")
    for i, raw in enumerate(links):
        f = f"degraded_links[{i}]"
        d = A.dict_arg(raw, f, ("a", "b", "factor"))
        a, b = d.get("a"), d.get("b")
        if a not in G:
            raise ScenarioError(f"unknown node {a!r}; valid: a node id such as "
                                f"{_some(sorted(map(str, G), key=natural_key), a)}",
                                field=f"{f}.a")
        if b not in G or not G.has_edge(a, b):
            ends = sorted(map(str, G.neighbors(a)), key=natural_key)
            raise ScenarioError(f"no link joins {a!r} and {b!r}; {a!r} links to: "
                                f"{_some(ends, b)}", field=f"{f}.b")
        edge = G.edges[a, b]
        if "degraded" in edge:
            raise ScenarioError(f"the link {a!r} - {b!r} is listed twice", field=f)
        factor = _factor(d.get("factor"), f"{f}.factor")
        edge["bw_bytes_per_s"] *= factor
        edge["degraded"] = factor
    return G
