"""Collectives as flows: closed forms on one switch (plain ring, NCCL-modelled ring, all-gather,
reduce-scatter, all-to-all, broadcast, send/recv), a network step's latency, conservation of
bytes, the estimate ``auto`` uses equals the simulation alone, NCCL's choices, contention."""

from __future__ import annotations

import pytest
import simpy

from hwsim.catalog import get_link
from hwsim.engine import Recorder
from hwsim.jobs.collectives import (allgather, allreduce, alltoall, broadcast, choose,
                                    collective, plan, reduce_scatter, ring_allreduce, sendrecv)
from hwsim.jobs.communicator import CollectiveGroup
from hwsim.jobs.nccl import PARAMS, estimate, protocol_for
from hwsim.jobs.system import System
from hwsim.topology import cluster, from_explicit, nodes_of_kind


def _star(n: int, link: str = "eth-100g"):
    nodes = [{"id": f"g{i}", "kind": "gpu", "spec": "A100-SXM4-80GB", "server": i} for i in range(n)]
    nodes.append({"id": "sw", "kind": "switch"})
    links = [{"a": f"g{i}", "b": "sw", "link": link} for i in range(n)]
    return from_explicit(nodes=nodes, links=links)


def _allreduce_time(graph, rings: list[list[str]], nbytes: float) -> float:
    env = simpy.Environment()
    system = System(env, graph, Recorder())
    for k, ring in enumerate(rings):
        env.process(ring_allreduce(system, ring, nbytes, key=1000 * k))
    env.run()
    return env.now


@pytest.mark.parametrize("n", [2, 4, 8])
def test_ring_allreduce_matches_the_standard_formula(n):
    """2(n-1)/n * S/B + 2(n-1) * alpha, with B the link's achievable bandwidth and alpha the
    latency of one step (two hops through the switch)."""
    spec = get_link("eth-100g")
    B = spec.bw_bytes_per_s * spec.efficiency
    alpha = 2 * spec.latency_s
    S = 256e6
    t = _allreduce_time(_star(n), [[f"g{i}" for i in range(n)]], S)
    assert t == pytest.approx(2 * (n - 1) / n * S / B + 2 * (n - 1) * alpha, rel=1e-9)


def test_ring_allreduce_is_slower_on_an_oversubscribed_fabric():
    """Four concurrent rings (one per local GPU, like NCCL's channels) over 16 servers on a
    two-level fat-tree: with 8:1 oversubscription the leaf uplinks are shared by the rings that
    cross leaves, so the all-reduce takes longer than at 1:1."""
    node = dict(gpu="A100-SXM4-80GB", gpus_per_node=4, intra_node="nvlink3", nic="ib-hdr-200",
                nics_per_node=4)
    times = {}
    for over in (1.0, 8.0):
        g = cluster(nodes=16, node=node, fabric=dict(topology="fat-tree", oversubscription=over,
                                                      leaf_radix=32))
        rings = [[f"n{s}.gpu{k}" for s in range(16)] for k in range(4)]
        times[over] = _allreduce_time(g, rings, 512e6)
    assert times[8.0] > 1.5 * times[1.0]


def test_collective_group_waits_for_every_rank_and_runs_in_order():
    env = simpy.Environment()
    rec = Recorder()
    system = System(env, _star(4), rec)
    group = CollectiveGroup(system, [f"g{i}" for i in range(4)], "job")
    done_at = {}

    def rank(r, delay):
        yield env.timeout(delay)
        a = group.join("a", r, 100e6, "a")
        b = group.join("b", r, 100e6, "b")
        yield a
        done_at[(r, "a")] = env.now
        yield b
        done_at[(r, "b")] = env.now

    for r in range(4):
        env.process(rank(r, 0.01 * r))
    env.run()
    one = _run(_star(4), lambda s: allreduce(s, [f"g{i}" for i in range(4)], 100e6))[0]
    # starts when the last rank joins (t = 0.03); b runs after a on the same stream
    assert [done_at[(r, "a")] for r in range(4)] == pytest.approx([0.03 + one] * 4)
    assert [done_at[(r, "b")] for r in range(4)] == pytest.approx([0.03 + 2 * one] * 4)
    ev = rec.events_frame()
    coll = ev[ev.kind == "collective"]
    assert len(coll) == 8 and set(coll.category) == {"comm:ethernet"}


# -- NCCL-modelled collectives ---------------------------------------------------------------------
def _run(graph, body):
    env = simpy.Environment()
    rec = Recorder()
    system = System(env, graph, rec)
    env.process(body(system))
    env.run()
    return env.now, rec.events_frame(), system


