"""Hardware that is not uniform: mixed node groups, stragglers, degraded links, and two sites
joined by a WAN (training across them, staging a dataset between them)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import hwsim
from hwsim.catalog import get_device, get_link, get_storage
from hwsim.exceptions import ScenarioError
from hwsim.jobs.parallel import ParallelTrainingJob, parallel_plan
from hwsim.jobs.system import System
from hwsim.engine import Recorder
from hwsim.scenario import load_scenario
from hwsim.scenario.build import prepare
from hwsim.topology import Router, cluster, degrade
from hwsim.workloads import model_ops, resolve_model

ROOT = Path(__file__).resolve().parent.parent
A100 = {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8, "intra_node": "nvlink3",
        "nic": "ib-hdr-200", "nics_per_node": 8}
H100 = {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8, "intra_node": "nvlink4",
        "nic": "ib-hdr-200", "nics_per_node": 8}


def _load(stem: str) -> dict:
    return yaml.safe_load((ROOT / "scenarios" / f"{stem}.yaml").read_text())


def _error(scenario: dict) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        prepare(load_scenario(scenario))
    return info.value


# -- mixed hardware: node groups ----------------------------------------------------------------

def test_groups_number_servers_on_and_tag_them():
    g = cluster(groups=[{"name": "a100", "nodes": 2, "node": A100},
                        {"name": "h100", "nodes": 1, "node": {**H100, "nics_per_node": 4}}],
                fabric={"topology": "rail-optimized"})
    assert g.nodes["n1.gpu7"]["spec"] == "A100-SXM4-80GB" and g.nodes["n1.gpu7"]["group"] == "a100"
    assert g.nodes["n2.gpu0"]["spec"] == "H100-SXM5-80GB" and g.nodes["n2.cpu0"]["group"] == "h100"
    assert "n3.gpu0" not in g and "n2.nic4" not in g
    # rail j joins NIC j of every server that has one: rails 4..7 serve the A100 servers only
    rail = {v: d["rail"] for v, d in g.nodes(data=True) if d.get("level") == "leaf"}
    on_rail = {r: sorted(n for n in g if g.nodes[n]["kind"] == "nic"
                         and any(rail.get(x) == r for x in g.neighbors(n))) for r in (0, 5)}
    assert on_rail == {0: ["n0.nic0", "n1.nic0", "n2.nic0"], 5: ["n0.nic5", "n1.nic5"]}
    assert "group" not in g.nodes["spine0"]


def test_mixed_dp_step_is_paced_by_the_slowest_gpu():
    """16 ranks, synchronous data parallel: the H100 ranks wait for the A100 ranks at every
    gradient bucket, so the step is that of an all-A100 cluster (the faster ranks only start
    their all-reduce shares earlier: within 0.1%) and far from the all-H100 one."""
    mixed = _load("dp-mixed-a100-h100")
    s = hwsim.run(mixed).summary
    steps = {"mixed": s["step_time_s"]}
    # MFU is over the sum of each device's own peak: 8 A100s and 8 H100s here
    prec = mixed["workload"]["precision"]
    peak = 8 * get_device("A100-SXM4-80GB").peak(prec) + 8 * get_device("H100-SXM5-80GB").peak(prec)
    assert s["mfu"] == pytest.approx(s["model_flops_per_step"] / s["step_time_s"] / peak, rel=1e-12)
    assert s["device_types"] == "A100-SXM4-80GB,H100-SXM5-80GB"
    for name, node in (("a100", A100), ("h100", H100)):
        same = copy.deepcopy(mixed)
        same["cluster"] = {"nodes": 2, "node": node, "fabric": {"topology": "single-switch"}}
        steps[name] = hwsim.run(same).summary["step_time_s"]
    assert steps["mixed"] == pytest.approx(steps["a100"], rel=1e-3)
    assert steps["mixed"] > 2 * steps["h100"]


def test_group_errors_are_pinned():
    base = _load("dp-mixed-a100-h100")
    both = copy.deepcopy(base)
    both["cluster"]["node"] = A100
    with pytest.raises(ScenarioError, match=r"groups replaces nodes and node; give either "
                       r"groups \(a list of \{name, nodes, node\}\) or nodes and node"):
        load_scenario(both)
    mixed_forms = copy.deepcopy(base)
    mixed_forms["cluster"]["wan"] = [{"a": "x", "b": "y"}]
    with pytest.raises(ScenarioError, match=r"mixes forms \(builder: groups, fabric; sites: wan\)"):
        load_scenario(mixed_forms)
    dup = copy.deepcopy(base)
    dup["cluster"]["groups"][1]["name"] = "a100"
    with pytest.raises(ScenarioError, match="group names must be unique; repeated: a100"):
        load_scenario(dup)
    typo = copy.deepcopy(base)
    typo["cluster"]["groups"][1]["node"]["gpu"] = "H100-SXM-80GB"
    with pytest.raises(ScenarioError, match="unknown device id 'H100-SXM-80GB'") as info:
        load_scenario(typo)
    assert info.value.field == "cluster.groups[1].node.gpu"
    nics = copy.deepcopy(base)
    nics["cluster"]["groups"][1]["node"]["nic"] = "ib-ndr-400"
    nics["cluster"]["fabric"] = {"topology": "fat-tree"}
    err = _error(nics)
    assert err.field == "cluster.fabric.link"
    assert "the groups' NICs differ (ib-hdr-200, ib-ndr-400); set the switch-to-switch link, " \
           "e.g. link: ib-hdr-200" in err.reason
    nics["cluster"]["fabric"]["link"] = "ib-ndr-400"
    prepare(load_scenario(nics))  # with the link given, it builds
    bare = copy.deepcopy(base)
    del bare["cluster"]["groups"][1]["node"]["nic"]
    del bare["cluster"]["groups"][1]["node"]["nics_per_node"]
    err = _error(bare)
    assert err.field == "cluster.groups[1].node.nic" and "needs NICs on every node" in err.reason


# -- stragglers ---------------------------------------------------------------------------------

def test_a_straggler_stretches_the_step_by_its_extra_compute():
    """Compute-bound data parallel: every rank waits at the all-reduce for the straggler, whose
    ops take 1/speed of their time, and the all-reduce tail after the last bucket is unchanged.
    So the step grows by exactly (1/speed - 1) x the rank's op time per step."""
    s = _load("dp-straggler-16xa100")
    speed = s["cluster"]["stragglers"][0]["speed"]
    slow = hwsim.run(s).summary["step_time_s"]
    healthy = copy.deepcopy(s)
    del healthy["cluster"]["stragglers"]
    fast = hwsim.run(healthy).summary["step_time_s"]
    _, plan = prepare(load_scenario(s))
    dev = plan.stack.apply(get_device("A100-SXM4-80GB"))  # as the job's software stack runs it
    m = plan.model
    per_step = sum(dev.op_time_s(op.flops, op.bytes, "bf16", shape=op.shape)
                   for op in m.forward + m.backward + m.optimizer) * plan.micro_batches
    assert slow - fast == pytest.approx((1 / speed - 1) * per_step, rel=1e-6)


