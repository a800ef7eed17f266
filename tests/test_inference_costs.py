"""Serving costs: weights and KV cache per device, the ops of one serving iteration (closed-form
FLOPs, bytes that make decode memory-bound and prefill compute-bound, tensor-parallel
all-reduces, MoE expert weights touched) and argument validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.workloads import (
    ServingCost,
    experts_touched,
    get_preset,
    inference_flops,
    iteration_ops,
    serving_cost,
    spec_from_fields,
    stage_layers,
)

# a small Llama-style model: GQA (8 heads, 2 KV heads), SwiGLU, no biases, RoPE
SMALL = spec_from_fields(layers=4, hidden=256, heads=8, kv_heads=2, vocab=1000, ffn_hidden=512,
                         activation="swiglu", name="small")
# a small GPT-style model: biases, LayerNorm, learned positions, tied embeddings
GPT = spec_from_fields(layers=6, hidden=128, heads=4, vocab=500, seq_len=64,
                       tied_embeddings=True, name="small-gpt")
MOE = spec_from_fields(layers=2, hidden=128, heads=4, kv_heads=2, vocab=300, ffn_hidden=256,
                       activation="swiglu", experts=8, top_k=2, name="small-moe")


def layer_matrix_params(spec):
    """Matrix parameters one token runs through in one layer (top_k experts, router)."""
    h, f, kvd = spec.hidden, spec.ffn_hidden, spec.kv_heads * spec.head_dim
    n = 2 * h * h + 2 * h * kvd + spec.top_k * (3 if spec.gated else 2) * h * f
    return n + (h * spec.experts if spec.experts > 1 else 0)


def matmul_flops(ops):
    return sum(op.flops * n for op, n in ops if op.matmul)


def total_bytes(ops):
    return sum(op.bytes * n for op, n in ops)


def all_stages(spec, tp=1, pp=1, **kw):
    return [iteration_ops(spec, tp=tp, pp=pp, stage=s, **kw) for s in range(pp)]


# -- weights and KV cache ------------------------------------------------------------------------
@pytest.mark.parametrize("name, tp, expected", [
    ("llama2-7b", 1, 2 * 32 * 32 * 128 * 2),       # 524,288 B: 32 layers, 32 KV heads of 128
    ("llama2-70b", 1, 2 * 80 * 8 * 128 * 2),       # 327,680 B: GQA, 8 KV heads
    ("llama2-7b", 4, 2 * 32 * 8 * 128 * 2),        # KV heads sharded by tp
    ("llama2-70b", 8, 2 * 80 * 1 * 128 * 2),       # one KV head per rank
    ("llama2-70b", 16, 2 * 80 * 1 * 128 * 2),      # tp > kv_heads: the head is replicated
])
def test_kv_bytes_per_token_closed_form(name, tp, expected):
    cost = serving_cost(get_preset(name), tp=tp, precision="bf16")
    assert isinstance(cost, ServingCost)
    assert cost.kv_bytes_per_token == expected
    assert cost.layers == get_preset(name).layers


def test_kv_bytes_per_token_split_over_pipeline_stages_and_by_kv_precision():
    spec = get_preset("llama2-70b")
    costs = [serving_cost(spec, pp=3, stage=s) for s in range(3)]
    assert [c.layers for c in costs] == stage_layers(80, 3) == [26, 27, 27]
    assert sum(c.kv_bytes_per_token for c in costs) == 327_680
    assert costs[0].kv_bytes_per_token == 2 * 26 * 8 * 128 * 2
    # an 8-bit cache halves it; fp8 weights alone leave the cache at 16 bits (vLLM "auto")
    assert serving_cost(spec, kv_precision="fp8").kv_bytes_per_token == 327_680 / 2
    fp8 = serving_cost(spec, precision="fp8")
    assert fp8.kv_bytes_per_token == 327_680
    tables = 2 * 2 * spec.vocab * spec.hidden  # embedding and LM head stay 16-bit
    assert fp8.weight_bytes == (serving_cost(spec).weight_bytes - tables) / 2 + tables


def test_llama_weights_over_all_devices_are_the_model_plus_tp_replicated_norms():
    spec = get_preset("llama2-7b")
    params, h, L = spec.params(), spec.hidden, spec.layers
    # tp 1: the stages partition the model exactly
    assert sum(serving_cost(spec, pp=4, stage=s).weight_bytes for s in range(4)) == 2 * params
    assert serving_cost(spec).weight_bytes == 2 * params
    # tp 2 x pp 2: matrices split, RMSNorm weights (2 per layer + the final one) replicated
    tp = 2
    total = sum(tp * serving_cost(spec, tp=tp, pp=2, stage=s).weight_bytes for s in range(2))
    assert total == pytest.approx(2 * (params + (tp - 1) * (2 * h * L + h)), rel=1e-12)
    # llama2-70b on 8 GPUs: 1/8 of 138 GB each and 8 copies of the norms
    big = get_preset("llama2-70b")
    norms = 2 * big.hidden * big.layers + big.hidden
    assert serving_cost(big, tp=8).weight_bytes == pytest.approx(
        2 * (big.params() + 7 * norms) / 8, rel=1e-12)


def test_gpt_weights_replicate_biases_and_positions_and_copy_a_tied_head_across_stages():
    spec, tp, pp = GPT, 2, 2
    h, L, V, P = spec.hidden, spec.layers, spec.vocab, spec.max_positions
    replicated = L * (2 * 2 * h + 2 * h) + 2 * h + P * h  # LayerNorms, row biases, positions
    total = sum(tp * serving_cost(spec, tp=tp, pp=pp, stage=s).weight_bytes for s in range(pp))
    assert total == pytest.approx(2 * (spec.params() + (tp - 1) * replicated + V * h), rel=1e-12)
    # pp = 1: the tied head shares the embedding, nothing extra
    assert serving_cost(spec).weight_bytes == 2 * spec.params()


def test_moe_holds_all_experts():
    spec = get_preset("mixtral-8x7b")
    assert serving_cost(spec).weight_bytes == 2 * spec.params()
    per_rank = serving_cost(spec, tp=8).weight_bytes
    assert per_rank == pytest.approx(2 * spec.params() / 8, rel=1e-3)


# -- FLOPs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("tp, pp", [(1, 1), (2, 1), (2, 2), (1, 3)])
def test_prefill_matmul_flops_closed_form(tp, pp):
    """2 T (layer matrices) L + 4 P h L + LM head on the logit tokens, over all devices."""
    spec, T, L = SMALL, 100, 3
    P = 100 * 101 / 2 + 100 * 37  # a chunk of 100 after 37 cached tokens
    h, V = spec.hidden, spec.vocab
    expected = 2 * T * layer_matrix_params(spec) * spec.layers + 4 * P * h * spec.layers \
        + 2 * L * h * V
    stages = all_stages(spec, tp, pp, prefill_tokens=T, prefill_pairs=P, logit_tokens=L,
                        prefill_kv_tokens=137)
    assert tp * sum(matmul_flops(ops) for ops in stages) == pytest.approx(expected, rel=1e-12)
    assert inference_flops(spec, tokens=T, pairs=P, logit_tokens=L) == pytest.approx(expected,
                                                                                  rel=1e-12)


def test_inference_flops_are_a_third_of_megatrons_training_flops():
    """Non-causal pairs (every token attends to its whole sequence of s) make the forward one
    third of Megatron's 72 B s l h^2 (1 + s/6h + V/12lh)."""
    spec = get_preset("gpt3-175b")
    B, s, l, h, V = 2, 2048, 96, 12288, 50257
    megatron = 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h))
    assert inference_flops(spec, tokens=B * s, pairs=B * s * s) == pytest.approx(megatron / 3,
                                                                                rel=1e-12)
    # the decode form: 2 N per token (N = matrices incl. the LM head) + 4 h l per key attended
    spec = get_preset("llama2-7b")
    n = layer_matrix_params(spec) * spec.layers + spec.vocab * spec.hidden
    assert inference_flops(spec, tokens=8, pairs=8 * 1000) == pytest.approx(
        2 * 8 * n + 4 * 8000 * spec.hidden * spec.layers, rel=1e-12)


