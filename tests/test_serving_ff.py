"""Serving fast-forward (hwsim/jobs/serving_ff.py): decode iterations of an unchanged batch
advanced in one step give the results of the per-iteration loop (``scheduler.fast_forward:
false``) on workloads that exercise every way a run ends: arrivals, completions, KV blocks
running out (preemption by recompute or swap), reserved blocks, static batches, closed-loop
clients, several replicas and disaggregated prefill (decode replicas taking hand-overs)."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.jobs.serving_cost import StageCost
from scenario_edit import edited

BASE = {
    "name": "ff",
    "seed": 5,
    "cluster": {"nodes": 1, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8,
                                     "cpu": "EPYC-7742", "intra_node": "nvlink4"}},
    "workload": {
        "kind": "inference",
        "model": {"preset": "llama2-7b"},
        "precision": "fp16",
        "parallelism": {"tp": 1, "replicas": 1},
        "scheduler": {"policy": "continuous"},
        "arrivals": {"process": "poisson", "rate_per_s": 6.0, "requests": 300,
                     "prompt_tokens": {"dist": "uniform", "low": 64, "high": 1024},
                     "output_tokens": {"dist": "uniform", "low": 8, "high": 300}},
    },
}

WORKLOADS = {
    "poisson, chunked prefill (vLLM V1)": {},
    "prefill first, no chunking (vLLM V0)": {"workload.scheduler.chunked_prefill": False},
    "preemption: a small KV cache": {"workload.scheduler.memory_fraction": 0.2,
                                     "workload.arrivals.rate_per_s": 40.0},
    "preemption by swapping to host memory": {"workload.scheduler.memory_fraction": 0.2,
                                              "workload.scheduler.preemption": "swap",
                                              "workload.arrivals.rate_per_s": 40.0,
                                              "cluster.node.host_memory": "ddr5-host"},
    "reserved blocks (TensorRT-LLM no_evict)": {"workload.engine": "trtllm",
                                               "workload.scheduler.memory_fraction": 0.3,
                                               "workload.arrivals.rate_per_s": 40.0},
    "static batches": {"workload.scheduler": {"policy": "static", "max_batch_size": 16,
                                              "max_batched_tokens": 16384}},
    "closed-loop clients": {"workload.arrivals": {
        "process": "closed", "clients": 6, "requests": 120, "think_s": 0.2,
        "prompt_tokens": 256, "output_tokens": {"dist": "uniform", "low": 16, "high": 200}}},
    "two replicas, TP 2, least outstanding": {
        "workload.parallelism": {"tp": 2, "replicas": 2},
        "workload.router": "least_outstanding", "workload.arrivals.rate_per_s": 12.0},
    "disaggregated prefill": {"workload.parallelism": {"tp": 1, "replicas": 3,
                                                       "prefill_replicas": 1}},
}


def _run(changes: dict, fast: bool, record: str = "full"):
    s = edited(BASE, changes)
    s["outputs"] = {"record": record}
    s["workload"]["scheduler"]["fast_forward"] = fast
    return hwsim.run(s)


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_fast_forward_gives_the_per_iteration_results(name):
    slow, fast = _run(WORKLOADS[name], False), _run(WORKLOADS[name], True)
    # every request's times, to the rounding of summed iteration times
    pd.testing.assert_frame_equal(fast.requests, slow.requests, rtol=1e-9, atol=1e-12)
    a, b = slow.summary, fast.summary
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, float) and np.isfinite(v):
            assert b[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
        else:
            assert b[k] == v, k
    # the same iterations, in the iteration table (a run's rows expanded from its record) and
    # recorded the same way (record: full)
    pd.testing.assert_frame_equal(fast.iterations, slow.iterations, rtol=1e-9, atol=1e-12)
    ea, eb = slow.events, fast.events
    assert len(ea) == len(eb)
    pd.testing.assert_frame_equal(eb.reset_index(drop=True), ea.reset_index(drop=True),
                                  rtol=1e-9, atol=1e-12)
    # record: ops (the default) merges a run's iterations of one bound into one event per
    # device: the same summary and the same busy time, bytes and FLOPs by device and category
    ops = _run(WORKLOADS[name], True, record="ops")
    for k, v in a.items():
        if isinstance(v, float) and np.isfinite(v):
            assert ops.summary[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
        else:
            assert ops.summary[k] == v, k
    eo = ops.events
    assert len(eo) <= len(ea)

    def totals(ev):
        ev = ev.assign(busy=ev["end_s"] - ev["start_s"])
        return ev.groupby(["resource", "kind", "category"])[["busy", "bytes", "flops"]].sum()
    pd.testing.assert_frame_equal(totals(eo), totals(ea), rtol=1e-9, atol=1e-9)


def test_runs_happen_and_fewer_simulation_steps_are_taken():
    """The fast path is taken: the same iterations in far fewer scheduler passes, and at the
    default record level in far fewer events."""
    from hwsim.jobs import serving

    calls = {"ff": 0}
    orig = serving.ServingJob._decode_run

    def counted(self, r, decodes):
        calls["ff"] += 1
        return (yield from orig(self, r, decodes))
    serving.ServingJob._decode_run = counted
    try:
        fast = _run({}, True)
    finally:
        serving.ServingJob._decode_run = orig
    assert 0 < calls["ff"] < fast.summary["iterations"] / 3
    ops = _run({}, True, record="ops")
    assert len(ops.events) < len(fast.events) / 3


def test_record_level_is_checked():
    s = copy.deepcopy(BASE)
    s["outputs"] = {"record": "everything"}
    with pytest.raises(hwsim.ScenarioError, match=r"outputs\.record: 'everything' is not "
                                                  r"allowed; valid values: full, ops, summary"):
        hwsim.run(s)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["compute", "memory", "overhead", "comm"]),
                          st.floats(0.0, 1e-2)), max_size=4, unique_by=lambda x: x[0]),
       st.tuples(st.floats(1.0, 96.0), st.floats(0.0, 1e9), st.floats(0.0, 1e9),
                 st.floats(0.0, 1e6)),
       st.floats(0.0, 1e-4), st.floats(1.0, 1e7))
def test_one_kernel_iteration_cost_is_the_general_loops(by, kernel, floor, pairs):
    """StageCost.at's path for one decode attention kernel gives what the general loop gives
    (checked against the same cost with a second kernel that adds nothing)."""
    base = StageCost(0.01, 1e12, 1e9, tuple(by), 0.0, "tp_nvlink", (kernel,),
                     flop_rate=5e14, byte_rate=3e12, speed=1.0, floor=floor)
    general = replace(base, attention=(kernel, (0.0, 0.0, 0.0, 0.0)))
    fast, slow = base.at(pairs), general.at(pairs)
    assert fast[:3] == slow[:3] and fast[4] == slow[4]
    assert fast[3] == slow[3]