def test_the_summary_names_the_straggler():
    s = hwsim.run(_load("dp-straggler-16xa100")).summary
    assert s["compute_busy_max_device"] == "n1.gpu3"
    assert s["compute_imbalance"] == pytest.approx(2.0, rel=1e-6)   # 1 / speed
    assert s["bottleneck_label"].endswith(
        "; slowest device n1.gpu3 (compute busy 2.00x the median device)")
    healthy = _load("dp-straggler-16xa100")
    del healthy["cluster"]["stragglers"]
    h = hwsim.run(healthy).summary
    assert h["compute_imbalance"] == pytest.approx(1.0) and "slowest" not in h["bottleneck_label"]


def test_factor_one_changes_nothing():
    s = _load("dp-straggler-16xa100")
    s["cluster"]["stragglers"] = [{"device": "n1.gpu3", "speed": 1.0}]
    s["cluster"]["degraded_links"] = [{"a": "n0.nic0", "b": "switch0", "factor": 1}]
    plain = copy.deepcopy(s)
    del plain["cluster"]["stragglers"], plain["cluster"]["degraded_links"]
    assert hwsim.run(s).summary == hwsim.run(plain).summary


def test_straggler_errors_are_pinned():
    s = _load("dp-straggler-16xa100")
    s["cluster"]["stragglers"] = [{"device": "n1.gpu9", "speed": 0.5}]
    err = _error(s)
    assert err.field == "cluster.stragglers[0].device"
    assert err.reason == ("unknown compute device 'n1.gpu9'; valid: a gpu, tpu or cpu node id: "
                          "n0.cpu0, n0.cpu1, n0.gpu0, n0.gpu1, ..., n1.gpu7; "
                          "did you mean 'n1.gpu7'?")
    s["cluster"]["stragglers"] = [{"device": "n0.nic0", "speed": 0.5}]
    assert "unknown compute device 'n0.nic0'" in _error(s).reason
    s["cluster"]["stragglers"] = [{"device": "n0.gpu1", "speed": 0.5},
                                  {"device": "n0.gpu1", "speed": 0.7}]
    err = _error(s)
    assert (err.field, err.reason) == ("cluster.stragglers[1].device", "'n0.gpu1' is listed twice")
    for bad in (0, 1.5, -1):
        s["cluster"]["stragglers"] = [{"device": "n0.gpu1", "speed": bad}]
        with pytest.raises(ScenarioError, match=r"cluster\.stragglers\.0\.speed|stragglers\[0\]"
                                                r"\.speed"):
            load_scenario(s)