def test_decode_flops_and_moe_active_flops_closed_form():
    D, Dp = 16, 16 * 300.0
    for spec in (SMALL, MOE, GPT):
        ops = iteration_ops(spec, decode_seqs=D, decode_pairs=Dp, logit_tokens=D)
        expected = inference_flops(spec, tokens=D, pairs=Dp)
        assert matmul_flops(ops) == pytest.approx(expected, rel=1e-12)
    # MoE: top_k of the experts per token, plus the router
    h, f, E = MOE.hidden, MOE.ffn_hidden, MOE.experts
    ffn = sum(op.flops for op, _ in iteration_ops(MOE, decode_seqs=1, decode_pairs=1)
              if op.name in ("layer.ffn_up", "layer.ffn_down", "layer.router"))
    assert ffn == 2 * (2 * 3 * h * f + h * E)


def test_replicated_kv_heads_repeat_the_kv_projection_on_every_rank():
    """tp 8 with 2 KV heads: each rank projects its own copy of one KV head, so the devices
    together execute more than the model FLOPs (the K/V projections 4x)."""
    spec, T, tp = SMALL, 10, 8
    ops = iteration_ops(spec, tp=tp, prefill_tokens=T, prefill_pairs=55)
    d, h = spec.head_dim, spec.hidden
    extra = 2 * T * h * 2 * d * (tp - spec.kv_heads) * spec.layers
    assert tp * matmul_flops(ops) == pytest.approx(
        inference_flops(spec, tokens=T, pairs=55, logit_tokens=0) + extra, rel=1e-12)
    assert serving_cost(spec, tp=tp).kv_bytes_per_token == 2 * spec.layers * 1 * d * 2


