"""The analysis API (docs/analysis.md): utilization at any resolution, the per-resource summary
and its energy, critical paths, compare, and sensitivity re-runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import hwsim
from hwsim.analysis.result import Result
from hwsim.catalog import get_device
from hwsim.exceptions import ScenarioError


@pytest.fixture(scope="module")
def dp():
    """Data parallel: 8 A100s, gradient all-reduce over NVLink (10 steps, 0.26 s simulated)."""
    return hwsim.run("scenarios/mlp-dp-nvlink.yaml")


@pytest.fixture(scope="module")
def pp():
    """TP 2 x PP 2 (1F1B) x DP 2 on 8 A100s (2 steps)."""
    return hwsim.run("scenarios/gpt-1.3b-3d-8xa100.yaml")


def _one_gpu(**model) -> dict:
    return {"name": "one-gpu", "seed": 0,
            "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 1,
                                             "cpu": "EPYC-7742", "host_link": "pcie4-x16"}},
            "workload": {"kind": "training", "precision": "bf16", "global_batch": 4096,
                         "optimizer": "sgd", "steps": 3,
                         "model": {"preset": "mlp", "features": 8192, "width": 8192,
                                   "depth": 4, "outputs": 8192, "activation": "relu", **model}}}


@pytest.mark.parametrize("bin_s", [1e-3, 3.7e-3, 0.02, 1.0])
def test_utilization_in_unit_interval_and_integrates_to_busy_time(dp, bin_s):
    """At every bin width the bins lie in [0, 1] and their busy seconds add up to the resource
    summary's busy time, exactly (both integrate the same step functions)."""
    u = hwsim.utilization(dp, bin_s=bin_s)
    assert u["utilization"].between(0.0, 1.0).all()
    np.testing.assert_allclose(u["utilization"] * u["bin_s"], u["busy_s"], rtol=1e-12,
                               atol=1e-15)
    busy = u.groupby("resource")["busy_s"].sum()
    summary = hwsim.resource_summary(dp).set_index("resource")["busy_s"]
    np.testing.assert_allclose(busy.to_numpy(), summary.reindex(busy.index).to_numpy(),
                               rtol=1e-12, atol=1e-15)
    # the bins cover the run exactly
    one = u[u["resource"] == u["resource"].iloc[0]]
    assert one["bin_s"].sum() == pytest.approx(dp.summary["simulated_time_s"], rel=1e-12)


def test_utilization_stream_is_covered_time(dp):
    """A compute stream's busy time is the union of its events (one op at a time), and the
    selection by name, by regular expression and by list agree."""
    ev = dp.events
    mine = ev[(ev["resource"] == "n0.gpu3/compute") & (ev["kind"] == "compute")]
    u = hwsim.utilization(dp, "n0.gpu3/compute", bin_s=0.01)
    assert u["busy_s"].sum() == pytest.approx((mine["end_s"] - mine["start_s"]).sum(), rel=1e-9)
    rx = hwsim.utilization(dp, r"n0\.gpu[0-3]/compute", bin_s=0.01)
    assert sorted(rx["resource"].unique()) == [f"n0.gpu{i}/compute" for i in range(4)]
    lst = hwsim.utilization(dp, ["n0.gpu3/compute"], bin_s=0.01)
    pd.testing.assert_frame_equal(lst, u)


def test_utilization_bad_resource_names_valid_ones(dp):
    with pytest.raises(ValueError, match=r"utilization: no resource 'n9\.gpu0/compute' in this "
                                         r"result; valid: a resource name or a regular "
                                         r"expression matching whole names, e\.g\. n0\.gpu0"):
        hwsim.utilization(dp, "n9.gpu0/compute")


def test_resource_summary_bytes_conserved(dp):
    """Every gradient flow of the ring crosses two NVLink hops (GPU to NVSwitch, NVSwitch to
    GPU): the links carry twice the flows' bytes. A stream's bytes and FLOPs are its events'."""
    rs = hwsim.resource_summary(dp)
    ev = dp.events
    flows = ev[ev["kind"] == "flow"]
    links = rs[rs["kind"] == "link"]
    assert links["bytes"].sum() == pytest.approx(2 * flows["bytes"].sum(), rel=1e-12)
    comp = ev[ev["resource"] == "n0.gpu0/compute"]
    row = rs.set_index("resource").loc["n0.gpu0/compute"]
    assert row["bytes"] == comp["bytes"].sum() and row["flops"] == comp["flops"].sum()
    assert row["events"] == len(comp)
    assert rs["busy_share"].between(0.0, 1.0).all()


