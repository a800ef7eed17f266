"""Issue 16, points 3 and 4: Blackwell devices and FP4; AMD Instinct devices, their switchless
Infinity Fabric mesh and RCCL on it. Catalog entries with their precisions, fp4 against fp8,
pinned errors, the mesh's links and the mesh all-reduce against a single ring (the rccl-tests
rows themselves are validated in tests/test_nccl_calibration.py, case "MI300X 8x xgmi")."""

from __future__ import annotations

import math

import pytest
import simpy

import hwsim
from scenario_edit import edited
from hwsim.catalog import catalog_rows, get_device, get_link
from hwsim.engine import Recorder
from hwsim.exceptions import ScenarioError
from hwsim.jobs.collectives import choose, collective
from hwsim.jobs.collectives import eligible
from hwsim.jobs.nccl import PARAMS, busbw_factor, mesh
from hwsim.jobs.system import System
from hwsim.topology import cluster, nodes_of_kind
from hwsim.topology.builders import single_node
from hwsim.workloads import resolve_model
from hwsim.workloads.inference import serving_cost
from hwsim.workloads.quant import weight_bytes, weight_only

MiB, GiB = 2**20, 2**30


# -- catalog ----------------------------------------------------------------------------------
@pytest.mark.parametrize("device, precisions, memory_gb", [
    ("B200", {"fp4": 9e15, "fp6": 4.5e15, "fp8": 4.5e15, "bf16": 2.25e15}, 180),
    ("B300", {"fp4": 13.125e15, "fp6": 4.5e15, "fp8": 4.5e15, "bf16": 2.25e15}, 288),
    ("GB200", {"fp4": 10e15, "fp6": 5e15, "fp8": 5e15, "bf16": 2.5e15}, 186),
    ("GB300", {"fp4": 15e15, "fp6": 5e15, "fp8": 5e15, "bf16": 2.5e15}, 279),
    ("MI325X", {"fp8": 2614.9e12, "bf16": 1307.4e12}, 256),
    ("MI355X", {"fp4": 10066.3e12, "fp6": 10066.3e12, "fp8": 5033.2e12, "bf16": 2516.6e12},
     288),
])
def test_new_devices_load_with_their_dense_peaks_and_memory(device, precisions, memory_gb):
    d = get_device(device)
    for p, flops in precisions.items():
        assert d.peak(p) == pytest.approx(flops), p
    assert d.memory_bytes == pytest.approx(memory_gb * 1e9)
    assert d.host_link == "pcie5-x16"
    for field in ("peak", "memory_bytes", "mem_bw_bytes_per_s", "compute_efficiency",
                  "peak_power_w"):
        assert d.sources[field if field != "peak" else "peak_flops_per_s"].strip()


def test_cdna4_runs_fp6_at_the_fp4_rate_and_blackwell_at_the_fp8_rate():
    assert get_device("MI355X").peak("fp6") == get_device("MI355X").peak("fp4")
    for d in ("B200", "B300", "GB200", "GB300"):
        assert get_device(d).peak("fp6") == get_device(d).peak("fp8")


def test_the_catalog_says_which_figures_have_no_measurement_of_their_own():
    rows = {r["id"]: r for r in catalog_rows("devices")}
    for d in ("B300", "GB200", "GB300"):  # efficiencies are stand-ins
        assert {"compute_efficiency", "memory_efficiency"} <= set(
            rows[d]["unmeasured"].split(", ")), d
    # MI355X: its bf16 GEMM measured since session 29 (Primus' hipBLASLt rows), its HBM not
    assert "compute_efficiency" not in rows["MI355X"]["unmeasured"]
    assert "memory_efficiency" in rows["MI355X"]["unmeasured"]
    # MI325X: AMD's max-achievable-FLOPs measurement; its HBM3E has no stream measurement yet
    assert "memory_efficiency" in rows["MI325X"]["unmeasured"]
    assert "compute_efficiency" not in rows["MI325X"]["unmeasured"]
    # MI300X: gemm_achievable (bf16), AMD's FP8 max-achievable FLOPs, Azure's HBM copy
    for f in ("compute_efficiency", "gemm_ceiling", "memory_efficiency"):
        assert f not in rows["MI300X"]["unmeasured"], f
    assert "compute_efficiency" not in rows["B200"]["unmeasured"]
    # Blackwell GEMM ceilings: GB200/GB300 measured (Azure's cuBLASLt tables), B200's FP4 and
    # B300's a stand-in of the same-chip GB part, so listed
    for d in ("GB200", "GB300"):
        assert "gemm_ceiling" not in rows[d]["unmeasured"], d
    for d in ("B200", "B300"):
        assert "gemm_ceiling" in rows[d]["unmeasured"], d
    assert "peak" not in rows["MI355X"]["unmeasured"]  # a datasheet figure
    links = {r["id"]: r for r in catalog_rows("links")}
    assert links["xgmi-mi300x"]["unmeasured"] == ""  # datasheet bw, measured efficiency
    assert links["xgmi-mi355x"]["unmeasured"] == "latency, efficiency"


