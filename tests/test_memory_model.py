"""Memory per device: Korthikanti et al. 2022 activation formulas (arXiv 2205.05198, Table 2 and
Sec 4.3), ZeRO's 16 bytes per parameter and its stages (arXiv 1910.02054), and the
micro-batches in flight of the pipeline schedules."""

from __future__ import annotations

import pytest

from hwsim.workloads import (
    get_preset,
    inflight_microbatches,
    layer_activation_bytes,
    pipeline_stages,
    state_bytes,
    training_memory,
    transformer_ops,
)
from hwsim.workloads.transformer import TransformerSpec

S, B, H, A, T = 512, 4, 1024, 16, 4
SBH = S * B * H


def _act(**kw):
    return layer_activation_bytes(seq_len=S, micro_batch=B, hidden=H, heads=A, **kw)


def test_korthikanti_table2_per_layer_bytes_exactly():
    ash = 5 * A * S / H
    assert _act() == SBH * (34 + ash)
    assert _act(tp=T) == SBH * (10 + 24 / T + ash / T)
    assert _act(tp=T, sp=True) == pytest.approx(SBH / T * (34 + ash), rel=1e-15)
    assert _act(tp=T, recompute="selective") == SBH * (10 + 24 / T)
    assert _act(tp=T, sp=True, recompute="selective") == pytest.approx(34 * SBH / T, rel=1e-15)
    assert _act(recompute="full") == 2 * SBH
    assert _act(tp=T, recompute="full") == 2 * SBH
    assert _act(tp=T, sp=True, recompute="full") == 2 * SBH / T  # Megatron stores the SP shard


def test_flash_attention_keeps_no_scores_and_llama_layers_have_their_own_terms():
    assert _act(flash_attention=True) == 34 * SBH == _act(recompute="selective")
    # Llama: no dropout masks (-2), GQA K/V (4 kv/a instead of 4), SwiGLU 6f/h instead of 16
    llama = _act(flash_attention=True, kv_heads=4, ffn_hidden=2816, gated=True, dropout=False)
    assert llama == pytest.approx(SBH * (8 + 2 + 4 * 4 / A + 2 + 6 * 2816 / H), rel=1e-15)
    assert _act(value_bytes=4, dropout=False, flash_attention=True) == pytest.approx(
        2 * _act(dropout=False, flash_attention=True))


def test_model_activations_are_layers_plus_embedding_and_output_layer():
    """Korthikanti Sec 4.3: L layers, the embedding dropout mask sbh/t, final-norm and output
    layer inputs 2sbh/t each, fp32 logits 4sbv/t (tensor + sequence parallel)."""
    spec = TransformerSpec(layers=6, hidden=H, heads=A, vocab=32000, seq_len=S)
    m = transformer_ops(spec, micro_batch=B, tp=T, sp=True, flash_attention=False)
    layer = _act(tp=T, sp=True)
    expected = 6 * layer + SBH / T + 4 * SBH / T + 4 * S * B * 32000 / T
    assert m.activation_bytes == pytest.approx(expected, rel=1e-12)
    full = transformer_ops(spec, micro_batch=B, tp=T, sp=True, recompute="full",
                           flash_attention=False)
    assert full.activation_bytes == pytest.approx(expected - 6 * layer + 6 * 2 * SBH / T)
    # while a layer is recomputed its full activations are live: reported as workspace
    assert training_memory(full)["workspace"] == pytest.approx(layer)


def test_zero_stages_divide_the_16_bytes_per_parameter():
    p, dp = 1e9, 8
    z = [state_bytes(p, precision="bf16", optimizer="adam", dp=dp, zero=k) for k in range(4)]
    assert z[0] == {"weights": 2 * p, "gradients": 2 * p, "optimizer_states": 12 * p}
    assert z[1] == {"weights": 2 * p, "gradients": 2 * p, "optimizer_states": 12 * p / dp}
    assert z[2] == {"weights": 2 * p, "gradients": 2 * p / dp, "optimizer_states": 12 * p / dp}
    assert z[3] == {"weights": 2 * p / dp, "gradients": 2 * p / dp, "optimizer_states": 12 * p / dp}
    assert sum(state_bytes(p, precision="fp32", optimizer="adam").values()) == 16 * p
    assert sum(state_bytes(p, precision="fp32", optimizer="sgd").values()) == 8 * p
    assert state_bytes(p, precision="fp8")["weights"] == 2 * p  # bf16 weights under fp8


