"""Ring all-reduce as flows: the closed form on one switch, and contention on a fabric."""

from __future__ import annotations

import pytest
import simpy

from hwsim.catalog import get_link
from hwsim.engine import Recorder
from hwsim.jobs.collectives import CollectiveGroup, ring_allreduce
from hwsim.jobs.system import System
from hwsim.topology import cluster, from_explicit


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
    one = _allreduce_time(_star(4), [[f"g{i}" for i in range(4)]], 100e6)
    # starts when the last rank joins (t = 0.03); b runs after a on the same stream
    assert [done_at[(r, "a")] for r in range(4)] == pytest.approx([0.03 + one] * 4)
    assert [done_at[(r, "b")] for r in range(4)] == pytest.approx([0.03 + 2 * one] * 4)
    ev = rec.events_frame()
    coll = ev[ev.kind == "collective"]
    assert len(coll) == 8 and set(coll.category) == {"comm:ethernet"}
