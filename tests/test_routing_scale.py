"""The router's per-ingress distances give exactly the routes of one BFS per destination.

The reference is the previous router, kept verbatim in ``tests/routing_reference.py``: for many
random ``(src, dst, key)`` triples on every kind of topology, ``path`` (ECMP choice included),
``distance``, ``paths`` and the errors must be identical.
"""

from __future__ import annotations

import random

import networkx as nx
import pytest

import hwsim.topology.routing as routing
from hwsim.topology import Router, cluster, from_explicit, multi_site, single_node, tpu_pod
from routing_reference import Router as Reference

DGX = dict(gpu="A100-SXM4-80GB", gpus_per_node=8, cpu="EPYC-7742", cpu_sockets=2,
           intra_node="nvlink3", nic="ib-hdr-200", nics_per_node=8, local_storage="nvme-gen4")
SMALL = {**DGX, "gpus_per_node": 2, "nics_per_node": 2}
LUSTRE = [{"name": "shared", "tier": "lustre", "count": 3}]


def _bridge_graph() -> nx.Graph:
    """Servers behind two switches joined by a 5-hop detour and through server 0 ("b"), whose
    PCIe switch joins a NIC on each: the shortest route between the two sides crosses b.pcie.
    Server 5 ("t") has its two GPUs far apart inside but NICs on the same switch, so a route
    between them leaves the server and comes back; server 6 ("u") has the same at a tie."""
    nodes = [{"id": sw, "kind": "switch"} for sw in ("sw0", "sw1", "d1", "d2", "d3", "d4")]
    links = [{"a": a, "b": b, "link": "ib-hdr-200"}
             for a, b in (("sw0", "d1"), ("d1", "d2"), ("d2", "d3"), ("d3", "d4"), ("d4", "sw1"))]

    def server(p: str, sid: int, gpus: int, nics: list[str], cpus: int = 1,
               pcies: int = 0) -> None:
        pcies = pcies or len(nics)  # GPU g and NIC j on PCIe switch g (j) % pcies
        nodes.extend([{"id": f"{p}.pcie{k}", "kind": "pcie_switch", "server": sid}
                      for k in range(pcies)])
        nodes.extend([{"id": f"{p}.cpu{k}", "kind": "cpu", "spec": "EPYC-7742", "server": sid}
                      for k in range(cpus)])
        for k in range(cpus - 1):
            links.append({"a": f"{p}.cpu{k}", "b": f"{p}.cpu{k + 1}", "link": "internal",
                          "bw": 100e9})
        for k in range(pcies):  # the first on the first CPU, the others on the last
            links.append({"a": f"{p}.pcie{k}", "b": f"{p}.cpu{cpus - 1 if k else 0}",
                          "link": "pcie4-x16"})
        for g in range(gpus):
            nodes.append({"id": f"{p}.gpu{g}", "kind": "gpu", "spec": "A100-SXM4-80GB",
                          "server": sid})
            links.append({"a": f"{p}.gpu{g}", "b": f"{p}.pcie{g % pcies}", "link": "pcie4-x16"})
        for j, sw in enumerate(nics):
            nodes.append({"id": f"{p}.nic{j}", "kind": "nic", "spec": "ib-hdr-200",
                          "server": sid})
            links.append({"a": f"{p}.nic{j}", "b": f"{p}.pcie{j % pcies}", "link": "pcie4-x16"})
            links.append({"a": f"{p}.nic{j}", "b": sw, "link": "ib-hdr-200"})

    server("b", 0, 1, ["sw0", "sw1"], pcies=1)  # sw0 - nic0 - pcie0 - nic1 - sw1: 4 hops
    server("s1", 1, 2, ["sw0"])
    server("s2", 2, 2, ["sw0", "sw0"])  # two NICs, one switch: still a single gateway state
    server("s3", 3, 2, ["sw1"])
    server("s4", 4, 3, ["sw1"], cpus=2)
    server("t", 5, 2, ["sw0", "sw0"], cpus=4)  # inside: 7 hops between its GPUs, outside: 6
    server("u", 6, 2, ["sw1", "sw1"], cpus=3)  # 6 and 6
    server("v", 7, 1, ["store"])  # reaches nothing but the storage, which does not forward
    nodes += [{"id": "lone", "kind": "gpu", "spec": "A100-SXM4-80GB"},  # on a switch, no server
              {"id": "store", "kind": "storage", "spec": "lustre"}]
    links += [{"a": "lone", "b": "sw1", "link": "ib-hdr-200"},
              {"a": "store", "b": "d2", "link": "ib-hdr-200", "count": 2}]
    return from_explicit(nodes, links, name="bridge")


