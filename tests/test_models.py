"""The model library: FLOP totals against the published closed forms, parameter counts against
the papers and model cards, the tensor/sequence/context/expert-parallel op structure, pipeline
splitting, Hugging Face configs and presets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwsim.workloads import (
    PRESET_NAMES,
    DLRMSpec,
    MLPSpec,
    ResNetSpec,
    TransformerSpec,
    dlrm_ops,
    get_preset,
    mlp_ops,
    model_ops,
    param_count,
    pipeline_stages,
    resnet_ops,
    resolve_model,
    spec_from_fields,
    spec_from_hf_config,
    transformer_ops,
)


def megatron_model_flops(B, s, l, h, V):
    """Narayanan et al. 2021 (arXiv 2104.04473) Appendix: FLOPs per iteration, no recompute."""
    return 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h))


def megatron_hardware_flops(B, s, l, h, V):
    """The same paper's Sec 5.1 form with full recompute (calibration.yaml megatron_2021_table1)."""
    return 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))


# -- FLOP conventions ----------------------------------------------------------------------------
@pytest.mark.parametrize("B", [1, 4])
def test_gpt3_model_flops_equal_megatrons_closed_form_exactly(B):
    spec = get_preset("gpt3-175b")
    m = transformer_ops(spec, micro_batch=B, seq_len=2048)
    assert m.model_flops == pytest.approx(megatron_model_flops(B, 2048, 96, 12288, 50257), rel=1e-12)
    assert m.hardware_flops == m.model_flops  # no recompute


def test_full_recompute_hardware_flops_equal_the_96_form_exactly():
    """Full recompute re-runs each layer's forward once, not the output layer: exactly
    96 B s l h^2 (1 + s/6h + V/16lh)."""
    spec = get_preset("gpt3-175b")
    m = transformer_ops(spec, micro_batch=2, recompute="full")
    assert m.hardware_flops == pytest.approx(megatron_hardware_flops(2, 2048, 96, 12288, 50257),
                                             rel=1e-12)
    assert m.model_flops == pytest.approx(megatron_model_flops(2, 2048, 96, 12288, 50257), rel=1e-12)
    assert sum(op.recompute for op in m.backward) == sum(len(b.forward) for b in m.blocks
                                                         if b.kind == "layer")


def test_a_megatron_2021_table1_row_per_rank_times_tp_is_the_closed_form():
    # calibration.yaml megatron_2021_table1 row [145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148]:
    # 145.6B params, 96 heads, hidden 12288, 80 layers, TP 8, PP 8; vocab 51200, seq 2048
    spec = spec_from_fields(layers=80, hidden=12288, heads=96, vocab=51200, seq_len=2048)
    assert spec.params() == pytest.approx(145.6e9, rel=0.005)
    m = transformer_ops(spec, micro_batch=1, tp=8, recompute="full")
    assert 8 * m.model_flops == pytest.approx(megatron_model_flops(1, 2048, 80, 12288, 51200), rel=1e-12)
    assert 8 * m.hardware_flops == pytest.approx(megatron_hardware_flops(1, 2048, 80, 12288, 51200),
                                                 rel=1e-12)


def test_selective_recompute_adds_the_attention_core_only():
    spec = get_preset("gpt3-175b")
    sel = transformer_ops(spec, micro_batch=1, tp=8, sp=True, recompute="selective")
    T, s, h, l = 2048, 2048, 12288, 96
    assert sel.hardware_flops - sel.model_flops == pytest.approx(l * 4 * T * s * h / 8, rel=1e-12)


