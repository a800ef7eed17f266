"""Symmetry folding and closed-form collectives (DESIGN.md, scale by symmetry): folded and
unfolded runs of 64-GPU clusters agree on step time; a group alone on its links takes exactly the
time its flows take; peers' traffic scales the simulated flows on shared links only; a flow on a
channel granted to a closed form is refused."""

from __future__ import annotations

import copy

import pytest
import simpy

import hwsim
from hwsim.engine import Recorder
from hwsim.jobs.collectives import fold_factors
from hwsim.jobs.communicator import CollectiveGroup
from hwsim.jobs.nccl import PARAMS
from hwsim.jobs.system import System
from hwsim.topology import cluster, nodes_of_kind

BASE = {
    "name": "fold64",
    "seed": 0,
    "cluster": {
        "nodes": 8,
        "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8, "cpu": "EPYC-7742",
                 "intra_node": "nvlink3", "nic": "ib-hdr-200", "nics_per_node": 4},
        "fabric": {"topology": "fat-tree", "oversubscription": 4.0},
    },
    "workload": {
        "kind": "training",
        "model": {"layers": 8, "hidden": 2048, "heads": 16, "vocab": 51200,
                  "activation": "gelu"},
        "seq_len": 2048, "precision": "bf16", "global_batch": 64, "optimizer": "adam",
        "steps": 2,
    },
}


def _run(parallelism: dict, fold: bool, batch: int = 64):
    s = copy.deepcopy(BASE)
    s["workload"].update(parallelism=parallelism, fold=fold, global_batch=batch)
    return hwsim.run(s)


@pytest.mark.parametrize("par", [
    {"tp": 2, "pp": 4, "dp": 8, "micro_batch": 1},                      # p2p and DP share NICs
    {"tp": 4, "pp": 2, "dp": 8, "micro_batch": 1, "zero": 3},           # FSDP gathers over IB
    {"tp": 1, "pp": 2, "dp": 32, "micro_batch": 1, "zero": 1},          # rings cross the spine
    {"tp": 8, "pp": 4, "dp": 2, "micro_batch": 1, "virtual_stages": 2},  # interleaved 1F1B
])
def test_folded_and_unfolded_64_gpu_runs_agree_within_1_percent(par):
    batch = 16 if par.get("virtual_stages", 1) > 1 else 64
    full, folded = _run(par, False, batch), _run(par, True, batch)
    assert full.summary["folded"] is False and folded.summary["folded"] is True
    assert full.summary["simulated_ranks"] == 64
    assert folded.summary["simulated_ranks"] == par["pp"]
    a, b = full.summary["step_time_s"], folded.summary["step_time_s"]
    assert b == pytest.approx(a, rel=0.01)
    # the folded trace computes on the simulated ranks only, and holds far fewer events
    ev = folded.events
    assert ev.loc[ev.kind == "compute", "rank"].nunique() == par["pp"]
    assert len(folded.events) < len(full.events) / 4


def test_fold_auto_folds_above_16_devices_only():
    s = copy.deepcopy(BASE)
    s["workload"]["parallelism"] = {"tp": 2, "pp": 2, "micro_batch": 1}
    s["cluster"]["nodes"] = 2
    s["workload"]["global_batch"] = 16
    assert hwsim.run(s).summary["folded"] is False  # 16 devices
    s["cluster"]["nodes"] = 4
    s["workload"]["global_batch"] = 32
    r = hwsim.run(s)
    assert r.summary["folded"] is True and r.summary["simulated_ranks"] == 2


def test_fold_true_is_refused_for_a_data_parallel_only_job():
    s = copy.deepcopy(BASE)
    s["workload"].update(fold=True)
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.fold.*valid: fold: auto or false"):
        hwsim.run(s)


def _system(graph):
    return System(simpy.Environment(), graph, Recorder())