def test_stragglers_are_refused_where_they_would_be_ignored():
    s = _load("stage-imagenet-wan")
    s["cluster"]["stragglers"] = [{"device": "dc2/n0.gpu0", "speed": 0.5}]
    with pytest.raises(ScenarioError, match="cluster.stragglers: slow training ops only; a "
                                            "transfer workload does not model them yet"):
        load_scenario(s)
    del s["cluster"]["stragglers"]
    s["cluster"]["degraded_links"] = [{"a": "dc1/router", "b": "dc2/router", "factor": 0.5}]
    r = hwsim.run(s).summary  # a WAN at half its rate: the copy takes twice as long
    assert r["transfer_imagenet_s"] == pytest.approx(2 * hwsim.run(
        _load("stage-imagenet-wan")).summary["transfer_imagenet_s"], rel=0.01)


def test_stragglers_apply_to_any_form_and_to_the_devices_of_a_run():
    """Multi-site ids carry the site; the speed reaches the run-time device (and its op time)."""
    s = _load("dp-two-sites-wan100g")
    s["cluster"]["stragglers"] = [{"device": "dc2/n0.gpu5", "speed": 0.25}]
    g, _ = prepare(load_scenario(s))
    assert g.nodes["dc2/n0.gpu5"]["speed"] == 0.25 and "speed" not in g.nodes["dc1/n0.gpu5"]
    system = System(__import__("simpy").Environment(), g, Recorder())
    assert system.device("dc2/n0.gpu5").speed == 0.25
    assert system.device("dc1/n0.gpu5").speed == 1.0


# -- degraded links -----------------------------------------------------------------------------

def test_a_degraded_nic_link_slows_the_allreduce():
    """The ring all-reduce of an Ethernet-bound data-parallel job passes the degraded link in
    every step, so the all-reduce (and the step) slows by nearly the factor, never by more."""
    s = _load("dp-degraded-nic-8x1xa100")
    factor = s["cluster"]["degraded_links"][0]["factor"]
    healthy = copy.deepcopy(s)
    del healthy["cluster"]["degraded_links"]
    runs = {k: hwsim.run(x) for k, x in (("slow", s), ("fast", healthy))}
    comm = {k: float((e.end_s - e.start_s)[e.kind == "collective"].sum())
            for k, e in ((k, r.events) for k, r in runs.items())}
    assert 0.8 / factor < comm["slow"] / comm["fast"] <= 1 / factor
    steps = {k: r.summary["step_time_s"] for k, r in runs.items()}
    assert steps["fast"] < steps["slow"] < steps["fast"] / factor
    assert runs["slow"].summary["bottleneck"] == "comm:ethernet"
    g, _ = prepare(load_scenario(s))
    edge = g.edges["n3.nic0", "switch0"]
    assert edge["bw_bytes_per_s"] == get_link("eth-25g").bw_bytes_per_s * factor
    assert edge["degraded"] == factor
    assert g.edges["n2.nic0", "switch0"]["bw_bytes_per_s"] == get_link("eth-25g").bw_bytes_per_s


def test_degraded_link_errors_are_pinned():
    s = _load("dp-degraded-nic-8x1xa100")
    s["cluster"]["degraded_links"] = [{"a": "n3.nic0", "b": "switch1", "factor": 0.5}]
    err = _error(s)
    assert err.field == "cluster.degraded_links[0].b"
    assert err.reason == ("no link joins 'n3.nic0' and 'switch1'; 'n3.nic0' links to: n3.pcie0, "
                          "switch0; did you mean 'switch0'?")
    s["cluster"]["degraded_links"] = [{"a": "n9.nic0", "b": "switch0", "factor": 0.5}]
    err = _error(s)
    assert err.field == "cluster.degraded_links[0].a" and "unknown node 'n9.nic0'" in err.reason
    s["cluster"]["degraded_links"] = [{"a": "n3.nic0", "b": "switch0", "factor": 0.5},
                                      {"a": "switch0", "b": "n3.nic0", "factor": 0.5}]
    err = _error(s)
    assert err.field == "cluster.degraded_links[1]" and "listed twice" in err.reason
    s["cluster"]["degraded_links"] = [{"a": "n3.nic0", "b": "switch0", "factor": 1.25}]
    with pytest.raises(ScenarioError, match="less than or equal to 1"):
        load_scenario(s)
    with pytest.raises(ScenarioError, match=r"must be a number in \(0, 1\], got 2"):
        degrade(cluster(nodes=2, node=A100), links=[{"a": "n0.nic0", "b": "switch0", "factor": 2}])