@pytest.mark.parametrize("name", ["llama2-7b", "llama2-70b", "llama3-8b", "llama3-405b"])
def test_llama_flops_are_6_n_tokens_plus_attention_plus_logits(name):
    """model_flops = 6 N T + 12 l h s T + 6 T h V with N the layers' matrix parameters
    (q, o: h^2 each; k, v: h*kv*d each; SwiGLU: 3 h f), T = B s tokens."""
    spec = get_preset(name)
    B, s = 2, 4096
    T = B * s
    h, l, f, kvd = spec.hidden, spec.layers, spec.ffn_hidden, spec.kv_heads * spec.head_dim
    n_layers = l * (2 * h * h + 2 * h * kvd + 3 * h * f)
    expected = 6 * n_layers * T + 12 * l * h * s * T + 6 * T * h * spec.vocab
    m = transformer_ops(spec, micro_batch=B, seq_len=s)
    assert m.model_flops == pytest.approx(expected, rel=1e-12)
    # non-embedding parameters are the matrices plus the norms
    pc = spec.param_counts()
    assert pc["total"] - pc["embedding"] - spec.vocab * h == pytest.approx(
        n_layers + l * 2 * h + h)


def test_moe_counts_only_the_routed_experts():
    spec = get_preset("mixtral-8x7b")
    B, s = 1, 4096
    T = B * s
    h, l, f, kvd, E = spec.hidden, spec.layers, spec.ffn_hidden, 1024, spec.experts
    active = l * (2 * h * h + 2 * h * kvd + spec.top_k * 3 * h * f + h * E)
    expected = 6 * active * T + 12 * l * h * s * T + 6 * T * h * spec.vocab
    m = transformer_ops(spec, micro_batch=B, seq_len=s)
    assert m.model_flops == pytest.approx(expected, rel=1e-12)
    # expert parallelism moves tokens, not FLOPs; it adds 2 + 2 all-to-alls per layer
    m8 = transformer_ops(spec, micro_batch=B, seq_len=s, ep=8)
    assert m8.model_flops == pytest.approx(m.model_flops, rel=1e-12)
    a2a = [op for op in m8.blocks[1].forward + m8.blocks[1].backward if op.comm == "ep_alltoall"]
    assert len(a2a) == 4 and all(op.comm_bytes == T * 2 * h * 2 for op in a2a)
    assert m8.extra["alltoall_bytes"] == T * 2 * h * 2
    assert not any(op.comm for op in m.forward + m.backward)
    # one expert per rank: 1/8 of the expert parameters
    assert m8.extra["expert_params"] == pytest.approx(m.extra["expert_params"] / 8)


def test_bert_large_flops_and_parameters():
    spec = get_preset("bert-large")
    assert spec.encoder and param_count(spec) == pytest.approx(340e6, rel=0.03)
    B, s, l, h, V = 8, 512, 24, 1024, 30522
    m = transformer_ops(spec, micro_batch=B, seq_len=s)
    # Megatron's form + the MLM transform (6 T h^2) + the pooler on [CLS] (6 B h^2)
    expected = megatron_model_flops(B, s, l, h, V) + 6 * B * s * h * h + 6 * B * h * h
    assert m.model_flops == pytest.approx(expected, rel=1e-12)


def test_resnet50_forward_is_8_2_gflops_per_image_and_25_6m_parameters():
    """He et al. 2016: ~4.1 GMACs (v1.5) forward per 224x224 image; 25,557,032 parameters."""
    m = resnet_ops(batch=32)
    fwd = m.extra["forward_flops_per_sample"]
    assert fwd == pytest.approx(8.2e9, rel=0.05)
    assert param_count(ResNetSpec()) == 25_557_032 == m.params
    stem_dgrad = 2 * 112 * 112 * 64 * 3 * 49 * 32
    assert m.model_flops == pytest.approx(3 * fwd * 32 - stem_dgrad, rel=1e-12)
    assert len(m.blocks) == 1 + 16 + 1
    assert sum(op.flops for op in m.forward if op.matmul) == pytest.approx(fwd * 32)


def _ops_by_name(m):
    return {op.name: op for op in m.forward + m.backward}


def test_resnet_conv_bytes_are_its_tensors_not_im2col_patches():
    """cuDNN's implicit GEMM reads each input value once: a 3x3 conv's forward moves X + W + Y,
    not the k*k-times larger patch matrix."""
    B = 16
    m = resnet_ops(batch=B, precision="bf16")
    ops = _ops_by_name(m)
    # stage 1, block 0, conv2: 3x3, 64 -> 64 channels, 56 x 56 in and out
    x = y = B * 56 * 56 * 64
    w = 64 * 9 * 64
    assert ops["block0.conv2"].bytes == 2 * (x + w + y)
    assert ops["block0.conv2.dgrad"].bytes == 2 * (y + w + x)
    assert ops["block0.conv2.wgrad"].bytes == 2 * (x + y + w)
    assert ops["block0.conv2"].flops == 2 * B * 56 * 56 * 64 * 64 * 9


