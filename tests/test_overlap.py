"""Overlap and interference as the software stack sets them (issue 13, points 3, 4 and 7): TP
communication overlap, the distributed optimizer's overlapped parameter all-gather, ZeRO-3 gather
buckets and prefetch depth, and the SMs a collective kernel takes from the compute it overlaps.

Each test changes one stack field (a replaced profile in this process's loaded stacks) and checks
that the step time moves the way practice says it does.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest

import hwsim
from hwsim.catalog import get_device
from hwsim.catalog.kernels import interfered
from hwsim.catalog.stacks import load_stacks, parse_stacks_file
from hwsim.exceptions import ScenarioError


@contextlib.contextmanager
def stack(name: str, **fields):
    """Run with stack *name*'s profile changed by *fields* (restored after)."""
    profiles = load_stacks().profiles
    old = profiles[name]
    profiles[name] = dataclasses.replace(old, **fields)  # type: ignore[index]
    try:
        yield
    finally:
        profiles[name] = old  # type: ignore[index]


def _gpt(nodes: int, par: dict, st: str = "megatron-core", gb: int = 16, **model) -> dict:
    m = {"layers": 8, "hidden": 4096, "heads": 32, "vocab": 32000, **model}
    return {"name": "overlap", "seed": 0,
            "cluster": {"nodes": nodes, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8,
                                                 "intra_node": "nvlink4", "nic": "ib-ndr-400",
                                                 "nics_per_node": 8},
                        **({"fabric": {"topology": "fat-tree"}} if nodes > 1 else {})},
            "workload": {"kind": "training", "model": m, "precision": "bf16", "seq_len": 2048,
                         "global_batch": gb, "parallelism": par, "optimizer": "adam",
                         "stack": st, "steps": 1},
            "outputs": {"events": False, "utilization": False, "trace": False}}


def _run(raw: dict) -> dict:
    return hwsim.run(raw).summary


TP8_SP = {"tp": 8, "sequence_parallel": True, "micro_batch": 2}


def test_tp_overlap_hides_tp_communication_and_never_slows_the_step():
    with stack("megatron-core", tp_comm_overlap=False):
        off = _run(_gpt(1, TP8_SP))
    with stack("megatron-core", tp_comm_overlap=True):
        on = _run(_gpt(1, TP8_SP))
    assert on["step_time_s"] < off["step_time_s"]
    # at hidden 4096 over tp 8 a TP collective takes about as long as its GEMM, so what stays
    # exposed is where the collective outlasts the GEMM beside it and the non-GEMM collectives
    # (embedding, cross-entropy): well under two thirds of the blocking case
    assert on["time_exposed_comm_tp_s"] < 2 / 3 * off["time_exposed_comm_tp_s"]
    # interference: the overlapped GEMMs run on fewer SMs, so compute time grows
    assert on["time_compute_s"] > off["time_compute_s"]


def test_tp_overlap_needs_sequence_parallelism():
    par = {"tp": 8, "micro_batch": 2}
    with stack("megatron-core", tp_comm_overlap=False):
        off = _run(_gpt(1, par))
    with stack("megatron-core", tp_comm_overlap=True):
        on = _run(_gpt(1, par))
    assert on["step_time_s"] == off["step_time_s"]


def test_interference_slows_overlapped_steps_and_more_sms_slow_them_more():
    times = []
    for sms in (0, 16, 32):
        with stack("megatron-core", comm_sms=sms):
            times.append(_run(_gpt(1, TP8_SP))["step_time_s"])
    assert times[0] < times[1] < times[2]


def test_interference_on_data_parallel_overlap():
    """DP gradient reduce-scatters over InfiniBand overlap the backward: with comm_sms the
    overlapped compute loses SM time (comm_interference), never gains."""
    par = {"dp": 16, "zero": 1, "micro_batch": 1}
    with stack("megatron-core", comm_sms=0):
        free = _run(_gpt(2, par, gb=32))
    with stack("megatron-core", comm_sms=24):
        taxed = _run(_gpt(2, par, gb=32))
    assert taxed["step_time_s"] > free["step_time_s"]


def test_one_wave_gemm_takes_two_waves_beside_a_collective():
    """The tail effect of the NVIDIA forum measurement (stacks.yaml [NV-SM]): a GEMM of exactly
    one wave of tiles on a 132-SM H100 spills into a second wave when 24 SMs are taken; a GEMM
    of many waves slows by about the share of SMs taken."""
    h100 = get_device("H100-SXM5-80GB")
    k = h100.kernels
    tm, tn = k.tile
    one_wave = ("gemm", tm * 12, tn * 11, 8192)          # 132 tiles
    big = ("gemm", 16384, 16384, 16384)

    def t(spec, shape):
        return spec.op_time_s(2 * shape[1] * shape[2] * shape[3], 0, "bf16", shape=shape)
    slow = interfered(h100, 24)
    lat = k.latency_s
    assert (t(slow, one_wave) - lat) == pytest.approx(2 * (t(h100, one_wave) - lat), rel=1e-9)
    assert t(slow, big) / t(h100, big) == pytest.approx(132 / 108, rel=0.05)
    assert interfered(h100, 0) is h100


