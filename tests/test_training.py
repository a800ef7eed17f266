"""Training jobs end to end: the founding example's bottlenecks, data-parallel MLP scaling with
the interconnect, memory as a result, determinism."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hwsim.scenario.build import run_scenario
from hwsim.scenario.loader import load_scenario

SCEN = Path(__file__).resolve().parent.parent / "scenarios"


def _run(name: str, **changes):
    data = load_scenario(SCEN / name).model_dump(mode="json")
    for path, value in changes.items():
        node = data
        *head, last = path.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    return run_scenario(load_scenario(data))


def test_logistic_regression_is_overhead_bound_on_nvme_and_storage_bound_on_hdd():
    """Dense(1, sigmoid) does a few kFLOP per step: on NVMe the step is the dispatch time of its
    ~9 ops, so the bottleneck is overhead; on a 7200 rpm disk each batch needs 32 random reads
    at ~170 IOPS (~0.19 s), so storage I/O takes over and a step is >1000x longer; the 404 MB data
    set fits the page cache, so only the first of the 10 epochs pays the disk."""
    nvme = _run("quickstart.yaml")
    hdd = _run("logistic-gpu-hdd.yaml")
    assert nvme.summary["bottleneck"] == "overhead"
    assert hdd.summary["bottleneck"] == "storage"
    assert hdd.summary["bottleneck_share"] > 0.95
    assert hdd.summary["step_time_s"] > 1000 * nvme.summary["step_time_s"]
    assert hdd.summary["time_to_train_s"] > 100 * nvme.summary["time_to_train_s"]
    # closed form for the HDD step: 32 requests of 404 B at the disk's IOPS, plus one access latency
    from hwsim.catalog import get_storage
    hddspec = get_storage("hdd-7200")
    assert hdd.summary["step_time_s"] == pytest.approx(32 / hddspec.read_iops + hddspec.latency_s, rel=0.02)


def test_the_same_job_on_a_cpu_runs_and_is_overhead_bound():
    cpu = _run("logistic-cpu.yaml")
    assert cpu.summary["device_type"] == "EPYC-7742"
    assert cpu.summary["bottleneck"] == "overhead"
    assert cpu.summary["fits"] is True


def test_faster_interconnect_never_slows_data_parallel_training():
    nvlink = _run("mlp-dp-nvlink.yaml").summary
    pcie = _run("mlp-dp-pcie.yaml").summary
    eth = _run("mlp-dp-ethernet.yaml").summary
    assert nvlink["step_time_s"] < pcie["step_time_s"] < eth["step_time_s"]
    assert eth["bottleneck"] == "comm:ethernet"
    assert pcie["bottleneck"] == "comm:pcie"


def test_more_gpus_over_nvlink_keep_per_gpu_throughput_close():
    one = _run("mlp-dp-nvlink.yaml", **{"cluster.node.gpus_per_node": 1, "workload.global_batch": 256}).summary
    eight = _run("mlp-dp-nvlink.yaml").summary
    assert eight["samples_per_s"] > 4 * one["samples_per_s"]
    assert eight["samples_per_s"] <= 8 * one["samples_per_s"] * (1 + 1e-9)


def test_a_model_that_does_not_fit_is_a_result():
    r = _run("mlp-dp-nvlink.yaml", **{"workload.model.width": 65536, "workload.model.depth": 8})
    assert r.summary["fits"] is False
    assert r.summary["step_time_s"] is None
    assert r.summary["memory_per_device_gb"] > r.summary["memory_capacity_per_device_gb"]
    assert "does not fit" in r.summary["bottleneck_label"]


def test_same_seed_gives_identical_frames():
    a = _run("mlp-dp-ethernet.yaml")
    b = _run("mlp-dp-ethernet.yaml")
    for name in ("events", "utilization", "memory", "bottleneck"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.summary == b.summary


def test_trace_invariants_hold():
    r = _run("mlp-dp-pcie.yaml")
    ev = r.events
    assert (ev.end_s >= ev.start_s).all()
    assert ev.start_s.is_monotonic_increasing
    u = r.utilization
    assert ((u.utilization >= 0) & (u.utilization <= 1)).all()
    # bytes conserved: what the links carried equals the bytes of the flows times their hops
    flows = ev[ev.kind.isin(["flow", "storage", "copy"])]
    assert flows.bytes.sum() > 0
    link_bytes = u[u.resource_class != "stream"].bytes.sum()
    assert link_bytes >= flows.bytes.sum()


def test_gradient_accumulation_keeps_throughput_figures_per_global_batch():
    """Four micro-batches of 64 make the same global batch as one of 256: samples/s and MFU
    count all of them, and the per-step time is at least that of one big micro-batch."""
    one = _run("mlp-dp-nvlink.yaml").summary
    four = _run("mlp-dp-nvlink.yaml", **{"workload.parallelism": {"micro_batch": 64}}).summary
    assert four["micro_batches"] == 4 and one["micro_batches"] == 1
    assert four["global_batch"] == one["global_batch"] == 2048
    assert four["samples_per_s"] == pytest.approx(2048 / four["step_time_s"])
    assert four["model_flops_per_step"] == pytest.approx(one["model_flops_per_step"])
    assert four["mfu"] == pytest.approx(one["mfu"] * one["step_time_s"] / four["step_time_s"])


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_more_gpus_at_fixed_global_batch_never_raise_compute_per_gpu(gpus):
    """Compute time per GPU per step (sum of compute-stream op time) shrinks as the fixed global
    batch spreads over more GPUs."""
    def compute_per_gpu(n):
        r = _run("mlp-dp-nvlink.yaml", **{"cluster.node.gpus_per_node": n})
        ev = r.events
        ops = ev[(ev.resource == "n0.gpu0/compute") & (ev.kind == "compute")]
        return (ops.end_s - ops.start_s).sum() / r.summary["steps_simulated"]
    if gpus > 1:
        assert compute_per_gpu(gpus) <= compute_per_gpu(gpus // 2) * (1 + 1e-9)


@pytest.mark.parametrize("slow,fast", [("eth-25g", "eth-100g"), ("eth-100g", "eth-400g"),
                                       ("ib-edr-100", "ib-ndr-400")])
def test_a_slower_inter_node_fabric_never_speeds_a_step(slow, fast):
    t = {nic: _run("mlp-dp-ethernet.yaml", **{"cluster.node.nic": nic}).summary["step_time_s"]
         for nic in (slow, fast)}
    assert t[slow] >= t[fast]


def test_parallel_layouts_that_do_not_tile_the_devices_are_refused():
    from hwsim.exceptions import ScenarioError
    with pytest.raises(ScenarioError, match=r"workload\.parallelism: tp x cp x pp x dp = 3 x 1 x 1 "
                                            r"x 2 must equal the 8 gpu devices"):
        _run("gpt-1.3b-3d-8xa100.yaml", **{"workload.parallelism": {"tp": 3, "dp": 2}})
    with pytest.raises(ScenarioError, match=r"workload\.parallelism: tp x cp x pp x dp = 2 x 2 x 2 "
                                            r"x 2 must equal the 8 gpu devices of the cluster; valid: dp: 1"):
        _run("gpt-1.3b-3d-8xa100.yaml", **{"workload.parallelism": {"tp": 2, "pp": 2, "cp": 2,
                                                                    "dp": 2}})
    with pytest.raises(ScenarioError, match=r"workload\.parallelism\.ep: ep=3 must divide dp=4"):
        _run("gpt-1.3b-3d-8xa100.yaml", **{"workload.parallelism": {"tp": 2, "ep": 3}})


def test_three_d_parallel_scenario_reports_model_and_hardware_flops():
    """Full recompute: hardware FLOPs exceed model FLOPs by the recomputed forward (about 4/3)."""
    s = _run("gpt-1.3b-3d-8xa100.yaml").summary
    assert s["fits"] and s["devices"] == 8 and s["global_batch"] == 64
    ratio = s["hardware_tflops_per_gpu"] / s["model_tflops_per_gpu"]
    assert 1.25 < ratio < 1.34
    assert s["tokens_per_s"] == pytest.approx(64 * 2048 / s["step_time_s"])


def test_pipeline_waits_are_attributed_to_the_bubble_not_idle():
    """Rank 0 (first stage) waits for gradients from the second stage during 1F1B: that time is
    the pipeline bubble. With p = 2 stages and m = 8 micro-batches the plain bubble is
    (p - 1) / (m + p - 1) = 1/9 of the step; communication and the unequal embedding/head
    stages only add to it."""
    r = _run("gpt-1.3b-3d-8xa100.yaml")
    share = dict(zip(r.bottleneck.category, r.bottleneck.share))
    assert share.get("idle", 0.0) < 1e-9
    assert share["bubble"] >= 1 / 9 * 0.9
