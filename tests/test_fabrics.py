"""Scale-out fabrics (hwsim.topology.fabrics): bisection bandwidth of each shape, per-tier
oversubscription, independent planes, dragonflies, seeded ECMP, and their errors."""

from __future__ import annotations

from collections import Counter

import pytest

import hwsim
from hwsim.exceptions import ScenarioError
from hwsim.topology.builders import cluster
from hwsim.topology import bisection_bw
from hwsim.topology.routing import Router

NDR = 50e9  # ib-ndr-400 per direction (links.yaml)
NODE = {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8, "intra_node": "nvlink4",
        "nic": "ib-ndr-400", "nics_per_node": 8}


def _switches(G):
    return [n for n, d in G.nodes(data=True) if d["kind"] == "switch"]


@pytest.mark.parametrize("fabric, servers, want", [
    ({"topology": "fat-tree"}, 16, 64 * NDR),  # non-blocking: half the NICs at full rate
    ({"topology": "fat-tree", "oversubscription": 2}, 16, 32 * NDR),
    ({"topology": "fat-tree", "oversubscription": [2]}, 16, 32 * NDR),
    ({"topology": "rail-optimized"}, 16, 64 * NDR),
    ({"topology": "rail-optimized", "planes": 2}, 16, 64 * NDR),
    ({"topology": "fat-tree", "planes": 4, "oversubscription": 2, "leaf_radix": 16}, 16,
     32 * NDR),
    # three levels (80 servers, 16-port switches: 40 leaves > 16): the spine tier's figure
    ({"topology": "fat-tree", "leaf_radix": 16}, 80, 320 * NDR),
    ({"topology": "fat-tree", "leaf_radix": 16, "oversubscription": [1, 2]}, 80, 160 * NDR),
    ({"topology": "fat-tree", "leaf_radix": 16, "oversubscription": [2, 2]}, 80, 80 * NDR),
])
def test_bisection_follows_oversubscription_per_tier(fabric, servers, want):
    G = cluster(nodes=servers, node=NODE, fabric=fabric)
    assert bisection_bw(G) == pytest.approx(want)


def test_dragonfly_bisection_is_its_global_links():
    # radix 12: 3 NICs and 4 global ports a router, groups of 6 routers; 128 NICs -> 43
    # routers in 8 groups, every pair of groups joined by 6 x 4 // 7 = 3 global links
    G = cluster(nodes=16, node=NODE, fabric={"topology": "dragonfly", "leaf_radix": 12,
                                              "group_routers": 6})
    routers = _switches(G)
    assert len(routers) == 43
    groups = Counter(G.nodes[r]["group"] for r in routers)
    assert sorted(groups.values()) == [1] + [6] * 7
    between = Counter()
    for u, v, d in G.edges(data=True):
        gu, gv = G.nodes[u].get("group"), G.nodes[v].get("group")
        if gu is not None and gv is not None and gu != gv:
            between[frozenset((gu, gv))] += d["count"]
    assert set(between.values()) == {3} and len(between) == 28
    # servers 0-7 (NICs on routers 0-21: groups 0-3) against 8-15 (groups 3-7): the global
    # links between the two sides (and group 3's, split) bound it below the NICs' 64 x NDR
    assert bisection_bw(G) < 64 * NDR
    small = cluster(nodes=16, node=NODE, fabric={"topology": "dragonfly", "leaf_radix": 16,
                                                  "group_routers": 4})
    assert bisection_bw(small) == pytest.approx(64 * NDR)  # 5 global links a pair: enough


def test_dragonfly_groups_are_all_to_all_and_routes_minimal():
    G = cluster(nodes=4, node=NODE, fabric={"topology": "dragonfly", "leaf_radix": 8,
                                             "group_routers": 3})
    routers = _switches(G)
    by_group: dict = {}
    for r in routers:
        by_group.setdefault(G.nodes[r]["group"], []).append(r)
    for members in by_group.values():
        assert all(G.has_edge(a, b) for a in members for b in members if a != b)
    router = Router(G)
    for a, b in [("n0.gpu0", "n3.gpu7"), ("n1.gpu3", "n2.gpu4")]:
        path = router.path(a, b)
        assert sum(1 for v in path if v in routers) <= 3  # local, global, local


def test_planes_are_independent_fabrics():
    G = cluster(nodes=4, node=NODE, fabric={"topology": "rail-optimized", "planes": 2})
    for sw in _switches(G):
        plane = int(sw.split(".")[0][1:])
        nics = [v for v in G[sw] if G.nodes[v]["kind"] == "nic"]
        assert all(int(n.rsplit("nic", 1)[1]) % 2 == plane for n in nics)
        assert all(not G.nodes[v]["kind"] == "switch" or v.startswith(f"p{plane}.")
                   for v in G[sw])
    path = Router(G).path("n0.nic0", "n1.nic1")  # across planes: through a server
    assert any(G.nodes[v].get("server") is not None and G.nodes[v]["kind"] != "nic"
               for v in path[1:-1])


