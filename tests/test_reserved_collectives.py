"""A collective that shares its links runs in closed form while they are idle and becomes flows
when another flow starts there (hwsim/jobs/phases.py ``run_collective``, FlowNetwork.reserve):
the same times, flow events and channel bytes as flows throughout (``closed_form: false``)."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
import yaml

import hwsim
from hwsim.engine import FlowNetwork, Recorder, Reservation
from hwsim.jobs.communicator import CollectiveGroup
from hwsim.jobs.system import System
from hwsim.topology import cluster, nodes_of_kind
from scenario_edit import edited


# -- the engine's reservations ----------------------------------------------------------------

def test_a_flow_on_a_reserved_channel_turns_the_work_into_flows_first():
    env = simpy.Environment()
    net = FlowNetwork(env)
    net.add_channels([("a", 1e9, ""), ("b", 1e9, "")])
    a, b = net.channels["a"], net.channels["b"]
    seen = []

    def contend():  # the work's bytes left start now, before the new flow is put on "a"
        seen.append((env.now, a.reserved, len(a.flows) + a.pending))
        net.transfer(5e8, ["a"], resource="work")

    held = Reservation([a, b], contend)
    assert net.reserve(held) and a.reserved is held and b.reserved is held
    assert not net.reserve(Reservation([b], lambda: None))  # held already

    def later():
        yield env.timeout(1.0)
        net.transfer(1e9, ["a"], resource="new")
    env.process(later())
    env.run()
    assert seen == [(1.0, None, 0)] and a.reserved is None and b.reserved is None
    # both share "a" from t = 1: the work's 0.5 GB at 0.5 GB/s, then the new flow alone
    assert env.now == pytest.approx(1.0 + 1.0 + 0.5)
    net.release(held)  # given back already: nothing happens


def test_busy_channels_cannot_be_reserved_and_released_ones_can():
    env = simpy.Environment()
    net = FlowNetwork(env)
    net.add_channel("a", 1e9)
    net.transfer(1e9, ["a"])
    a = net.channels["a"]
    assert not net.reserve(Reservation([a]))  # a flow starting at this instant
    env.run()
    held = Reservation([a], lambda: pytest.fail("no flow starts"))
    assert net.reserve(held)
    net.release(held)
    assert a.reserved is None and held.channels is None
    assert net.reserve(Reservation([a]))


# -- one collective against a competing flow ----------------------------------------------------

def _h100(nodes: int = 1):
    return cluster(nodes=nodes, node=dict(gpu="H100-SXM5-80GB", gpus_per_node=8,
                                          intra_node="nvlink4", nic="ib-ndr-400",
                                          nics_per_node=8))


def _race(closed_form: bool, at: float, op: str, nbytes: float, other: float):
    """A 4-GPU group's *op* of *nbytes* from t = 0 and, at *at*, a flow of *other* bytes from one
    of its GPUs to another GPU of the server: the collective's end, its recorder's events and
    each channel's bytes (levels and pulses integrated)."""
    g = _h100()
    gpus = nodes_of_kind(g, "gpu")
    env = simpy.Environment()
    rec = Recorder()
    system = System(env, g, rec)
    group = CollectiveGroup(system, gpus[:4], "job", op=op, owner="tp",
                            closed_form=closed_form)
    system.claim("other", [c for c in system.net.channels])  # never alone: no static form
    done = group.join_all("k", nbytes, "coll")
    ends = {}
    done.callbacks.append(lambda _e: ends.setdefault("coll", env.now))

    def competitor():
        yield env.timeout(at)
        yield system.transfer(gpus[1], gpus[6], other, name="dp")
        ends["dp"] = env.now
    env.process(competitor())
    env.run()
    ev = rec.events_frame().sort_values(["kind", "name", "resource", "start_s"])
    loads = rec.loads_frame()
    end = env.now
    per_channel = {}
    for ch, part in loads.groupby("resource"):
        t = np.r_[part["time_s"].to_numpy(), end]
        per_channel[ch] = float((np.diff(t) * part["load_bytes_per_s"].to_numpy()).sum())
    return ends, ev.reset_index(drop=True), per_channel


@pytest.mark.parametrize("op,nbytes", [("allreduce", 64e6), ("allgather", 32e6),
                                       ("reduce_scatter", 2e6)])