def test_energy_closed_form_on_one_op():
    """One op of 1 s on an A100 in a 4 s run: idle power for 4 s plus (peak - idle) for 1 s."""
    ev = pd.DataFrame({"start_s": [1.0], "end_s": [2.0], "resource": ["n0.gpu0/compute"],
                       "kind": ["compute"], "name": ["gemm"], "job": ["t"], "rank": [0],
                       "bytes": [1e9], "flops": [2e14], "category": ["compute"]})
    r = Result(name="one-op", summary={"simulated_time_s": 4.0}, events=ev,
               utilization=pd.DataFrame(), memory=pd.DataFrame(), bottleneck=pd.DataFrame(),
               device_specs={"n0.gpu0": "A100-SXM4-80GB", "n0.gpu1": "A100-SXM4-80GB"})
    spec = get_device("A100-SXM4-80GB")
    rs = hwsim.resource_summary(r).set_index("resource")
    assert list(rs.index) == ["n0.gpu0", "n0.gpu0/compute"]  # the unused gpu1 is not listed
    dev = rs.loc["n0.gpu0"]
    assert dev["busy_s"] == 1.0 and dev["busy_share"] == 0.25
    assert dev["energy_j"] == pytest.approx(
        spec.idle_power_w * 4.0 + (spec.peak_power_w - spec.idle_power_w) * 1.0, rel=1e-12)
    assert hwsim.device_energy_j(spec, 1.0, 4.0) == dev["energy_j"]
    assert math.isnan(rs.loc["n0.gpu0/compute", "energy_j"])
    with pytest.raises(ValueError, match=r"need 0 <= busy_s <= wall_s"):
        hwsim.device_energy_j(spec, 5.0, 4.0)


def _tiles(cp: pd.DataFrame, lo: float, hi: float) -> None:
    assert cp["start_s"].iloc[0] == lo and cp["end_s"].iloc[-1] == hi
    np.testing.assert_array_equal(cp["start_s"].to_numpy()[1:], cp["end_s"].to_numpy()[:-1])
    assert (cp["duration_s"] >= 0).all()
    assert cp["duration_s"].sum() == pytest.approx(hi - lo, rel=1e-12)


@pytest.mark.parametrize("step", [0, 4, 9])
def test_critical_path_sums_to_step_data_parallel(dp, step):
    """The path tiles the step; the all-reduce that ends the backward pass is on it, and
    nothing on it overlaps."""
    cp = hwsim.critical_path(dp, step=step)
    row = dp.steps[dp.steps["step"] == step].iloc[0]
    _tiles(cp, row["start_s"], row["end_s"])
    assert (cp["category"] == "comm:nvlink").any()
    assert (cp["resource"].isin(["n0.gpu0/compute", "n0.gpu0/comm", ""])).all()


@pytest.mark.parametrize("rank", [0, 4])
def test_critical_path_pipeline_contains_bubble(pp, rank):
    """Stage 0 (rank 0) waits for stage 1 during the step; stage 1 (rank 4) waits in warm-up and
    cool-down: the bubbles are on the critical path, and the path sums to the step."""
    cp = hwsim.critical_path(pp, step=1, rank=rank)
    row = pp.steps.iloc[1]
    _tiles(cp, row["start_s"], row["end_s"])
    bubbles = cp[cp["category"] == "bubble"]
    assert len(bubbles) > 0 and bubbles["name"].str.startswith("pipeline.").all()
    if rank == 4:
        assert {"pipeline.warmup.step1", "pipeline.cooldown.step1"} <= set(bubbles["name"])
    device = "n0.gpu0" if rank == 0 else "n0.gpu4"
    assert cp.loc[cp["kind"] != "gap", "resource"].str.startswith(device).all()


def test_critical_path_bad_arguments(dp):
    with pytest.raises(ValueError, match=r"no step 10; valid: 0 to 9"):
        hwsim.critical_path(dp, step=10)
    with pytest.raises(ValueError, match=r"give exactly one of step= \(training\) or request="):
        hwsim.critical_path(dp)
    with pytest.raises(ValueError, match=r"this result has no requests"):
        hwsim.critical_path(dp, request=0)


