"""The node and edge attribute schema of topology graphs, and the helpers that write it.

A topology is a plain undirected :class:`networkx.Graph` named by ``G.graph["name"]``. Every link is
full duplex: an edge's ``bw_bytes_per_s`` is the raw (datasheet) bandwidth PER DIRECTION, already
multiplied by ``count``; consumers treat ``(u, v)`` and ``(v, u)`` as two channels and multiply by
``efficiency`` themselves. :data:`NODE_ATTRIBUTES` and :data:`EDGE_ATTRIBUTES` document every
attribute; ``docs/topology.md`` documents the node names.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Sequence

import networkx as nx

from hwsim import catalog
from hwsim.catalog.specs import LINK_CLASSES, LinkSpec, StorageSpec
from hwsim.exceptions import ScenarioError

__all__ = [
    "GPU", "TPU", "CPU", "MEMORY", "STORAGE", "NVSWITCH", "PCIE_SWITCH", "NIC", "SWITCH", "ROUTER",
    "NODE_KINDS", "ENDPOINT_KINDS", "FORWARDING_KINDS", "TRANSIT_LINK_CLASSES", "SWITCH_LEVELS",
    "INTERNAL", "EDGE_LINK_CLASSES", "DEFAULT_SITE", "NODE_ATTRIBUTES", "EDGE_ATTRIBUTES",
    "TIER_ATTRIBUTES", "check_connected", "from_explicit", "top_switches",
]

GPU, TPU, CPU, MEMORY, STORAGE = "gpu", "tpu", "cpu", "memory", "storage"
NVSWITCH, PCIE_SWITCH, NIC, SWITCH, ROUTER = "nvswitch", "pcie_switch", "nic", "switch", "router"
NODE_KINDS = (GPU, TPU, CPU, MEMORY, STORAGE, NVSWITCH, PCIE_SWITCH, NIC, SWITCH, ROUTER)
ENDPOINT_KINDS = frozenset({GPU, TPU, MEMORY, STORAGE})
"""Kinds that never forward traffic: they are only the first or last node of a route."""
FORWARDING_KINDS = frozenset({CPU, NVSWITCH, PCIE_SWITCH, NIC, SWITCH, ROUTER})
"""Kinds that may sit in the middle of a route."""
TRANSIT_LINK_CLASSES: Mapping[str, frozenset[str]] = {TPU: frozenset({"ici"})}
"""Endpoint kinds that forward between links of these classes only: a TPU chip's ICI router relays
torus traffic (ICI in, ICI out) but a chip never relays PCIe or network traffic."""
SWITCH_LEVELS = ("leaf", "spine", "core")
"""Values of the ``level`` attribute of fabric switches, lowest first."""
INTERNAL = "internal"
EDGE_LINK_CLASSES = (*LINK_CLASSES, INTERNAL)
DEFAULT_SITE = "site0"

NODE_ATTRIBUTES: Mapping[str, str] = {
    "kind": f"one of {', '.join(NODE_KINDS)}",
    "spec": "canonical catalog id (device for gpu/tpu/cpu, storage tier for memory/storage, link "
            "for nic); None for switches, routers, nvswitch and pcie_switch nodes",
    "server": "int index of the server (host) the node sits in; None for fabric nodes",
    "site": f"site name ({DEFAULT_SITE!r} unless built by multi_site)",
    "level": "switches only: 'leaf', 'spine' or 'core'",
    "rail": "rail-optimized leaves only: the NIC index (rail) the leaf serves",
    "count": "memory and storage only: devices (sockets' memory, striped drives) behind the node",
    "coords": "tpu_pod chips only: the chip's torus coordinates (x, y[, z])",
    "group": "cluster(groups=...) only: the name of the node group the server belongs to",
    "domain": "NVLink domains only (cluster node.nvlink_domain): int index of the domain of a "
              "tray's nodes and of its switch nvl{d}.nvswitch (hwsim.topology.nvl)",
    "sharp": "fabric switches with cluster fabric.sharp only: True, the switch reduces in the "
             "network (InfiniBand SHARP)",
    "speed": "stragglers only (gpu, tpu, cpu): factor in (0, 1] on the device's op rate "
             "(hwsim.topology.degrade)",
}
TIER_ATTRIBUTES = ("read_bw_bytes_per_s", "write_bw_bytes_per_s", "read_iops", "write_iops",
                   "capacity_bytes", "latency_s")
"""Extra attributes of memory and storage nodes: the catalog tier's figures times ``count``
(``latency_s`` is not multiplied)."""
EDGE_ATTRIBUTES: Mapping[str, str] = {
    "link": "catalog link id; for internal edges a descriptive name ('inter-socket', "
            "'memory-bus') that is not a catalog id",
    "link_class": f"one of {', '.join(EDGE_LINK_CLASSES)}",
    "bw_bytes_per_s": "raw (datasheet) bandwidth per direction, times count",
    "latency_s": "one-way latency of one hop, seconds",
    "efficiency": "achievable fraction of bw_bytes_per_s in bulk transfers (engine multiplies)",
    "count": "parallel physical links aggregated into this edge",
    "degraded": "degraded links only: the factor in (0, 1] bw_bytes_per_s was multiplied by "
                "(hwsim.topology.degrade)",
}


def _lookup(getter_name: str, ident: object, field: str) -> Any:
    if not isinstance(ident, str) or not ident:
        raise ScenarioError(f"expected a catalog id string, got {ident!r}", field=field)
    try:
        return getattr(catalog, getter_name)(ident)
    except ScenarioError as err:
        raise ScenarioError(err.reason, field=field) from None


def device_spec(ident: object, field: str, kind: str) -> Any:
    """The catalog device *ident*, which must be of *kind* ('gpu', 'tpu' or 'cpu')."""
    spec = _lookup("get_device", ident, field)
    if spec.kind != kind:
        raise ScenarioError(f"{spec.id!r} is a {spec.kind}, not a {kind}", field=field)
    return spec


def link_spec(ident: object, field: str, classes: Iterable[str] | None = None) -> LinkSpec:
    """The catalog link *ident*; with *classes*, its ``link_class`` must be one of them."""
    spec = _lookup("get_link", ident, field)
    allowed = tuple(classes or ())
    if allowed and spec.link_class not in allowed:
        raise ScenarioError(f"{spec.id!r} is a {spec.link_class} link; expected a "
                            f"{' or '.join(allowed)} link", field=field)
    return spec


def storage_spec(ident: object, field: str) -> StorageSpec:
    """The catalog storage tier *ident*."""
    return _lookup("get_storage", ident, field)


def int_arg(value: object, field: str, minimum: int) -> int:
    """*value* as an int >= *minimum*, else ScenarioError naming *field*."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(f"must be an integer >= {minimum}, got {value!r}", field=field)
    return value