def _spine_load(seed):
    G = cluster(nodes=4, node=NODE, fabric={"topology": "fat-tree", "leaf_radix": 8,
                                             **({"ecmp_seed": seed} if seed is not None else {})})
    router = Router(G)
    spines = [s for s in _switches(G) if G.nodes[s]["level"] == "spine"]
    assert len(spines) == 4  # 8 leaves of 4 NICs, 4 up-links each: one to every spine
    use = Counter()
    for k in range(8):
        path = router.path(f"n0.gpu{k}", f"n3.gpu{k}", key=k)
        use.update(s for s in path if s in spines)
    return tuple(use[s] for s in spines)


def test_ecmp_seed_redraws_the_paths_and_is_deterministic():
    assert _spine_load(None) == _spine_load(0)  # no seed is seed 0: today's routes
    loads = {seed: _spine_load(seed) for seed in range(12)}
    assert all(_spine_load(seed) == loads[seed] for seed in (3, 7))
    assert len(set(loads.values())) > 1  # other seeds, other collisions
    assert all(sum(v) == 8 for v in loads.values())  # every flow crosses one spine


def test_ecmp_collisions_slow_some_seeds_and_never_beat_the_nics():
    """32 flows between servers two apart (other leaves) over 4 spines: how the hash spreads
    them over the spines differs by seed (a collision loads one spine's links twice); no seed
    beats the NICs' own rate."""
    times = []
    for seed in range(6):
        r = hwsim.run({
            "name": "ecmp", "seed": 0,
            "cluster": {"nodes": 4, "node": NODE,
                        "fabric": {"topology": "fat-tree", "leaf_radix": 8, "ecmp_seed": seed}},
            "workload": {"kind": "transfer", "transfers": [
                {"name": f"t{s}_{k}", "src": f"n{s}.gpu{k}", "dst": f"n{(s + 2) % 4}.gpu{k}",
                 "size": "8 GB"} for s in range(4) for k in range(8)]}})
        times.append(r.summary["makespan_s"])
    assert min(times) >= 8e9 / NDR
    assert len({round(t, 9) for t in times}) > 1


@pytest.mark.parametrize("fabric, field, message", [
    ({"topology": "fat-tree", "oversubscription": [1, 2]}, "fabric.oversubscription",
     "the spine figure (2) applies to a three-level fabric"),
    ({"topology": "fat-tree", "oversubscription": [1, 1, 2]}, "fabric.oversubscription",
     "one figure per tier"),
    ({"topology": "fat-tree", "oversubscription": [0.5]}, "fabric.oversubscription",
     "every tier's figure must be >= 1"),
    ({"topology": "fat-tree", "planes": 16}, "fabric.planes", "16 planes need at least 16 NICs"),
    ({"topology": "dragonfly", "leaf_radix": 8, "group_routers": 7}, "fabric.group_routers",
     "7 routers a group leave no global port"),
    ({"topology": "dragonfly", "planes": 2}, "fabric.planes",
     "applies only to topology 'fat-tree' or 'rail-optimized', not 'dragonfly'"),
    ({"topology": "single-switch", "ecmp_seed": 3}, "fabric.ecmp_seed",
     "applies only to topology 'fat-tree' or 'rail-optimized' or 'dragonfly'"),
    ({"topology": "fat-tree", "group_routers": 3}, "fabric.group_routers",
     "applies only to topology 'dragonfly', not 'fat-tree'"),
])
def test_bad_fabrics_name_the_field(fabric, field, message):
    with pytest.raises(ScenarioError) as err:
        cluster(nodes=2, node=NODE, fabric=fabric)
    assert err.value.field == field
    assert message in str(err.value)


def test_schema_takes_the_new_fabric_fields():
    sc = hwsim.load_scenario({
        "name": "df", "cluster": {"nodes": 4, "node": NODE,
                                  "fabric": {"topology": "dragonfly", "leaf_radix": 16,
                                             "ecmp_seed": 5}},
        "workload": {"kind": "transfer", "transfers": [
            {"name": "t", "src": "n0.gpu0", "dst": "n3.gpu0", "size": "1 GB"}]}})
    assert sc.cluster.fabric.topology == "dragonfly"
    r = hwsim.run(sc)
    assert r.summary["makespan_s"] > 1e9 / NDR
    with pytest.raises(ScenarioError, match="oversubscription"):
        hwsim.load_scenario({"name": "bad", "cluster": {
            "nodes": 2, "node": NODE, "fabric": {"topology": "fat-tree",
                                                 "oversubscription": [1, 2, 3]}},
            "workload": {"kind": "transfer", "transfers": [
                {"name": "t", "src": "n0.gpu0", "dst": "n1.gpu0", "size": "1 GB"}]}})


@pytest.mark.parametrize("tpu, ici, published", [
    # cloud.google.com/tpu/docs/v5e and /v6e, key specifications: "Bisection bandwidth per Pod"
    # of the 256-chip pod, a 16 x 16 2D torus
    ("TPU-v5e", "tpu-ici-v5e", 1.6e12),
    ("TPU-v6e", "tpu-ici-v6e", 3.2e12),
])
def test_tpu_pod_bisection_is_the_published_figure(tpu, ici, published):
    from hwsim.topology import tpu_pod

    G = tpu_pod(tpu=tpu, dims=(16, 16), ici=ici, chips_per_host=8)
    assert bisection_bw(G) == pytest.approx(published)
