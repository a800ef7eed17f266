"""Scale-up domains beyond a server, and in-network reduction on the fabric's switches.

- **NVLink domains** (``cluster.node.nvlink_domain``): ``nvlink_domain / gpus_per_node``
  consecutive servers (the *trays* of a rack such as GB200 NVL72: 18 trays of 4 GPUs) share one
  NVLink switch fabric. :func:`join_domains` replaces their per-server NVSwitches by one switch
  node ``nvl{d}.nvswitch`` per domain (kind ``nvswitch``, outside any server) that every GPU of
  the domain joins by its whole NVLink attachment (the ``intra_node`` link: nvlink5, 900 GB/s
  per direction = the 1.8 TB/s bidirectional of a Blackwell GPU). Every node of a tray and the
  domain switch carry the attribute ``domain`` (an int, numbered on across the cluster); the
  collectives group ranks by it (one NVLink "node" for NCCL, as NCCL's multi-node NVLink does).
  Each tray keeps its own CPU, host memory, PCIe switches and scale-out NICs.
- **SHARP** (``cluster.fabric.sharp``): :func:`mark_sharp` tags the fabric's switches
  ``sharp=True``: they can reduce in the network (NVIDIA Quantum InfiniBand switches, SHARPv3 on
  Quantum-2 NDR). The ``sharp`` all-reduce (:mod:`hwsim.jobs.sharp`) uses them.

``docs/topology.md`` ("NVLink domains", "SHARP") documents both.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import networkx as nx

from hwsim.exceptions import ScenarioError
from hwsim.topology import attributes as A

__all__ = ["NVLINK_DOMAIN_MAX_GPUS", "scale_up", "domain_trays", "join_domains", "mark_sharp"]

NVLINK_DOMAIN_MAX_GPUS: Mapping[str, int] = {
    "nvlink2": 16,   # DGX-2: 16 V100 on 12 NVSwitches (NVIDIA DGX-2 datasheet)
    "nvlink3": 16,   # HGX A100 16-GPU (NVIDIA HGX A100 platform: "up to 16 A100 GPUs")
    "nvlink4": 256,  # NVLink Switch System: "up to 256 H100 GPUs" (NVIDIA H100 launch, GTC 2022)
    "nvlink5": 576,  # NVIDIA NVLink page: fifth-generation NVLink Switch "up to 576 GPUs"
}
"""The most GPUs one NVLink switch fabric of each generation joins (the sources beside)."""


def scale_up(at: Mapping[str, Any]) -> tuple:
    """The scale-up unit of a node (attributes *at*) that NCCL treats as one node: its NVLink
    domain (``domain``: several servers joined by NVLink switches), else its server."""
    domain = at.get("domain")
    return (at.get("site"), "domain", domain) if domain is not None else (
        at.get("site"), at.get("server"))


def domain_trays(spec: Mapping[str, Any], field: str) -> int:
    """Servers (trays) per NVLink domain of one node *spec* (1: the server is the domain).
    ScenarioError naming ``{field}.nvlink_domain`` (or the link) when the domain is not whole
    trays, has no NVLink, or exceeds what the link's switches join."""
    raw = spec.get("nvlink_domain")
    if raw in (None, 0):
        return 1
    size = A.int_arg(raw, f"{field}.nvlink_domain", 1)
    gpn = spec.get("gpus_per_node") or 0
    if spec.get("gpu") is None or not gpn:
        raise ScenarioError("needs GPUs (node.gpu and gpus_per_node, e.g. gpu: B200, "
                            "gpus_per_node: 4)", field=f"{field}.nvlink_domain")
    if size < gpn or size % gpn:
        lo = max(gpn, size // gpn * gpn)
        raise ScenarioError(f"is {size} but a domain is whole servers (trays) of gpus_per_node = "
                            f"{gpn} GPUs; valid: a multiple of {gpn}, e.g. {lo} or {lo + gpn}",
                            field=f"{field}.nvlink_domain")
    if size == gpn:
        return 1
    link = spec.get("intra_node")
    lspec = A.link_spec(link, f"{field}.intra_node") if link is not None else None
    if lspec is None or lspec.link_class != "nvlink":
        raise ScenarioError(f"is {link!r} but an NVLink domain of {size} GPUs needs an NVLink "
                            "intra_node link; valid: nvlink2 ... nvlink5 (e.g. nvlink5 for "
                            "GB200 NVL72)", field=f"{field}.intra_node")
    most = NVLINK_DOMAIN_MAX_GPUS.get(lspec.id)
    if most is not None and size > most:
        raise ScenarioError(f"is {size} but {lspec.id} switches join at most {most} GPUs in one "
                            f"domain; valid: {gpn} to {most // gpn * gpn} in steps of {gpn}",
                            field=f"{field}.nvlink_domain")
    return size // gpn


def join_domains(G: nx.Graph, servers: Sequence[tuple[Mapping[str, Any], str, Any]],
                 site: str) -> None:
    """Join the servers of *G* (``n{s}``, in the order of *servers*: ``(node spec, field,
    group)``) into NVLink domains where their spec's ``nvlink_domain`` spans several servers.
    Consecutive servers of one spec form a domain; their count must be whole domains. The
    servers were built as trays, without an NVSwitch (``single_node(nvlink_domain=...)``)."""
    by_server: dict[Any, list[str]] = {}
    for v, d in G.nodes(data=True):
        by_server.setdefault(d.get("server"), []).append(v)
    s, domain = 0, 0
    while s < len(servers):
        spec, field, group = servers[s]
        run = s
        while run < len(servers) and servers[run][0] is spec:
            run += 1
        trays = domain_trays(spec, field)
        if trays > 1:
            count = run - s
            if count % trays:
                where = "nodes" if field == "node" else f"{field.rsplit('.', 1)[0]}.nodes"
                raise ScenarioError(
                    f"is {count} but an NVLink domain of {spec['nvlink_domain']} GPUs holds "
                    f"{trays} servers of {spec['gpus_per_node']}; valid: a multiple of {trays}, "
                    f"e.g. {max(trays, count // trays * trays)}", field=where)
            link = A.link_spec(spec["intra_node"], f"{field}.intra_node")
            for first in range(s, run, trays):
                sw = A.add_node(G, f"nvl{domain}.nvswitch", A.NVSWITCH, site=site)
                G.nodes[sw]["domain"] = domain
                for t in range(first, first + trays):
                    for v in by_server.get(t, ()):
                        G.nodes[v]["domain"] = domain
                    for i in range(spec["gpus_per_node"]):
                        A.add_link(G, f"n{t}.gpu{i}", sw, link)
                domain += 1
        s = run


def mark_sharp(G: nx.Graph, nic_ids: Sequence[str], topology: str) -> None:
    """Tag every fabric switch of *G* ``sharp=True`` (in-network reduction). ScenarioError
    (``fabric.sharp``) unless every NIC is InfiniBand and the fabric has switches."""
    if topology == "torus":
        raise ScenarioError("does not apply to topology 'torus' (TPU ICI has no SHARP switches); "
                            "valid: fat-tree, rail-optimized or single-switch with InfiniBand "
                            "NICs", field="fabric.sharp")
    bad = [n for n in nic_ids if A.link_spec(n, "node.nic").link_class != "infiniband"]
    if bad or not nic_ids:
        raise ScenarioError(f"SHARP reduces in NVIDIA Quantum InfiniBand switches, but the nodes' "
                            f"NIC is {', '.join(bad) if bad else 'none'}; valid: an InfiniBand "
                            "nic (e.g. nic: ib-ndr-400), or sharp: false", field="fabric.sharp")
    for _, d in G.nodes(data=True):
        if d.get("kind") == A.SWITCH:
            d["sharp"] = True