def test_resnet_batch_norm_and_relu_are_separate_passes():
    """Training-mode batch norm: 3 passes forward, 5 backward; ReLU 2 and 3; no ReLU after
    conv3 or the downsample conv (they feed the residual add)."""
    B = 8
    ops = _ops_by_name(resnet_ops(batch=B, precision="bf16"))
    y = B * 56 * 56 * 64  # block0.conv1 output
    assert ops["block0.conv1.bn"].bytes == 2 * 3 * y
    assert ops["block0.conv1.bn.grad"].bytes == 2 * 5 * y
    assert ops["block0.conv1.relu"].bytes == 2 * 2 * y
    assert ops["block0.conv1.relu.grad"].bytes == 2 * 3 * y
    assert "block0.conv3.relu" not in ops and "block0.downsample.relu" not in ops
    out, inp = B * 56 * 56 * 256, B * 56 * 56 * 64
    assert ops["block0.residual_add"].bytes == 2 * 3 * out
    assert ops["block0.residual_add.grad"].bytes == 2 * 3 * inp  # summed at the block input
    assert not any(op.matmul for n, op in ops.items() if ".bn" in n or "relu" in n)


@pytest.mark.parametrize("precision, layout, transposes", [
    ("bf16", None, False), ("fp16", None, False), ("tf32", None, True), ("fp32", None, False),
    ("bf16", False, True), ("tf32", True, False), ("fp32", False, False)])
def test_resnet_nchw_tensor_core_convs_pay_layout_transposes(precision, layout, transposes):
    """Tensor-Core convs on NCHW tensors are transposed to NHWC and back; channels-last is the
    default for 16-bit precisions only (DeepLearningExamples); fp32 runs without Tensor Cores."""
    B = 4
    m = resnet_ops(ResNetSpec(channels_last=layout), batch=B, precision=precision)
    names = [op.name for op in m.forward + m.backward]
    assert any("nchw_transpose" in n for n in names) == transposes
    if transposes:
        ops = _ops_by_name(m)
        vb = 2 if precision == "bf16" else 4
        x = y = B * 56 * 56 * 64
        assert ops["block0.conv2.nchw_transpose"].bytes == vb * 2 * (x + y)
        assert ops["block0.conv2.nchw_transpose.grad"].bytes == vb * 4 * (x + y)  # dgrad + wgrad
        assert ops["stem.conv.nchw_transpose.grad"].bytes == vb * 2 * (
            B * 224 * 224 * 3 + B * 112 * 112 * 64)  # no dgrad for the image
    # the FLOPs do not depend on the memory layout
    ref = resnet_ops(batch=B, precision=precision)
    assert m.model_flops == ref.model_flops


def test_eager_attention_passes_the_scores_through_memory_without_changing_flops():
    spec = spec_from_fields(layers=2, hidden=1024, heads=16, vocab=1000, seq_len=512)
    B, s, h, a = 2, 512, 1024, 16
    flash = transformer_ops(spec, micro_batch=B, flash_attention=True)
    eager = transformer_ops(spec, micro_batch=B, flash_attention=False, recompute="full")
    eager_none = transformer_ops(spec, micro_batch=B, flash_attention=False)
    assert eager_none.model_flops == flash.model_flops
    fo, eo = _ops_by_name(flash), _ops_by_name(eager)
    assert "layer0.attention.softmax" not in fo
    S = B * a * s * s
    T = B * s
    # fp16/bf16 scores: GEMMs write the scores and read the probabilities (forward), write dP,
    # read P and dS twice (backward); softmax + dropout pass: 2 + (2 + 1/2) forward,
    # 3 + (2 + 1/2) backward (2-byte values, 1-byte mask)
    assert eo["layer0.attention"].bytes == fo["layer0.attention"].bytes + 2 * 2 * S
    assert eo["layer0.attention.grad"].bytes == fo["layer0.attention.grad"].bytes + 4 * 2 * S
    assert eo["layer0.attention.softmax"].bytes == (2 * 2 + 2 * 2 + 1) * S
    assert eo["layer0.attention.softmax.grad"].bytes == (3 * 2 + 2 * 2 + 1) * S
    assert not eo["layer0.attention.softmax"].matmul
    # full recompute re-runs both forward attention ops
    assert {"layer0.attention.recompute", "layer0.attention.softmax.recompute"} <= set(eo)
    assert eo["layer0.attention"].flops == 4 * T * s * h


