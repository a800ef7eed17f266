"""XLA's collectives on a TPU torus (hwsim.jobs.collectives, algorithm ``torus``): which groups
qualify, the closed form alone on the slice, bytes conserved, never slower than a ring, and
``auto`` choosing it."""

from __future__ import annotations

import pytest
import simpy

from hwsim.catalog import get_link
from hwsim.engine import Recorder
from hwsim.jobs.collectives import choose, collective, plan
from hwsim.jobs.system import System
from hwsim.topology import tpu_pod
from hwsim.topology.query import torus_rings


def _chips(G):
    return sorted((n for n, d in G.nodes(data=True) if d["kind"] == "tpu"),
                  key=lambda n: G.nodes[n]["coords"])


def _run(G, devices, op, nbytes, algorithm):
    env = simpy.Environment()
    system = System(env, G, Recorder())
    env.process(collective(system, op, devices, nbytes, algorithm=algorithm))
    env.run()
    return env.now, system


def test_which_groups_are_whole_axes():
    G = tpu_pod(tpu="TPU-v4", dims=(4, 4, 2), ici="tpu-ici-v4")
    chips = _chips(G)
    at = {G.nodes[c]["coords"]: c for c in chips}
    axes, across = torus_rings(G, chips)
    assert [len(a) for a in axes] == [8, 8, 16] and across == []  # rings per axis
    x_line = [at[(x, 1, 0)] for x in range(4)]
    assert torus_rings(G, x_line) == ([[x_line]], [])
    plane = [at[(x, y, 1)] for x in range(4) for y in range(4)]
    assert [len(r) for r in torus_rings(G, plane)[0]] == [4, 4]
    assert torus_rings(G, x_line[:3]) is None  # part of an axis: no wrap-around ring
    assert torus_rings(G, [at[(0, 0, 0)], at[(1, 1, 0)]]) is None  # not a product
    mesh = tpu_pod(tpu="TPU-v4", dims=(4, 4), ici="tpu-ici-v4", wraparound=False)
    assert torus_rings(mesh, _chips(mesh)) is None


@pytest.mark.parametrize("dims", [(4, 4, 4), (8, 8), (2, 2, 2), (4, 4, 2)])
def test_allreduce_alone_matches_the_closed_form(dims):
    """Per axis of n chips: n-1 steps, D/(2n) to each neighbour at the per-link rate, the data
    shrinking n-fold an axis, all-gathers mirrored, one hop latency a step. Axes of one size:
    the data in k parts taking the axes in rotated orders at once (each phase one axis a part,
    on links of its own)."""
    G = tpu_pod(tpu="TPU-v4", dims=dims, ici="tpu-ici-v4")
    link = get_link("tpu-ici-v4")
    per_link = link.bw_bytes_per_s / (2 * len(dims)) * link.efficiency
    # (a ring of 2 chips: both directions reach the one neighbour, over the doubled link the
    # builder lays for the wrap-around: two flows on twice the capacity, the same rate each)
    D = 1e9
    parts = len(dims) if len(set(dims)) == 1 else 1
    want, data = 0.0, D / parts
    for n in dims:
        want += 2 * (n - 1) * (data / (2 * n) / per_link + link.latency_s)
        data /= n
    got, _ = _run(G, _chips(G), "allreduce", D, "torus")
    assert got == pytest.approx(want, rel=1e-6)


def test_bytes_conserved_and_halves():
    G = tpu_pod(tpu="TPU-v4", dims=(4, 4), ici="tpu-ici-v4")
    chips = _chips(G)
    rank_of = {c: i for i, c in enumerate(chips)}
    D = 64e6
    env = simpy.Environment()
    system = System(env, G, Recorder())
    phases = {op: plan(system, op, "torus", chips, D, rank_of)
              for op in ("reduce_scatter", "allgather", "allreduce")}
    moved = {op: sum(f.nbytes * ph.steps for ph in p for f in ph.flows)
             for op, p in phases.items()}
    # a reduce-scatter moves (n-1)/n of the data per chip, as a ring does: 16 chips x D x 15/16
    assert moved["reduce_scatter"] == pytest.approx(16 * D * 15 / 16)
    assert moved["allgather"] == pytest.approx(moved["reduce_scatter"])
    assert moved["allreduce"] == pytest.approx(2 * moved["reduce_scatter"])


@pytest.mark.parametrize("op", ["allreduce", "allgather", "reduce_scatter"])
def test_never_slower_than_a_ring_and_auto_takes_it(op):
    G = tpu_pod(tpu="TPU-v4", dims=(4, 4, 4), ici="tpu-ici-v4")
    chips = _chips(G)
    for nbytes in (1e6, 1e8, 1e9):
        torus, system = _run(G, chips, op, nbytes, "torus")
        ring, _ = _run(G, chips, op, nbytes, "ring")
        assert torus <= ring
        assert choose(system, chips, op, nbytes)[0] == "torus"


def test_not_a_torus_group_is_an_error_and_not_eligible():
    G = tpu_pod(tpu="TPU-v4", dims=(4, 4), ici="tpu-ici-v4")
    chips = _chips(G)[:3]
    env = simpy.Environment()
    system = System(env, G, Recorder())
    with pytest.raises(ValueError, match="torus needs chips filling whole axes"):
        plan(system, "allreduce", "torus", chips, 1e6, {c: i for i, c in enumerate(chips)})
    assert choose(system, chips, "allreduce", 1e6)[0] != "torus"