# -- FP4 ----------------------------------------------------------------------------------------
def test_fp4_is_faster_than_fp8_on_a_compute_bound_op_only_where_there_are_fp4_units():
    flops, nbytes = 1e13, 1e6  # compute-bound: 1e13 FLOPs over 1 MB
    b200 = get_device("B200")
    t4, t8 = (b200.op_time_s(flops, nbytes, p) for p in ("fp4", "fp8"))
    assert t4 < t8
    # 9 PF against 4.5 PF dense, each at its own measured (fp8) or stand-in (fp4) GEMM ceiling
    ratio = 2.0 * b200.ceiling("fp4") / b200.ceiling("fp8")
    assert ratio == pytest.approx(2 * 0.5604 / 0.7628)
    assert t8 / t4 == pytest.approx(ratio, rel=0.05)
    assert b200.op_bound(flops, nbytes, "fp4") == "compute"
    for d in ("H100-SXM5-80GB", "H200-SXM-141GB", "MI300X", "MI325X", "A100-SXM4-80GB"):
        with pytest.raises(ValueError, match=rf"device {d} has no fp4 matrix units \(it lists "
                                             r"no fp4 peak\)"):
            get_device(d).op_time_s(flops, nbytes, "fp4")


def test_nvfp4_and_mxfp4_weights_carry_their_block_scales():
    assert weight_bytes("fp4") == pytest.approx(0.5 + 1 / 16)   # E4M3 scale per 16
    assert weight_bytes("mxfp4") == pytest.approx(0.5 + 1 / 32)  # E8M0 scale per 32
    assert not weight_only("fp4", "fp4") and not weight_only("mxfp4", "fp4")
    assert weight_only("fp4", "fp8") and weight_only("mxfp4", "bf16")
    spec = resolve_model({"preset": "llama2-70b"})
    w = {p: serving_cost(spec, tp=1, precision=p).weight_bytes for p in ("fp8", "fp4")}
    mx = serving_cost(spec, tp=1, precision="fp4", weight_precision="mxfp4").weight_bytes
    assert mx < w["fp4"] < w["fp8"]
    assert w["fp4"] / w["fp8"] == pytest.approx(0.5625, rel=0.03)  # LM head, embedding: 16 bit


SERVE = {
    "name": "fp4", "seed": 1,
    "cluster": {"nodes": 1, "node": {"gpu": "B200", "gpus_per_node": 1}},
    "workload": {"kind": "inference", "model": {"preset": "llama2-7b"}, "precision": "fp4",
                 "engine": "trtllm", "parallelism": {"tp": 1, "replicas": 1},
                 "arrivals": {"process": "constant", "rate_per_s": 1e6, "requests": 16,
                              "prompt_tokens": 1024, "output_tokens": 32}},
    "outputs": {"events": False, "utilization": False, "trace": False},
}


def test_fp4_serving_on_b200_beats_fp8_and_holds_more_kv():
    r4 = hwsim.run(SERVE).summary
    r8 = hwsim.run(edited(SERVE, {"workload.precision": "fp8"})).summary
    assert r4["tpot_p50_s"] < r8["tpot_p50_s"]
    assert r4["ttft_p50_s"] < r8["ttft_p50_s"]
    assert r4["memory_kv_cache_gb"] > r8["memory_kv_cache_gb"]


def test_fp4_on_a_device_without_fp4_units_is_refused_naming_the_field():
    s = edited(SERVE, {"cluster.node.gpu": "H100-SXM5-80GB"})
    with pytest.raises(ScenarioError, match=r"precision 'fp4' needs fp4 matrix units and "
                                            r"H100-SXM5-80GB has none .*valid: a device with "
                                            r"them \(B200, B300, GB200, GB300, MI355X\)") as e:
        hwsim.run(s)
    assert e.value.field == "workload.precision"
    # weight-only 4-bit floats on the same device are fine (widened inside fp8 GEMMs)
    ok = hwsim.run(edited(s, {"workload.precision": "fp8", "workload.weight_precision": "fp4"}))
    assert ok.summary["output_tokens_per_s"] > 0


