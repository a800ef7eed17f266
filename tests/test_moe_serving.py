"""MoE serving with expert parallelism (hwsim.workloads.moe, hwsim.jobs.moe): memory
conservation, ep = 1 as before, all-to-all bytes, expert load imbalance, determinism, and pinned
errors for bad layouts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import simpy

import hwsim
from hwsim.engine import Recorder
from hwsim.jobs.collectives import plan as collective_plan
from hwsim.jobs.serving import ServingJob, ServingPlan
from hwsim.jobs.system import System
from hwsim.scenario.build import prepare
from hwsim.scenario.loader import load_scenario
from hwsim.workloads import resolve_model
from hwsim.workloads.hf_config import spec_from_hf_config
from hwsim.workloads.inference import iteration_ops, serving_cost, stage_layers
from hwsim.workloads.moe import (alltoall_bytes, draw_loads, expected_load, moe_layout,
                                 routing_perms, routing_probs)
from hwsim.workloads.transformer import TransformerSpec, transformer_ops

MIXTRAL = resolve_model("mixtral-8x7b")
# DeepSeek-V3's MoE shape (transformers' DeepseekV3Config defaults: 256 routed experts of
# moe_intermediate_size 2048, top-8, one shared expert, first_k_dense_replace 3), scaled down
# to 8 layers and grouped-query attention (multi-head latent attention is not modelled)
DSV3ISH = TransformerSpec(layers=8, hidden=7168, heads=128, kv_heads=8, vocab=129280,
                          ffn_hidden=18432, experts=256, top_k=8, expert_ffn_hidden=2048,
                          shared_ffn_hidden=2048, dense_layers=3, activation="swiglu",
                          norm="rmsnorm", position="rope", bias=False, dropout=False,
                          name="dsv3ish")

BASE = {
    "name": "moe", "seed": 0,
    "cluster": {"nodes": 1, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8,
                                     "cpu": "Xeon-8480", "intra_node": "nvlink4"}},
    "workload": {"kind": "inference", "model": {"preset": "mixtral-8x7b"},
                 "precision": "bf16", "engine": "sglang", "parallelism": {"tp": 8},
                 "arrivals": {"process": "poisson", "rate_per_s": 20.0, "requests": 120,
                              "prompt_tokens": 512, "output_tokens": 64}},
}


def _scenario(par: dict | None = None, **workload) -> dict:
    s = copy.deepcopy(BASE)
    if par is not None:
        s["workload"]["parallelism"] = par
    s["workload"].update(workload)
    return s


def _job(s: dict, run: bool = True) -> ServingJob:
    sc = load_scenario(s)
    g, plan = prepare(sc)
    env = simpy.Environment()
    job = ServingJob(System(env, g, Recorder(), np.random.default_rng(sc.seed)), plan)
    job.start()
    if run:
        env.run()
    return job


def _elems(spec: TransformerSpec, **kw) -> float:
    """Weight elements summed over every device of one replica (bf16: 2 bytes each)."""
    tp, ep, pp, dp = kw.get("tp", 1), kw.get("ep", 1), kw.get("pp", 1), 1
    if kw.get("attention_dp"):
        dp = ep
    per_stage = [serving_cost(spec, stage=s, precision="bf16", **kw).weight_bytes / 2
                 for s in range(pp)]
    return tp * dp * sum(per_stage)


def _expert_elems(spec: TransformerSpec) -> float:
    moe_layers = spec.layers - spec.dense_layers
    return moe_layers * spec.experts * 3 * spec.hidden * spec.expert_ffn_hidden


def _replicated(spec: TransformerSpec) -> float:
    """What tensor parallelism replicates on every rank: two RMSNorms and the router per
    layer, the final norm."""
    h = spec.hidden
    moe_layers = spec.layers - spec.dense_layers
    return spec.layers * 2 * h + moe_layers * h * spec.experts + h


# -- memory -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [MIXTRAL, DSV3ISH], ids=["mixtral", "dsv3ish"])
def test_weights_per_rank_sum_to_the_models(spec):
    """Conservation: summed over a replica's devices the weights are the model's parameters
    plus what TP replicates; with attention_dp every attention group holds the dense parts,
    the routed experts are held once."""
    P, X, R = spec.params(), _expert_elems(spec), _replicated(spec)
    for tp, ep in ((8, 1), (8, 2), (8, 8), (4, 4)):
        assert _elems(spec, tp=tp, ep=ep) == pytest.approx(P + (tp - 1) * R, rel=1e-12)
    for tp, ep in ((1, 8), (2, 4), (1, 2)):
        want = X + ep * (P - X + (tp - 1) * R)
        assert _elems(spec, tp=tp, ep=ep, attention_dp=True) == pytest.approx(want, rel=1e-12)
    # pipeline stages split the layers (the dense ones first), the sum is unchanged
    assert _elems(spec, tp=2, ep=4, attention_dp=True, pp=2) == pytest.approx(
        X + 4 * (P - X + R), rel=1e-12)


def test_more_ep_ranks_never_increase_expert_bytes_per_rank():
    """Each rank holds experts / ep routed experts: with attention_dp the rest of a rank's
    weights stays the same, so the weights fall by exactly the experts given away; with the
    tp devices shared, more ep keeps each rank's expert bytes (whole experts instead of
    slices of all)."""
    for spec in (MIXTRAL, DSV3ISH):
        moe_layers = spec.layers - spec.dense_layers
        one = 3 * spec.hidden * spec.expert_ffn_hidden * 2      # bytes of one routed expert
        rest, prev = set(), np.inf
        for ep in [d for d in range(2, spec.experts + 1) if spec.experts % d == 0][:6]:
            wb = serving_cost(spec, tp=1, ep=ep, attention_dp=True).weight_bytes
            expert = moe_layers * spec.experts // ep * one
            assert expert <= prev
            rest.add(round(wb - expert))
            prev = expert
        assert len(rest) == 1
        at = [serving_cost(spec, tp=8, ep=ep).weight_bytes for ep in (1, 2, 4, 8)]
        assert max(at) == pytest.approx(min(at), rel=1e-12)


def test_kv_per_rank_follows_the_attention_group():
    """A group of tp devices holds its sequences' whole KV (per its tp), and the replica's
    pool is the groups' pools together."""
    tp1 = serving_cost(MIXTRAL, tp=1).kv_bytes_per_token
    assert serving_cost(MIXTRAL, tp=1, ep=8, attention_dp=True).kv_bytes_per_token == tp1
    assert serving_cost(MIXTRAL, tp=8, ep=8).kv_bytes_per_token == tp1 / 8
    job = _job(_scenario({"tp": 1, "ep": 8, "attention_dp": True}), run=False)
    bt = job.plan.block_tokens
    for d in job.replicas[0].stages[0]:
        kv = job.system.device(d).memory.by_label["kv_cache"]
        assert kv == pytest.approx(job.replicas[0].blocks_total / 8 * bt * tp1)