def dict_arg(value: object, field: str, valid: Iterable[str]) -> dict[str, Any]:
    """*value* as a dict whose keys are all in *valid*, else ScenarioError naming *field*."""
    valid = tuple(valid)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ScenarioError(f"must be a mapping with keys from {', '.join(valid)}; got "
                            f"{type(value).__name__}", field=field)
    unknown = [k for k in value if k not in valid]
    if unknown:
        raise ScenarioError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}",
                            field=field)
    return dict(value)


def num_arg(value: object, field: str, *, strict: bool = False) -> float | None:
    """None, or *value* as a float > 0 (*strict*) or >= 0, else ScenarioError naming *field*."""
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not (value > 0 if strict else value >= 0)):
        raise ScenarioError(f"must be a number {'>' if strict else '>='} 0, got {value!r}",
                            field=field)
    return float(value)


def nest_error(err: ScenarioError, prefix: str) -> ScenarioError:
    """*err* with its field put under *prefix* (``gpus_per_node`` -> ``node.gpus_per_node``)."""
    return ScenarioError(err.reason, field=f"{prefix}.{err.field}" if err.field else prefix)


def name_arg(value: object, field: str) -> str:
    """A non-empty name without '/' (the site separator)."""
    if not isinstance(value, str) or not value or "/" in value:
        raise ScenarioError(f"must be a non-empty string without '/', got {value!r}", field=field)
    return value


def add_node(G: nx.Graph, name: str, kind: str, *, spec: str | None = None,
             server: int | None = None, site: str = DEFAULT_SITE, **extra: Any) -> str:
    """Add node *name* with the schema's attributes; return *name*."""
    G.add_node(name, kind=kind, spec=spec, server=server, site=site, **extra)
    return name