def test_a_mixed_batch_adds_flops_but_reads_the_weights_once():
    spec = get_preset("llama2-7b")
    pre = dict(prefill_tokens=512, prefill_pairs=512 * 513 / 2)
    dec = dict(decode_seqs=32, decode_pairs=32 * 2000.0)
    a, b = iteration_ops(spec, **pre, logit_tokens=1), iteration_ops(spec, **dec, logit_tokens=32)
    mixed = iteration_ops(spec, **pre, **dec, logit_tokens=33)
    assert matmul_flops(mixed) == pytest.approx(matmul_flops(a) + matmul_flops(b), rel=1e-12)
    # the second pass over the weights is saved (layers' matrices, norms and the LM head)
    cost = serving_cost(spec)
    table = 2 * spec.vocab * spec.hidden  # the embedding table is looked up, not read whole
    saved = total_bytes(a) + total_bytes(b) - total_bytes(mixed)
    assert saved == pytest.approx(cost.weight_bytes - table, rel=1e-9)


# -- bytes: decode memory-bound, prefill compute-bound --------------------------------------------
@pytest.mark.parametrize("name, tp", [("llama2-7b", 1), ("llama2-70b", 8), ("mixtral-8x7b", 2)])
def test_decode_reads_the_weights_and_the_whole_kv_cache(name, tp):
    spec = get_preset(name)
    D, ctx = 4, 3000
    cost = serving_cost(spec, tp=tp)
    ops = iteration_ops(spec, tp=tp, decode_seqs=D, decode_pairs=D * ctx, logit_tokens=D)
    kv_read = D * ctx * cost.kv_bytes_per_token
    table = 2 * spec.vocab * spec.hidden / tp
    pc = spec.param_counts()
    if spec.experts > 1:  # only the experts 4 tokens touch: E(1 - (1 - k/E)^4) of the 8
        untouched = (spec.experts - experts_touched(spec.experts, spec.top_k, D)) \
            * (pc["ffn"] - pc["ffn_active"]) / (spec.experts - spec.top_k) * spec.layers
        weights = cost.weight_bytes - table - 2 * untouched / tp
    else:
        weights = cost.weight_bytes - table
    assert total_bytes(ops) >= weights + kv_read
    assert total_bytes(ops) == pytest.approx(weights + kv_read, rel=0.01)  # activations are small
    attn = [op for op, _ in ops if op.name == "layer.attention.decode"]
    assert len(attn) == 1 and attn[0].bytes >= kv_read / spec.layers