# -- ep = 1 is today's MoE ------------------------------------------------------------------------
def test_ep1_gives_exactly_the_all_experts_layout():
    for T in (1, 7, 300, 4096):
        kw = dict(tp=8, prefill_tokens=T, prefill_pairs=T * (T + 1) / 2, logit_tokens=1)
        ops = iteration_ops(MIXTRAL, **kw)
        assert ops == iteration_ops(MIXTRAL, ep=1, **kw)
        up = next(op for op, _ in ops if op.name == "layer.ffn_up")
        E, k, h, f = 8, 2, 4096, 14336
        touched = E * (1 - (1 - k / E) ** T)   # experts an iteration of T tokens touches
        assert up.flops == 2.0 * T * k * h * 2 * f / 8
        assert up.bytes == pytest.approx(2 * T * k * h + 2 * touched * h * 2 * f / 8
                                         + 2 * T * k * 2 * f / 8, rel=1e-12)
        assert not any(op.comm == "ep_alltoall" for op, _ in ops)
    a = hwsim.run(_scenario({"tp": 8}))
    b = hwsim.run(_scenario({"tp": 8, "ep": 1}))
    assert a.summary == b.summary
    assert "expert_imbalance" not in a.summary


# -- all-to-all ---------------------------------------------------------------------------------
def test_alltoall_bytes_closed_form():
    T, k, h, ep = 37, 2, 4096, 8
    assert alltoall_bytes(T, k, h, 2, ep) == T * k * h * 2 * 7 / 8
    ops = iteration_ops(MIXTRAL, tp=1, ep=ep, attention_dp=True, decode_seqs=T,
                        decode_pairs=T * 100.0, logit_tokens=T)
    a2a = [(op, n) for op, n in ops if op.comm == "ep_alltoall"]
    assert [op.name for op, _ in a2a] == ["layer.moe.dispatch.ep_alltoall",
                                          "layer.moe.combine.ep_alltoall"]
    assert all(n == 32 for _, n in a2a)
    buf = a2a[0][0].comm_bytes
    assert buf == T * k * h * 2          # balanced: the rank's copies, T_all k / ep = T k
    job = _job(_scenario({"tp": 1, "ep": ep, "attention_dp": True}), run=False)
    devs = job.replicas[0].stages[0]
    flows = collective_plan(job.system, "alltoall", "pairwise", devs, buf,
                            {d: i for i, d in enumerate(devs)})[0].flows
    sent = sum(f.nbytes for f in flows if f.src == devs[0])
    assert sent == pytest.approx(alltoall_bytes(T, k, h, 2, ep), rel=1e-12)
    # ep alone: the FFN's all-reduce combines, nothing is exchanged
    ops = iteration_ops(MIXTRAL, tp=8, ep=8, decode_seqs=T, decode_pairs=T * 100.0)
    assert not any(op.comm == "ep_alltoall" for op, _ in ops)