def test_fp4_gemms_need_4_bit_weights():
    s = edited(SERVE, {"workload.weight_precision": "fp16"})
    with pytest.raises(ScenarioError, match=r"precision 'fp4' runs GEMMs on 4-bit inputs: "
                                            r"weights stored in fp16 .*valid: weight_precision "
                                            r"fp4 \(NVFP4, the default\) or mxfp4"):
        hwsim.run(s)


# -- the Infinity Fabric mesh -------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_a_mesh_node_joins_every_gpu_pair_by_one_link_and_has_no_switch(n):
    G = single_node(gpu="MI300X", gpus_per_node=n, intra_node="xgmi-mi300x", cpu="EPYC-9654")
    xgmi = [(u, v) for u, v, d in G.edges(data=True) if d["link_class"] == "xgmi"]
    assert len(xgmi) == n * (n - 1) // 2
    gpus = [v for v, d in G.nodes(data=True) if d["kind"] == "gpu"]
    assert all(G.has_edge(a, b) for a in gpus for b in gpus if a != b)
    assert not [v for v, d in G.nodes(data=True) if d["kind"] in ("nvswitch", "switch")]
    bw = get_link("xgmi-mi300x").bw_bytes_per_s
    assert all(G.edges[e]["bw_bytes_per_s"] == bw for e in xgmi)


def test_a_mesh_of_more_gpus_than_links_is_refused():
    with pytest.raises(ScenarioError, match=r"xgmi-mi300x is a switchless Infinity Fabric mesh: "
                                            r"each GPU has 7 links, one per peer, so it joins at "
                                            r"most 8 GPUs, not 9; valid: gpus_per_node <= 8") as e:
        single_node(gpu="MI300X", gpus_per_node=9, intra_node="xgmi-mi300x")
    assert e.value.field == "gpus_per_node"
    with pytest.raises(ScenarioError, match=r"'xgmi-mi300x' is a xgmi link; expected a ici link"):
        single_node(tpu="TPU-v4", gpus_per_node=4, intra_node="xgmi-mi300x")


def _mesh_system(n: int = 8, gpu: str = "MI300X", link: str = "xgmi-mi300x"):
    g = cluster(nodes=1, node=dict(gpu=gpu, gpus_per_node=n, intra_node=link))
    return g, nodes_of_kind(g, "gpu")


def _time(graph, devices, op, size, algorithm, protocol="auto"):
    env = simpy.Environment()
    system = System(env, graph, Recorder())
    if protocol == "auto":
        algorithm, protocol = choose(system, devices, op, size, algorithm=algorithm)
    env.process(collective(system, op, devices, size, algorithm=algorithm, protocol=protocol))
    env.run()
    return env.now


@pytest.mark.parametrize("op", ["allreduce", "allgather", "reduce_scatter"])
@pytest.mark.parametrize("size", [1024, MiB, 64 * MiB, GiB])
def test_a_mesh_collective_is_never_slower_than_a_single_ring_on_the_same_links(op, size):
    g, devs = _mesh_system()
    for proto in ("ll", "simple"):
        assert _time(g, devs, op, size, "mesh", proto) <= _time(g, devs, op, size, "ring",
                                                                 proto) * (1 + 1e-9)


def test_the_mesh_all_reduce_uses_all_seven_links_where_a_ring_uses_one():
    g, devs = _mesh_system()
    link = get_link("xgmi-mi300x")
    eff = link.bw_bytes_per_s * link.efficiency
    S = 16 * GiB
    bus = {a: S / _time(g, devs, "allreduce", S, a, "simple") * busbw_factor("allreduce", 8)
           for a in ("ring", "mesh")}
    assert bus["ring"] == pytest.approx(eff, rel=0.03)       # one link per GPU
    assert bus["mesh"] == pytest.approx(7 * eff, rel=0.03)   # all seven
    # sensitivity: a faster link (MI355X's) gives a proportionally faster mesh all-reduce
    g5, d5 = _mesh_system(gpu="MI355X", link="xgmi-mi355x")
    t5 = _time(g5, d5, "allreduce", S, "mesh", "simple")
    assert S / t5 * busbw_factor("allreduce", 8) == pytest.approx(
        bus["mesh"] * 76.8 / 64, rel=0.03)


