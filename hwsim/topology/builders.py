"""Topology builders: pure functions from the scenario's ``cluster`` fields to a networkx Graph.

Each validates its arguments (ScenarioError naming the field) and ends with
:func:`~hwsim.topology.attributes.check_connected` (a server built into a caller's graph is
checked with that graph). ``docs/topology.md`` describes the layouts.
"""

from __future__ import annotations

from collections import Counter
from itertools import chain, product
from math import prod
from typing import Any, Mapping, Sequence

import networkx as nx

from hwsim.exceptions import ScenarioError
from hwsim.topology import attributes as A
from hwsim.topology import fabrics as F
from hwsim.topology.attributes import check_connected, from_explicit
from hwsim.topology.nvl import join_domains, mark_sharp

__all__ = ["single_node", "cluster", "tpu_pod", "multi_site", "from_explicit", "check_connected",
           "default_host_link", "TOPOLOGIES", "INTER_SOCKET_BW_BYTES_PER_S",
           "INTER_SOCKET_LATENCY_S", "MESH_LINKS_PER_GPU"]

TOPOLOGIES = ("fat-tree", "rail-optimized", "dragonfly", "single-switch", "torus")
DEFAULT_LEAF_RADIX = 64
NIC_CLASSES = ("infiniband", "ethernet", "omnipath", "nvlink")
INTER_SOCKET_BW_BYTES_PER_S = 100e9  # per direction; see docs/topology.md for the sources
INTER_SOCKET_LATENCY_S = 100e-9  # remote minus local DRAM latency, 2-socket EPYC/Xeon: ~60-130 ns
MESH_LINKS_PER_GPU = 7
"""Infinity Fabric links of one AMD Instinct GPU (MI300X, MI325X, MI355X data sheets: 7), so an
``xgmi`` mesh joins at most 8 GPUs."""
_NODE_KEYS = ("gpu", "gpus_per_node", "tpu", "cpu", "cpu_sockets", "intra_node", "host_link",
              "nic", "nics_per_node", "local_storage", "host_memory", "nvlink_domain",
              "gpu_cpu_link")


def default_host_link(accelerator: str | None = None, cpu: str = "EPYC-7742") -> str:
    """The ``host_link`` of a server that sets none: the catalog ``host_link`` of its
    *accelerator* (a GPU or TPU id; the PCIe generation of its datasheet: pcie5-x16 for H100,
    H200, B200, MI300X, pcie4-x16 for A100 and L40S, pcie3-x16 for V100), else, for CPU-only
    servers and accelerators that list none (TPUs), that of its *cpu*. ScenarioError (field
    ``host_link``) when neither lists one."""
    acc = None if accelerator is None else A._lookup("get_device", accelerator, "gpu")
    cpu_s = A.device_spec(cpu, "cpu", A.CPU)
    link = (acc.host_link if acc is not None else None) or cpu_s.host_link
    if link is None:
        raise ScenarioError(f"neither {acc.id if acc else 'the node'} nor {cpu_s.id} lists a "
                            "host_link in the catalog; set one, e.g. host_link: pcie4-x16",
                            field="host_link")
    return link