def tier_attrs(spec: StorageSpec, count: int = 1) -> dict[str, Any]:
    """Node attributes of a memory or storage node: the tier's figures times *count*."""
    return {"count": count, "read_bw_bytes_per_s": spec.read_bw_bytes_per_s * count,
            "write_bw_bytes_per_s": spec.write_bw_bytes_per_s * count,
            "read_iops": spec.read_iops * count, "write_iops": spec.write_iops * count,
            "capacity_bytes": spec.capacity_bytes * count, "latency_s": spec.latency_s}


def add_link(G: nx.Graph, a: str, b: str, spec: LinkSpec, count: int = 1, *,
             bw: float | None = None, latency: float | None = None) -> None:
    """Join *a* and *b* with *count* parallel links of *spec*; *bw* (per link, per direction)
    and *latency* override the catalog figures."""
    per_link = spec.bw_bytes_per_s if bw is None else float(bw)
    G.add_edge(a, b, link=spec.id, link_class=spec.link_class, bw_bytes_per_s=per_link * count,
               latency_s=spec.latency_s if latency is None else float(latency),
               efficiency=spec.efficiency, count=count)


def add_internal(G: nx.Graph, a: str, b: str, name: str, bw: float, latency: float,
                 efficiency: float = 1.0) -> None:
    """Join *a* and *b* with an on-package or memory-bus edge (link_class 'internal')."""
    G.add_edge(a, b, link=name, link_class=INTERNAL, bw_bytes_per_s=float(bw),
               latency_s=float(latency), efficiency=efficiency, count=1)


def check_connected(G: nx.Graph) -> None:
    """Raise ScenarioError unless *G* is non-empty and connected.

    The message names each disconnected component by its first nodes (in the graph's node order),
    e.g. ``topology 'x' is not connected: 2 components: {a, b, c, ... (+5)}; {d}``.
    """
    name = G.graph.get("name", "")
    if G.number_of_nodes() == 0:
        raise ScenarioError(f"topology {name!r} has no nodes")
    if nx.is_connected(G):
        return
    order = {n: i for i, n in enumerate(G)}
    comps = sorted((sorted(c, key=order.__getitem__) for c in nx.connected_components(G)),
                   key=lambda c: order[c[0]])
    parts = []
    for comp in comps[:4]:
        more = f", ... (+{len(comp) - 3})" if len(comp) > 3 else ""
        parts.append("{" + ", ".join(map(str, comp[:3])) + more + "}")
    if len(comps) > 4:
        parts.append(f"... (+{len(comps) - 4} more)")
    raise ScenarioError(f"topology {name!r} is not connected: {len(comps)} components: "
                        + "; ".join(parts))


def top_switches(G: nx.Graph) -> list[str]:
    """The switches of the highest ``level`` present in *G* (in node order), else its NICs."""
    rank = {lv: i for i, lv in enumerate(SWITCH_LEVELS)}
    sws = [(rank.get(d.get("level"), 0), v) for v, d in G.nodes(data=True) if d["kind"] == SWITCH]
    if sws:
        best = max(r for r, _ in sws)
        return [v for r, v in sws if r == best]
    return [v for v, d in G.nodes(data=True) if d["kind"] == NIC]