@pytest.mark.parametrize("frac", [0.0, 0.2, 0.55, 0.97, 1.5])
def test_a_flow_arriving_mid_collective_gives_the_flows_answer(op, nbytes, frac):
    alone, _, _ = _race(False, 10.0, op, nbytes, 1e3)  # the collective alone: its time
    at = frac * alone["coll"]
    a_ends, a_ev, a_bytes = _race(True, at, op, nbytes, 256e6)
    b_ends, b_ev, b_bytes = _race(False, at, op, nbytes, 256e6)
    assert a_ends["coll"] == pytest.approx(b_ends["coll"], rel=1e-9)
    assert a_ends["dp"] == pytest.approx(b_ends["dp"], rel=1e-9)
    assert len(a_ev) == len(b_ev)
    assert list(a_ev["resource"]) == list(b_ev["resource"])
    for col in ("start_s", "end_s", "bytes"):
        np.testing.assert_allclose(a_ev[col], b_ev[col], rtol=1e-9, atol=1e-15)
    assert set(a_bytes) == set(b_bytes)
    for ch, v in b_bytes.items():
        assert a_bytes[ch] == pytest.approx(v, rel=1e-6, abs=1.0), ch


def test_a_collective_on_idle_links_runs_no_flow():
    g = _h100()
    gpus = nodes_of_kind(g, "gpu")
    env = simpy.Environment()
    system = System(env, g, Recorder())
    group = CollectiveGroup(system, gpus[:4], "job", owner="tp")
    system.claim("other", list(system.net.channels))
    group.join_all("k", 64e6, "ar")
    env.run()
    assert system.net.flows_finished == 0 and env.now > 0


# -- whole training runs -------------------------------------------------------------------------

BASE = {
    "name": "reserved",
    "cluster": {"nodes": 2, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8,
                                     "intra_node": "nvlink4", "nic": "ib-ndr-400",
                                     "nics_per_node": 8}},
    "workload": {"kind": "training", "precision": "bf16", "global_batch": 32, "seq_len": 2048,
                 "model": {"layers": 8, "hidden": 2048, "heads": 16, "vocab": 51200},
                 "steps": 1, "parallelism": {"tp": 4, "pp": 2, "micro_batch": 2}},
}

LAYOUTS = [
    {},
    {"workload.parallelism": {"tp": 2, "pp": 2, "micro_batch": 2, "sequence_parallel": True}},
    {"workload.parallelism": {"tp": 4, "pp": 2, "micro_batch": 1, "virtual_stages": 2}},
    {"workload.parallelism": {"tp": 4, "pp": 1, "micro_batch": 2, "zero": 1}},
    {"workload.parallelism": {"tp": 8, "pp": 2, "micro_batch": 2},
     "workload.collective.algorithm": "ring"},
    {"workload.parallelism": {"tp": 2, "pp": 4, "micro_batch": 2, "zero": 1},
     "workload.precision": "fp8"},
]


def _run(tmp_path, changes: dict, closed_form: bool):
    s = edited(BASE, {**changes, "workload.collective.closed_form": closed_form})
    path = tmp_path / f"s{int(closed_form)}.yaml"
    path.write_text(yaml.safe_dump(s))
    return hwsim.run(path)


@pytest.mark.parametrize("changes", LAYOUTS, ids=lambda c: yaml.safe_dump(c).strip()[:60])
def test_training_layouts_give_the_same_answer_either_way(tmp_path, changes):
    a, b = _run(tmp_path, changes, True), _run(tmp_path, changes, False)
    assert b.summary["step_time_s"] > 0
    for key, v in b.summary.items():
        if key == "flows":  # flows simulated: fewer in closed form
            assert a.summary[key] <= v
        elif isinstance(v, float):
            assert a.summary[key] == pytest.approx(v, rel=1e-9, abs=1e-12), key
        else:
            assert a.summary[key] == v, key
    cols = ["start_s", "end_s", "resource", "kind", "name", "rank", "bytes"]
    ea = a.events[cols].sort_values(cols).reset_index(drop=True)
    eb = b.events[cols].sort_values(cols).reset_index(drop=True)
    assert len(ea) == len(eb)
    for col in ("start_s", "end_s", "bytes"):
        np.testing.assert_allclose(ea[col], eb[col], rtol=1e-9, atol=1e-12)
    # every channel moves the same bytes (in closed form at a phase's mean rate, so the bins
    # inside a phase may differ)
    ua = a.utilization.groupby("resource")["bytes"].sum()
    ub = b.utilization.groupby("resource")["bytes"].sum()
    assert list(ua.index) == list(ub.index)
    np.testing.assert_allclose(ua, ub, rtol=1e-6, atol=1.0)