def test_dlrm_lookups_are_memory_bound_and_embeddings_shard_over_ranks():
    spec = DLRMSpec()
    assert spec.interaction_dim == 479
    # MLPerf DLRM: 24.0e9 parameters, almost all in the 26 tables
    assert param_count(spec) == sum(spec.table_rows) * 128 + _mlp_params(spec)
    assert param_count(spec) == pytest.approx(24.04e9, rel=0.001)
    B = 2048
    one = dlrm_ops(spec, batch=B)
    eight = dlrm_ops(spec, batch=B, mp_ranks=8)
    lookup = next(op for op in one.forward if op.name == "embeddings.lookup")
    rows = B * 26 * 1 * 128 * 4
    assert lookup.bytes >= rows and not lookup.matmul
    assert lookup.bytes / max(lookup.flops, 1) > 4  # memory-bound: > 4 bytes per FLOP
    assert eight.extra["alltoall_bytes"] == B * 26 * 128 * 4
    assert [op.comm for op in eight.forward + eight.backward if op.comm] == ["mp_alltoall"] * 2
    assert eight.params == pytest.approx(sum(spec.table_rows) * 128 / 8 + _mlp_params(spec))
    bot, top = spec.mlp_dims()
    mlp = sum(a * b for dims in (bot, top) for a, b in zip(dims, dims[1:]))
    expected = 6 * B * mlp - 2 * B * 13 * 512 + 2 * 2 * B * 27 * 27 * 128
    assert one.model_flops == pytest.approx(expected, rel=1e-12)


def _mlp_params(spec):
    bot, top = spec.mlp_dims()
    return sum(a * b + b for dims in (bot, top) for a, b in zip(dims, dims[1:]))


# -- parameter counts ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected, rel", [
    ("gpt3-175b", 174.6e9, 0.01), ("llama2-7b", 6.74e9, 0.005), ("llama2-13b", 13.0e9, 0.005),
    ("llama2-70b", 68.98e9, 0.002), ("llama3-8b", 8.03e9, 0.002), ("llama3-70b", 70.6e9, 0.002),
    ("llama3-405b", 405.9e9, 0.002), ("mixtral-8x7b", 46.7e9, 0.002), ("bert-large", 340e6, 0.03),
    ("resnet50", 25.6e6, 0.002)])
def test_preset_parameter_counts_match_the_papers(name, expected, rel):
    assert param_count(get_preset(name)) == pytest.approx(expected, rel=rel)


def test_mixtral_active_parameters():
    assert get_preset("mixtral-8x7b").param_counts()["active"] == pytest.approx(12.9e9, rel=0.005)


def test_every_design_preset_exists_and_builds_ops():
    design = ("mlp resnet50 bert-large gpt3-175b llama2-7b llama2-13b llama2-70b llama3-8b "
              "llama3-70b llama3-405b mixtral-8x7b dlrm").split()
    assert set(design) <= set(PRESET_NAMES)
    for name in PRESET_NAMES:
        spec = get_preset(name)
        m = model_ops(spec, micro_batch=2, seq_len=256 if isinstance(spec, TransformerSpec) else None)
        assert m.model_flops > 0 and m.params > 0 and m.forward and m.backward