def _multislice(nic="eth-100g", nics=2, slices=2):
    return tpu_pod(tpu="TPU-v5e", dims=(4, 4), ici="tpu-ici-v5e", chips_per_host=8,
                   slices=slices, nic=nic, nics_per_node=nics)


def test_multislice_pods_share_only_the_data_centre_network():
    G = _multislice()
    chips = _chips(G)
    assert len(chips) == 32 and {G.nodes[c]["slice"] for c in chips} == {0, 1}
    assert {G.nodes[c]["server"] for c in chips} == set(range(4))  # 2 hosts a slice
    assert all(c.startswith(f"s{G.nodes[c]['slice']}.tpu") for c in chips)
    for u, v, d in G.edges(data=True):  # no ICI link joins two slices
        if d["link_class"] == "ici":
            assert G.nodes[u]["slice"] == G.nodes[v]["slice"]
    axes, across = torus_rings(G, chips)
    assert [len(a) for a in axes] == [8, 8]  # 4 rings an axis in each of 2 slices
    assert len(across) == 16 and all(
        [G.nodes[c]["slice"] for c in pair] == [0, 1]
        and G.nodes[pair[0]]["coords"] == G.nodes[pair[1]]["coords"] for pair in across)
    one = [c for c in chips if G.nodes[c]["slice"] == 0]
    assert torus_rings(G, one)[1] == []
    assert torus_rings(G, one[:8] + [c for c in chips if G.nodes[c]["slice"] == 1][8:]) is None


def test_multislice_allreduce_crosses_the_dcn_once_per_shard():
    """In-slice reduce-scatter, an all-reduce of the 1/16 shards between the two slices over the
    hosts' NICs, in-slice all-gather: the DCN carries 2 x (S-1)/S x D/16 per chip; a faster
    network never slows it, and it beats one ring over the 32 chips."""
    D = 1e9
    slow, system = _run(_multislice("eth-25g"), _chips(_multislice("eth-25g")), "allreduce", D,
                        "torus")
    fast, _ = _run(_multislice("eth-100g"), _chips(_multislice("eth-100g")), "allreduce", D,
                   "torus")
    one_slice, _ = _run(_multislice(slices=1), _chips(_multislice(slices=1)), "allreduce", D,
                        "torus")
    ring, _ = _run(_multislice(), _chips(_multislice()), "allreduce", D, "ring")
    assert one_slice < fast < slow
    assert fast < ring
    G = _multislice()
    phases = plan(System(simpy.Environment(), G, Recorder()), "allreduce", "torus", _chips(G), D,
                  {c: i for i, c in enumerate(_chips(G))})
    cross = phases[len(phases) // 2]
    assert cross.steps == 2 and len(cross.flows) == 32
    assert {f.nbytes for f in cross.flows} == {D / 16 / 2}
    assert choose(system, _chips(_multislice("eth-25g")), "allreduce", D)[0] == "torus"


def test_multislice_needs_nics_and_whole_slices():
    from hwsim.exceptions import ScenarioError
    from hwsim.topology import cluster

    with pytest.raises(ScenarioError, match="joined by the data-centre network"):
        tpu_pod(tpu="TPU-v5e", dims=(4, 4), ici="tpu-ici-v5e", chips_per_host=8, slices=2)
    node = {"tpu": "TPU-v5e", "gpus_per_node": 8, "nic": "eth-100g", "nics_per_node": 2}
    with pytest.raises(ScenarioError, match="3 slices do not divide the 4 hosts") as err:
        cluster(nodes=4, node=node, fabric={"topology": "torus", "dims": [4, 4], "slices": 3})
    assert err.value.field == "fabric.slices"
    with pytest.raises(ScenarioError, match="applies only to topology 'torus'"):
        cluster(nodes=4, node={**node, "tpu": None, "gpu": "H100-SXM5-80GB"},
                fabric={"topology": "fat-tree", "slices": 2})
    G = cluster(nodes=4, node=node, fabric={"topology": "torus", "dims": [4, 4], "slices": 2})
    assert len(_chips(G)) == 32


@pytest.mark.parametrize("tpu, ici, published", [
    # cloud.google.com/tpu/docs/v5e and /v6e: "All-reduce bandwidth per Pod" of the 256-chip
    # pod (16 x 16 torus), every chip's ICI bandwidth together
    ("TPU-v5e", "tpu-ici-v5e", 51.2e12),
    ("TPU-v6e", "tpu-ici-v6e", 102.4e12),
])
def test_pod_allreduce_keeps_every_ici_link_busy(tpu, ici, published):
    """A large all-reduce over a whole pod moves its bytes at the published all-reduce bandwidth
    times the links' efficiency (the model's every link busy both ways in every phase), to 0.5 %
    (the steps' hop latencies)."""
    G = tpu_pod(tpu=tpu, dims=(16, 16), ici=ici, chips_per_host=8)
    chips = _chips(G)
    D = 4e9
    took, system = _run(G, chips, "allreduce", D, "torus")
    moved = sum(f.nbytes * ph.steps
                for ph in plan(system, "allreduce", "torus", chips, D,
                               {c: i for i, c in enumerate(chips)}) for f in ph.flows)
    assert moved / took == pytest.approx(published * get_link(ici).efficiency, rel=5e-3)
