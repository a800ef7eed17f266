"""Topology builders and routing (hwsim.topology)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter

import networkx as nx
import pytest

import hwsim.catalog as catalog
from hwsim.exceptions import NoRouteError, ScenarioError
from hwsim.topology import (
    Router, check_connected, cluster, from_explicit, multi_site, single_node, tpu_pod,
)

DGX = dict(gpu="A100-SXM4-80GB", gpus_per_node=8, cpu="EPYC-7742", cpu_sockets=2,
           intra_node="nvlink3", nic="ib-hdr-200", nics_per_node=8, local_storage="nvme-gen4")


def _kind(G: nx.Graph, v: str) -> str:
    return G.nodes[v]["kind"]


def _valid(G: nx.Graph, path: list[str], src: str, dst: str, hops: int | None = None) -> None:
    """Endpoints, consecutive edges, no repeated node, endpoints-only nodes only at the ends."""
    assert path[0] == src and path[-1] == dst
    assert len(set(path)) == len(path)
    assert all(G.has_edge(u, v) for u, v in zip(path, path[1:]))
    for v in path[1:-1]:
        assert _kind(G, v) not in ("gpu", "memory", "storage")
    if hops is not None:
        assert len(path) - 1 == hops


@pytest.fixture(scope="module")
def fat_tree_args() -> dict:
    return dict(nodes=8, node=DGX, fabric={"topology": "fat-tree", "leaf_radix": 16})


# -- single node -----------------------------------------------------------------------------
def test_dgx_a100_counts() -> None:
    G = single_node(**DGX)
    kinds = Counter(d["kind"] for _, d in G.nodes(data=True))
    assert kinds == {"gpu": 8, "cpu": 2, "memory": 1, "storage": 1, "nvswitch": 1,
                     "pcie_switch": 8, "nic": 8}
    # cpu-cpu 1, mem 2, pcie-cpu 8, gpu-pcie 8, nic-pcie 8, gpu-nvswitch 8, nvme 1
    assert G.number_of_edges() == 36
    assert all(G.edges["n0.gpu0", "n0.nvswitch"][k] == v for k, v in
               {"link": catalog.get_link("nvlink3").id, "link_class": "nvlink", "count": 1}.items())
    assert G.edges["n0.cpu0", "n0.cpu1"]["link_class"] == "internal"
    assert G.nodes["n0.mem"]["kind"] == "memory" and G.nodes["n0.nvme"]["kind"] == "storage"
    assert set(G["n0.pcie0"]) == {"n0.gpu0", "n0.nic0", "n0.cpu0", "n0.nvme"}  # GPU i <-> NIC i
    assert set(G["n0.pcie5"]) == {"n0.gpu5", "n0.nic5", "n0.cpu1"}
    assert G.nodes["n0.pcie3"]["server"] == 0 and G.nodes["n0.gpu5"]["site"] == "site0"


@pytest.mark.parametrize("tier, name", [("nvme-gen4", "n0.nvme"), ("micron-9550", "n0.nvme"),
                                        ("sata-ssd", "n0.ssd"), ("hdd-7200", "n0.hdd")])
def test_local_drive_named_after_its_kind(tier: str, name: str) -> None:
    """A SATA SSD or a hard disk is not called ``nvme`` (issue 12 item 7)."""
    G = single_node(**{**DGX, "local_storage": tier})
    drives = [v for v, d in G.nodes(data=True) if d["kind"] == "storage"]
    assert drives == [name] and G.nodes[name]["spec"] == tier and G.has_edge(name, "n0.pcie0")


@pytest.mark.parametrize("gpus, nics, switches, pcie_of_gpu5, nic_of_gpu5", [
    (8, 8, 8, "n0.pcie5", "n0.nic5"), (8, 4, 4, "n0.pcie2", "n0.nic2"),
    (8, 0, 4, "n0.pcie2", None), (4, 8, 4, None, None), (8, 1, 4, "n0.pcie2", "n0.nic0"),
])
def test_pcie_layout(gpus: int, nics: int, switches: int, pcie_of_gpu5, nic_of_gpu5) -> None:
    G = single_node(**{**DGX, "gpus_per_node": gpus, "nics_per_node": nics,
                       "nic": "ib-hdr-200" if nics else None})
    assert sum(d["kind"] == "pcie_switch" for _, d in G.nodes(data=True)) == switches
    if pcie_of_gpu5:
        assert set(G["n0.gpu5"]) == {pcie_of_gpu5, "n0.nvswitch"}
    if nic_of_gpu5:  # the GPU's rail NIC is its unique closest NIC
        r = Router(G)
        dist = {f"n0.nic{j}": r.distance("n0.gpu5", f"n0.nic{j}") for j in range(nics)}
        assert [k for k, v in dist.items() if v == min(dist.values())] == [nic_of_gpu5]
    assert G.graph["name"]


@pytest.mark.parametrize("intra, via", [("nvlink3", ["n0.nvswitch"]),
                                        ("pcie4-x16", ["n0.pcie0", "n0.cpu0", "n0.pcie2"])])
def test_intra_node_route(intra: str, via: list[str]) -> None:
    G = single_node(**{**DGX, "intra_node": intra})
    assert ("n0.nvswitch" in G) == intra.startswith("nvlink")
    r = Router(G)
    assert r.paths("n0.gpu0", "n0.gpu2") == [["n0.gpu0", *via, "n0.gpu2"]]
    # without NICs, gpu0 and gpu1 share a PCIe switch: NVLink still wins the tie on bandwidth
    r = Router(single_node(**{**DGX, "intra_node": intra, "nic": None, "nics_per_node": 0}))
    assert r.path("n0.gpu0", "n0.gpu1")[1] == ("n0.nvswitch" if intra == "nvlink3" else "n0.pcie0")


def test_cross_socket_and_memory_routes() -> None:
    r = Router(single_node(**{**DGX, "intra_node": None}))
    assert r.path("n0.gpu0", "n0.gpu7") == ["n0.gpu0", "n0.pcie0", "n0.cpu0", "n0.cpu1",
                                            "n0.pcie7", "n0.gpu7"]
    assert r.path("n0.gpu7", "n0.mem") == ["n0.gpu7", "n0.pcie7", "n0.cpu1", "n0.mem"]
    assert r.path("n0.nvme", "n0.gpu0") == ["n0.nvme", "n0.pcie0", "n0.gpu0"]


@pytest.mark.parametrize("kwargs, field", [
    ({"gpu": "A100-SXM4-80GB"}, "gpus_per_node"),
    ({"gpus_per_node": 2}, "gpus_per_node"),
    ({"gpu": "A100-SXM4-80GB", "gpus_per_node": 2, "intra_node": "ib-hdr-200"}, "intra_node"),
    ({"gpu": "no-such-gpu", "gpus_per_node": 2}, "gpu"),
    ({"gpu": "EPYC-7742", "gpus_per_node": 2}, "gpu"),
    ({"host_link": "nvlink3"}, "host_link"),
    ({"cpu_sockets": 0}, "cpu_sockets"),
    ({"nics_per_node": 2}, "nics_per_node"),
])
def test_single_node_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ScenarioError) as err:
        single_node(**kwargs)
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")


def test_cpu_only_node_and_tpu_host() -> None:
    G = single_node(cpu="Xeon-8480", nic="eth-100g")
    assert Counter(d["kind"] for _, d in G.nodes(data=True)) == {"cpu": 2, "memory": 1, "nic": 1}
    T = single_node(tpu="TPU-v4", gpus_per_node=4, intra_node="tpu-ici-v4")
    assert sum(d["link_class"] == "ici" for *_, d in T.edges(data=True)) == 4  # a ring of 4
    assert Router(T).path("n0.tpu0", "n0.tpu2")[1] in ("n0.tpu1", "n0.tpu3")  # ICI relays


# -- cluster ---------------------------------------------------------------------------------
def test_fat_tree_inter_node_path(fat_tree_args: dict) -> None:
    G = cluster(**fat_tree_args)
    r = Router(G)
    src, dst = "n0.gpu0", "n7.gpu3"
    p = r.path(src, dst)
    assert [_kind(G, v) for v in p] == ["gpu", "pcie_switch", "nic", "switch", "switch", "switch",
                                        "nic", "pcie_switch", "gpu"]
    assert [G.nodes[v]["level"] for v in p[3:6]] == ["leaf", "spine", "leaf"]
    for q in r.paths(src, dst):
        _valid(G, q, src, dst, hops=8)
    assert r.path("n0.gpu0", "n0.nic0") == ["n0.gpu0", "n0.pcie0", "n0.nic0"]
    assert r.edges(p)[0] == ("n0.gpu0", p[1]) and len(r.edges(p)) == 8


def test_oversubscription_halves_leaf_uplinks(fat_tree_args: dict) -> None:
    def uplink(over: float) -> float:
        fabric = {**fat_tree_args["fabric"], "oversubscription": over}
        G = cluster(**{**fat_tree_args, "fabric": fabric})
        return sum(d["bw_bytes_per_s"] for _, v, d in G.edges("leaf0", data=True)
                   if G.nodes[v].get("level") == "spine")
    assert uplink(2.0) == pytest.approx(uplink(1.0) / 2)


def test_ecmp_spreads_and_is_deterministic(fat_tree_args: dict) -> None:
    G = cluster(**fat_tree_args)
    r = Router(G)
    spines = {r.path("n0.gpu0", "n5.gpu0", key=k)[4] for k in range(64)}
    assert len(spines) >= 4 and all(G.nodes[s]["level"] == "spine" for s in spines)
    assert all(r.path("n0.gpu0", "n5.gpu0", key=k) == Router(G).path("n0.gpu0", "n5.gpu0", key=k)
               for k in range(16))
    code = ("from hwsim.topology import Router, cluster;"
            f"print(Router(cluster(**{fat_tree_args!r})).path('n0.gpu0','n5.gpu0',key=7))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()  # another process, another str-hash salt
    assert out == str(r.path("n0.gpu0", "n5.gpu0", key=7))


def test_a_route_without_alternatives_is_every_keys(fat_tree_args: dict) -> None:
    """Router.key_free: a route whose every step had one choice (inside a server) is found
    once and is the route of every key; one through the spines is not key-free, and its keys
    still spread (hwsim.jobs.system.System.route keeps the former once for all keys)."""
    G = cluster(**fat_tree_args)
    r, fresh = Router(G), Router(G)
    inside = r.path("n0.gpu0", "n0.gpu1", key=3)
    assert r.key_free("n0.gpu0", "n0.gpu1") and not r.key_free("n0.gpu1", "n0.gpu0")
    assert all(r.path("n0.gpu0", "n0.gpu1", key=k) == inside
               == fresh.path("n0.gpu0", "n0.gpu1", key=k) for k in range(8))
    across = [r.path("n0.gpu0", "n5.gpu0", key=k) for k in range(64)]
    assert not r.key_free("n0.gpu0", "n5.gpu0") and len({p[4] for p in across}) >= 4
    assert across == [fresh.path("n0.gpu0", "n5.gpu0", key=k) for k in range(64)]


def test_key_free_routes_share_the_path_caches_bound(fat_tree_args: dict,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Routes found once for every key count against the same bound as the keyed ones: a
    run that asks only for routes without alternatives keeps no more than _PATH_CACHE."""
    from hwsim.topology import routing

    monkeypatch.setattr(routing, "_PATH_CACHE", 5)
    G = cluster(**fat_tree_args)
    r, fresh = Router(G), Router(G)
    pairs = [(f"n{s}.gpu{i}", f"n{s}.gpu{j}") for s in range(3) for i in range(4)
             for j in range(4) if i != j]
    for a, b in pairs:
        assert r.path(a, b) == fresh.path(a, b, key=9)
        assert len(r._paths) + len(r._single) <= 5
    assert all(r.path(a, b, key=2) == fresh.path(a, b) for a, b in pairs)