def test_alltoall_time_shows_in_the_summary_and_the_breakdown():
    r = hwsim.run(_scenario({"tp": 1, "ep": 8, "attention_dp": True}))
    s = r.summary
    assert 0 < s["alltoall_time_share"] < 0.5
    assert s["expert_imbalance"] >= 1.0 and s["expert_imbalance_max"] >= s["expert_imbalance"]
    comm = r.bottleneck.set_index("category")["seconds"].get("comm:nvlink", 0.0)
    assert comm > 0
    ev = r.events
    a2a = ev[(ev["name"] == "moe.alltoall") & (ev["rank"] == 0)]
    assert len(a2a) > 0
    assert hwsim.run(_scenario({"tp": 8, "ep": 8})).summary["alltoall_time_share"] == 0.0


# -- load imbalance -------------------------------------------------------------------------------
def test_uniform_imbalance_shrinks_with_tokens():
    rng = np.random.default_rng(0)
    p = routing_probs(8)
    ratios = []
    for copies in (16, 256, 4096, 1_000_000):
        busiest, _ = draw_loads(rng, copies, p, None, 8, 200)
        ratios.append(float(busiest.mean()) * 8 / copies)
    assert ratios == sorted(ratios, reverse=True)
    assert ratios[0] > 1.5 and ratios[-1] == pytest.approx(1.0, abs=0.01)
    # one token's copies touch at most top_k experts; many tokens touch all of them
    _, active = draw_loads(rng, 2, routing_probs(256), None, 8, 100)
    assert active.max() <= 2
    _, active = draw_loads(rng, 100_000, routing_probs(256), None, 8, 10)
    assert (active == 32).all()


def test_skew_raises_imbalance_monotonically():
    rng = np.random.default_rng(1)
    out = []
    for s in (0.0, 0.5, 1.0, 2.0):
        p = routing_probs(64, s)
        perms = routing_perms(rng, 64, 50, s)
        busiest, _ = draw_loads(rng, 20_000, p, perms, 8, 50)
        out.append(float(busiest.mean()) * 8 / 20_000)
    assert out == sorted(out) and out[0] < 1.05 and out[-1] > 2