def test_mlp_preset_is_the_mlp_library():
    spec = resolve_model({"preset": "mlp", "depth": 2})
    assert isinstance(spec, MLPSpec) and spec.depth == 2
    m = model_ops(spec, micro_batch=4, precision="fp32")
    assert m.params == spec.params()
    assert m.hardware_flops == m.model_flops  # the new ModelOps field defaults sensibly
    lr = get_preset("logistic-regression")
    assert model_ops(lr, micro_batch=8).name == "logistic-regression" == mlp_ops(
        features=100, width=1, depth=0, outputs=1, activation="sigmoid", batch=8).name


# -- parallel structure --------------------------------------------------------------------------
def _comms(ops):
    return [op.comm for op in ops if op.comm]


def test_tensor_parallel_divides_flops_and_inserts_megatrons_all_reduces():
    spec = get_preset("llama2-13b")
    one = transformer_ops(spec, micro_batch=1, seq_len=4096)
    tp4 = transformer_ops(spec, micro_batch=1, seq_len=4096, tp=4)
    assert 4 * tp4.model_flops == pytest.approx(one.model_flops, rel=1e-12)
    layer = tp4.blocks[1]
    assert _comms(layer.forward) == ["tp_allreduce"] * 2
    assert _comms(layer.backward) == ["tp_allreduce"] * 2
    assert all(op.comm_bytes == 4096 * 5120 * 2 for op in layer.forward if op.comm)
    assert all(op.comm_async for op in layer.backward if op.comm)  # overlapped with wgrad
    assert not any(op.comm_async for op in layer.forward if op.comm)
    assert 3 * tp4.params < one.params < 4 * tp4.params  # norms are replicated


def test_sequence_parallel_swaps_all_reduces_for_gather_and_scatter():
    spec = get_preset("gpt3-175b")
    m = transformer_ops(spec, micro_batch=1, tp=8, sp=True)
    layer = m.blocks[1]
    assert sorted(_comms(layer.forward)) == ["tp_allgather"] * 2 + ["tp_reducescatter"] * 2
    # backward: dY gathers for the row-parallel layers, X re-gathers for the column-parallel
    # wgrads, dX reduce-scatters
    assert sorted(_comms(layer.backward)) == ["tp_allgather"] * 4 + ["tp_reducescatter"] * 2
    nosp = transformer_ops(spec, micro_batch=1, tp=8)
    assert m.model_flops == pytest.approx(nosp.model_flops, rel=1e-12)
    assert m.activation_bytes < nosp.activation_bytes


def test_context_parallel_splits_tokens_and_exchanges_kv():
    spec = get_preset("llama3-8b")
    one = transformer_ops(spec, micro_batch=1, seq_len=8192)
    cp2 = transformer_ops(spec, micro_batch=1, seq_len=8192, cp=2)
    assert 2 * cp2.model_flops == pytest.approx(one.model_flops, rel=1e-12)
    layer = cp2.blocks[1]
    assert _comms(layer.forward) == ["cp_allgather"] and _comms(layer.backward) == ["cp_reducescatter"]
    assert layer.forward[[op.comm for op in layer.forward].index("cp_allgather")].comm_async


def test_grad_bytes_add_up_to_the_ranks_parameters():
    for spec, kw in ((get_preset("llama2-7b"), {}), (get_preset("gpt3-175b"), {"tp": 8}),
                     (get_preset("bert-large"), {"tp": 2}),
                     (get_preset("mixtral-8x7b"), {"ep": 4, "tp": 2, "sp": True})):
        m = transformer_ops(spec, micro_batch=1, seq_len=512, **kw)
        assert sum(op.grad_bytes for op in m.backward) == pytest.approx(2 * m.params, rel=1e-9)


def test_pipeline_stages_split_layers_like_llama3():
    """126 layers on 16 stages: one fewer layer on the first and last stage (Llama 3 paper)."""
    m = transformer_ops(get_preset("llama3-405b"), micro_batch=1, seq_len=128)
    stages = pipeline_stages(m, 16)
    layers = [sum(b.kind == "layer" for b in st[0].blocks) for st in stages]
    assert layers == [7] + [8] * 14 + [7]
    assert stages[0][0].blocks[0].kind == "embedding" and stages[-1][0].blocks[-1].kind == "head"
    assert sum(st[0].model_flops for st in stages) == pytest.approx(m.model_flops, rel=1e-12)
    assert sum(st[0].params for st in stages) == pytest.approx(m.params, rel=1e-12)