def test_overlapped_parameter_gather_shortens_a_zero1_step():
    par = {"dp": 16, "zero": 1, "micro_batch": 1}
    with stack("megatron-core", overlap_param_gather=False):
        off = _run(_gpt(2, par, gb=32))
    with stack("megatron-core", overlap_param_gather=True):
        on = _run(_gpt(2, par, gb=32))
    assert on["step_time_s"] < off["step_time_s"]


def _zero3(bucket: float, prefetch: int) -> float:
    # a small model on many GPUs: each block's gather is small and latency counts
    raw = _gpt(4, {"dp": 32, "zero": 3, "micro_batch": 1}, st="deepspeed-zero3", gb=32,
               layers=12, hidden=1024, heads=16)
    with stack("deepspeed-zero3", zero3_bucket_bytes=bucket, zero3_prefetch=prefetch):
        return _run(raw)["step_time_s"]


def test_zero3_bucket_size_has_a_sweet_spot():
    """Buckets of a few blocks pay fewer per-collective latencies than one gather per block;
    one bucket of the whole model has nothing left to overlap its gather with (DeepSpeed's
    advice: buckets large enough to amortise latency, small enough to overlap)."""
    per_block, few_blocks, all_blocks = (_zero3(b, 1) for b in (0, 100e6, 1e12))
    assert few_blocks < per_block
    assert all_blocks > few_blocks


def test_bad_overlap_fields_are_pinned(tmp_path):
    from importlib import resources
    src = resources.files("hwsim.catalog").joinpath("data/stacks.yaml").read_text()
    for bad, msg in ((src.replace("tp_comm_overlap: true", "tp_comm_overlap: 1"),
                      "expected true or false, got 1"),
                     (src.replace("comm_sms: 24", "comm_sms: -1", 1),
                      "expected an integer >= 0, got -1"),
                     (src.replace("zero3_list_collectives: true", "zero3_list_collectives: 1"),
                      "expected true or false, got 1"),
                     (src.replace("zero3_prefetch: 0", "zero3_prefetch: -1", 1),
                      "expected an integer >= 0, got -1")):
        f = tmp_path / "stacks.yaml"
        f.write_text(bad)
        with pytest.raises(ScenarioError, match=msg):
            parse_stacks_file(f)


def _zero3_2021(dp: int, **fields):
    raw = _gpt(dp // 8, {"dp": dp, "zero": 3, "micro_batch": 1}, st="deepspeed-zero3", gb=dp,
               layers=12, hidden=1024, heads=16)
    raw["outputs"]["events"] = True
    with stack("deepspeed-zero3", **fields):
        return hwsim.run(raw)


def test_zero3_gathers_without_prefetch_or_with_a_synchronise_never_run_faster():
    base = _zero3_2021(32).summary["step_time_s"]
    no_prefetch = _zero3_2021(32, zero3_prefetch=0).summary["step_time_s"]
    synced = _zero3_2021(32, zero3_prefetch=0, zero3_sync_before_gather=True
                         ).summary["step_time_s"]
    assert base < no_prefetch <= synced


def test_list_collectives_add_one_copy_per_rank_on_the_critical_path():
    """DeepSpeed 2021's gather path: with a synchronise before each gather nothing overlaps, so
    the list collectives lengthen the step by exactly their copies' time; each collective's
    copies are one op per group member (launch-bound for these small partitions)."""
    serial = {"zero3_prefetch": 0, "zero3_sync_before_gather": True}
    for dp in (16, 32):
        plain = _zero3_2021(dp, **serial)
        listed = _zero3_2021(dp, zero3_list_collectives=True, **serial)
        ev = listed.events
        copies = ev[(ev["rank"] == 0) & ev["name"].str.endswith(("flatten", "unflatten"))]
        assert len(copies) > 0
        spans = copies["end_s"] - copies["start_s"]
        launch = get_device("H100-SXM5-80GB").launch_overhead_s
        assert spans.to_numpy() == pytest.approx(dp * launch, rel=1e-9)
        delta = listed.summary["step_time_s"] - plain.summary["step_time_s"]
        assert delta == pytest.approx(spans.sum(), rel=1e-6)


H = 1024  # the hidden size of the small ZeRO-3 model below