def test_imbalance_slows_the_iteration_and_many_tokens_approach_balance():
    job = _job(_scenario({"tp": 1, "ep": 8, "attention_dp": True}), run=False)
    devs = job.replicas[0].stages[0]
    D = 512                                   # decoding sequences per group
    shape = (0, 0.0, D, D * 600.0, D)
    balanced = job._stage_time(0, devs, *shape)
    mean = 8 * D * 2 / 8                      # copies per rank, balanced
    times = [job._stage_time(0, devs, *shape, moe=(f * mean, 1.0))[0]
             for f in (1.0, 1.25, 1.5, 2.0, 3.0)]
    assert times == sorted(times) and times[-1] > times[0]
    assert times[0] == pytest.approx(balanced[0], rel=1e-3)
    # drawn loads: as the batch grows the busiest rank's excess shrinks and the iteration
    # approaches the balanced time
    rng = np.random.default_rng(2)
    excess = []
    for D in (512, 4096, 16384):
        shape = (0, 0.0, D, D * 600.0, D)
        busiest, active = draw_loads(rng, 8 * D * 2, routing_probs(8), None, 8, 32)
        drawn = job._stage_time(0, devs, *shape, moe=(float(round(busiest.mean())),
                                                      float(active.mean())))[0]
        excess.append(drawn / job._stage_time(0, devs, *shape)[0] - 1)
    assert excess == sorted(excess, reverse=True)
    assert 0 <= excess[-1] < 0.01


def test_skewed_routing_runs_slower_than_uniform():
    par = {"tp": 1, "ep": 8, "attention_dp": True}
    a = hwsim.run(_scenario(par)).summary
    b = hwsim.run(_scenario(par, expert_skew=1.5)).summary
    assert b["expert_imbalance"] > a["expert_imbalance"] + 0.5
    assert b["tpot_mean_s"] > a["tpot_mean_s"]


def test_expected_load_closed_form():
    assert expected_load(8, 2, 1, 10) == (20.0, 8 * (1 - 0.75 ** 10))
    assert expected_load(256, 8, 8, 1) == (1.0, 32 * (1 - (1 - 8 / 256)))
    assert expected_load(8, 2, 8, 0) == (0.0, 0.0)


# -- attention groups ---------------------------------------------------------------------------
def test_sequences_stay_on_the_least_loaded_group():
    """A burst is spread evenly over the attention groups; every sequence keeps its group."""
    s = _scenario({"tp": 1, "ep": 8, "attention_dp": True})
    s["workload"]["arrivals"].update(process="constant", rate_per_s=1e7)
    job = _job(s)
    groups = job.experts.group_of
    assert len(groups) == 120
    assert np.bincount(list(groups.values()), minlength=8).tolist() == [15] * 8
    job = _job(_scenario({"tp": 1, "ep": 8, "attention_dp": True}))
    assert set(job.experts.group_of.values()) == set(range(8))


def test_deepseek_style_layers_run_with_dense_and_shared_parts():
    ops = iteration_ops(DSV3ISH, tp=1, ep=8, attention_dp=True, decode_seqs=4,
                        decode_pairs=400.0, logit_tokens=4)
    n = {op.name: k for op, k in ops}
    assert n["layer.dense_ffn_up"] == 3 and n["layer.ffn_up"] == 5
    assert n["layer.shared_ffn_up"] == 5 and n["layer.moe.dispatch.ep_alltoall"] == 5
    up = next(op for op, _ in ops if op.name == "layer.ffn_up")
    mt, touched = expected_load(256, 8, 8, 4 * 8)
    assert up.flops == pytest.approx(2 * mt * 7168 * 2 * 2048)
    assert up.shape[4] == np.ceil(touched)
    # and serve (explicit fields), one H200-sized group each
    s = _scenario({"tp": 1, "ep": 8, "attention_dp": True}, model={
        "layers": 8, "hidden": 7168, "heads": 128, "kv_heads": 8, "vocab": 129280,
        "ffn_hidden": 18432, "activation": "swiglu", "experts": 256, "top_k": 8,
        "expert_ffn_hidden": 2048, "shared_ffn_hidden": 2048, "dense_layers": 3})
    s["workload"]["precision"] = "fp8"
    r = hwsim.run(s).summary
    assert r["fits"] and r["requests_completed"] == 120 and r["alltoall_time_share"] > 0