def _star_bw_alpha():
    spec = get_link("eth-100g")
    return spec.bw_bytes_per_s * spec.efficiency, 2 * spec.latency_s  # two hops through sw


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("S", [256e6, 1e6])
def test_nccl_ring_matches_its_closed_form(n, S):
    """Simple: 2(n-1) (S/(nB) + alpha + net + min(S/n, slice)/B); net, the software latency of a
    step through a NIC, is 0 here (the star has no NIC). LL: 2(n-1) (S/(n B eff_LL) + alpha)."""
    B, alpha = _star_bw_alpha()
    net, f, ll = 0.0, PARAMS.slice_bytes, PARAMS.ll_efficiency
    devs = [f"g{i}" for i in range(n)]
    simple = _run(_star(n), lambda s: allreduce(s, devs, S, algorithm="ring", protocol="simple"))[0]
    assert simple == pytest.approx(2 * (n - 1) * (S / (n * B) + alpha + net + min(S / n, f) / B),
                                   rel=1e-9)
    low = _run(_star(n), lambda s: allreduce(s, devs, S, algorithm="ring", protocol="ll"))[0]
    assert low == pytest.approx(2 * (n - 1) * (S / (n * B * ll) + alpha), rel=1e-9)


def test_a_network_step_pays_the_nic_software_latency():
    """Two servers of one GPU, one NIC each: both ring flows cross the network, so each of the 2
    steps costs S/2/B + path latency + net_step_latency_s + min(S/2, slice)/B."""
    g = cluster(nodes=2, node=dict(gpu="B200", gpus_per_node=1, nic="ib-ndr-400",
                                   host_link="pcie5-x16"))
    S = 64e6
    t, _, system = _run(g, lambda s: allreduce(s, ["n0.gpu0", "n1.gpu0"], S, algorithm="ring",
                                               protocol="simple"))
    chans, _, lat, _ = system.route("n0.gpu0", "n1.gpu0")
    B = min(system.net.channels[c].capacity for c in chans)
    assert t == pytest.approx(2 * (S / 2 / B + lat + PARAMS.net_step_latency_s
                                   + min(S / 2, PARAMS.slice_bytes) / B), rel=1e-9)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_other_collectives_match_their_closed_forms(n):
    B, alpha = _star_bw_alpha()
    f, S = PARAMS.slice_bytes, 64e6
    devs = [f"g{i}" for i in range(n)]
    kw = dict(protocol="simple")
    ring = (n - 1) * (S / (n * B) + alpha + min(S / n, f) / B)
    for op in (allgather, reduce_scatter):
        assert _run(_star(n), lambda s: op(s, devs, S, **kw))[0] == pytest.approx(ring, rel=1e-9)
    d = (n - 1) * S / (n * B)  # each uplink carries n-1 flows of S/n
    a2a = d + alpha + d * min(1.0, f / ((n - 1) * S / n))
    assert _run(_star(n), lambda s: alltoall(s, devs, S, **kw))[0] == pytest.approx(a2a, rel=1e-9)
    bcast = S / B + (n - 1) * (alpha + min(S, f) / B)  # pipelined chain from the root
    assert _run(_star(n), lambda s: broadcast(s, devs, S, root=n - 1, **kw))[0] == pytest.approx(
        bcast, rel=1e-9)
    p2p = S / B + alpha + min(S, f) / B
    assert _run(_star(n), lambda s: sendrecv(s, "g0", devs[-1], S, **kw))[0] == pytest.approx(
        p2p, rel=1e-9)


def _b200(nodes: int):
    return cluster(nodes=nodes, node=dict(gpu="B200", gpus_per_node=8, intra_node="nvlink5",
                                          nic="ib-ndr-400", nics_per_node=8, host_link="pcie5-x16"))


@pytest.mark.parametrize("alg", ["ring", "hierarchical", "tree"])
@pytest.mark.parametrize("S", [2**26, 2**34])
def test_large_messages_stay_o_n_flows_and_conserve_bytes(alg, S):
    """However large the message: at most ~2 x rails flows per rank and phase (a phase's
    identical steps move as one flow per pair: ring, 8 rails x 32 ranks once, carrying the
    2(n-1) steps' bytes), and the bytes each algorithm must move."""
    g = _b200(4)
    devs = nodes_of_kind(g, "gpu")
    t, ev, _ = _run(g, lambda s: allreduce(s, devs, S, algorithm=alg, name="ar"))
    flows = ev[ev.kind == "flow"]
    per_step = flows.groupby("name").size()
    assert per_step.max() <= 2.2 * 8 * len(devs)
    if alg == "ring":  # every rank sends 2(n-1) chunks of S/n
        assert set(per_step) == {8 * 32} and len(per_step) == 1
        assert flows.bytes.sum() == pytest.approx(32 * 2 * 31 * S / 32)
    if alg == "hierarchical":  # RS + AG inside (7/8 S per GPU each), AR across (2 x 3/4 of S/8)
        assert flows.bytes.sum() == pytest.approx(32 * (2 * 7 / 8 * S + 2 * 3 / 4 * S / 8))
    if alg == "tree":  # per rail: chains carry S/8 up and down, trees S/16 each way per edge
        chain = 4 * 7 * 2 * S / 8 * 8
        trees = 2 * 3 * 2 * S / 16 * 8
        assert flows.bytes.sum() == pytest.approx(chain + trees)
    assert t > 0


