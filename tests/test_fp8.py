"""The FP8 recipe of a software stack (issue 13 points 2 and 7): which ops run in FP8, the cast
kernels and FP8 weight copies it adds, and the BF16 -> FP8 speed-up they give.

Published range: FP8 (Transformer Engine delayed scaling, NeMo / Megatron-Core) speeds Llama-2-70B
class training on H100 up by 1.3-1.5x over BF16, not the 2x of the peaks (issue 13, cause 3, which
states the range). The public figure found for the FP8 side: NVIDIA NeMo Framework performance
summary, release 24.12 (docs.nvidia.com/nemo-framework/user-guide/24.12/nemotoolkit/performance/
performance_summary.html): LLAMA2-70B, 64 H100, GBS 128, seq 4096, TP 4 PP 4, FP8: 1,728
tokens/s/GPU, 768 model TFLOP/s/GPU (0.39 of the FP8 dense peak). No paired BF16 row of the same
release and layout was found in the sources searched, so the range itself rests on the issue's
statement and is asserted as given, not re-derived.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import hwsim
from hwsim.catalog import get_device
from hwsim.catalog.stacks import get_stack
from hwsim.exceptions import ScenarioError
from hwsim.workloads.presets import model_ops, resolve_model

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "llama2-70b-fsdp-64xh100.yaml"
PUBLISHED = (1.3, 1.5)


def _raw(precision: str, **workload) -> dict:
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["workload"]["precision"] = precision
    raw["workload"].update(workload)
    return raw


def test_bf16_to_fp8_speedup_inside_published_range():
    bf16 = hwsim.run(_raw("bf16")).summary["step_time_s"]
    fp8 = hwsim.run(_raw("fp8")).summary["step_time_s"]
    assert PUBLISHED[0] <= bf16 / fp8 <= PUBLISHED[1], bf16 / fp8


def _layer(precision: str):
    st = get_stack("megatron-core")
    ops = model_ops(resolve_model({"preset": "llama2-70b"}), micro_batch=1, precision=precision,
                    seq_len=4096, fp8_recipe=st.fp8_recipe)
    return st.apply(get_device("H100-SXM5-80GB")), ops.blocks[1]


def _time(spec, op, precision):
    return spec.op_time_s(op.flops, op.bytes, op.dtype or precision, shape=op.shape)


def test_attention_time_unchanged_under_te_delayed_scaling():
    spec, b16 = _layer("bf16")
    _, b8 = _layer("fp8")
    for name in ("layer0.attention", "layer0.attention.grad"):
        o16 = next(o for o in b16.forward + b16.backward if o.name == name)
        o8 = next(o for o in b8.forward + b8.backward if o.name == name)
        assert o8.dtype == "bf16"
        assert _time(spec, o8, "fp8") == pytest.approx(_time(spec, o16, "bf16"), rel=1e-12)


def test_linear_gemms_run_in_fp8_with_their_casts():
    _, b8 = _layer("fp8")
    ops = {o.name: o for o in b8.forward + b8.backward}
    for lin in ("qkv", "out_proj", "ffn_up", "ffn_down"):
        for g in ("", ".dgrad", ".wgrad"):
            assert ops[f"layer0.{lin}{g}"].dtype == "fp8"
        assert f"layer0.{lin}.grad.fp8_cast" in ops
    assert "layer0.out_proj.fp8_cast" in ops          # attention's bf16 output is cast
    assert "layer0.qkv.fp8_transpose" in ops          # LayerNormLinear: the norm writes FP8
    assert "layer0.fp8_weight_cast" in ops and "layer0.fp8_amax_update" in ops


def test_cast_ops_appear_in_the_events():
    r = hwsim.run(_raw("fp8", steps=1))
    names = set(r.events["name"]) if "name" in r.events else set()
    assert any(n.endswith("fp8_cast") for n in names)
    assert any(n.endswith("fp8_weight_cast") for n in names)


def test_memory_grows_by_the_fp8_weight_copy():
    st = get_stack("megatron-core")
    from hwsim.workloads.memory import training_memory
    spec = resolve_model({"preset": "llama2-70b"})
    m16 = model_ops(spec, micro_batch=1, precision="bf16", seq_len=4096)
    m8 = model_ops(spec, micro_batch=1, precision="fp8", seq_len=4096, fp8_recipe=st.fp8_recipe)
    a = training_memory(m16, precision="bf16", dp=64, zero=3)
    b = training_memory(m8, precision="fp8", dp=64, zero=3)
    h, f, kvd, L = spec.hidden, spec.ffn_hidden, spec.kv_heads * spec.head_dim, spec.layers
    fp8_params = L * (h * (h + 2 * kvd) + h * h + 3 * h * f)   # QKV, proj, FC1 (gate+up), FC2
    assert b["fp8_weights"] == pytest.approx(2 * fp8_params / 64)
    # everything else is the same but the activations: the FP8 linears keep their 1-byte input
    # copies for wgrad instead of the 2-byte ones (QKV, MLP, out-projection and FC2 inputs)
    for k in set(a) - {"activations"}:
        assert b.get(k, 0.0) == pytest.approx(a.get(k, 0.0) + (b["fp8_weights"] if k ==
                                                                 "fp8_weights" else 0.0)), k
    s, mb = 4096, 1
    saved = L * s * mb * (2 * h + h + f)   # one byte less per value of the four inputs
    assert a["activations"] - b["activations"] == pytest.approx(saved, rel=1e-9)


def test_fp8_on_a_stack_without_recipe_is_an_error():
    with pytest.raises(ScenarioError) as e:
        hwsim.run(_raw("fp8", stack="megatron-2021"))
    msg = str(e.value)
    assert "workload.stack" in msg and "megatron-core" in msg and "megatron-2021" in msg
    assert "\n" not in msg


def test_blackwell_fp8_gemms_take_any_layout_so_no_transposed_copies():
    """Transformer Engine keeps no FP8 transpose where cuBLAS runs non-TN FP8 GEMMs
    (is_non_tn_fp8_gemm_supported: compute capability 10.x, Blackwell; devices.yaml
    fp8_any_layout): the casts write FP8 only, the fused transpose is gone and the FP8 weight
    copies are half the Hopper recipe's."""
    assert all(get_device(d).fp8_any_layout for d in ("B200", "B300", "GB200", "GB300"))
    assert get_device("H100-SXM5-80GB").fp8_any_layout is None   # TN only
    st = get_stack("megatron-core")
    spec = resolve_model({"preset": "llama2-70b"})
    hop, bw = (model_ops(spec, micro_batch=1, precision="fp8", seq_len=4096,
                         fp8_recipe=st.fp8_recipe, fp8_transpose=t).blocks[1] for t in (True, False))
    h = {o.name: o for o in hop.forward + hop.backward}
    b = {o.name: o for o in bw.forward + bw.backward}
    assert "layer0.qkv.fp8_transpose" in h and "layer0.qkv.fp8_transpose" not in b
    for name in ("layer0.out_proj.fp8_cast", "layer0.ffn_down.grad.fp8_cast",
                 "layer0.fp8_weight_cast"):
        assert b[name].bytes == pytest.approx(0.75 * h[name].bytes), name
    assert bw.fp8_weight_bytes == pytest.approx(hop.fp8_weight_bytes / 2)
    # the GEMMs themselves are the same
    assert b["layer0.qkv"].bytes == h["layer0.qkv"].bytes and b["layer0.qkv"].dtype == "fp8"