@pytest.mark.parametrize("name, tp", [("llama2-7b", 1), ("llama2-70b", 8), ("mixtral-8x7b", 1)])
def test_decode_at_batch_one_is_memory_bound_and_long_prefill_compute_bound(name, tp):
    """Device ridge points (bytes per FLOP at which a roofline turns) lie between ~1/300
    (H100 SXM: 3.35 TB/s over 989 dense bf16 TFLOP/s; B200 8 TB/s over 2.25 PFLOP/s) and ~1/50
    (CPUs); decode at batch 1 moves ~1 byte per FLOP (bf16 weights, 2 FLOPs each), a
    4096-token prefill's GEMMs and attention under 1/400. (The MoE router, 8 output columns,
    is memory-bound at any batch.)"""
    spec = get_preset(name)
    dec = iteration_ops(spec, tp=tp, decode_seqs=1, decode_pairs=1000, logit_tokens=1)
    assert total_bytes(dec) / sum(op.flops * n for op, n in dec) > 0.9
    for op, _ in dec:
        if op.matmul:
            assert op.bytes / op.flops > 0.1, op.name
    pre = iteration_ops(spec, tp=tp, prefill_tokens=4096, prefill_pairs=4096 * 4097 / 2,
                        logit_tokens=1)
    for op, _ in pre:
        if op.matmul and op.name.startswith("layer.") and op.name != "layer.router":
            assert op.bytes / op.flops < 1 / 400, op.name
    # a big decode batch amortises the weights, but attention stays memory-bound
    big = {op.name: op for op, _ in iteration_ops(spec, tp=tp, decode_seqs=256,
                                                     decode_pairs=256 * 1000)}
    assert big["layer.ffn_down"].bytes / big["layer.ffn_down"].flops < 0.02
    attn = big["layer.attention.decode"]
    assert attn.bytes / attn.flops >= spec.kv_heads / spec.heads * 0.99  # GQA: kv/heads B/FLOP


def test_prefill_with_a_cached_prefix_reads_its_kv():
    spec, c, cached = SMALL, 64, 1000
    pairs = c * cached + c * (c + 1) / 2
    base = {op.name: op for op, _ in iteration_ops(spec, prefill_tokens=c, prefill_pairs=pairs)}
    more = {op.name: op for op, _ in iteration_ops(spec, prefill_tokens=c, prefill_pairs=pairs,
                                                     prefill_kv_tokens=c + cached)}
    per_layer = serving_cost(spec).kv_bytes_per_token / spec.layers
    diff = more["layer.attention.prefill"].bytes - base["layer.attention.prefill"].bytes
    assert diff == cached * per_layer
    assert more["layer.attention.prefill"].flops == 4 * pairs * spec.hidden


def test_moe_touches_fewer_expert_weights_at_small_batch():
    spec = get_preset("mixtral-8x7b")
    E, k = spec.experts, spec.top_k
    assert experts_touched(E, k, 1) == pytest.approx(k)
    assert experts_touched(E, k, 0) == 0
    assert experts_touched(E, k, 4) == pytest.approx(E * (1 - (1 - k / E) ** 4))
    assert experts_touched(E, k, 1000) == pytest.approx(E)
    seq = [experts_touched(E, k, T) for T in range(1, 40)]
    assert all(x < y for x, y in zip(seq, seq[1:])) and seq[-1] <= E

    def up_weight_bytes(T):
        op = {op.name: op for op, _ in iteration_ops(spec, decode_seqs=T, decode_pairs=T)}
        up = op["layer.ffn_up"]
        return up.bytes - 2 * (T * k * spec.hidden + T * k * 2 * spec.ffn_hidden)

    one_expert = 2 * spec.hidden * 2 * spec.ffn_hidden
    assert up_weight_bytes(1) == pytest.approx(k * one_expert)
    assert up_weight_bytes(512) == pytest.approx(E * one_expert)
    # decode at batch 1 reads about the active parameters (12.9e9), not all 46.7e9
    ops = iteration_ops(spec, decode_seqs=1, decode_pairs=100, logit_tokens=1)
    pc = spec.param_counts()
    assert total_bytes(ops) == pytest.approx(2 * (pc["active"] - pc["embedding"]), rel=0.01)
    assert total_bytes(ops) < 0.3 * serving_cost(spec).weight_bytes