def single_node(*, gpu: str | None = None, gpus_per_node: int = 0, tpu: str | None = None,
                cpu: str = "EPYC-7742", cpu_sockets: int = 2, intra_node: str | None = None,
                host_link: str | None = None, nic: str | None = None, nics_per_node: int = 0,
                local_storage: str | None = None, host_memory: str = "ddr4-host", server: int = 0,
                site: str = A.DEFAULT_SITE, graph: nx.Graph | None = None,
                name: str | None = None, gpu_cpu_link: str | None = None,
                nvlink_domain: int | None = 0) -> nx.Graph:
    """One server ``n{server}.*``: CPU sockets, host memory, accelerators and NICs on PCIe
    switches (a switch per GPU-NIC pair, or per pair of GPUs when NICs are fewer), local storage;
    added to *graph* if given, else to a new graph named *name*. Arguments mirror the scenario's
    ``cluster.node``.

    ``intra_node``: an nvlink id (an ``n{s}.nvswitch`` joins the GPUs), an xgmi id (AMD's
    Infinity Fabric: no switch, one link of the id's bandwidth between every pair of GPUs, at
    most :data:`MESH_LINKS_PER_GPU` + 1 GPUs), a pcie id (GPUs talk over the PCIe tree; the id
    is their attachment), for TPUs an ici id (a ring), None (PCIe only).
    ``host_link`` (every PCIe edge: switch-CPU, GPU-switch, NIC-switch, drive): None takes
    :func:`default_host_link` of the accelerator and CPU.
    A ``nic`` with ``nics_per_node=0`` gives one NIC. The local drive is named after its catalog
    kind: ``n{server}.nvme``, ``n{server}.ssd`` (SATA), ``n{server}.hdd``.
    ``gpu_cpu_link`` (an nvlink id, e.g. ``nvlink-c2c``): each GPU also joins its CPU socket
    directly (Grace superchips: GPU ``i`` on socket ``i * sockets // gpus``), so host-memory
    traffic (offload) takes it; NICs and drives stay on PCIe. ``nvlink_domain`` above
    ``gpus_per_node``: this server is one tray of an NVLink domain, built without its own
    NVSwitch (:func:`cluster` joins the trays' GPUs to the domain's switch).
    """
    if gpu is not None and tpu is not None:
        raise ScenarioError("gpu and tpu are mutually exclusive; give one of them", field="tpu")
    kind, acc_id = (A.GPU, gpu) if gpu is not None else (A.TPU, tpu)
    n_acc = A.int_arg(gpus_per_node, "gpus_per_node", 0)
    if (acc_id is not None) != (n_acc > 0):
        raise ScenarioError(f"is {n_acc} but neither gpu nor tpu is set" if n_acc else
                            f"must be >= 1 when {kind} is set (e.g. 8)", field="gpus_per_node")
    acc = A.device_spec(acc_id, kind, kind) if acc_id is not None else None
    cpu_s = A.device_spec(cpu, "cpu", A.CPU)
    sockets = A.int_arg(cpu_sockets, "cpu_sockets", 1)
    if host_link is None:
        host_link = default_host_link(acc.id if acc is not None else None, cpu_s.id)
    host = A.link_spec(host_link, "host_link", ("pcie",))
    if intra_node is not None and acc is None:
        raise ScenarioError("needs gpu or tpu accelerators", field="intra_node")
    intra = None if intra_node is None else A.link_spec(
        intra_node, "intra_node", ("nvlink", "xgmi", "pcie") if kind == A.GPU else ("ici",))
    if intra is not None and intra.link_class == "xgmi" and n_acc > MESH_LINKS_PER_GPU + 1:
        raise ScenarioError(f"{intra.id} is a switchless Infinity Fabric mesh: each GPU has "
                            f"{MESH_LINKS_PER_GPU} links, one per peer, so it joins at most "
                            f"{MESH_LINKS_PER_GPU + 1} GPUs, not {n_acc}; valid: gpus_per_node "
                            f"<= {MESH_LINKS_PER_GPU + 1} (more GPUs: more nodes)",
                            field="gpus_per_node")
    c2c = None if gpu_cpu_link is None else A.link_spec(gpu_cpu_link, "gpu_cpu_link", ("nvlink",))
    if c2c is not None and kind != A.GPU:
        raise ScenarioError("needs GPUs (gpu and gpus_per_node); it joins each GPU to its CPU "
                            "socket (e.g. nvlink-c2c for Grace superchips)", field="gpu_cpu_link")
    n_nic = A.int_arg(nics_per_node, "nics_per_node", 0)
    if nic is None and n_nic:
        raise ScenarioError(f"is {n_nic} but no nic is set", field="nics_per_node")
    n_nic = max(n_nic, 1) if nic is not None else 0
    nic_s = A.link_spec(nic, "nic", NIC_CLASSES) if nic is not None else None
    mem = A.storage_spec(host_memory, "host_memory")
    local = A.storage_spec(local_storage, "local_storage") if local_storage is not None else None
    s, site = A.int_arg(server, "server", 0), A.name_arg(site, "site")

    G = nx.Graph() if graph is None else graph
    G.graph.setdefault("name", name or f"{n_acc or sockets}x{(acc or cpu_s).id}")
    p, at = f"n{s}.", {"server": s, "site": site}
    cpus = [A.add_node(G, f"{p}cpu{k}", A.CPU, spec=cpu_s.id, **at) for k in range(sockets)]
    for i, a in enumerate(cpus):
        for b in cpus[i + 1:]:
            A.add_internal(G, a, b, "inter-socket", INTER_SOCKET_BW_BYTES_PER_S,
                           INTER_SOCKET_LATENCY_S)
    memory = A.add_node(G, f"{p}mem", A.MEMORY, spec=mem.id, **at, **A.tier_attrs(mem, sockets))
    for c in cpus:  # the tier's figures are per socket
        A.add_internal(G, c, memory, "memory-bus", mem.read_bw_bytes_per_s, mem.latency_s)
    accs = [A.add_node(G, f"{p}{kind}{i}", kind, spec=acc.id, **at) for i in range(n_acc)]
    nics = [A.add_node(G, f"{p}nic{j}", A.NIC, spec=nic_s.id, **at) for j in range(n_nic)]
    added = [*cpus, memory, *accs, *nics]
    root = cpus[0]
    if accs:  # accelerator i and NIC j on switch i * n_sw // n_acc and j * n_sw // n_nic
        n_sw = n_acc if n_nic >= n_acc else max(n_nic, (n_acc + 1) // 2)
        sws = [A.add_node(G, f"{p}pcie{k}", A.PCIE_SWITCH, **at) for k in range(n_sw)]
        added, root = added + sws, sws[0]
        for k, sw in enumerate(sws):
            A.add_link(G, sw, cpus[k * sockets // n_sw], host)
        for i, a in enumerate(accs):
            A.add_link(G, a, sws[i * n_sw // n_acc], intra if intra and intra.link_class == "pcie"
                       else host)
    for i, a in enumerate(accs if c2c is not None else ()):  # superchip: GPU to its own CPU
        A.add_link(G, a, cpus[i * sockets // n_acc], c2c)
    for j, n in enumerate(nics):  # CPU-only servers: NICs on the sockets' root complexes
        A.add_link(G, n, sws[j * n_sw // n_nic] if accs else cpus[j * sockets // n_nic], host)
    tray = A.int_arg(nvlink_domain or 0, "nvlink_domain", 0) > n_acc > 0  # cluster() adds it
    if intra is not None and intra.link_class == "nvlink" and not tray:
        added.append(A.add_node(G, f"{p}nvswitch", A.NVSWITCH, **at))
        for a in accs:
            A.add_link(G, a, added[-1], intra)
    elif intra is not None and intra.link_class == "xgmi":  # full mesh: a link per GPU pair
        for i, a in enumerate(accs):
            for b in accs[i + 1:]:
                A.add_link(G, a, b, intra)
    elif intra is not None and intra.link_class == "ici" and n_acc > 1:  # ring over 2 ICI ports
        for i in range(n_acc if n_acc > 2 else 1):
            A.add_link(G, accs[i], accs[(i + 1) % n_acc], intra, 1 + (n_acc == 2),
                       bw=intra.bw_bytes_per_s / 2)
    if local is not None:
        drive = A.add_node(G, f"{p}{local.kind}", A.STORAGE, spec=local.id, **at,
                           **A.tier_attrs(local))
        A.add_link(G, drive, root, host)
        added.append(drive)
    if graph is None:  # a server inside a larger graph: its builder checks the whole
        check_connected(G)
    return G


def cluster(*, nodes: int | None = None, node: Mapping[str, Any] | None = None,
            groups: Sequence[Mapping[str, Any]] | None = None,
            fabric: Mapping[str, Any] | None = None, storage: Sequence[Mapping[str, Any]] = (),
            site: str = A.DEFAULT_SITE, name: str | None = None) -> nx.Graph:
    """*nodes* (default 1) identical servers (``node``: the :func:`single_node` fields) on a
    fabric, or, with ``groups`` instead of *nodes* and *node*, groups of different servers
    (mixed hardware): ``[{name, nodes=1, node}, ...]``, servers numbered on from group to group
    (``n0``.. of the first group, then the second's), each node tagged with its ``group``.

    ``fabric``: ``topology`` (fat-tree | rail-optimized | dragonfly | single-switch (default)
    | torus), ``oversubscription`` (>= 1: leaf down / up capacity; or ``[leaf, spine]``, one
    figure per tier of a three-level fat-tree), ``link`` (switch-to-switch link id, default the
    NIC's; required when the groups' NICs differ), ``leaf_radix`` (ports per switch, default
    64), ``planes`` (fat-tree, rail-optimized: independent fabrics, NIC j of a server on plane
    j mod planes), ``group_routers`` (dragonfly: routers a group), ``ecmp_seed`` (the hash
    that spreads flows over equal-cost paths; another seed, other collisions), ``dims`` (torus
    only), ``sharp`` (the switches reduce in the network: :func:`~hwsim.topology.nvl.mark_sharp`).
    A node's ``nvlink_domain`` joins consecutive servers into NVLink domains
    (:func:`~hwsim.topology.nvl.join_domains`). ``storage``: shared tiers ``{name, tier, count=1, link=None}`` on the top-level
    switches. The fabrics: :mod:`hwsim.topology.fabrics`.
    """
    fab = A.dict_arg(fabric, "fabric", ("topology", "oversubscription", "link", "leaf_radix",
                                        "planes", "group_routers", "ecmp_seed", "dims", "slices",
                                        "sharp"))
    topo = fab.get("topology") or "single-switch"
    if topo not in TOPOLOGIES:
        raise ScenarioError(f"unknown topology {topo!r}; valid: {', '.join(TOPOLOGIES)}",
                            field="fabric.topology")
    over = F.tiers(fab.get("oversubscription", 1.0))
    applies = {"oversubscription": ("fat-tree", "rail-optimized"),
               "leaf_radix": ("fat-tree", "rail-optimized", "dragonfly"),
               "planes": ("fat-tree", "rail-optimized"), "group_routers": ("dragonfly",),
               "ecmp_seed": ("fat-tree", "rail-optimized", "dragonfly"), "dims": ("torus",),
               "slices": ("torus",)}
    given = {"oversubscription": over != (1.0, 1.0), "leaf_radix": fab.get("leaf_radix"),
             "planes": fab.get("planes") not in (None, 1),
             "group_routers": fab.get("group_routers") is not None,
             "ecmp_seed": fab.get("ecmp_seed") is not None, "dims": fab.get("dims") is not None,
             "slices": fab.get("slices") not in (None, 1)}
    for key, topos in applies.items():
        if given[key] and topo not in topos:
            raise ScenarioError(f"applies only to topology {' or '.join(map(repr, topos))}, not "
                                f"{topo!r}", field=f"fabric.{key}")
    planes = A.int_arg(fab.get("planes") or 1, "fabric.planes", 1)
    if groups is None:
        n = A.int_arg(1 if nodes is None else nodes, "nodes", 1)
        node = A.dict_arg(node, "node", _NODE_KEYS)
        servers = [(node, "node", None)] * n
    else:
        if nodes is not None or node is not None:
            raise ScenarioError("give either groups or nodes and node, not both", field="groups")
        if topo == "torus":
            raise ScenarioError("topology 'torus' is a TPU pod of identical hosts; groups of "
                                "different nodes need fat-tree, rail-optimized or single-switch",
                                field="fabric.topology")
        servers = _group_servers(groups)
    if topo == "torus":
        if fab.get("sharp"):
            mark_sharp(nx.Graph(), [], topo)  # raises: no SHARP on a torus
        return _torus_cluster(len(servers), node, fab, storage, site, name)
    G = nx.Graph(name=name or _cluster_name(servers, groups, topo))
    for s, (spec, field, group) in enumerate(servers):
        before = len(G)
        try:
            single_node(**spec, server=s, site=site, graph=G)
        except ScenarioError as err:
            raise A.nest_error(err, field) from None
        if group is not None:
            for v in list(G)[before:]:
                G.nodes[v]["group"] = group
    nics = [[f"n{s}.nic{j}" for j in range(max(spec.get("nics_per_node") or 0, 1))]
            if spec.get("nic") else [] for s, (spec, _, _) in enumerate(servers)]
    if len(servers) > 1:
        bare = next((f for (_, f, _), own in zip(servers, nics) if not own), None)
        if bare is not None:
            raise ScenarioError(f"a cluster of {len(servers)} nodes needs NICs on every node "
                                "(e.g. nic: ib-hdr-200, nics_per_node: 8)", field=f"{bare}.nic")
    nic_ids = list(dict.fromkeys(spec["nic"] for spec, _, _ in servers if spec.get("nic")))
    top: list[str] = []
    if nic_ids and topo == "single-switch":
        flat = list(chain.from_iterable(nics))
        top = F.leaves(G, [flat], 2 * len(flat), site, prefix="switch")
    elif nic_ids:
        if len(nic_ids) > 1 and not fab.get("link"):
            raise ScenarioError(f"the groups' NICs differ ({', '.join(nic_ids)}); set the "
                                f"switch-to-switch link, e.g. link: {nic_ids[0]}",
                                field="fabric.link")
        radix = fab.get("leaf_radix")
        radix = A.int_arg(DEFAULT_LEAF_RADIX if radix is None else radix, "fabric.leaf_radix", 2)
        link = A.link_spec(fab.get("link") or nic_ids[0], "fabric.link")
        if topo == "dragonfly":
            top = F.dragonfly(G, list(chain.from_iterable(nics)), link, radix, site,
                              fab.get("group_routers"))
        else:
            top = _fat_tree(G, nics, topo == "rail-optimized", planes, link, radix, over, site)
    if fab.get("ecmp_seed") is not None:
        G.graph["ecmp_seed"] = A.int_arg(fab["ecmp_seed"], "fabric.ecmp_seed", 0)
    join_domains(G, servers, site)
    if fab.get("sharp"):
        mark_sharp(G, nic_ids, topo)
    A.add_shared_storage(G, storage, top, nic_ids[0] if nic_ids else None, site)
    check_connected(G)
    return G


def _fat_tree(G: nx.Graph, nics: list[list[str]], rail: bool, planes: int, link: Any,
              radix: int, over: tuple[float, float], site: str) -> list[str]:
    """A fat-tree (rail-optimised: one run of leaves per NIC index) on each of *planes*
    independent planes (NIC j of every server on plane j mod planes); the top switches of all."""
    width = max(len(own) for own in nics)
    if planes > width:
        raise ScenarioError(f"{planes} planes need at least {planes} NICs a server, these have "
                            f"{width}", field="fabric.planes")
    top: list[str] = []
    for k in range(planes):
        prefix = f"p{k}." if planes > 1 else ""
        if rail:  # one run of leaves per NIC index of the plane
            groups = [[own[j] for own in nics if j < len(own)] for j in range(k, width, planes)]
        else:  # the plane's NICs, server by server
            groups = [[n for own in nics for j, n in enumerate(own) if j % planes == k]]
        below = F.leaves(G, groups, radix, site, rail, prefix=prefix + "leaf")
        top += F.upper(G, below, link, radix, over, site, prefix)
    return top


def _group_servers(groups: object) -> list[tuple[dict[str, Any], str, str]]:
    """``(node fields, field path, group name)`` of every server of *groups*, in order."""
    if not isinstance(groups, (list, tuple)) or not groups:
        raise ScenarioError("must be a non-empty list of {name, nodes, node}", field="groups")
    servers, names = [], set()
    for i, raw in enumerate(groups):
        f = f"groups[{i}]"
        g = A.dict_arg(raw, f, ("name", "nodes", "node"))
        gname = A.name_arg(g.get("name"), f"{f}.name")
        if gname in names:
            raise ScenarioError(f"duplicate group name {gname!r}", field=f"{f}.name")
        names.add(gname)
        count = A.int_arg(g.get("nodes", 1), f"{f}.nodes", 1)
        spec = A.dict_arg(g.get("node"), f"{f}.node", _NODE_KEYS)
        servers += [(spec, f"{f}.node", gname)] * count
    return servers


def _cluster_name(servers: list, groups: Any, topo: str) -> str:
    if groups is None:
        n, node = len(servers), servers[0][0]
        acc = node.get("gpu") or node.get("tpu") or node.get("cpu", "cpu")
        return f"{n}x{node.get('gpus_per_node') or ''}{acc}-{topo}"
    sizes = Counter(g for *_, g in servers)
    return "+".join(f"{k}x{g}" for g, k in sizes.items()) + f"-{topo}"


def _cube(n: int) -> tuple[int, int, int]:
    """The most balanced ``(a, b, c)``, a <= b <= c, with ``a * b * c == n``."""
    divs = [d for d in range(1, n + 1) if n % d == 0]
    return min(((a, b, n // (a * b)) for a in divs for b in divs
                if a <= b and n % (a * b) == 0 and b <= n // (a * b)), key=lambda d: d[2] - d[0])


def _torus_cluster(n: int, node: dict[str, Any], fab: dict[str, Any], storage: Any, site: str,
                   name: str | None) -> nx.Graph:
    """:func:`cluster` with ``topology: torus``: a :func:`tpu_pod` of *n* hosts."""
    if node.get("tpu") is None:
        raise ScenarioError("topology 'torus' is for TPU pods (set node.tpu, e.g. TPU-v4); use "
                            "fat-tree, rail-optimized or single-switch", field="fabric.topology")
    cph = A.int_arg(node.get("gpus_per_node", 0), "node.gpus_per_node", 1)
    if node.get("nvlink_domain"):
        raise ScenarioError("does not apply to TPU pods (topology 'torus'); NVLink domains are "
                            "for GPU servers", field="node.nvlink_domain")
    host = {k: v for k, v in node.items()
            if k not in ("tpu", "gpus_per_node", "intra_node", "nvlink_domain")}
    slices = A.int_arg(fab.get("slices") or 1, "fabric.slices", 1)
    if n % slices:
        raise ScenarioError(f"{slices} slices do not divide the {n} hosts (nodes)",
                            field="fabric.slices")
    try:
        G = tpu_pod(tpu=node["tpu"], dims=fab.get("dims") or _cube(n // slices * cph),
                    chips_per_host=cph, slices=slices,
                    ici=node.get("intra_node") or fab.get("link") or "tpu-ici-v4", site=site,
                    name=name, **host)
    except ScenarioError as err:
        to = {"dims": "fabric.dims", "ici": "node.intra_node", "tpu": "node.tpu", None: "node",
              "slices": "fabric.slices", "nic": "node.nic"}
        raise ScenarioError(err.reason, field=to.get(err.field, f"node.{err.field}")) from None
    hosts = len({d["server"] for _, d in G.nodes(data=True)} - {None})
    if hosts != n:
        raise ScenarioError(f"is {n} but fabric.dims hold {hosts} hosts of {cph} chips"
                            + (f" in {slices} slices" if slices > 1 else ""), field="nodes")
    top = [v for v, d in G.nodes(data=True) if d["kind"] == A.SWITCH]
    A.add_shared_storage(G, storage, top, node.get("nic"), site)
    check_connected(G)
    return G


def tpu_pod(*, tpu: str = "TPU-v4", dims: Sequence[int] = (4, 4, 4), ici: str = "tpu-ici-v4",
            wraparound: bool = True, chips_per_host: int = 4, cpu: str = "EPYC-7742",
            site: str = A.DEFAULT_SITE, name: str | None = None, slices: int = 1,
            **host: Any) -> nx.Graph:
    """A 2D or 3D torus (a mesh with ``wraparound=False``) of TPU chips ``tpu{x}_{y}[_{z}]``.

    Each torus edge carries ``1 / (2 * len(dims))`` of the catalog ici figure (the chip's total).
    Chip ``c`` (x fastest) sits in host ``c // chips_per_host``, a :func:`single_node` server with
    *cpu* and the other *host* fields; host NICs join one switch ``switch0`` (the data-centre
    network). *slices* > 1: that many such tori (Multislice), chips ``s{k}.tpu...`` with
    attribute ``slice``, hosts numbered on from slice to slice, joined only by the data-centre
    network (the hosts need NICs).
    """
    n_slices = A.int_arg(slices, "slices", 1)
    if n_slices > 1 and not host.get("nic"):
        raise ScenarioError(f"{n_slices} slices are joined by the data-centre network through "
                            "their hosts' NICs: set the hosts' nic (e.g. eth-100g, "
                            "nics_per_node: 2)", field="nic")
    host = A.dict_arg(host, "host", [k for k in _NODE_KEYS if k not in (
        "tpu", "gpus_per_node", "intra_node", "cpu", "nvlink_domain")])
    if not isinstance(dims, (list, tuple)) or len(dims) not in (2, 3):
        raise ScenarioError(f"must be 2 or 3 sizes, got {dims!r}", field="dims")
    dims = tuple(A.int_arg(d, "dims", 1) for d in dims)
    chip, link = A.device_spec(tpu, "tpu", A.TPU), A.link_spec(ici, "ici", ("ici",))
    cph = A.int_arg(chips_per_host, "chips_per_host", 1)
    if prod(dims) % cph:
        raise ScenarioError(f"{cph} does not divide the {prod(dims)} chips of dims {dims}",
                            field="chips_per_host")
    shape = "x".join(map(str, dims))
    G = nx.Graph(name=name or f"{chip.id}-{shape}" + (f"-x{n_slices}" if n_slices > 1 else ""))
    coords = [c[::-1] for c in product(*(range(d) for d in reversed(dims)))]  # x fastest
    hosts = len(coords) // cph
    for k in range(n_slices):
        pre = f"s{k}." if n_slices > 1 else ""
        names = {c: pre + "tpu" + "_".join(map(str, c)) for c in coords}
        for h in range(hosts):
            single_node(tpu=chip.id, gpus_per_node=cph, cpu=cpu, server=k * hosts + h, site=site,
                        graph=G, **host)
        nx.relabel_nodes(G, {f"n{k * hosts + i // cph}.tpu{i % cph}": names[c]
                             for i, c in enumerate(coords)}, copy=False)
        for c in coords:
            G.nodes[names[c]]["coords"] = c
            if n_slices > 1:
                G.nodes[names[c]]["slice"] = k
            for axis, size in enumerate(dims):
                if size > 1 and (wraparound or c[axis] + 1 < size):
                    nb = c[:axis] + ((c[axis] + 1) % size,) + c[axis + 1:]
                    A.add_link(G, names[c], names[nb], link, 1 + (size == 2 and wraparound),
                               bw=link.bw_bytes_per_s / (2 * len(dims)))
    nics = [v for v, d in G.nodes(data=True) if d["kind"] == A.NIC]  # all on switch0
    F.leaves(G, [nics], 2 * len(nics), site, prefix="switch")
    check_connected(G)
    return G


def multi_site(sites: Mapping[str, nx.Graph], wan: Sequence[Mapping[str, Any]], *,
               router_link: str | None = None, name: str | None = None) -> nx.Graph:
    """Join site graphs by WAN links between per-site routers.

    Node ``v`` of site ``s`` becomes ``s/v`` (``site=s``); router ``s/router`` joins the site's
    top-level switches (or NICs) with *router_link* (default: the link each uses most). ``wan``:
    ``{a, b, link='wan-10g', count=1, bw=None, latency=None}``; ``bw`` (bytes/s per link and
    direction) and ``latency`` (s) override the catalog."""
    if not isinstance(sites, Mapping) or len(sites) < 2:
        raise ScenarioError("needs a mapping of at least two site names to graphs", field="sites")
    G = nx.Graph(name=name or "+".join(sites))
    for s, sg in sites.items():
        A.name_arg(s, "sites")
        anchors = A.top_switches(sg) if isinstance(sg, nx.Graph) else []
        if not anchors or sg.is_directed() or sg.is_multigraph() or f"{s}/router" in G:
            raise ScenarioError("must be an undirected networkx.Graph with a switch or NIC (to "
                                "attach the site router to) and no node 'router'",
                                field=f"sites.{s}")
        G.add_nodes_from((f"{s}/{v}", {**d, "site": s}) for v, d in sg.nodes(data=True))
        G.add_edges_from((f"{s}/{u}", f"{s}/{v}", d) for u, v, d in sg.edges(data=True))
        A.add_node(G, f"{s}/router", A.ROUTER, site=s)
        for a in anchors:
            used = Counter(d["link"] for *_, d in sg.edges(a, data=True)
                           if d["link_class"] != A.INTERNAL)
            lid = router_link or (sg.nodes[a]["spec"] if sg.nodes[a]["kind"] == A.NIC
                                  else min(used, key=lambda k: (-used[k], k)))
            A.add_link(G, f"{s}/router", f"{s}/{a}", A.link_spec(lid, "router_link"))
    for i, raw in enumerate(wan if isinstance(wan, (list, tuple)) else [wan]):
        f = f"wan[{i}]"
        w = A.dict_arg(raw, f, ("a", "b", "link", "count", "bw", "latency"))
        for end in ("a", "b"):
            if w.get(end) not in sites:
                raise ScenarioError(f"unknown site {w.get(end)!r}; sites: {', '.join(sites)}",
                                    field=f"{f}.{end}")
        ra, rb = f"{w['a']}/router", f"{w['b']}/router"
        if ra == rb or G.has_edge(ra, rb):
            raise ScenarioError("joins a site to itself or repeats a pair (use count)", field=f)
        A.add_link(G, ra, rb, A.link_spec(w.get("link") or "wan-10g", f"{f}.link"),
                   A.int_arg(w.get("count", 1), f"{f}.count", 1),
                   bw=A.num_arg(w.get("bw"), f"{f}.bw", strict=True),
                   latency=A.num_arg(w.get("latency"), f"{f}.latency"))
    check_connected(G)
    return G