def test_compare_with_itself_is_all_zero(dp):
    c = hwsim.compare(dp, dp)
    assert list(c.columns) == ["key", "a", "b", "delta", "ratio"]
    num = c[c["delta"].notna()]
    assert len(num) > 10 and (num["delta"] == 0).all() and (num["ratio"] == 1).all()
    assert {"step_time_s", "mfu", "bottleneck.memory"} <= set(num["key"])
    text = c.set_index("key").loc["bottleneck"]
    assert text["a"] == text["b"] == dp.summary["bottleneck"] and math.isnan(text["delta"])
    bd = hwsim.bottleneck(dp)
    assert list(bd.columns) == ["category", "seconds", "share"]
    assert bd["share"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("factor", [1.5, 4.0])
def test_sensitivity_faster_link_never_slower(factor):
    s = hwsim.sensitivity("scenarios/mlp-dp-pcie.yaml", "pcie", factor).set_index("key")
    assert s.loc["step_time_s", "changed"] <= s.loc["step_time_s", "baseline"]
    assert s.loc["samples_per_s", "ratio"] >= 1.0
    assert list(s.reset_index().columns) == ["key", "resource", "factor", "baseline", "changed",
                                             "delta", "ratio"]


def test_sensitivity_compute_bound_scales_with_compute():
    """An MLP of 8192-wide GEMMs on one A100 is compute-bound: twice the compute speed gives
    close to twice the throughput. Tolerance 5%: the launch overhead of the few small ops does
    not scale."""
    s = hwsim.sensitivity(_one_gpu(), "gpu", 2.0).set_index("key")
    assert s.loc["bottleneck", "baseline"] == "compute"
    assert s.loc["step_time_s", "ratio"] == pytest.approx(0.5, rel=0.05)
    assert s.loc["samples_per_s", "ratio"] == pytest.approx(2.0, rel=0.05)


def test_sensitivity_storage_tier_speeds_an_io_bound_job():
    """The logistic regression reading random 404-byte samples from a hard disk is storage
    bound: a 2x faster disk halves the step within 5%."""
    s = hwsim.sensitivity("scenarios/logistic-gpu-hdd.yaml", "storage", 2.0).set_index("key")
    assert s.loc["bottleneck", "baseline"] == "storage"
    assert s.loc["step_time_s", "ratio"] == pytest.approx(0.5, rel=0.05)


def test_sensitivity_bad_resource_names_valid_choices():
    with pytest.raises(ScenarioError, match=r"^resource: no resource 'infiniband' in this "
                                            r"cluster; valid: a class \(compute, cpu, gpu, "
                                            r"links, internal, nvlink, pcie\), a compute or "
                                            r"storage node id \(n0\.cpu0, n0\.cpu1, n0\.gpu0 "
                                            r"\.\.\.\) or a link as 'a->b'"):
        hwsim.sensitivity("scenarios/mlp-dp-nvlink.yaml", "infiniband", 2.0)
    with pytest.raises(ScenarioError, match=r"^factor: must be a positive number, got 0"):
        hwsim.sensitivity("scenarios/mlp-dp-nvlink.yaml", "nvlink", 0)


def test_utilization_agrees_with_result_bins(dp):
    """On the fixed bins of Result.utilization (utilization.parquet) the two agree."""
    old = dp.utilization
    new = hwsim.utilization(dp, bin_s=float(old["bin_s"].iloc[0]))
    m = old.merge(new, on=["resource", "time_s"], suffixes=("_file", "_api"))
    assert len(m) == len(old) == len(new)
    np.testing.assert_allclose(m["utilization_api"], m["utilization_file"], atol=1e-12)


def test_critical_path_of_a_request_sums_to_its_latency():
    """Serving: a request's path runs from its arrival to its last token on its replica's
    device; the decode iterations (memory-bound at this batch size) dominate it."""
    r = hwsim.run("scenarios/llama2-7b-1xa100-serving.yaml")
    req = r.requests.set_index("id").loc[5]
    cp = hwsim.critical_path(r, request=5)
    _tiles(cp, req["arrival_s"], req["end_s"])
    assert cp["duration_s"].sum() == pytest.approx(req["e2e_s"], rel=1e-12)
    by = cp.groupby("category")["duration_s"].sum()
    assert by.idxmax() == "memory"
    with pytest.raises(ValueError, match=r"no request 100000; valid: ids 0 to "):
        hwsim.critical_path(r, request=100000)


def test_critical_path_of_a_job_of_a_shared_cluster():
    """A run of several jobs: the training job's steps are its own, and an unknown job is named."""
    sc = _one_gpu(depth=2)
    sc["cluster"]["node"].update(gpus_per_node=2, local_storage="nvme-gen4")
    work = sc.pop("workload")
    sc["jobs"] = [{"name": "train", "devices": 1, "workload": work},
                  {"name": "copy", "workload": {"kind": "transfer", "transfers": [
                      {"name": "ckpt", "src": "n0.mem", "dst": "n0.nvme", "size": "1 GB"}]}}]
    r = hwsim.run(sc)
    assert set(r.steps["job"]) == {"train"}
    row = r.steps.iloc[-1]
    cp = hwsim.critical_path(r, step=int(row["step"]), job="train")
    _tiles(cp, row["start_s"], row["end_s"])
    with pytest.raises(ValueError, match=r"no training job 'copy'; valid: train"):
        hwsim.critical_path(r, step=0, job="copy")