def test_expert_parameters_shard_over_the_expert_data_parallel_group():
    out = state_bytes(10.0, dp=8, zero=1, expert_params=6.0, ep=4)
    assert out["optimizer_states"] == pytest.approx(12 * (4 / 8 + 6 / 2))
    with pytest.raises(ValueError, match="multiple of ep"):
        state_bytes(10.0, dp=6, ep=4)


def test_pipeline_micro_batches_in_flight():
    p, m = 8, 32
    assert inflight_microbatches("gpipe", pp=p, micro_batches=m) == m
    assert [inflight_microbatches("1f1b", pp=p, micro_batches=m, stage=i)
            for i in range(p)] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert inflight_microbatches("1f1b", pp=p, micro_batches=3) == 3
    v = 4
    assert inflight_microbatches("interleaved", pp=p, micro_batches=m, virtual_stages=v) == \
        pytest.approx(p * (1 + (p - 1) / (p * v)))  # Korthikanti Sec 4.2.3
    assert inflight_microbatches("interleaved", pp=p, micro_batches=m, virtual_stages=1) == p
    assert inflight_microbatches("gpipe", pp=1, micro_batches=m) == 1
    with pytest.raises(ValueError, match="schedule='zb'; valid: gpipe, 1f1b, interleaved"):
        inflight_microbatches("zb", pp=2, micro_batches=4)


def test_first_pipeline_stage_holds_p_micro_batches_of_its_layers():
    spec = get_preset("gpt3-175b")
    m = transformer_ops(spec, micro_batch=1, tp=8, sp=True, recompute="selective")
    stage0 = pipeline_stages(m, 16)[0][0]
    mem = training_memory(stage0, pp=16, stage=0, micro_batches=96, dp=8, zero=1)
    assert mem["activations"] == pytest.approx(16 * stage0.activation_bytes)
    assert mem["weights"] == pytest.approx(2 * stage0.params)
    assert mem["optimizer_states"] == pytest.approx(12 * stage0.params / 8)
    # Korthikanti: with 1F1B the first stage holds L layers' worth: 34 sbh/t * L + extras
    per_layer = 34 * 2048 * 12288 / 8
    assert mem["activations"] == pytest.approx(96 * per_layer, rel=0.03)
    assert sum(mem.values()) < 80e9  # the Megatron-LM GPT-3 setting fits an 80 GB A100


def test_memory_falls_with_more_sharding_and_recompute_and_big_models_are_just_numbers():
    spec = get_preset("llama2-70b")
    totals = [sum(training_memory(transformer_ops(spec, micro_batch=1, recompute=r),
                                  dp=8, zero=z).values())
              for z, r in ((0, "none"), (1, "none"), (2, "selective"), (3, "full"))]
    assert totals == sorted(totals, reverse=True)
    assert totals[0] > 1e12  # 70B unsharded: > 1 TB; the caller reports "does not fit"
    z3 = training_memory(transformer_ops(spec, micro_batch=1), dp=8, zero=3)
    assert z3["zero3_buffers"] == pytest.approx(2 * 2 * max(b.params for b in
                                                            transformer_ops(spec, micro_batch=1).blocks))
    with pytest.raises(ValueError, match="zero=4; valid: 0, 1, 2, 3"):
        state_bytes(1.0, zero=4)
    with pytest.raises(ValueError, match="recompute='all'"):
        layer_activation_bytes(seq_len=1, micro_batch=1, hidden=8, heads=1, recompute="all")