# -- folding needs identical ranks --------------------------------------------------------------

def _tp_job(cluster_: dict, fold: object) -> dict:
    return {"name": "f", "cluster": cluster_, "workload": {
        "kind": "training", "model": {"layers": 4, "hidden": 1024, "heads": 16, "vocab": 50257},
        "seq_len": 1024, "precision": "bf16", "global_batch": 24, "fold": fold,
        "parallelism": {"tp": 8, "micro_batch": 1}}}


def test_auto_fold_never_folds_unlike_ranks_and_fold_true_is_an_error():
    alike = {"nodes": 3, "node": A100, "fabric": {"topology": "single-switch"}}
    assert prepare(load_scenario(_tp_job(alike, "auto")))[1].fold  # 24 > 16 alike: folded
    straggler = {**alike, "stragglers": [{"device": "n2.gpu1", "speed": 0.8}]}
    mixed = {"groups": [{"name": "a", "nodes": 2, "node": A100},
                        {"name": "h", "nodes": 1, "node": H100}]}
    for c, kinds in ((straggler, "A100-SXM4-80GB, A100-SXM4-80GB at speed 0.8"),
                     (mixed, "A100-SXM4-80GB, H100-SXM5-80GB")):
        assert not prepare(load_scenario(_tp_job(c, "auto")))[1].fold
        err = _error(_tp_job(c, True))
        assert err.field == "workload.fold"
        assert err.reason.startswith(f"fold: true needs identical devices, but the job's are "
                                     f"{kinds} (mixed hardware or cluster.stragglers)")


def test_parallel_job_refuses_to_fold_unlike_devices():
    g = cluster(groups=[{"name": "a", "node": A100}, {"name": "h", "node": H100}])
    spec = resolve_model({"layers": 2, "hidden": 512, "heads": 8, "vocab": 1000})
    ops = model_ops(spec, micro_batch=1, precision="bf16", seq_len=128, tp=8)
    devices = [f"n{s}.gpu{i}" for s in range(2) for i in range(8)]
    plan = parallel_plan("j", ops, devices, tp=8, pp=1, fold=True)
    with pytest.raises(ValueError, match="fold needs identical devices, but the plan's are "
                                         "A100-SXM4-80GB, H100-SXM5-80GB"):
        ParallelTrainingJob(System(__import__("simpy").Environment(), g, Recorder()), plan)


# -- two sites over a WAN ------------------------------------------------------------------------

def test_training_across_two_sites_is_wan_bound_and_accumulation_buys_throughput():
    """The all-reduce bytes per step are fixed, compute per step grows with the micro-batches:
    each extra micro-batch adds exactly one micro-batch of compute to the step, the exposed WAN
    time stays the same, so samples/s rises and the WAN's share falls."""
    s = _load("dp-two-sites-wan100g")
    micro = s["workload"]["parallelism"]["micro_batch"]
    runs = {}
    for k in (1, 2, 4):
        x = copy.deepcopy(s)
        x["workload"].update(global_batch=16 * micro * k, steps=2)  # step 2 is the steady one
        runs[k] = hwsim.run(x)
    first = runs[1].summary
    assert first["bottleneck"] == "comm:wan"
    _, plan = prepare(load_scenario(s))
    assert plan.ranks[:2] == ("dc1/n0.gpu0", "dc1/n0.gpu1") and plan.ranks[8] == "dc2/n0.gpu0"
    dev = plan.stack.apply(get_device("H100-SXM5-80GB"))  # as the job's software stack runs it
    micro_s = sum(dev.op_time_s(op.flops, op.bytes, "bf16", shape=op.shape)
                  for op in plan.model.forward + plan.model.backward)
    wan = {k: r.bottleneck.set_index("category")["seconds"]["comm:wan"] for k, r in runs.items()}
    share = {k: r.bottleneck.set_index("category")["share"]["comm:wan"] for k, r in runs.items()}
    for k in (2, 4):
        got = runs[k].summary
        assert got["micro_batches"] == k
        assert got["step_time_s"] - first["step_time_s"] == pytest.approx((k - 1) * micro_s,
                                                                          rel=1e-6)
        assert wan[k] == pytest.approx(wan[1], rel=1e-9)
    assert runs[1].summary["samples_per_s"] < runs[2].summary["samples_per_s"] \
        < runs[4].summary["samples_per_s"]
    assert share[1] > share[2] > share[4]
    # the WAN time is no less than the ring's bytes over the WAN: 2 (n-1)/n of the gradients
    link = get_link("wan-100g")
    grads = sum(op.grad_bytes for op in plan.model.backward)
    assert first["time_exposed_comm_dp_s"] > 2 * 15 / 16 * grads / (link.bw_bytes_per_s
                                                                       * link.efficiency)