def _wan() -> nx.Graph:
    site = cluster(nodes=3, node=SMALL, fabric={"topology": "fat-tree", "leaf_radix": 4},
                   storage=LUSTRE)
    other = cluster(nodes=2, node={**SMALL, "nics_per_node": 2},
                    fabric={"topology": "rail-optimized", "leaf_radix": 4})
    return multi_site({"dc1": site, "dc2": other, "dc3": site},
                      [{"a": "dc1", "b": "dc2", "link": "wan-100g"},
                       {"a": "dc2", "b": "dc3", "link": "wan-100g", "count": 2},
                       {"a": "dc1", "b": "dc3", "link": "wan-10g"}])


TOPOLOGIES = {
    "single-node": lambda: single_node(**DGX),
    "single-node-pcie": lambda: single_node(**{**DGX, "intra_node": None, "nics_per_node": 4}),
    "single-switch": lambda: cluster(nodes=5, node=SMALL, storage=LUSTRE),
    "fat-tree-2": lambda: cluster(nodes=12, node=DGX, storage=LUSTRE, fabric={
        "topology": "fat-tree", "leaf_radix": 16, "oversubscription": 2}),
    "fat-tree-3": lambda: cluster(nodes=7, node=SMALL, storage=LUSTRE, fabric={
        "topology": "fat-tree", "leaf_radix": 4, "oversubscription": 2}),
    "fat-tree-straddle": lambda: cluster(nodes=5, node=DGX, fabric={  # servers on 2 leaves
        "topology": "fat-tree", "leaf_radix": 12}),
    "fat-tree-pcie": lambda: cluster(nodes=6, node={**DGX, "intra_node": None,
                                                    "nics_per_node": 2},
                                     fabric={"topology": "fat-tree", "leaf_radix": 4}),
    "rail-2": lambda: cluster(nodes=6, node={**DGX, "nics_per_node": 4}, storage=LUSTRE,
                              fabric={"topology": "rail-optimized", "leaf_radix": 8}),
    "rail-3": lambda: cluster(nodes=8, node={**SMALL, "nics_per_node": 2},
                              fabric={"topology": "rail-optimized", "leaf_radix": 4}),
    "tpu-pod": lambda: tpu_pod(dims=(4, 4, 4), nic="eth-100g", local_storage="nvme-gen4"),
    "torus-2d": lambda: cluster(nodes=4, node={"tpu": "TPU-v4", "gpus_per_node": 4,
                                               "nic": "eth-100g"},
                                fabric={"topology": "torus", "dims": [4, 4]}, storage=LUSTRE),
    "mesh": lambda: tpu_pod(dims=(3, 4), wraparound=False, chips_per_host=2),
    "multi-site": _wan,
    "bridge": _bridge_graph,
}


def _outcome(router, method: str, *args):
    try:
        return getattr(router, method)(*args)
    except Exception as err:  # the errors must match too
        return type(err).__name__, str(err)


def _compare(G: nx.Graph, triples: list, *, paths: int = 60) -> None:
    new, ref = Router(G), Reference(G)
    for a, b, key in triples:
        assert _outcome(new, "path", a, b, key) == _outcome(ref, "path", a, b, key), (a, b, key)
    for a, b, _ in triples[:paths]:
        for method in ("distance", "paths"):
            assert _outcome(new, method, a, b) == _outcome(ref, method, a, b), (method, a, b)
    fresh = Router(G)  # caches filled in another order give the same routes
    assert all(_outcome(fresh, "path", a, b, k) == _outcome(new, "path", a, b, k)
               for a, b, k in reversed(triples[-300:]))


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_same_routes_as_one_bfs_per_destination(name: str) -> None:
    G = TOPOLOGIES[name]()
    rng, nodes = random.Random(name), list(G)
    ends = [v for v, d in G.nodes(data=True) if d["kind"] in ("gpu", "tpu", "memory", "storage")]
    triples = [(*rng.sample(ends, 2), rng.randrange(64)) for _ in range(1500)]
    triples += [(*rng.sample(nodes, 2), rng.randrange(64)) for _ in range(1500)]  # any node
    _compare(G, triples)


