"""Serving engines (hwsim/catalog/engines.py) and quantised serving (hwsim/workloads/quant.py):
engine defaults and overrides, KV capacity by the engine's memory rule, kernel floors, the
custom all-reduce, GQA decode reads, a static batch never cut, weight and KV formats, and
pinned errors for bad input (issue 14, points 1-3)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest

import hwsim
from scenario_edit import edited
from hwsim.catalog import get_device
from hwsim.catalog.engines import get_engine, load_engines, parse_engines_file
from hwsim.exceptions import ScenarioError
from hwsim.workloads import resolve_model
from hwsim.workloads.inference import iteration_ops, serving_cost
from hwsim.workloads.quant import dequant_flops, kv_bytes, weight_bytes, weight_only

SCEN = {
    "name": "engines", "seed": 1,
    "cluster": {"nodes": 1, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8,
                                     "intra_node": "nvlink4"}},
    "workload": {"kind": "inference", "model": {"preset": "llama2-7b"}, "precision": "fp16",
                 "parallelism": {"tp": 1, "replicas": 1},
                 "scheduler": {"policy": "static"},
                 "arrivals": {"process": "constant", "rate_per_s": 1e6, "requests": 4,
                              "prompt_tokens": 256, "output_tokens": 16}},
    "outputs": {"events": False, "utilization": False, "trace": False},
}


def _run(engine: str | None = None, **changes):
    s = edited(SCEN, changes)
    if engine is not None:
        s["workload"]["engine"] = engine
    return hwsim.run(s)


@pytest.fixture
def patched_engine():
    """Replace an engine profile's fields for one test (restored after)."""
    profiles = load_engines().profiles
    saved = dict(profiles)

    def patch(name: str, **fields):
        profiles[name] = dataclasses.replace(saved[name], **fields)  # type: ignore[index]
    yield patch
    profiles.clear()
    profiles.update(saved)  # type: ignore[arg-type]


# -- engine profiles --------------------------------------------------------------------------
def test_every_engine_field_has_a_source_and_defaults_resolve_per_device():
    eng = load_engines()
    assert eng.default == "vllm" and {"vllm", "trtllm", "sglang"} <= set(eng.profiles)
    vllm = eng.get("vllm")
    h100, a100 = get_device("H100-SXM5-80GB"), get_device("A100-SXM4-80GB")
    big = vllm.defaults(h100.id, h100.memory_bytes, 1)
    small = vllm.defaults(a100.id, a100.memory_bytes, 1)
    assert (big["max_batched_tokens"], big["max_batch_size"]) == (8192, 1024)
    assert (small["max_batched_tokens"], small["max_batch_size"]) == (2048, 256)
    sgl = eng.get("sglang")
    assert [sgl.defaults(h100.id, h100.memory_bytes, tp)["memory_fraction"]
            for tp in (1, 2, 4, 8)] == [0.88, 0.87, 0.85, 0.81]
    for p in eng.profiles.values():
        for k in ("scheduler", "kv_memory", "fused", "compute_factor"):
            assert p.sources[k]
    # TensorRT-LLM's capacity scheduler is GUARANTEED_NO_EVICT by default; vLLM and SGLang
    # preempt
    assert [eng.get(n).defaults(h100.id, h100.memory_bytes, 1)["no_evict"]
            for n in ("trtllm", "trtllm-0.5", "vllm", "sglang")] == [True, True, False, False]