# -- determinism ---------------------------------------------------------------------------------
def test_same_seed_same_run_other_seed_other_draws():
    par = {"tp": 1, "ep": 8, "attention_dp": True}
    a = hwsim.run(_scenario(par, expert_skew=0.8))
    b = hwsim.run(_scenario(par, expert_skew=0.8))
    assert a.summary == b.summary
    assert a.requests.equals(b.requests)
    c = _scenario(par, expert_skew=0.8)
    c["seed"] = 1
    assert hwsim.run(c).summary["expert_imbalance"] != a.summary["expert_imbalance"]


# -- models from configs ------------------------------------------------------------------------
def test_qwen2_moe_config_keys_map_to_the_moe_fields():
    cfg = {"model_type": "qwen2_moe", "num_hidden_layers": 24, "hidden_size": 2048,
           "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 5632,
           "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
           "num_experts": 60, "num_experts_per_tok": 4, "vocab_size": 151936,
           "max_position_embeddings": 8192, "mlp_only_layers": [0, 1]}
    spec = spec_from_hf_config(cfg)
    assert (spec.experts, spec.top_k, spec.expert_ffn_hidden, spec.shared_ffn_hidden,
            spec.dense_layers, spec.ffn_hidden) == (60, 4, 1408, 5632, 2, 5632)
    with pytest.raises(ValueError, match=r"decoder_sparse_step=2 .* valid: decoder_sparse_step "
                                         r"1, mlp_only_layers \[0, \.\., k-1\]"):
        spec_from_hf_config({**cfg, "decoder_sparse_step": 2})


def test_deepseek_configs_are_refused_naming_the_mapping():
    cfg = {"model_type": "deepseek_v3", "n_routed_experts": 256, "num_experts_per_tok": 8,
           "moe_intermediate_size": 2048, "n_shared_experts": 1, "first_k_dense_replace": 3,
           "intermediate_size": 18432, "kv_lora_rank": 512}
    with pytest.raises(ValueError, match=r"multi-head latent attention \(kv_lora_rank=512\), "
                                         r"which is not modelled; .*experts = n_routed_experts "
                                         r"\(256\), top_k = num_experts_per_tok \(8\)"):
        spec_from_hf_config(cfg)


# -- pinned errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("par,extra,match", [
    ({"tp": 1, "ep": 3, "attention_dp": True}, {},
     r"workload\.parallelism\.ep: ep=3 must divide the model's 8 experts \(model "
     r"'mixtral-8x7b'\); valid: ep in 1, 2, 4, 8"),
    ({"tp": 1, "attention_dp": True}, {},
     r"workload\.parallelism\.attention_dp: attention_dp replicates attention over the "
     r"expert-parallel groups: it needs ep > 1"),
    ({"tp": 2, "ep": 4}, {},
     r"workload\.parallelism\.ep: ep=4 must divide tp=2 without attention_dp"),
    ({"tp": 2, "ep": 8, "attention_dp": True}, {},
     r"workload\.parallelism: 1 replicas of tp x ep x pp = 2 x 8 x 1 \(attention_dp\) need 16 "
     r"gpu devices; the cluster has 8; valid: tp x ep x pp <= 8"),
    ({"tp": 1, "ep": 8, "attention_dp": True},
     {"speculative": {"method": "ngram", "tokens": 3, "acceptance": 0.5}},
     r"workload\.speculative: speculative decoding with attention_dp is not modelled"),
    ({"tp": 1, "ep": 4, "attention_dp": True, "replicas": 2, "prefill_replicas": 1}, {},
     r"workload\.parallelism\.prefill_replicas: prefill_replicas with attention_dp is not "
     r"modelled"),
])
def test_bad_layouts_are_pinned(par, extra, match):
    with pytest.raises(hwsim.ScenarioError, match=match):
        hwsim.run(_scenario(par, **extra))


