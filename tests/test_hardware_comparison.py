"""One GPT job on a GPU node, a TPU v4 slice and CPU-only servers (scenarios/gpt-350m-*.yaml,
docs/scenarios.md "One job on CPU, GPU and TPU"): the files differ only in ``cluster``, every run
fits, and the step times come out in the order the hardware figures say, for the reasons stated
at each assertion."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import yaml

import hwsim
from hwsim.analysis.parallelism import PARTS, summary_key
from hwsim.catalog import get_device

ROOT = Path(__file__).resolve().parent.parent
TRIO = {"gpu": "gpt-350m-8xa100", "tpu": "gpt-350m-tpuv4-2x2x2", "cpu": "gpt-350m-8xepyc-cpu"}
DEVICE = {"gpu": "A100-SXM4-80GB", "tpu": "TPU-v4", "cpu": "EPYC-7742"}
MARGIN = 2.0
"""How far a step-time ratio may stray from the ratio of peak FLOP/s when every run is
compute-bound: the fraction of peak reached (MFU) may differ by this factor between devices
(catalog efficiencies: A100 0.87 measured, TPU v4 the same stand-in, CPU 0.75 assumed; plus each
device's share of memory-bound ops and exposed communication)."""


def _data(key: str) -> dict:
    return yaml.safe_load((ROOT / "scenarios" / f"{TRIO[key]}.yaml").read_text())


@lru_cache(maxsize=None)
def _summary(key: str) -> dict:
    return hwsim.run(ROOT / "scenarios" / f"{TRIO[key]}.yaml").summary


def _peak(key: str) -> float:
    return get_device(DEVICE[key]).peak("bf16")


def test_only_the_cluster_differs():
    files = {k: _data(k) for k in TRIO}
    for k, data in files.items():
        assert data["workload"] == files["gpu"]["workload"], k
        assert set(data) == set(files["gpu"]), k
    assert len({yaml.safe_dump(d["cluster"]) for d in files.values()}) == 3


@pytest.mark.parametrize("key", list(TRIO))
def test_each_runs_data_parallel_on_eight_devices(key):
    s = _summary(key)
    assert s["fits"] and s["devices"] == 8 and s["device_type"] == DEVICE[key]
    assert s["micro_batches"] == 1 and s["global_batch"] == 64
    assert sum(s[summary_key(p)] for p in PARTS) == pytest.approx(s["step_time_s"], rel=1e-9)
    # compute-bound: data-parallel gradients are all-reduced behind the backward pass
    assert s["bottleneck"] == "compute"
    assert s["exposed_comm_share"] < 0.05
    assert s["time_exposed_comm_tp_s"] == s["time_exposed_comm_pp_s"] == 0


def test_same_work_per_step():
    flops = {k: _summary(k)["model_flops_per_step"] for k in TRIO}
    assert flops["tpu"] == pytest.approx(flops["gpu"])
    assert flops["cpu"] == pytest.approx(flops["gpu"])


@pytest.mark.parametrize("fast", ["gpu", "tpu"])
def test_cpu_only_is_slower_by_about_the_peak_ratio(fast):
    """Same FLOPs per device and step, all three compute-bound: the CPU step is longer by the ratio
    of peak bf16 FLOP/s (A100 312 / EPYC 7742 4.6 = 68; TPU v4 275 / 4.6 = 60; the EPYC has no
    bf16 units and runs bf16 at its fp32 peak) within MARGIN either way."""
    ratio = _summary("cpu")["step_time_s"] / _summary(fast)["step_time_s"]
    peaks = _peak(fast) / _peak("cpu")
    assert peaks / MARGIN <= ratio <= peaks * MARGIN, (ratio, peaks)


def test_tpu_v4_is_not_faster_than_the_a100():
    """TPU v4 has the lower bf16 peak (275 vs 312 TFLOP/s) and HBM bandwidth (1.2 vs 2.04 TB/s),
    with the same efficiency figures, so no op is faster; and no op is slower by more than the
    larger of those ratios (2.04 / 1.2 = 1.70). Exposed communication is under 5% of either step
    (the previous test), hence the 10% allowance."""
    ratio = _summary("tpu")["step_time_s"] / _summary("gpu")["step_time_s"]
    gpu, tpu = get_device(DEVICE["gpu"]), get_device(DEVICE["tpu"])
    worst = max(gpu.peak("bf16") / tpu.peak("bf16"),
                gpu.mem_bw_bytes_per_s / tpu.mem_bw_bytes_per_s)
    assert 1.0 <= ratio <= worst * 1.1, (ratio, worst)


def test_tensor_and_pipeline_parallelism_on_the_tpu_torus():
    """The same job with tp 2 x pp 2 x dp 2 on the TPU slice: TP all-reduces and pipeline sends
    run over ICI, and the parts still sum to the step."""
    data = _data("tpu")
    data["workload"]["parallelism"] = {"tp": 2, "pp": 2, "micro_batch": 4}
    r = hwsim.run(data)
    s = r.summary
    assert s["fits"] and s["micro_batches"] == 8
    assert s["time_exposed_comm_tp_s"] > 0 and s["time_bubble_s"] > 0
    assert sum(s[summary_key(p)] for p in PARTS) == pytest.approx(s["step_time_s"], rel=1e-9)
    comm = r.events[r.events["category"].str.startswith("comm:")]["category"].unique()
    assert set(comm) == {"comm:ici"}
    # model parallelism splits the same work over more communication and a bubble
    assert s["step_time_s"] > _summary("tpu")["step_time_s"]