def test_transit_through_a_server_pcie_switch() -> None:
    G = _bridge_graph()
    r = Router(G)
    assert r.path("s1.gpu0", "s3.gpu1") == ["s1.gpu0", "s1.pcie0", "s1.nic0", "sw0", "b.nic0",
                                            "b.pcie0", "b.nic1", "sw1", "s3.nic0", "s3.pcie0",
                                            "s3.gpu1"] == Reference(G).path("s1.gpu0", "s3.gpu1")
    assert r.distance("store", "s4.gpu2") == 7  # by d3, d4 (by d1, sw0 and b: 10)
    # inside server t its GPUs are 7 hops apart; out through sw0 and back, 6
    assert r.path("t.gpu0", "t.gpu1") == ["t.gpu0", "t.pcie0", "t.nic0", "sw0", "t.nic1",
                                          "t.pcie1", "t.gpu1"]
    assert r.distance("t.pcie0", "t.gpu1") == Reference(G).distance("t.pcie0", "t.gpu1") == 5
    assert r.distance("t.cpu0", "t.gpu1") == 5  # through the CPUs


def test_structured_pairs_on_a_larger_fat_tree() -> None:
    """GPU i of server a to GPU i of server b (ring and pipeline neighbours), 3-level fat-tree."""
    G = cluster(nodes=64, node={**DGX, "nics_per_node": 4},
                fabric={"topology": "fat-tree", "leaf_radix": 16, "oversubscription": 2})
    triples = [(f"n{s}.gpu{i}", f"n{(s + k) % 64}.gpu{i}", j)
               for j, k in enumerate((1, -1, 8, -8, 21)) for s in range(64) for i in range(8)]
    _compare(G, triples)