def test_ep_on_a_dense_model_and_bad_skew():
    s = _scenario({"tp": 8, "ep": 2}, model={"preset": "llama2-70b"})
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.parallelism\.ep: ep=2 splits the "
                                                  r"experts of a mixture-of-experts model; model "
                                                  r"'llama2-70b' is dense \(experts=1\); valid: "
                                                  r"ep: 1"):
        hwsim.run(s)
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.expert_skew"):
        hwsim.run(_scenario({"tp": 8, "ep": 8}, expert_skew=-1.0))


def test_plan_checks_the_replica_devices():
    job = _job(_scenario({"tp": 1, "ep": 8, "attention_dp": True}), run=False)
    p = job.plan
    with pytest.raises(ValueError, match=r"a replica has 8 devices, not tp x ep x pp = 2 x 8 x "
                                         r"1 = 16 \(attention_dp\)"):
        ServingPlan(**{**p.__dict__, "tp": 2})
    with pytest.raises(ValueError, match=r"ep=8 must divide the model's 6 experts"):
        moe_layout(TransformerSpec(layers=2, hidden=64, heads=4, vocab=100, experts=6,
                                   top_k=2), 1, 8, True)


def test_deepseek_style_layers_are_refused_in_training():
    with pytest.raises(ValueError, match=r"DeepSeek-style MoE layers .* are modelled in serving "
                                         r"only"):
        transformer_ops(DSV3ISH, micro_batch=1, seq_len=128)
    with pytest.raises(ValueError, match=r"dense_layers=9 exceeds layers=8"):
        TransformerSpec(layers=8, hidden=64, heads=4, vocab=100, experts=4, dense_layers=9)
    with pytest.raises(ValueError, match=r"describe mixture-of-experts layers; model 'x' has "
                                         r"experts=1"):
        TransformerSpec(layers=8, hidden=64, heads=4, vocab=100, shared_ffn_hidden=8, name="x")


def test_stage_layers_split_dense_first():
    from hwsim.workloads.moe import layer_kinds
    sizes = stage_layers(61, 4)
    kinds = [layer_kinds(3, sizes, s) for s in range(4)]
    assert kinds[0] == (3, sizes[0] - 3) and all(d == 0 for d, _ in kinds[1:])
    assert sum(m for _, m in kinds) == 58


def test_capacity_search_refuses_attention_dp():
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.parallelism\.attention_dp: "
                                                  r"attention_dp .* is not supported by "
                                                  r"fewest_serving"):
        hwsim.fewest_serving(_scenario({"tp": 1, "ep": 8, "attention_dp": True}), 10.0, 1.0,
                             0.1)


def test_scheduler_limits_per_group_follow_the_engine():
    """vLLM's limits are each DP rank's (the replica admits ep times them); SGLang divides the
    given ones over its DP ranks (they are the replica's)."""
    par = {"tp": 1, "ep": 8, "attention_dp": True}
    sched = {"max_batch_size": 64, "max_batched_tokens": 2048}
    for engine, scale in (("vllm", 8), ("sglang", 1)):
        _, p = prepare(load_scenario(_scenario(par, engine=engine, scheduler=sched)))
        assert (p.max_batch_size, p.max_batched_tokens) == (64 * scale, 2048 * scale)
        _, p = prepare(load_scenario(_scenario({"tp": 8, "ep": 8}, engine=engine,
                                               scheduler=sched)))
        assert (p.max_batch_size, p.max_batched_tokens) == (64, 2048)


def test_a_run_does_not_depend_on_the_string_hash_seed():
    """Python salts str hashes per process (PYTHONHASHSEED): iterating a set of channel ids
    once ordered a scratch network's channels, and with them the max-min solver's tie-breaks,
    so the expert all-to-all's time differed in its last bits from process to process. Two
    processes with different seeds give the same summary to the last bit."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import json, sys, hwsim; s = hwsim.run(sys.argv[1]).summary; "
            "print(json.dumps({k: repr(v) for k, v in s.items()}, sort_keys=True))")
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / \
        "mixtral-8x7b-ep-serving-h100.yaml"
    out = [json.loads(subprocess.run(
        [sys.executable, "-c", code, str(scenario)], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": seed}).stdout) for seed in ("1", "2")]
    assert out[0] == out[1]