def test_auto_runs_the_mesh_on_an_infinity_fabric_node_and_never_on_nvlink():
    g, devs = _mesh_system()
    sysm = System(simpy.Environment(), g, Recorder())
    assert mesh(sysm, devs) and mesh(sysm, devs[:4])
    assert eligible(sysm, devs, "allreduce", GiB, PARAMS) == ["ring", "mesh"]
    assert choose(sysm, devs, "allreduce", GiB)[0] == "mesh"
    assert choose(sysm, devs[:4], "allgather", GiB)[0] == "mesh"
    assert eligible(sysm, devs, "alltoall", GiB, PARAMS) == ["pairwise"]
    gn = cluster(nodes=1, node=dict(gpu="H100-SXM5-80GB", gpus_per_node=8, intra_node="nvlink4"))
    sysn = System(simpy.Environment(), gn, Recorder())
    assert not mesh(sysn, nodes_of_kind(gn, "gpu"))
    with pytest.raises(ValueError, match="mesh needs every pair of ranks joined by a direct "
                                         "link"):
        _time(gn, nodes_of_kind(gn, "gpu"), "allreduce", GiB, "mesh", "simple")


def test_the_mesh_all_reduce_matches_its_closed_form():
    """Alone, Simple: 2(n-1) steps of S/(n(n-1)) per link at B eff, plus per step one hop
    latency and one RCCL slice (split over the n-1 flows) at the link's rate."""
    g, devs = _mesh_system()
    link = get_link("xgmi-mi300x")
    B, a, n = link.bw_bytes_per_s * link.efficiency, link.latency_s, 8
    for S in (64 * MiB, GiB):
        per = S / (n * (n - 1))
        step = per / B
        frac = min(1.0, PARAMS.rccl_slice_bytes / ((n - 1) * per))
        want = 2 * (n - 1) * (step + a + step * frac)
        assert _time(g, devs, "allreduce", S, "mesh", "simple") == pytest.approx(want, rel=1e-6)
        assert math.isfinite(want)


def test_fp4_needs_an_engine_with_an_fp4_path():
    from hwsim.catalog.engines import get_engine
    assert get_engine("trtllm").fp4_weights == ("fp4", "mxfp4")
    assert get_engine("trtllm-0.5").fp4_weights == ()
    assert get_engine("trtllm").sources["fp4_weights"].startswith("[TRT-QUANT]")
    s = edited(SERVE, {"workload.engine": "trtllm-0.5"})
    with pytest.raises(ScenarioError, match=r"precision 'fp4' with fp4 weights: engine "
                                            r"'trtllm-0.5' has no documented FP4 path for them "
                                            r"\(engines.yaml fp4_weights: none\); valid: engine "
                                            r"vllm or trtllm, or precision fp8") as e:
        hwsim.run(s)
    assert e.value.field == "workload.engine"
    # MI355X serves MXFP4 (AMD's format) through vLLM
    mx = edited(SERVE, {"cluster.node.gpu": "MI355X", "workload.engine": "vllm",
                        "workload.weight_precision": "mxfp4"})
    assert hwsim.run(mx).summary["output_tokens_per_s"] > 0


@pytest.mark.parametrize("device, fp8, fp4", [
    ("GB200", 2819.5 / 5000, 5604.0 / 10000),    # [AZ-GB200] cuBLASLt, 16384^3
    ("GB300", 3308.5 / 5000, 8640.3 / 15000),    # [AZ-GB300] cuBLASLt, 16384^3
    ("B200", 3432.5 / 4500, 5604.0 / 10000),     # gemm_achievable fp8; fp4: GB200's fraction
    ("B300", 3308.5 / 5000, 8640.3 / 15000),     # GB300's fractions (stand-ins)
])
def test_blackwell_gemm_ceilings_are_the_cited_measurements(device, fp8, fp4):
    d = get_device(device)
    assert d.ceiling("fp8") == pytest.approx(fp8, abs=5e-5)
    assert d.ceiling("fp4") == pytest.approx(fp4, abs=5e-5)
    assert d.ceiling("bf16") == d.compute_efficiency == pytest.approx(1745 / 2250, abs=5e-5)
    # a 16384^3 FP4 GEMM runs at the measured fraction of the FP4 peak, not the BF16 one
    flops = 2 * 16384 ** 3
    t = d.op_time_s(flops, 3 * 16384 ** 2 * 0.5, "fp4")
    assert flops / t == pytest.approx(fp4 * d.peak("fp4"), rel=0.02)  # ramp, launch: < 2 %