def test_same_routes_with_tiny_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distance maps and destinations evicted and recomputed all along: same routes."""
    monkeypatch.setattr(routing, "_STATE_BUDGET", 1)
    monkeypatch.setattr(routing, "_DEST_CACHE", 3)
    monkeypatch.setattr(routing, "_PATH_CACHE", 7)
    for name in ("fat-tree-3", "rail-2", "tpu-pod", "multi-site", "bridge"):
        G = TOPOLOGIES[name]()
        rng, nodes = random.Random(name), list(G)
        _compare(G, [(*rng.sample(nodes, 2), rng.randrange(8)) for _ in range(800)], paths=20)


def _random_graph(seed: int) -> nx.Graph:
    """Nodes of every kind in up to 5 servers (or none), joined at random by links of every
    class: servers side by side, TPUs relaying ICI between servers, gateways of every sort."""
    rng = random.Random(seed)
    kinds = ["switch", "switch", "nic", "pcie_switch", "cpu", "gpu", "gpu", "tpu", "tpu",
             "memory", "storage", "nvswitch", "router"]
    G = nx.Graph(name=f"random{seed}")
    n = rng.randrange(12, 45)
    for i in range(n):
        kind = rng.choice(kinds)
        server = None if kind in ("switch", "router") or rng.random() < 0.2 else rng.randrange(5)
        G.add_node(f"v{i}", kind=kind, server=server, site="site0")
    classes = [("infiniband", 25e9), ("pcie", 32e9), ("nvlink", 300e9), ("ici", 50e9),
               ("ici", 100e9), ("internal", 100e9), ("ethernet", 12.5e9)]
    for _ in range(rng.randrange(n, 3 * n)):
        a, b = rng.sample(range(n), 2)
        cls, bw = rng.choice(classes)
        G.add_edge(f"v{a}", f"v{b}", link_class=cls, bw_bytes_per_s=bw * rng.choice((1, 1, 2)))
    return G


@pytest.mark.parametrize("seed", range(40))
def test_same_routes_on_random_graphs(seed: int) -> None:
    G = _random_graph(seed)
    rng, nodes = random.Random(seed), list(G)
    _compare(G, [(*rng.sample(nodes, 2), rng.randrange(16)) for _ in range(400)], paths=80)


def _random_cluster(seed: int) -> nx.Graph:
    """Random servers (CPUs, PCIe switches, GPUs or TPUs, NICs, memory) on a random switch
    fabric: often all NICs of a server on one switch (sealed), sometimes servers joined directly
    (NIC to NIC, TPU to TPU over ICI), storage on switches or inside servers."""
    rng = random.Random(seed)
    G = nx.Graph(name=f"cluster{seed}")

    def node(v: str, kind: str, server: int | None = None) -> str:
        G.add_node(v, kind=kind, server=server, site="site0")
        return v

    def link(a: str, b: str, cls: str, bw: float) -> None:
        G.add_edge(a, b, link_class=cls, bw_bytes_per_s=bw * rng.choice((1, 1, 1, 2)))
    switches = [node(f"sw{i}", "switch") for i in range(rng.randrange(2, 7))]
    for i in range(1, len(switches)):  # a random tree, and a few more links
        link(switches[i], switches[rng.randrange(i)], "infiniband", 50e9)
    for _ in range(rng.randrange(3)):
        a, b = rng.sample(switches, 2)
        link(a, b, "infiniband", 50e9)
    nics, chips = [], []
    for s in range(rng.randrange(2, 8)):
        p = f"n{s}."
        cpus = [node(f"{p}cpu{k}", "cpu", s) for k in range(rng.choice((1, 2)))]
        if len(cpus) == 2:
            link(*cpus, "internal", 100e9)
        link(node(f"{p}mem", "memory", s), cpus[0], "internal", 200e9)
        pcies = [node(f"{p}pcie{k}", "pcie_switch", s) for k in range(rng.randrange(1, 4))]
        for k, sw in enumerate(pcies):
            link(sw, cpus[k % len(cpus)], "pcie", 32e9)
        acc = rng.choice(("gpu", "tpu"))
        accs = [node(f"{p}{acc}{g}", acc, s) for g in range(rng.randrange(1, 5))]
        for g, a in enumerate(accs):
            link(a, pcies[g % len(pcies)], "pcie", 32e9)
        if acc == "gpu" and len(accs) > 1 and rng.random() < 0.5:
            nv = node(f"{p}nvswitch", "nvswitch", s)
            for a in accs:
                link(a, nv, "nvlink", 300e9)
        elif acc == "tpu":
            for a, b in zip(accs, accs[1:]):
                link(a, b, "ici", 50e9)
            chips += accs
        mine = [node(f"{p}nic{j}", "nic", s) for j in range(rng.randrange(1, 4))]
        one = rng.choice(switches)
        for j, nic in enumerate(mine):
            link(nic, pcies[j % len(pcies)], "pcie", 32e9)
            link(nic, one if rng.random() < 0.6 else rng.choice(switches), "infiniband", 25e9)
        nics += mine
        if rng.random() < 0.3:
            link(node(f"{p}nvme", "storage", s), pcies[0], "pcie", 8e9)
    for _ in range(rng.randrange(3)):  # servers side by side
        a, b = rng.sample(nics, 2)
        if G.nodes[a]["server"] != G.nodes[b]["server"]:
            link(a, b, "infiniband", 25e9)
    for _ in range(rng.randrange(4) if len(chips) > 1 else 0):
        a, b = rng.sample(chips, 2)
        link(a, b, "ici", 50e9)
    for k in range(rng.randrange(3)):
        link(node(f"store{k}", "storage"), rng.choice(switches), "infiniband", 25e9)
    return G


@pytest.mark.parametrize("seed", range(40))
def test_same_routes_on_random_clusters(seed: int) -> None:
    G = _random_cluster(seed)
    rng, nodes = random.Random(seed), list(G)
    _compare(G, [(*rng.sample(nodes, 2), rng.randrange(16)) for _ in range(500)], paths=80)


def test_degenerate_graphs() -> None:
    Router(nx.Graph())  # no node: builds
    G = nx.Graph(name="bare")
    for v, server in (("a", 0), ("b", 1), ("c", None)):
        G.add_node(v, kind="gpu", server=server)
    _compare(G, [("a", "b", 0), ("c", "a", 1)])  # no link at all
    G.add_node("s", kind="switch")
    G.add_edge("a", "s", link_class="pcie", bw_bytes_per_s=1.0)
    G.add_edge("b", "s", link_class="pcie", bw_bytes_per_s=1.0)
    _compare(G, [(a, b, k) for a in G for b in G for k in range(3)])