def test_a_slower_wan_never_speeds_training():
    s = _load("dp-two-sites-wan100g")
    s["workload"]["steps"] = 2
    fast = hwsim.run(s).summary["step_time_s"]
    s["cluster"]["wan"][0]["link"] = "wan-10g"
    assert hwsim.run(s).summary["step_time_s"] > fast


def test_staging_imagenet_over_the_wan_takes_the_closed_form():
    """Object store (2 x 10.9 GB/s, 16 MiB GETs), WAN (12.5 GB/s x 0.9), Lustre (65 GB/s write):
    the WAN is the narrowest, so the copy takes size / (WAN bw x efficiency) + the path's
    latency (both storage tiers' access latencies and every hop's)."""
    s = _load("stage-imagenet-wan")
    t = s["workload"]["transfers"][0]
    r = hwsim.run(s).summary
    g, _ = prepare(load_scenario(s))
    src, dst = "dc1/storage.imagenet", "dc2/storage.lustre"
    path = Router(g).path(src, dst)
    hops = sum(g.edges[a, b]["latency_s"] for a, b in zip(path, path[1:]))
    latency = hops + get_storage("object-store").latency_s + get_storage("lustre").latency_s
    wan = get_link("wan-100g")
    tiers = (2 * get_storage("object-store").read_bw_bytes_per_s,
             get_storage("lustre").write_bw_bytes_per_s)
    assert wan.bw_bytes_per_s * wan.efficiency < min(tiers)
    assert r["transfer_imagenet_s"] == pytest.approx(
        t["size"] / (wan.bw_bytes_per_s * wan.efficiency) + latency, rel=1e-9)
    assert r["transfer_imagenet_limit"] == "comm:wan" and r["bottleneck"] == "comm:wan"


def test_sites_take_groups_and_site_errors_are_pinned():
    s = _load("dp-two-sites-wan100g")
    site = s["cluster"]["sites"][1]
    site["groups"] = [{"name": "h100", "node": site.pop("node")},
                      {"name": "a100", "node": {**A100, "nic": "ib-ndr-400"}}]
    del site["nodes"]
    s["workload"]["global_batch"] = 24 * 8
    g, plan = prepare(load_scenario(s))
    assert g.nodes["dc2/n1.gpu0"]["spec"] == "A100-SXM4-80GB"
    assert g.nodes["dc2/n1.gpu0"]["group"] == "a100" and len(plan.ranks) == 24
    both = _load("dp-two-sites-wan100g")
    both["cluster"]["sites"][0]["groups"] = [{"name": "x", "node": H100}]
    with pytest.raises(ScenarioError, match=r"cluster\.sites\[0\]: groups replaces nodes and node"):
        load_scenario(both)
    bad = _load("dp-two-sites-wan100g")
    bad["cluster"]["wan"][0]["b"] = "dc3"
    with pytest.raises(ScenarioError, match=r"wan\[0\]\.b: unknown site 'dc3'; sites: dc1, dc2; "
                                            r"did you mean 'dc2'\?"):
        load_scenario(bad)
    bad = _load("dp-two-sites-wan100g")
    node = bad["cluster"]["sites"][1]["node"]
    del node["nic"], node["nics_per_node"]
    bad["cluster"]["sites"][1]["nodes"] = 2
    err = _error(bad)
    assert err.field == "cluster.sites[1].node.nic"
    stage = _load("stage-imagenet-wan")
    stage["workload"]["transfers"][0]["dst"] = "dc3/lustre"
    err = _error(stage)
    assert err.field == "workload.transfers[0].dst"
    assert "unknown endpoint 'dc3/lustre'" in err.reason


def test_bad_straggler_through_the_cli_is_one_paragraph(tmp_path):
    s = _load("dp-straggler-16xa100")
    s["cluster"]["stragglers"][0]["device"] = "n2.gpu3"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(s))
    p = subprocess.run([sys.executable, "-c", "from hwsim.cli import main; main()", "validate",
                        "s.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    err = p.stderr.strip()
    assert err.startswith("error: s.yaml: cluster.stragglers[0].device: unknown compute device "
                          "'n2.gpu3'") and "\n" not in err