def test_nvls_moves_s_plus_s_over_n_each_way_per_gpu():
    g = cluster(nodes=1, node=dict(gpu="H100-SXM5-80GB", gpus_per_node=8, intra_node="nvlink4"))
    devs = nodes_of_kind(g, "gpu")
    S = 2**30
    t, ev, system = _run(g, lambda s: allreduce(s, devs, S, algorithm="nvls"))
    flows = ev[ev.kind == "flow"]
    assert flows.bytes.sum() == pytest.approx(2 * 8 * S * (1 + 1 / 8))
    cap = system.net.channels[("n0.gpu0", "n0.nvswitch")].capacity * PARAMS.nvls_efficiency
    assert t == pytest.approx(S * (1 + 1 / 8) / cap + PARAMS.nvls_latency_s, rel=1e-9)


@pytest.mark.parametrize("alg", ["ring", "tree", "hierarchical"])
@pytest.mark.parametrize("proto", ["ll", "simple"])
def test_the_estimate_auto_uses_equals_the_simulation_alone(alg, proto):
    g = _b200(4)
    devs = nodes_of_kind(g, "gpu")
    S = 2**24
    t, _, system = _run(g, lambda s: allreduce(s, devs, S, algorithm=alg, protocol=proto))
    phases = plan(system, "allreduce", alg, devs, S, {d: i for i, d in enumerate(devs)})
    assert estimate(system, phases, protocol_for(system, devs, alg, proto, PARAMS)) == \
        pytest.approx(t, rel=1e-6)


def test_auto_chooses_as_nccl():
    """NVLS on an H100 NVSwitch for large messages, ring for small ones; never NVLS on A100
    (nvlink3); across B200 servers a tree for small messages, a ring for large ones."""
    def pick(graph, S):
        system = System(simpy.Environment(), graph, Recorder())
        return choose(system, nodes_of_kind(graph, "gpu"), "allreduce", S)
    h100 = cluster(nodes=1, node=dict(gpu="H100-SXM5-80GB", gpus_per_node=8, intra_node="nvlink4"))
    a100 = cluster(nodes=1, node=dict(gpu="A100-SXM4-80GB", gpus_per_node=8, intra_node="nvlink3"))
    assert pick(h100, 2**30) == ("nvls", "nvls")
    assert pick(h100, 2**12)[0] == "ring"
    assert pick(a100, 2**30) == ("ring", "simple")
    assert pick(_b200(4), 2**14)[0] == "tree"
    assert pick(_b200(4), 2**24) == ("ring", "simple")
    assert pick(_b200(1), 2**30) == ("ring", "simple")  # no NVLS on nvlink5 in auto


def test_a_congested_fabric_slows_the_modelled_collectives():
    node = dict(gpu="A100-SXM4-80GB", gpus_per_node=4, intra_node="nvlink3", nic="ib-hdr-200",
                nics_per_node=4)
    for alg in ("ring", "hierarchical"):
        times = {}
        for over in (1.0, 8.0):
            g = cluster(nodes=16, node=node, fabric=dict(topology="fat-tree",
                                                         oversubscription=over, leaf_radix=32))
            devs = nodes_of_kind(g, "gpu")
            times[over] = _run(g, lambda s: allreduce(s, devs, 512e6, algorithm=alg))[0]
        assert times[8.0] > 1.5 * times[1.0], alg


def test_collective_group_runs_its_op_and_algorithm():
    env = simpy.Environment()
    system = System(env, _star(4), Recorder())
    group = CollectiveGroup(system, [f"g{i}" for i in range(4)], "job", op="allgather",
                            algorithm="ring")
    ends = [group.join("k", r, 64e6, "ag") for r in range(4)]
    env.run()
    B, alpha = _star_bw_alpha()
    want = 3 * (64e6 / (4 * B) + alpha + min(16e6, PARAMS.slice_bytes) / B)
    assert all(e.processed for e in ends) and env.now == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError):
        CollectiveGroup(system, ["g0", "g1"], "job", op="allgather", algorithm="tree")
    with pytest.raises(ValueError):
        env.process(collective(system, "allreduce", ["g0", "g1"], 1e6, algorithm="nvls"))
        env.run()
