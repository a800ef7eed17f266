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
    assert [len(a) for a in torus_rings(G, chips)] == [8, 8, 16]  # rings per axis
    x_line = [at[(x, 1, 0)] for x in range(4)]
    assert torus_rings(G, x_line) == [[x_line]]
    plane = [at[(x, y, 1)] for x in range(4) for y in range(4)]
    assert [len(r) for r in torus_rings(G, plane)] == [4, 4]
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