def _reference(G: nx.Graph, a: str, b: str) -> list[list[str]]:
    """Brute force: shortest paths over forwarding nodes, at each hop only the widest links."""
    H = G.subgraph([v for v, d in G.nodes(data=True)
                    if d["kind"] not in ("gpu", "tpu", "memory", "storage")] + [a, b])
    dist = nx.single_source_shortest_path_length(H, b)

    def widest(p: list[str]) -> bool:
        for u, v in zip(p, p[1:]):
            down = [w for w in H[u] if dist[w] == dist[u] - 1 and (w == b or w not in (a, b))]
            if G.edges[u, v]["bw_bytes_per_s"] < max(G.edges[u, w]["bw_bytes_per_s"] for w in down):
                return False
        return True
    return sorted(p for p in nx.all_shortest_paths(H, a, b) if widest(p))


@pytest.mark.parametrize("topology", ["fat-tree", "rail-optimized"])
def test_random_routes_match_brute_force(fat_tree_args: dict, topology: str) -> None:
    G = cluster(**{**fat_tree_args, "nodes": 6, "fabric": {"topology": topology, "leaf_radix": 8},
                   "storage": [{"name": "shared", "tier": "lustre", "count": 3}]})
    r, rng = Router(G), random.Random(0)
    ends = [v for v, d in G.nodes(data=True) if d["kind"] in ("gpu", "memory", "storage")]
    pairs = [(*rng.sample(ends, 2), rng.randrange(9)) for _ in range(150)]
    for a, b, key in pairs:
        p, ref = r.path(a, b, key=key), _reference(G, a, b)
        _valid(G, p, a, b, hops=r.distance(a, b))
        assert p in ref and r.paths(a, b) == ref
    fresh = Router(G)  # caches filled in another order give the same routes
    assert all(fresh.path(a, b, key=k) == r.path(a, b, key=k) for a, b, k in reversed(pairs))