def _time(graph, devices, nbytes, op="allreduce", owner=None):
    system = _system(graph)
    g = CollectiveGroup(system, devices, "j", op=op, owner=owner)
    assert (g.timing(nbytes) is not None) == (owner is not None)
    ev = g.join_all(0, nbytes, "c")
    system.env.run()
    assert ev.processed
    return system.env.now, system


@pytest.mark.parametrize("gpu,link,nodes,op,size", [
    ("A100-SXM4-80GB", "nvlink3", 1, "allreduce", 64e6),
    ("H100-SXM5-80GB", "nvlink4", 1, "allreduce", 1e9),       # NVLS
    ("H100-SXM5-80GB", "nvlink4", 1, "allreduce", 1e4),       # LL
    ("A100-SXM4-80GB", "nvlink3", 4, "allreduce", 256e6),     # rings over 8 rails
    ("A100-SXM4-80GB", "nvlink3", 4, "allgather", 256e6),
    ("A100-SXM4-80GB", "nvlink3", 4, "alltoall", 64e6),
])
def test_closed_form_equals_the_flows_alone(gpu, link, nodes, op, size):
    g = cluster(nodes=nodes, node=dict(gpu=gpu, gpus_per_node=8, intra_node=link,
                                       nic="ib-hdr-200", nics_per_node=8))
    devs = nodes_of_kind(g, "gpu")
    flows, _ = _time(g, devs, size, op)
    closed, system = _time(g, devs, size, op, owner="me")
    assert closed == pytest.approx(flows, rel=1e-9)
    # the closed form records the bytes its flows would carry on the links
    util = system.recorder.utilization_table(closed).to_pandas()
    assert util.loc[util.resource_class != "stream", "bytes"].sum() > size


def test_a_flow_on_a_channel_granted_to_a_closed_form_is_refused():
    g = cluster(nodes=1, node=dict(gpu="A100-SXM4-80GB", gpus_per_node=8, intra_node="nvlink3"))
    devs = nodes_of_kind(g, "gpu")
    system = _system(g)
    grp = CollectiveGroup(system, devs[:2], "j", owner="tp")
    assert grp.timing(1e6) is not None
    with pytest.raises(RuntimeError, match="granted to 'tp' alone"):
        system.transfer(devs[0], devs[1], 1e6)


def test_two_claimants_share_links_so_neither_is_alone():
    g = cluster(nodes=1, node=dict(gpu="A100-SXM4-80GB", gpus_per_node=8, intra_node="nvlink3"))
    devs = nodes_of_kind(g, "gpu")
    system = _system(g)
    a = CollectiveGroup(system, devs[:4], "j", owner="a")
    b = CollectiveGroup(system, devs[2:6], "j", owner="b")
    assert a.timing(1e6) is None and b.timing(1e6) is None
    c = CollectiveGroup(system, devs[6:], "j", owner="c")
    assert c.timing(1e6) is not None


def test_fold_factors_count_the_peers_on_shared_links_only():
    """Two servers on one leaf with a 1-link uplink: the peer rings of the other rails share
    nothing with the simulated ring inside servers, and everything on a shared uplink."""
    g = cluster(nodes=2, node=dict(gpu="A100-SXM4-80GB", gpus_per_node=8, intra_node="nvlink3",
                                   nic="ib-hdr-200", nics_per_node=8))
    devs = nodes_of_kind(g, "gpu")
    system = _system(g)
    pr = PARAMS.protocol("simple")
    rep = [devs[0], devs[8]]            # rail 0 of both servers
    peers = [[devs[i], devs[8 + i]] for i in range(1, 8)]
    (f,) = fold_factors(system, "allreduce", "ring", rep, peers, PARAMS, 0, 0, pr)
    assert min(f.values()) == 1.0       # its own GPU, PCIe and NIC links
    for c, v in f.items():
        # a switch-to-switch hop carries every rail's ring when all rails route through it
        assert 1.0 <= v <= 8.0, (c, v)
    alone = fold_factors(system, "allreduce", "ring", rep, [], PARAMS, 0, 0, pr)[0]
    assert set(alone.values()) == {1.0}