def test_kv_capacity_follows_the_engines_memory_rule():
    """vLLM: a fraction of the whole memory holds weights and KV; TensorRT-LLM: a fraction of
    what the weights leave free. Capacity in blocks is exact."""
    spec = resolve_model({"preset": "llama2-7b"})
    cost = serving_cost(spec, precision="fp16")
    mem = get_device("H100-SXM5-80GB").memory_bytes
    for engine, room in (("vllm", mem * 0.9 - cost.weight_bytes),
                         ("trtllm", (mem - cost.weight_bytes) * 0.9)):
        bt = get_engine(engine).scheduler["block_tokens"]
        r = _run(engine)
        blocks = int(room // (cost.kv_bytes_per_token * bt))
        assert r.summary["memory_kv_cache_gb"] == pytest.approx(
            blocks * bt * cost.kv_bytes_per_token / 1e9, rel=1e-9)


def test_scenario_scheduler_fields_override_the_engine():
    """The first request runs alone; the other three arrive during its prefill and join its
    decode (in-flight batching): trtllm's 8,192-token budget takes all three, the
    scenario's 600 (less one decode token) two."""
    r = _run("trtllm", **{"workload.scheduler": {"policy": "continuous",
                                                  "max_batched_tokens": 600}})
    assert r.iterations["prefill_tokens"].max() == 2 * 256
    assert _run("trtllm", **{"workload.scheduler": {"policy": "continuous"}}
                ).iterations["prefill_tokens"].max() == 3 * 256
    with pytest.raises(ScenarioError, match=r"unknown serving engine 'tensorrt'; valid: vllm, "
                                            r"trtllm, trtllm-0.5, sglang"):
        _run("tensorrt")


def test_a_static_batch_beyond_the_token_budget_is_prefilled_in_chunks_not_cut(tmp_path):
    trace = tmp_path / "batch.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n" + "0,256,8\n" * 64)
    s = copy.deepcopy(SCEN)
    s["workload"]["engine"] = "trtllm"
    s["workload"]["scheduler"] = {"policy": "static", "max_batch_size": 64,
                                  "max_batched_tokens": 2048}
    s["workload"]["arrivals"] = {"process": "trace", "trace": str(trace)}
    r = hwsim.run(s)
    it = r.iterations
    prefill_its = int((it["prefill_tokens"] > 0).sum())
    assert prefill_its == 64 * 256 // 2048          # 8 iterations of 8 whole prompts
    decode = it[it["prefill_tokens"] == 0]
    assert (decode["batch_size"] == 64).all() and len(decode) == 8 - 1
    assert r.requests["end_s"].nunique() == 1       # decoded together to the end


def test_cuda_graph_floor_makes_small_iterations_faster_than_eager(patched_engine):
    base = _run("vllm").summary["tpot_p50_s"]
    patched_engine("vllm", graph_tokens=0)           # every iteration launched eagerly
    eager = _run("vllm").summary["tpot_p50_s"]
    assert eager > base


def test_custom_allreduce_beats_the_nccl_ring_for_small_tp_messages(patched_engine):
    tp2 = {"workload.parallelism": {"tp": 2, "replicas": 1}}
    custom = _run("vllm", **tp2).summary["tpot_p50_s"]
    patched_engine("vllm", custom_allreduce_bytes=0.0)
    ring = _run("vllm", **tp2).summary["tpot_p50_s"]
    assert custom < ring