@pytest.mark.parametrize("topology", ["rail-optimized", "single-switch"])
def test_other_fabrics(topology: str) -> None:
    fabric = {"topology": topology, **({"leaf_radix": 8} if topology == "rail-optimized" else {})}
    G = cluster(nodes=4, node={**DGX, "nics_per_node": 4}, fabric=fabric)
    p = Router(G).path("n0.gpu2", "n3.gpu2")
    if topology == "rail-optimized":  # NIC 1 of each server on rail switch 1
        assert G.nodes[p[3]]["rail"] == 1 and p[3] == p[-4] and len(p) == 7
    else:
        assert p[3] == "switch0" and len(p) == 7


def test_three_level_fat_tree() -> None:
    G = cluster(nodes=7, node={**DGX, "gpus_per_node": 2, "nics_per_node": 2},
                fabric={"topology": "fat-tree", "leaf_radix": 4})
    levels = Counter(d.get("level") for _, d in G.nodes(data=True) if d["kind"] == "switch")
    assert set(levels) == {"leaf", "spine", "core"}
    assert all(G.degree(v) <= 4 or d.get("level") == "core" for v, d in G.nodes(data=True)
               if d["kind"] == "switch" and d["level"] == "leaf")
    r = Router(G)
    p = r.path("n0.gpu0", "n6.gpu1")
    _valid(G, p, "n0.gpu0", "n6.gpu1", hops=nx.shortest_path_length(G, "n0.gpu0", "n6.gpu1"))
    assert "core" in [G.nodes[v].get("level") for v in p]