def test_interleaved_stages_hold_every_pp_th_chunk():
    m = transformer_ops(get_preset("llama2-7b"), micro_batch=1, seq_len=128)
    stages = pipeline_stages(m, 4, virtual_stages=2)
    assert [len(st) for st in stages] == [2] * 4
    # virtual stage j*pp + i is chunk j of stage i: stage 0 holds layers 0-3 and 16-19
    names = [b.name for b in stages[0][1].blocks]
    assert names == ["layer16", "layer17", "layer18", "layer19"]
    assert m.select(1, 3).blocks[0].name == "layer0"
    with pytest.raises(ValueError, match="cannot fill"):
        pipeline_stages(m, 32, virtual_stages=2)


# -- Hugging Face configs ------------------------------------------------------------------------
HF = {
    "llama2-7b": {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096,
                  "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
                  "vocab_size": 32000, "max_position_embeddings": 4096, "hidden_act": "silu",
                  "tie_word_embeddings": False},
    "mixtral": {"model_type": "mixtral", "num_hidden_layers": 32, "hidden_size": 4096,
                "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                "vocab_size": 32000, "max_position_embeddings": 32768, "hidden_act": "silu",
                "num_local_experts": 8, "num_experts_per_tok": 2},
    "gpt2": {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "n_inner": None,
             "vocab_size": 50257, "n_positions": 1024, "activation_function": "gelu_new"},
    "bert-base": {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768,
                  "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 30522,
                  "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_act": "gelu"},
    "opt-125m": {"model_type": "opt", "num_hidden_layers": 12, "hidden_size": 768,
                 "num_attention_heads": 12, "ffn_dim": 3072, "vocab_size": 50272,
                 "max_position_embeddings": 2048, "activation_function": "relu"},
}


@pytest.mark.parametrize("name, expected, rel", [
    ("llama2-7b", 6.74e9, 0.002), ("mixtral", 46.7e9, 0.002), ("gpt2", 124.44e6, 0.001),
    ("opt-125m", 125.24e6, 0.001)])
def test_hf_configs_give_the_published_parameter_counts(tmp_path, name, expected, rel):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(HF[name]))
    assert spec_from_hf_config(path).params() == pytest.approx(expected, rel=rel)


def test_hf_llama_config_is_the_llama_preset_and_bert_is_an_encoder(tmp_path):
    spec = spec_from_hf_config(HF["llama2-7b"])
    preset = get_preset("llama2-7b")
    assert (spec.activation, spec.norm, spec.position, spec.bias) == ("swiglu", "rmsnorm", "rope", False)
    assert spec.params() == preset.params()
    bert = spec_from_hf_config(HF["bert-base"])
    assert bert.encoder and bert.type_vocab == 2
    # bert-base-uncased BertForPreTraining: 109.5 M without the MLM decoder (tied)
    assert bert.params() == pytest.approx(110.1e6, rel=0.01)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(HF["gpt2"]))
    assert resolve_model({"hf_config": str(p)}).layers == 12


def test_hf_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"model_type 't5' is not supported.*llama.*gpt2.*bert"):
        spec_from_hf_config({"model_type": "t5"})
    with pytest.raises(ValueError, match="needs field 'intermediate_size'"):
        spec_from_hf_config({k: v for k, v in HF["llama2-7b"].items() if k != "intermediate_size"})
    with pytest.raises(ValueError, match="cannot read"):
        spec_from_hf_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        spec_from_hf_config(bad)