def add_shared_storage(G: nx.Graph, entries: Any, top: list[str], default_link: str | None,
                       site: str = DEFAULT_SITE) -> None:
    """Add shared tiers ``{name, tier, count=1, link=None, links=None}`` as ``storage.{name}``
    nodes, their ``links`` (default ``count``) links spread round-robin over the switches
    *top*."""
    if not isinstance(entries, (list, tuple)):
        raise ScenarioError("must be a list of {name, tier, count, link}", field="storage")
    for i, raw in enumerate(entries):
        f = f"storage[{i}]"
        e = dict_arg(raw, f, ("name", "tier", "count", "link", "links"))
        node = f"storage.{name_arg(e.get('name'), f'{f}.name')}"
        if node in G:
            raise ScenarioError(f"duplicate storage name {e['name']!r}", field=f"{f}.name")
        tier = storage_spec(e.get("tier"), f"{f}.tier")
        count = int_arg(e.get("count", 1), f"{f}.count", 1)
        if not top:
            raise ScenarioError("shared storage needs a network: set node.nic (e.g. nic: "
                                "ib-hdr-200, nics_per_node: 8)", field=f)
        link = link_spec(e.get("link") or default_link, f"{f}.link")
        links = count if e.get("links") is None else int_arg(e["links"], f"{f}.links", 1)
        add_node(G, node, STORAGE, spec=tier.id, site=site, **tier_attrs(tier, count))
        for k, sw in enumerate(top[:links]):
            add_link(G, node, sw, link, links // len(top) + (k < links % len(top)))


def from_explicit(nodes: Sequence[Mapping[str, Any]], links: Sequence[Mapping[str, Any]] = (), *,
                  name: str = "explicit", site: str = DEFAULT_SITE) -> nx.Graph:
    """A graph given node by node and link by link, checked against the schema.

    ``nodes``: ``{id, kind, spec=None, server=None, level=None, count=1}``; ``spec`` is required
    for gpu, tpu, cpu (device ids), memory and storage (tier ids; ``count`` devices), optional for
    nic (link id), empty otherwise. ``links``: ``{a, b, link, count=1, bw=None, latency=None}``;
    ``bw`` (bytes/s per link and direction) and ``latency`` (s) override the catalog link;
    ``link: internal`` with ``bw`` is an on-package edge. Raises ScenarioError naming the field.
    """
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise ScenarioError("must be a non-empty list of {id, kind, spec, server}", field="nodes")
    G = nx.Graph(name=name)
    for i, raw in enumerate(nodes):
        f = f"nodes[{i}]"
        d = dict_arg(raw, f, ("id", "kind", "spec", "server", "level", "count"))
        nid, kind, spec, extra = d.get("id"), d.get("kind"), d.get("spec"), {}
        if not isinstance(nid, str) or not nid or nid in G:
            raise ScenarioError(f"must be a new non-empty string, got {nid!r}", field=f"{f}.id")
        if kind not in NODE_KINDS:
            raise ScenarioError(f"unknown kind {kind!r}; valid: {', '.join(NODE_KINDS)}",
                                field=f"{f}.kind")
        if kind in (GPU, TPU, CPU):
            spec = device_spec(spec, f"{f}.spec", kind).id
        elif kind in (MEMORY, STORAGE):
            tier = storage_spec(spec, f"{f}.spec")
            spec, extra = tier.id, tier_attrs(tier, int_arg(d.get("count", 1), f"{f}.count", 1))
        elif kind == NIC and spec is not None:
            spec = link_spec(spec, f"{f}.spec").id
        elif spec is not None:
            raise ScenarioError(f"must be empty for a {kind}", field=f"{f}.spec")
        if d.get("level") is not None:
            if kind != SWITCH or d["level"] not in SWITCH_LEVELS:
                raise ScenarioError(f"switches only, one of {', '.join(SWITCH_LEVELS)}",
                                    field=f"{f}.level")
            extra["level"] = d["level"]
        server = d.get("server")
        add_node(G, nid, kind, spec=spec, server=server if server is None else
                 int_arg(server, f"{f}.server", 0), site=site, **extra)
    for i, raw in enumerate(links):
        f = f"links[{i}]"
        d = dict_arg(raw, f, ("a", "b", "link", "count", "bw", "latency"))
        for end in ("a", "b"):
            if d.get(end) not in G:
                close = difflib.get_close_matches(str(d.get(end)), list(map(str, G)), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ScenarioError(f"unknown node id {d.get(end)!r}{hint}", field=f"{f}.{end}")
        a, b = d["a"], d["b"]
        if a == b or G.has_edge(a, b):
            raise ScenarioError(f"joins {a!r} to itself or repeats the pair (use count)", field=f)
        count = int_arg(d.get("count", 1), f"{f}.count", 1)
        bw = num_arg(d.get("bw"), f"{f}.bw", strict=True)
        latency = num_arg(d.get("latency"), f"{f}.latency")
        if d.get("link") == INTERNAL:
            if bw is None:
                raise ScenarioError("is required with link 'internal'", field=f"{f}.bw")
            add_internal(G, a, b, INTERNAL, bw * count, latency or 0.0)
            G.edges[a, b]["count"] = count
        else:
            add_link(G, a, b, link_spec(d.get("link"), f"{f}.link"), count, bw=bw, latency=latency)
    check_connected(G)
    return G
