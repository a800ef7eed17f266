"""Shared clusters (``jobs:``): placement, one run for all jobs, contention, arrival times,
per-job results, and pinned errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import hwsim
from hwsim.exceptions import ScenarioError
from hwsim.scenario import load_scenario
from hwsim.scenario.build import prepare
from hwsim.scenario.build_jobs import place
from hwsim.topology import cluster, nodes_of_kind

NODE = dict(gpu="A100-SXM4-80GB", gpus_per_node=4, cpu="EPYC-7742", intra_node="nvlink3",
            nic="ib-hdr-200", nics_per_node=1)
MLP = {"kind": "training", "model": {"preset": "mlp", "width": 8192, "depth": 8},
       "global_batch": 96, "steps": 4, "precision": "bf16"}
"""Data-parallel MLP, 268M parameters in bf16: each step all-reduces 0.5 GB of gradients, so a
job spread over two servers is bound by the fabric (96 samples: any of 1, 2, 3, 4, 6, 8 GPUs)."""
LLM = {"kind": "inference", "model": {"preset": "llama2-7b"}, "precision": "fp16",
       "parallelism": {"tp": 1, "replicas": 1},
       "arrivals": {"process": "poisson", "rate_per_s": 4.0, "requests": 12,
                    "prompt_tokens": 256, "output_tokens": 16}}


def _scenario(*jobs: dict, nics: int = 1) -> dict:
    return {"name": "shared", "cluster": {
        "nodes": 2, "node": {**NODE, "nics_per_node": nics}, "fabric": {"topology": "fat-tree"},
        "storage": [{"name": "shared", "tier": "lustre"}]}, "jobs": list(jobs)}


def _train(name: str, devices: int = 4, placement: str = "packed", **extra) -> dict:
    return {"name": name, "devices": devices, "placement": placement, "workload": MLP, **extra}


def _upload(name: str = "up", **extra) -> dict:
    return {"name": name, "workload": {"kind": "transfer", "transfers": [
        {"name": "ckpt", "src": "n0.mem", "dst": "shared", "size": "20 GB"}]}, **extra}


def _run(*jobs: dict, nics: int = 1) -> dict:
    return hwsim.run(_scenario(*jobs, nics=nics)).summary


def _plans(*jobs: dict) -> dict:
    _, plans = prepare(load_scenario(_scenario(*jobs)))
    return {name: plan for name, plan, _ in plans}


# -- placement --------------------------------------------------------------------------------

def test_placement_policies_on_an_empty_cluster():
    g = cluster(nodes=2, node=NODE)
    free = nodes_of_kind(g, "gpu")
    assert place(g, free, 4, "packed") == [f"n0.gpu{i}" for i in range(4)]
    assert place(g, free, 4, "first_fit") == [f"n0.gpu{i}" for i in range(4)]
    assert place(g, free, 4, "spread") == ["n0.gpu0", "n0.gpu1", "n1.gpu0", "n1.gpu1"]
    assert place(g, free, 3, "spread") == ["n0.gpu0", "n0.gpu1", "n1.gpu0"]
    assert place(g, free, 6, "packed") == [*(f"n0.gpu{i}" for i in range(4)), "n1.gpu0",
                                           "n1.gpu1"]


@pytest.mark.parametrize("policy,count,want", [
    ("packed", 2, ["n0.gpu2", "n0.gpu3"]),             # best fit: the server with 2 free
    ("packed", 3, ["n1.gpu0", "n1.gpu1", "n1.gpu2"]),  # n0 cannot hold 3: the free server
    ("first_fit", 2, ["n0.gpu2", "n0.gpu3"]),
    ("first_fit", 3, ["n0.gpu2", "n0.gpu3", "n1.gpu0"]),
    ("spread", 2, ["n0.gpu2", "n1.gpu0"]),
    ("spread", 4, ["n0.gpu2", "n0.gpu3", "n1.gpu0", "n1.gpu1"]),
])
def test_placement_after_a_first_job_holds_two_devices(policy, count, want):
    plans = _plans(_train("a", 2, "first_fit"), _train("b", count, policy))
    assert plans["a"].ranks == ("n0.gpu0", "n0.gpu1")
    assert list(plans["b"].ranks) == want
    assert plans["a"].job == "a" and plans["b"].job == "b"


def test_explicit_nodes_and_a_serving_job_on_its_devices():
    serve = {"name": "s", "nodes": ["n1.gpu3", "n1.gpu2"], "workload": {
        **LLM, "parallelism": {"tp": 1, "replicas": 2}}}
    plans = _plans(_train("a", 4, "spread"), serve)
    assert plans["a"].ranks == ("n0.gpu0", "n0.gpu1", "n1.gpu0", "n1.gpu1")
    assert plans["s"].replicas == (("n1.gpu2",), ("n1.gpu3",)) and plans["s"].job == "s"


# -- contention -------------------------------------------------------------------------------

def test_spread_puts_the_allreduce_on_the_fabric_and_is_slower_than_packed():
    packed = hwsim.run(_scenario(_train("a", 4, "packed")))
    spread = hwsim.run(_scenario(_train("a", 4, "spread")))
    comm = {name: set(r.events.loc[r.events.kind == "flow", "category"])
            for name, r in (("packed", packed), ("spread", spread))}
    assert "comm:infiniband" in comm["spread"] and "comm:infiniband" not in comm["packed"]
    assert spread.summary["job.a.step_time_s"] > 2 * packed.summary["job.a.step_time_s"]
    assert (spread.summary["job.a.time_exposed_comm_dp_s"]
            > packed.summary["job.a.time_exposed_comm_dp_s"])


def test_two_jobs_sharing_a_nic_are_slower_than_alone():
    alone = _run(_train("a", 4, "spread"))["job.a.step_time_s"]
    r = hwsim.run(_scenario(_train("a", 4, "spread"), _train("b", 4, "spread")))
    assert r.summary["job.a.step_time_s"] > 1.3 * alone
    assert r.summary["job.b.step_time_s"] > 1.3 * alone
    # in the trace: both jobs' all-reduce flows run at once, and the one NIC uplink of n0 is
    # saturated while they do
    flows = r.events[r.events.kind == "flow"]
    a, b = (flows[flows.job == j] for j in ("a", "b"))
    assert (a.start_s.min() < b.end_s.max()) and (b.start_s.min() < a.end_s.max())
    u = r.utilization
    assert u.loc[u.resource == "n0.nic0->leaf0", "utilization"].max() == pytest.approx(1.0)


@pytest.mark.parametrize("nics,placement", [(1, "packed"), (4, "spread")])
def test_jobs_on_disjoint_resources_take_their_time_alone(nics, placement):
    """Packed, each job has a server of its own; spread over rail NICs (one per GPU), the two
    rings cross the fabric on different NICs of a non-blocking fat-tree."""
    alone = _run(_train("a", 4, placement), nics=nics)
    both = _run(_train("a", 4, placement), _train("b", 4, placement), nics=nics)
    for job in ("a", "b"):
        assert both[f"job.{job}.step_time_s"] == pytest.approx(alone["job.a.step_time_s"],
                                                               rel=1e-12)


def test_an_upload_through_the_training_jobs_nic_slows_both():
    up_alone = _run(_upload())["job.up.transfer_ckpt_s"]
    train_alone = _run(_train("a", 4, "spread"))["job.a.step_time_s"]
    both = _run(_train("a", 4, "spread", workload={**MLP, "steps": 10}), _upload())
    assert both["job.up.transfer_ckpt_s"] > 1.02 * up_alone
    assert both["job.a.step_time_s"] > 1.1 * train_alone
    # packed on n0, the job's all-reduce stays on NVLink: the upload takes its time alone
    packed = _run(_train("a", 4, "packed", workload={**MLP, "steps": 60}), _upload())
    assert packed["job.a.end_s"] > packed["job.up.end_s"]  # they overlap
    assert packed["job.up.transfer_ckpt_s"] == pytest.approx(up_alone, rel=1e-12)
    # the upload alone runs at the NIC's line rate x efficiency (ib-hdr-200: 25 GB/s)
    assert 20e9 / up_alone == pytest.approx(25e9 * 0.9545, rel=0.01)


# -- arrival times ----------------------------------------------------------------------------

def test_a_late_job_starts_at_its_arrival_time_and_counts_from_there():
    alone = _run(_train("a", 4, "packed"))
    r = hwsim.run(_scenario(_train("a", 4, "packed"), _train("b", 4, "packed", start="50 ms")))
    s = r.summary
    assert r.events.loc[r.events.job == "b", "start_s"].min() >= 0.05
    assert s["job.b.start_s"] == 0.05
    for key in ("first_step_s", "step_time_s", "time_to_train_s"):
        assert s[f"job.b.{key}"] == pytest.approx(alone[f"job.a.{key}"], rel=1e-9)
    assert s["job.b.end_s"] == pytest.approx(0.05 + alone["job.a.time_to_train_s"], rel=1e-12)


def test_a_late_service_sees_its_requests_from_its_arrival():
    serve = {"name": "s", "devices": 1, "workload": LLM}
    alone = hwsim.run(_scenario(serve))
    late = hwsim.run(_scenario(_train("a", 4, "packed"), {**serve, "start": 2.0}))
    got = late.requests[late.requests.job == "s"]
    assert got.arrival_s.to_numpy() == pytest.approx(alone.requests.arrival_s.to_numpy() + 2.0)
    for key in ("ttft_p50_s", "tpot_p99_s", "e2e_p99_s"):
        assert late.summary[f"job.s.{key}"] == pytest.approx(alone.summary[f"job.s.{key}"],
                                                             rel=1e-9)


# -- results ----------------------------------------------------------------------------------

def test_the_result_has_whole_run_and_per_job_keys_and_frames():
    data = _scenario(_train("train", 4, "spread"),
                     {"name": "serve", "devices": 2, "workload": {
                         **LLM, "parallelism": {"tp": 1, "replicas": 2}}}, _upload(start=0.01))
    r = hwsim.run(data)
    s = r.summary
    assert s["jobs"] == 3 and s["devices"] == 6 and s["fits"] is True
    assert s["simulated_time_s"] == max(s[f"job.{j}.end_s"] for j in ("train", "serve", "up"))
    assert s["job.train.step_time_s"] > 0 and s["job.serve.ttft_p99_s"] > 0
    assert s["job.up.transfer_ckpt_s"] > 0 and s["job.serve.devices"] == 2
    assert set(r.events.job) == {"train", "serve", "up"}
    assert list(r.requests.columns[:2]) == ["job", "id"] and set(r.requests.job) == {"serve"}
    assert len(r.requests) == 12 and set(r.iterations.job) == {"serve"}
    assert r.bottleneck.groupby("job")["share"].sum().to_dict() == pytest.approx(
        {"train": 1.0, "serve": 1.0, "up": 1.0})
    assert hwsim.run(data).summary == s  # deterministic


@pytest.mark.parametrize("workload", [MLP, LLM], ids=["training", "inference"])
def test_one_job_on_the_whole_cluster_equals_the_workload_form(workload):
    single = _scenario()
    del single["jobs"]
    single["workload"] = workload
    one = hwsim.run(single).summary
    devices = 8 if workload is MLP else 1
    job = hwsim.run(_scenario({"name": "j", "devices": devices, "placement": "first_fit",
                               "workload": workload})).summary
    cluster = {"flows", "simulated_time_s", "pue", "energy_kwh", "gpu_power_w"}  # run-wide keys
    for key, value in one.items():
        if key.startswith("energy_per_") or key == "energy_to_train_mwh":
            # the job holds every device: its share of the energy is the whole run's
            assert key not in job
            assert job[f"job.j.{key}"] == pytest.approx(value, rel=1e-9), key
        elif (key in cluster or key.startswith("power_")) and f"job.j.{key}" not in job:
            assert job[key] == value, key
        else:
            assert job[f"job.j.{key}"] == value, key


# -- bad input --------------------------------------------------------------------------------

def _error(data: dict) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        prepare(load_scenario(data))
    return info.value


def test_workload_and_jobs_are_mutually_exclusive():
    data = _scenario(_train("a"))
    data["workload"] = MLP
    err = _error(data)
    assert "give workload: (one job on the whole cluster) or jobs:" in err.reason
    assert "not both" in err.reason
    del data["workload"], data["jobs"]
    assert "one of them" in _error(data).reason


@pytest.mark.parametrize("job,field,text", [
    ({"name": "a", "workload": MLP}, "jobs[0]",
     "needs its devices: give devices: N (with placement: packed, spread or first_fit)"),
    ({**_train("a"), "nodes": ["n0.gpu0"]}, "jobs[0].nodes", "not both"),
    ({**_upload("a"), "devices": 2}, "jobs[0].devices",
     "a transfer job moves data between its endpoints and takes no devices"),
    ({**_train("a"), "name": "a.b"}, "jobs[0].name", "use letters, digits, _ and -"),
    ({**_train("a"), "placement": "packd"}, "jobs[0].placement",
     "valid values: packed, spread, first_fit"),
    ({"name": "a", "nodes": ["n9.gpu0"], "workload": MLP}, "jobs[0].nodes[0]",
     "'n9.gpu0' is not a gpu device the job can run on; valid: n0.gpu0"),
    ({**_train("a", 3), "workload": {**MLP, "parallelism": {"dp": 2}}},
     "jobs[0].workload.parallelism", "must equal the 3 gpu devices of the job"),
    ({**_upload("a"), "workload": {"kind": "transfer", "transfers": [
        {"name": "x", "src": "nowhere", "dst": "shared", "size": 1e9}]}},
     "jobs[0].workload.transfers[0].src", "unknown endpoint 'nowhere'"),
    ({"name": "a", "devices": 3, "workload": LLM}, "jobs[0].workload.parallelism.replicas",
     "1 replicas of 1 devices use 1 of the job's 3 devices; valid: devices: 1 or replicas: 3"),
    ({**_train("a"), "workload": {**MLP, "data": {"storage": "tape", "samples": 10,
                                                  "sample_bytes": 100}}},
     "jobs[0].workload.data.storage", "unknown storage 'tape'; valid: shared"),
])
def test_a_bad_job_names_its_field(job, field, text):
    err = _error(_scenario(job))
    assert err.field == field and text in err.reason, (err.field, err.reason)


def test_more_devices_than_free_is_an_error_not_a_queue():
    err = _error(_scenario(_train("a", 6), _train("b", 4, start=100.0)))
    assert err.field == "jobs[1].devices"
    assert err.reason == ("job 'b' asks for 4 gpu devices but only 2 of the cluster's 8 are free "
                          "(held: a 6); jobs hold their devices for the whole run (no queueing);"
                          " valid: devices <= 2")


def test_a_device_runs_one_job_and_names_are_unique():
    err = _error(_scenario(_train("a", 4), {"name": "b", "nodes": ["n0.gpu3"], "workload": MLP}))
    assert err.field == "jobs[1].nodes[0]" and "'n0.gpu3' is already held by job 'a'" in err.reason
    err = _error(_scenario(_train("a", 2), copy.deepcopy(_train("a", 2))))
    assert err.field == "jobs" and "job names must be unique; repeated: a" in err.reason


# -- the scenario -----------------------------------------------------------------------------

def test_the_shared_scenario_shows_the_upload_slowing_the_training_step():
    """scenarios/shared-train-and-serve.yaml: the 100 GB upload shares n0's only NIC with the
    training job's ring all-reduce; each is slower than alone, the service keeps its SLO."""
    path = Path(__file__).resolve().parent.parent / "scenarios" / "shared-train-and-serve.yaml"
    s = load_scenario(path)
    both = hwsim.run(s).summary
    alone = {j.name: hwsim.run(s.model_copy(update={"jobs": [j]})).summary
             for j in s.jobs if j.name != "serve"}
    assert both["job.train.step_time_s"] > 1.1 * alone["train"]["job.train.step_time_s"]
    assert (both["job.upload.transfer_checkpoint_s"]
            > 1.05 * alone["upload"]["job.upload.transfer_checkpoint_s"])
    assert both["job.train.bottleneck"] == "compute" and both["job.serve.slo_attainment"] == 1.0
    # the upload starts after the first step, beside every step step_time_s averages
    assert (both["job.train.first_step_s"] < both["job.upload.start_s"] == 0.5
            < both["job.train.end_s"])


def test_a_job_that_does_not_fit_is_a_result_and_the_others_run():
    big = {"name": "big", "devices": 1, "workload": {**LLM, "model": {"preset": "llama2-70b"}}}
    alone = _run(_train("a", 4, "packed"))
    s = _run(_train("a", 4, "packed"), big)
    assert s["fits"] is False and s["job.big.fits"] is False and s["job.a.fits"] is True
    assert s["job.big.bottleneck"] == "memory_capacity" and "does not fit" in s[
        "job.big.bottleneck_label"]
    assert s["job.big.end_s"] == s["job.big.start_s"] == 0.0
    assert s["job.a.step_time_s"] == pytest.approx(alone["job.a.step_time_s"], rel=1e-12)


def test_failures_on_a_shared_job_is_an_error_not_ignored():
    path = Path(__file__).resolve().parent.parent / "scenarios" / "shared-train-and-serve.yaml"
    s = yaml.safe_load(path.read_text())
    s["jobs"][0]["workload"]["failures"] = {"profile": "llama3"}
    with pytest.raises(ScenarioError, match=r"jobs\[0\]\.workload\.failures: failures are "
                       r"played over the whole run of a single-workload scenario"):
        hwsim.run(s)