def test_falcon_and_neox_configs():
    falcon = spec_from_hf_config({"model_type": "falcon", "num_hidden_layers": 32,
                                  "hidden_size": 4544, "num_attention_heads": 71,
                                  "multi_query": True, "vocab_size": 65024, "alibi": False,
                                  "bias": False, "new_decoder_architecture": False})
    assert falcon.kv_heads == 1 and falcon.params() == pytest.approx(6.92e9, rel=0.01)
    neox = spec_from_hf_config({"model_type": "gpt_neox", "num_hidden_layers": 32,
                                "hidden_size": 4096, "num_attention_heads": 32,
                                "intermediate_size": 16384, "vocab_size": 50432,
                                "max_position_embeddings": 2048, "hidden_act": "gelu"})
    assert neox.position == "rope" and neox.params() == pytest.approx(6.86e9, rel=0.01)


# -- bad input -----------------------------------------------------------------------------------
def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model preset 'gpt5'.*gpt3-175b.*llama3-405b.*dlrm"):
        get_preset("gpt5")
    assert get_preset("LLaMA2-7B") is get_preset("llama2-7b")


def test_invalid_specs_and_arguments_raise():
    with pytest.raises(ValueError, match="activation='tanh'; valid"):
        TransformerSpec(layers=2, hidden=64, heads=4, vocab=100, activation="tanh")
    with pytest.raises(ValueError, match="heads is not a multiple of kv_heads"):
        TransformerSpec(layers=2, hidden=64, heads=4, kv_heads=3, vocab=100)
    spec = TransformerSpec(layers=2, hidden=64, heads=4, vocab=100, seq_len=30)
    with pytest.raises(ValueError, match="recompute='some'"):
        transformer_ops(spec, micro_batch=1, recompute="some")
    with pytest.raises(ValueError, match=r"seq_len % cp"):
        transformer_ops(spec, micro_batch=1, cp=4)
    with pytest.raises(ValueError, match="tp=2 not supported for model 'resnet50'"):
        model_ops(get_preset("resnet50"), micro_batch=8, tp=2)
    with pytest.raises(ValueError, match="layers, hidden, heads, vocab"):
        resolve_model({"hidden": 64})


def test_dropout_field_drops_the_masks_and_keeps_the_flops():
    """``model.dropout: false`` on explicit GPT-style fields (MPT): no dropout masks in the
    activations (Korthikanti: 2 sbh of 1-byte masks per layer, 34 -> 32 sbh bytes at tp 1 with
    flash attention and no recompute), the same model FLOPs; a preset takes no such field."""
    from hwsim.workloads.presets import model_ops, resolve_model

    fields = {"layers": 4, "hidden": 1024, "heads": 16, "vocab": 50368, "activation": "gelu"}
    on, off = (model_ops(resolve_model({**fields, **extra}), micro_batch=2, seq_len=2048)
               for extra in ({}, {"dropout": False}))
    assert resolve_model({**fields, "dropout": False}).dropout is False
    assert on.model_flops == off.model_flops
    sbh = 2048 * 2 * 1024
    per_layer_on = on.blocks[1].activation_bytes
    per_layer_off = off.blocks[1].activation_bytes
    assert per_layer_on - per_layer_off == pytest.approx(2 * sbh)
    with pytest.raises(ValueError, match="cannot be used with preset"):
        resolve_model({"preset": "gpt3-175b", "dropout": False})


@given(st.text(max_size=8), st.floats(0, 1e15), st.floats(0, 1e12), st.booleans(),
       st.sampled_from(["", "fp8", "bf16"]), st.sampled_from([(), ("gemm", 8, 16, 32)]))
def test_recomputed_is_replace_with_the_recompute_name(name, flops, nbytes, matmul, dtype,
                                                       shape):
    """hwsim.workloads.ops.recomputed (the fast copy recompute makes) equals
    dataclasses.replace(op, name=name + ".recompute", recompute=True), hash included, and
    leaves the op itself alone."""
    from dataclasses import replace

    from hwsim.workloads.ops import Op, recomputed

    op = Op(name, flops, nbytes, matmul=matmul, dtype=dtype, shape=shape, grad_bytes=1.0)
    want = replace(op, name=name + ".recompute", recompute=True)
    got = recomputed(op)
    assert got == want and hash(got) == hash(want) and repr(got) == repr(want)
    assert op.name == name and not op.recompute