def test_decode_without_gqa_sharing_reads_query_heads_of_kv():
    spec70 = resolve_model({"preset": "llama2-70b"})
    kw = dict(tp=4, precision="fp8", decode_seqs=8, decode_pairs=8 * 1000, logit_tokens=8)
    shared = {op.name: op for op, _ in iteration_ops(spec70, **kw)}
    per_q = {op.name: op for op, _ in iteration_ops(spec70, kv_per_query_head=True, **kw)}
    a, b = shared["layer.attention.decode"], per_q["layer.attention.decode"]
    kv_bytes_shared = 8000 * 2 * (8 // 4) * 128 * 2        # keys x K,V x kv heads/rank x d x 2 B
    assert b.bytes - a.bytes == pytest.approx(kv_bytes_shared * (64 // 8 - 1))
    spec7 = resolve_model({"preset": "llama2-7b"})        # MHA: nothing to share
    kw7 = dict(decode_seqs=4, decode_pairs=400, logit_tokens=4)
    assert [op.bytes for op, _ in iteration_ops(spec7, **kw7)] == \
        [op.bytes for op, _ in iteration_ops(spec7, kv_per_query_head=True, **kw7)]


# -- quantisation -----------------------------------------------------------------------------
def test_weight_and_kv_formats_bytes():
    assert weight_bytes("int4") == pytest.approx(0.5 + 2.5 / 128)
    assert weight_bytes("int4", 64) == pytest.approx(0.5 + 2.5 / 64)
    assert (weight_bytes("fp8"), weight_bytes("bf16"), kv_bytes("fp8"), kv_bytes("fp16")) == \
        (1.0, 2.0, 1.0, 2.0)
    assert weight_only("int4", "fp16") and weight_only("int8", "fp16")
    assert not weight_only("fp8", "fp8") and not weight_only("fp16", "fp16")
    assert dequant_flops(300, 4096, 1024, 128) == 2 * 3 * 4096 * 1024
    with pytest.raises(ValueError, match="unknown weight precision 'int3'"):
        weight_bytes("int3")


def test_quantised_weights_and_kv_shrink_memory_and_grow_the_kv_cache():
    spec = resolve_model({"preset": "llama2-7b"})
    fp16 = serving_cost(spec, precision="fp16")
    int4 = serving_cost(spec, precision="fp16", weight_precision="int4")
    tables = 2.0 * 2 * spec.vocab * spec.hidden  # embedding and LM head, 16-bit in both
    assert int4.weight_bytes == pytest.approx(
        (fp16.weight_bytes - tables) * weight_bytes("int4") / 2 + tables)
    fp8 = serving_cost(spec, precision="fp8")
    assert fp8.weight_bytes == pytest.approx((fp16.weight_bytes - tables) / 2 + tables)
    fp8kv = serving_cost(spec, precision="fp16", kv_precision="fp8")
    assert fp8kv.kv_bytes_per_token == fp16.kv_bytes_per_token / 2
    a = _run("vllm").summary["memory_kv_cache_gb"]
    b = _run("vllm", **{"workload.kv_precision": "fp8"}).summary["memory_kv_cache_gb"]
    assert b == pytest.approx(a, rel=1e-3)  # same bytes, twice the tokens


def test_int4_weights_speed_up_memory_bound_decode_and_pay_dequant_in_prefill():
    spec = resolve_model({"preset": "llama2-7b"})
    dec = dict(decode_seqs=1, decode_pairs=100, logit_tokens=1)
    plain = iteration_ops(spec, precision="fp16", **dec)
    w4 = iteration_ops(spec, precision="fp16", weight_precision="int4", **dec)
    assert sum(op.bytes * n for op, n in w4) < 0.4 * sum(op.bytes * n for op, n in plain)
    assert any(op.fused and op.name.endswith(".dequant") for op, _ in w4)
    r16 = _run("vllm", **{"workload.arrivals.requests": 1})
    r4 = _run("vllm", **{"workload.arrivals.requests": 1, "workload.weight_precision": "int4"})
    assert r4.summary["tpot_p50_s"] < 0.6 * r16.summary["tpot_p50_s"]


@pytest.mark.parametrize("changes,match", [
    ({"workload.weight_group_size": 64},
     r"weight_group_size applies to weight_precision int4 only"),
    ({"workload.precision": "fp8", "workload.weight_precision": "fp16"},
     r"precision 'fp8' runs GEMMs on fp8 inputs"),
    ({"workload.kv_precision": "fp4"}, r"workload\.kv_precision"),
])
def test_bad_quantisation_is_refused(changes, match):
    with pytest.raises(ScenarioError, match=match):
        _run("vllm", **changes)


def test_bad_engines_file_is_pinned(tmp_path):
    from importlib import resources
    src = resources.files("hwsim.catalog").joinpath("data/engines.yaml").read_text()
    for bad, msg in ((src.replace('      fused: "[VLLM-NORM]', '      fusedx: "[VLLM-NORM]', 1),
                      r"engines\.vllm\.sources\.fused: every choice and constant needs a source"),
                     (src.replace("kv_memory: total", "kv_memory: half", 1),
                      r"engines\.vllm\.kv_memory: expected total or free, got 'half'"),
                     (src.replace("no_evict: false", "no_evict: 1", 1),
                      r"engines\.vllm\.scheduler\.no_evict: expected true or false, got 1"),
                     (src.replace("      no_evict: false\n", "", 1),
                      r"engines\.vllm\.scheduler: expected exactly block_tokens, max_batch_size, "
                      r"max_batched_tokens, chunked_prefill, memory_fraction, no_evict")):
        f = tmp_path / "engines.yaml"
        f.write_text(bad)
        with pytest.raises(ScenarioError, match=msg):
            parse_engines_file(f)
    assert math.isfinite(get_engine().graph_op_floor_s)