@pytest.mark.parametrize("kwargs, field", [
    (dict(nodes=2, node={"gpu": "A100-SXM4-80GB", "gpus_per_node": 2}), "node.nic"),
    (dict(nodes=2, node={**DGX, "gpus_per_node": 0}), "node.gpus_per_node"),
    (dict(nodes=2, node={**DGX, "colour": 1}), "node"),
    (dict(nodes=2, node=DGX, fabric={"topology": "torus"}), "fabric.topology"),
    (dict(nodes=2, node=DGX, fabric={"topology": "ring"}), "fabric.topology"),
    (dict(nodes=2, node=DGX, fabric={"topology": "fat-tree", "oversubscription": 0.5}),
     "fabric.oversubscription"),
    (dict(nodes=0, node=DGX), "nodes"),
    (dict(nodes=2, node=DGX, storage=[{"name": "s", "tier": "nope"}]), "storage[0].tier"),
])
def test_cluster_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ScenarioError) as err:
        cluster(**kwargs)
    assert err.value.field == field


def test_shared_storage_attached_with_count() -> None:
    G = cluster(nodes=2, node=DGX, fabric={"topology": "single-switch"},
                storage=[{"name": "shared", "tier": "lustre", "count": 4}])
    lustre = catalog.get_storage("lustre")
    d = G.nodes["storage.shared"]
    assert d["kind"] == "storage" and d["count"] == 4
    assert d["read_bw_bytes_per_s"] == pytest.approx(4 * lustre.read_bw_bytes_per_s)
    e = G.edges["storage.shared", "switch0"]
    nic_bw = catalog.get_link("ib-hdr-200").bw_bytes_per_s
    assert e["count"] == 4 and e["bw_bytes_per_s"] == pytest.approx(4 * nic_bw)
    assert Router(G).path("n1.gpu3", "storage.shared")[-2] == "switch0"