# -- op structure ---------------------------------------------------------------------------------
def test_tp_allreduces_present_iff_tp_above_one_with_the_right_bytes():
    T = 40 + 7
    kw = dict(prefill_tokens=40, prefill_pairs=820, decode_seqs=7, decode_pairs=700,
              logit_tokens=8)
    assert not any(op.comm for op, _ in iteration_ops(SMALL, **kw))
    for spec in (SMALL, MOE):
        ops = iteration_ops(spec, tp=2, **kw)
        names = [op.name for op, _ in ops]
        comms = [(op, n) for op, n in ops if op.comm]
        layer_ar = [(op, n) for op, n in comms if op.name.startswith("layer.")]
        assert len(layer_ar) == 2
        for op, n in layer_ar:
            assert op.comm == "tp_allreduce" and not op.comm_async and n == spec.layers
            assert op.comm_bytes == T * spec.hidden * 2
            assert op.flops == op.bytes == 0
        # in their place: after the out-projection and after the FFN's last op
        assert names[names.index("layer.out_proj") + 1] == "layer.out_proj.tp_allreduce"
        last_ffn = "layer.moe.combine" if spec.experts > 1 else "layer.ffn_down"
        assert names[names.index(last_ffn) + 1] == "layer.ffn.tp_allreduce"
        # the embedding's reduction, the logits' gather
        by = {op.name: op for op, _ in comms}
        assert by["embedding.lookup.tp_allreduce"].comm_bytes == T * spec.hidden * 2
        assert by["head.logits.tp_allgather"].comm == "tp_allgather"
        assert by["head.logits.tp_allgather"].comm_bytes == 8 * spec.vocab * 2


def test_stages_hold_their_layers_embedding_and_head():
    spec, pp = SMALL, 3
    kw = dict(prefill_tokens=5, prefill_pairs=15, logit_tokens=1)
    stages = all_stages(spec, pp=pp, **kw)
    assert [n for n in stage_layers(spec.layers, pp)] == [1, 2, 1]
    for s, ops in enumerate(stages):
        names = [op.name for op, _ in ops]
        assert ("embedding.lookup" in names) == (s == 0)
        assert ("head.logits" in names) == (s == pp - 1)
        layer_n = {n for op, n in ops if op.name.startswith("layer.")}
        assert layer_n == {stage_layers(spec.layers, pp)[s]}
        other = [n for op, n in ops if not op.name.startswith("layer.")]
        assert all(n == 1 for n in other)
    # no logits to compute (a prefill chunk that does not end its prompt): no head ops
    names = [op.name for op, _ in iteration_ops(spec, prefill_tokens=5, prefill_pairs=15)]
    assert not any(n.startswith("head.") for n in names)
    assert names[0] == "embedding.lookup" and "layer.attention.prefill" in names
    assert "layer.attention.decode" not in names


def test_matmul_flag_marks_gemms_and_attention_only():
    ops = iteration_ops(MOE, tp=2, prefill_tokens=9, prefill_pairs=45, decode_seqs=3,
                        decode_pairs=30, logit_tokens=4)
    matmuls = {op.name for op, _ in ops if op.matmul}
    assert matmuls == {"layer.qkv", "layer.attention.prefill", "layer.attention.decode",
                       "layer.out_proj", "layer.router", "layer.ffn_up", "layer.ffn_down",
                       "head.logits"}


def test_empty_iteration_is_empty():
    assert iteration_ops(SMALL) == []
    assert iteration_ops(SMALL, tp=2, pp=2, stage=1) == []


