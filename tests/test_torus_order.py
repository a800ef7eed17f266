"""``parallelism.torus_order``: which TPU torus axes consecutive ranks (a tensor-parallel group)
step along, as a JAX device mesh maps logical onto physical axes. A group on a whole axis (a
closed ICI ring) is faster than one on part of a longer axis; bad orders get pinned errors."""

from __future__ import annotations

import copy

import pytest

import hwsim
from hwsim.exceptions import ScenarioError
from hwsim.scenario import load_scenario
from hwsim.scenario.build import scenario_graph
from hwsim.topology import compute_devices, torus_ordered

BASE = {
    "name": "torus-order", "seed": 0,
    "cluster": {"nodes": 16, "node": {"tpu": "TPU-v5p", "gpus_per_node": 4, "cpu": "EPYC-7742"},
                "fabric": {"topology": "torus", "dims": [8, 4, 2], "link": "tpu-ici-v5p"}},
    "workload": {"kind": "training", "model": {"preset": "llama2-7b"}, "seq_len": 2048,
                 "precision": "bf16", "global_batch": 64,
                 "parallelism": {"tp": 4, "micro_batch": 1}, "optimizer": "adamw", "steps": 1},
}


def _with(order=None, **cluster) -> dict:
    d = copy.deepcopy(BASE)
    if order is not None:
        d["workload"]["parallelism"]["torus_order"] = order
    d["cluster"].update(cluster)
    return d


def _step(order=None) -> float:
    return hwsim.run(_with(order)).summary["step_time_s"]


@pytest.mark.parametrize("order", [["x", "y", "z"], ["y", "z", "x"], ["z", "x", "y"]])
def test_consecutive_ranks_step_along_the_first_axis_then_the_next(order):
    g = scenario_graph(load_scenario(_with()))
    ranks = torus_ordered(g, compute_devices(g, "tpu"), order)
    coords = [g.nodes[d]["coords"] for d in ranks]
    axes = ["xyz".index(a) for a in order]
    dims = (8, 4, 2)
    assert sorted(coords) == sorted(set(coords)) and len(coords) == 64  # every chip once
    for i, c in enumerate(coords):  # rank i = mixed-radix number over the axes, first fastest
        rest = i
        for a in axes:
            assert c[a] == rest % dims[a]
            rest //= dims[a]


def test_a_tensor_group_on_a_whole_axis_beats_one_on_half_an_axis():
    # tp 4 along y (4 chips: a closed ring with its wrap-around link) against along x (4 of 8
    # chips: an open line) and the default (z fastest: a 2 x 2 block of y and z)
    along_y, along_x, default = _step(["y", "x", "z"]), _step(["x", "y", "z"]), _step()
    assert along_y < default < along_x
    assert default == _step(["z", "y", "x"])  # the natural order of the chips' names


def test_an_order_needs_a_torus():
    d = _with(["x", "y", "z"])
    d["cluster"] = {"nodes": 1, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8},
                    "fabric": {"topology": "fat-tree"}}
    d["workload"]["global_batch"] = 8
    del d["cluster"]["fabric"]
    with pytest.raises(ScenarioError, match=r"torus_order.*not a chip of a TPU torus.*valid: "
                                            r"a cluster with fabric topology: torus"):
        hwsim.run(d)


def test_an_order_names_every_axis_once():
    with pytest.raises(ScenarioError, match=r"torus_order.*must name each axis of the 3-D torus "
                                            r"once; valid: an order of x, y, z"):
        hwsim.run(_with(["x", "y"]))
    with pytest.raises(ScenarioError, match=r"torus_order.*names an axis twice"):
        hwsim.run(_with(["x", "x", "z"]))
    with pytest.raises(ScenarioError, match=r"torus_order"):
        hwsim.run(_with(["x", "y", "w"]))


_ONE_LAYOUT = {"tp": [4], "pp": [1], "micro_batch": [1], "virtual_stages": [1],
               "recompute": ["none"], "zero": [0], "sequence_parallel": [False]}


def test_the_search_tries_every_torus_order_and_ranks_the_closed_ring_first():
    from hwsim.planning.search import layout_text, search

    frame = search(BASE, space=_ONE_LAYOUT, budget="all")
    assert sorted(frame["torus_order"]) == ["xyz", "xzy", "yxz", "yzx", "zxy", "zyx"]
    assert (frame["status"] == "simulated").all()
    best = frame.iloc[0]
    assert best["torus_order"][0] == "y"  # tp 4 on the whole y axis: a closed ring
    assert best["step_time_s"] == pytest.approx(_step(["y", "x", "z"]), rel=1e-12)
    worst = frame.iloc[-1]
    assert worst["torus_order"][0] == "x" and worst["step_time_s"] > best["step_time_s"]
    assert layout_text(best).endswith(f"torus {best['torus_order']}")


def test_torus_orders_in_a_search_space_are_checked():
    from hwsim.planning.search_space import check_space, enumerate_layouts, with_layout

    assert check_space({"torus_order": [["y", "x", "z"], "yxz", "xy"]}) == {
        "torus_order": ("yxz", "xy")}
    for bad in (["yy"], ["w"], [""], [3]):  # (None: the base order, valid)
        with pytest.raises(ScenarioError) as err:
            check_space({"torus_order": bad})
        assert err.value.field == "space.torus_order" and "each once" in str(err.value)
    rows = enumerate_layouts(BASE, dict(_ONE_LAYOUT, torus_order=["xy", "zyx"]), invalid=True)
    reasons = {r["torus_order"]: r["reason"] for r in rows}
    assert reasons["zyx"] == "" and "each axis of the 3-D torus once" in reasons["xy"]
    gpu = enumerate_layouts("scenarios/gpt-350m-8xa100.yaml", {
        "tp": [1], "pp": [1], "micro_batch": [1], "virtual_stages": [1],
        "torus_order": ["xyz"]}, invalid=True)
    assert gpu
    assert all("needs a TPU torus" in r["reason"] for r in gpu)
    s = load_scenario(BASE)
    layout = dict(rows[0], torus_order="yxz")
    assert with_layout(s, layout)["workload"]["parallelism"]["torus_order"] == ["y", "x", "z"]