# -- TPU torus -------------------------------------------------------------------------------
def test_torus_neighbours() -> None:
    G = tpu_pod(dims=(4, 4, 4))
    chips = [v for v, d in G.nodes(data=True) if d["kind"] == "tpu"]
    assert len(chips) == 64 and "tpu3_3_3" in G and G.nodes["tpu1_2_3"]["coords"] == (1, 2, 3)
    for c in chips:
        ici = [v for v in G[c] if G.edges[c, v]["link_class"] == "ici"]
        assert len(ici) == 6
    per_link = catalog.get_link("tpu-ici-v4").bw_bytes_per_s / 6
    assert G.edges["tpu0_0_0", "tpu1_0_0"]["bw_bytes_per_s"] == pytest.approx(per_link)
    assert G.nodes["tpu3_0_0"]["server"] == 0 and G.nodes["tpu0_1_0"]["server"] == 1
    r = Router(G)
    p = r.path("tpu0_0_0", "tpu2_2_0")
    assert len(p) == 5 and all(_kind(G, v) == "tpu" for v in p)
    assert r.path("tpu0_0_0", "tpu3_0_0") == ["tpu0_0_0", "tpu3_0_0"]  # wraparound
    assert r.path("tpu0_0_0", "n0.mem") == ["tpu0_0_0", "n0.pcie0", "n0.cpu0", "n0.mem"]
    with pytest.raises(NoRouteError, match="does not forward"):  # chips relay ICI only
        r.path("tpu0_0_0", "n1.mem")


def test_torus_via_cluster_and_errors() -> None:
    G = cluster(nodes=4, node={"tpu": "TPU-v4", "gpus_per_node": 4, "nic": "eth-100g"},
                fabric={"topology": "torus", "dims": [4, 4]})
    assert sum(d["kind"] == "tpu" for _, d in G.nodes(data=True)) == 16
    assert Router(G).path("tpu0_0", "n1.mem") == ["tpu0_0", "n0.pcie0", "n0.nic0", "switch0",
                                                  "n1.nic0", "n1.pcie0", "n1.cpu0", "n1.mem"]
    with pytest.raises(ScenarioError) as err:
        tpu_pod(dims=(4, 4, 4), chips_per_host=5)
    assert err.value.field == "chips_per_host"