@settings(max_examples=150, deadline=None)
@given(spec=st.sampled_from([SMALL, GPT, MOE]), tp=st.sampled_from([1, 2, 4]),
       pp=st.integers(1, 2), stage=st.integers(0, 1), P=st.integers(0, 5000),
       cached=st.integers(0, 5000), D=st.integers(0, 300), ctx=st.integers(1, 8000),
       logits=st.integers(0, 400), precision=st.sampled_from(["bf16", "fp8", "fp32"]))
def test_no_op_has_negative_or_nan_fields(spec, tp, pp, stage, P, cached, D, ctx, logits,
                                          precision):
    stage = min(stage, pp - 1)
    ops = iteration_ops(spec, tp=tp, pp=pp, stage=stage, precision=precision,
                        prefill_tokens=P, prefill_pairs=P * cached + P * (P + 1) / 2,
                        prefill_kv_tokens=P + (cached if P else 0), decode_seqs=D,
                        decode_pairs=D * ctx, logit_tokens=min(logits, P + D))
    assert (ops == []) == (P + D == 0)
    for op, n in ops:
        for v in (op.flops, op.bytes, op.comm_bytes):
            assert math.isfinite(v) and v >= 0, op
        assert isinstance(n, int) and n >= 1
        if op.comm:
            assert op.flops == op.bytes == 0 and op.comm_bytes > 0
        else:
            assert op.bytes > 0
        if op.matmul:
            assert op.flops > 0


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(tp=3), r"tp=3 must divide heads=8"),
    (dict(tp=0), r"tp=0 must be an integer >= 1"),
    (dict(pp=5), r"pp=5 exceeds the model's 4 layers"),
    (dict(pp=2, stage=2), r"stage=2 out of range; valid: 0 .. 1"),
    (dict(stage=-1), r"stage=-1 must be an integer >= 0"),
    (dict(prefill_tokens=-1), r"prefill_tokens=-1 must be an integer >= 0"),
    (dict(prefill_tokens=2.5), r"prefill_tokens=2.5 must be an integer"),
    (dict(prefill_tokens=10, prefill_pairs=5), r"need prefill_pairs >= prefill_tokens"),
    (dict(prefill_pairs=5), r"prefill_pairs = 0 when prefill_tokens = 0"),
    (dict(decode_seqs=2, decode_pairs=float("nan")), r"decode_pairs=nan must be a finite"),
    (dict(decode_seqs=2, decode_pairs=1), r"need decode_pairs >= decode_seqs"),
    (dict(decode_seqs=2, decode_pairs=10, logit_tokens=3), r"logit_tokens=3 exceeds"),
    (dict(prefill_tokens=4, prefill_pairs=10, prefill_kv_tokens=3),
     r"prefill_kv_tokens=3 must be >= prefill_tokens=4"),
    (dict(precision="fp2"), r"unknown precision 'fp2'; valid: fp64, fp32"),
])
def test_iteration_ops_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        iteration_ops(SMALL, **kw)


def test_tp_must_divide_kv_heads_or_be_a_multiple_of_them():
    spec = spec_from_fields(layers=2, hidden=24 * 16, heads=24, kv_heads=8, vocab=100,
                            activation="swiglu")
    with pytest.raises(ValueError, match=r"tp=6 and kv_heads=8 .* tp must divide kv_heads, or "
                                         r"be a multiple of it"):
        serving_cost(spec, tp=6)
    assert serving_cost(spec, tp=4).kv_bytes_per_token == 2 * 2 * 2 * 16 * 2
    assert serving_cost(spec, tp=24).kv_bytes_per_token == 2 * 2 * 1 * 16 * 2


def test_serving_rejects_encoders_and_non_transformers():
    with pytest.raises(ValueError, match=r"encoder"):
        serving_cost(get_preset("bert-large"))
    with pytest.raises(ValueError, match=r"needs a TransformerSpec .* got ResNetSpec"):
        iteration_ops(get_preset("resnet50"), prefill_tokens=1, prefill_pairs=1)
    with pytest.raises(ValueError, match=r"pairs=-1.0 must be a finite number >= 0"):
        inference_flops(SMALL, tokens=1, pairs=-1.0)