def _regather(limit: float):
    raw = _gpt(4, {"dp": 32, "zero": 3, "micro_batch": 1, "recompute": "full"},
               st="deepspeed-zero3", gb=32, layers=2, hidden=H, heads=16)
    raw["outputs"]["events"] = True
    with stack("deepspeed-zero3", zero3_reuse_distance=limit):
        run = hwsim.run(raw)
    ev = run.events
    return run.summary["step_time_s"], ev[(ev["rank"] == 0) & ev["name"].str.contains("regather")]


def test_zero3_regathers_what_the_reuse_distance_releases_after_the_recomputed_forward():
    """DeepSpeed's stage3_max_reuse_distance under full recompute: after a layer's recomputed
    forward, a submodule is gathered again for its backward when the submodules run in between
    (those after it in the forward, once forward and once backward) hold more elements than the
    distance. In backward order fc2 (4h^2 + h), fc1 (4h^2 + 4h), out_proj (h^2 + h), qkv
    (3h^2 + 3h); the norms stay whole (below DeepSpeed's persistence threshold)."""
    fc2 = 4 * H * H + H
    base, none = _regather(0)  # 0: not modelled
    assert none.empty
    huge, none = _regather(1e18)
    assert none.empty and huge == pytest.approx(base, rel=1e-12)
    # any distance > 0 releases all but fc2 (used right after its recomputed forward)
    t_all, ev = _regather(1)
    per_layer = ev.groupby(ev["name"].str.split(".").str[2])
    assert per_layer["bytes"].sum().to_numpy() == pytest.approx(2 * 8 * (H * H + H), rel=1e-12)
    assert (per_layer.size() == 3).all()
    # a distance of exactly fc2 twice keeps fc1 too: only out_proj and qkv again
    t_two, ev = _regather(2 * fc2)
    per_layer = ev.groupby(ev["name"].str.split(".").str[2])
    assert per_layer["bytes"].sum().to_numpy() == pytest.approx(2 * 4 * (H * H + H), rel=1e-12)
    assert (per_layer.size() == 2).all()
    assert base < t_two < t_all


def _dp_events(**fields):
    raw = _gpt(2, {"dp": 16, "zero": 1, "micro_batch": 1}, gb=32)
    raw["outputs"]["events"] = True
    with stack("megatron-core", **fields):
        run = hwsim.run(raw)
    ev = run.events
    return run.summary["step_time_s"], ev[(ev["rank"] == 0) & ev["name"].str.startswith(
        ("dp.reduce_scatter", "dp.allreduce")) & ev["resource"].str.endswith("/comm")]


def test_gradient_reductions_move_main_gradients_where_the_stack_reduces_them():
    """``grad_reduce: main`` with fp32 main gradients under bf16: each reduction moves twice
    the bytes (Megatron-LM's and DeepSpeed's bf16 optimizers reduce fp32 gradients), and the
    step is never faster."""
    t16, bf16 = _dp_events(main_grads="fp32", grad_reduce="training")
    t32, fp32 = _dp_events(main_grads="fp32", grad_reduce="main")
    assert fp32["bytes"].sum() == pytest.approx(2 * bf16["bytes"].sum(), rel=1e-12)
    assert t32 >= t16
    # main gradients at the training precision: nothing changes
    same, ev = _dp_events(main_grads="training", grad_reduce="main")
    assert ev["bytes"].sum() == pytest.approx(bf16["bytes"].sum(), rel=1e-12)
    assert same == pytest.approx(t16, rel=1e-12)


def test_zero1_all_reduce_after_the_backward_as_deepspeeds_pipeline_engine_does():
    """``zero1_grad_allreduce``: ZeRO-1 gradients all-reduced (not reduce-scattered);
    ``grad_reduce_overlap: false``: one reduction after the last backward op, none during it;
    each never makes the step faster."""
    t_rs, rs = _dp_events()
    assert rs["name"].str.startswith("dp.reduce_scatter").all() and len(rs) > 1
    t_ar, ar = _dp_events(zero1_grad_allreduce=True)
    assert ar["name"].str.startswith("dp.allreduce").all()
    assert ar["bytes"].sum() == pytest.approx(rs["bytes"].sum(), rel=1e-12)
    assert t_ar >= t_rs
    t_after, after = _dp_events(zero1_grad_allreduce=True, grad_reduce_overlap=False)
    def buckets(ev):
        return set(ev["name"].str.split(".").str[4])
    assert len(buckets(ar)) > 1 and buckets(after) == {"b0"}  # one reduction, after the backward
    assert after["start_s"].min() >= ar["start_s"].min()
    assert after["bytes"].sum() == pytest.approx(ar["bytes"].sum(), rel=1e-12)
    assert t_after >= t_ar