# -- multi-site ------------------------------------------------------------------------------
def test_multi_site_wan() -> None:
    site = cluster(nodes=2, node=DGX, fabric={"topology": "fat-tree", "leaf_radix": 16})
    G = multi_site({"dc1": site, "dc2": site}, [{"a": "dc1", "b": "dc2", "link": "wan-100g",
                                                 "count": 2, "latency": 0.01}])
    assert G.nodes["dc2/n0.gpu3"]["site"] == "dc2"
    wan = G.edges["dc1/router", "dc2/router"]
    assert wan["link_class"] == "wan" and wan["latency_s"] == 0.01
    assert wan["bw_bytes_per_s"] == pytest.approx(2 * catalog.get_link("wan-100g").bw_bytes_per_s)
    p = Router(G).path("dc1/n0.gpu0", "dc2/n1.gpu5")
    i = p.index("dc1/router")
    assert p[i + 1] == "dc2/router"
    _valid(G, p, "dc1/n0.gpu0", "dc2/n1.gpu5")
    with pytest.raises(ScenarioError) as err:
        multi_site({"dc1": site, "dc2": site}, [{"a": "dc1", "b": "dc3"}])
    assert err.value.field == "wan[0].b"
    with pytest.raises(ScenarioError) as err:
        multi_site({"dc1": site, "dc2": single_node(**{**DGX, "nic": None, "nics_per_node": 0})},
                   [{"a": "dc1", "b": "dc2"}])
    assert err.value.field == "sites.dc2"


# -- explicit graphs, errors -----------------------------------------------------------------
NODES = [{"id": "g0", "kind": "gpu", "spec": "A100-SXM4-80GB"},
         {"id": "g1", "kind": "gpu", "spec": "A100-SXM4-80GB"},
         {"id": "sw", "kind": "switch"}]


def test_from_explicit_bw_override() -> None:
    G = from_explicit(NODES, [{"a": "g0", "b": "sw", "link": "ib-hdr-200", "bw": 1e9, "count": 2},
                              {"a": "g1", "b": "sw", "link": "ib-hdr-200", "latency": 2e-6}])
    assert G.edges["g0", "sw"]["bw_bytes_per_s"] == 2e9 and G.edges["g0", "sw"]["count"] == 2
    assert G.edges["g1", "sw"]["bw_bytes_per_s"] == catalog.get_link("ib-hdr-200").bw_bytes_per_s
    assert G.edges["g1", "sw"]["latency_s"] == 2e-6
    assert Router(G).path("g0", "g1") == ["g0", "sw", "g1"]


def test_disconnected_explicit_graph_message() -> None:
    with pytest.raises(ScenarioError, match=r"^topology 'explicit' is not connected: 2 components: "
                                            r"\{g0, sw\}; \{g1\}$"):
        from_explicit(NODES, [{"a": "g0", "b": "sw", "link": "ib-hdr-200"}])


def test_no_route_errors() -> None:
    G = nx.Graph(name="x")
    for v in ("g0", "g1", "g2"):
        G.add_node(v, kind="gpu")
    G.add_edge("g0", "g1", link_class="nvlink", bw_bytes_per_s=1.0)
    with pytest.raises(NoRouteError, match="different connected components"):
        Router(G).path("g0", "g2")
    with pytest.raises(ScenarioError, match="not connected"):
        check_connected(G)
    G.add_edge("g1", "g2", link_class="nvlink", bw_bytes_per_s=1.0)  # g1 never forwards
    with pytest.raises(NoRouteError, match="does not forward"):
        Router(G).path("g0", "g2")
    with pytest.raises(ScenarioError, match="unknown node 'g9'"):
        Router(G).path("g0", "g9")


@pytest.mark.parametrize("links, field", [
    ([{"a": "g0", "b": "gx", "link": "ib-hdr-200"}], "links[0].b"),
    ([{"a": "g0", "b": "sw", "link": "ib-hdr-200", "bw": -1}], "links[0].bw"),
    ([{"a": "g0", "b": "sw", "link": "ib-xyz"}], "links[0].link"),
])
def test_from_explicit_errors(links: list, field: str) -> None:
    with pytest.raises(ScenarioError) as err:
        from_explicit(NODES, links)
    assert err.value.field == field
