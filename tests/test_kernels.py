"""The kernel model (hwsim.catalog.kernels, data/kernels.yaml): closed forms of tile and wave
quantisation, the memory roofline of small GEMMs, agreement with the public microbenchmarks it was
fitted to (within stated tolerances), the wiring of op shapes into DeviceSpec.op_time_s, and the
error messages of a bad kernels file."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from hwsim.catalog import get_device
from hwsim.catalog.kernels import KernelSpec, check_shape
from hwsim.catalog.loader import parse_kernels_file
from hwsim.exceptions import ScenarioError
from hwsim.workloads.ops import Op

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import validate_kernels as vk  # noqa: E402

A100 = "A100-SXM4-80GB"


def test_kernel_entries_are_sourced_and_match_whitepapers():
    sms = {"V100-SXM2-32GB": 80, A100: 108, "H100-SXM5-80GB": 132, "H100-PCIe-80GB": 114,
           "H200-SXM-141GB": 132}
    for ident, n in sms.items():
        k = get_device(ident).kernels
        assert k.sms == n and k.tile == (128, 128)
        assert "SMs" in k.sources["kernel_sms"] and "gemm_by_size_a100_fp16" in \
            k.sources["kernel_gemm_latency"]
    assert get_device("B200").kernels is None  # no sourced SM count: keeps the FLOP ramp


def test_wave_quantisation_closed_form():
    k = KernelSpec(sms=108, tile=(128, 128), latency_s=0.0)
    rate = 108e12  # 1 TFLOP/s per SM
    # 108 tiles: one wave; 109 tiles: two waves, twice the time
    one = k.gemm_compute_s(128 * 108, 128, 1024, rate)
    assert one == pytest.approx(2 * 128 * 128 * 1024 / 1e12)
    assert k.gemm_compute_s(128 * 109, 128, 1024, rate) == pytest.approx(2 * one)
    # tile quantisation: 129 rows cost as much as 256
    assert k.gemm_compute_s(129, 128, 1024, rate) == k.gemm_compute_s(256, 128, 1024, rate)
    assert k.waves(0.5) == 1 and k.waves(216) == 2 and k.waves(217) == 3


def test_gemm_efficiency_rises_to_the_measured_ceiling():
    d = get_device(A100)
    tf = [vk.gemm_tflops(A100, "bf16", n) for n in (256, 512, 1024, 2048, 4096, 16384, 32768)]
    assert tf[-1] <= d.compute_efficiency * 312 * (1 + 1e-9)
    assert tf[-1] == pytest.approx(271.2, rel=0.01)
    assert tf[0] < tf[2] < tf[4]


def test_small_gemm_is_memory_bound_by_roofline():
    d = get_device(A100)
    k = d.kernels
    m, n, kk = 16, 8192, 8192  # a decode-like skinny GEMM: reads the 8192^2 weight once
    t_m = k.gemm_memory_bytes(m, n, kk, 2) / (d.mem_bw_bytes_per_s * d.memory_efficiency)
    t_c = k.gemm_compute_s(m, n, kk, 312e12 * d.compute_efficiency)
    assert t_m > t_c
    tflops = vk.gemm_tflops(A100, "bf16", 16)  # tiny square: latency-bound, far below peak
    assert tflops < 5


def test_a100_sweep_within_stated_tolerance_and_loo_reported():
    # the fitted rows agree within 12 % (the 4096 point of this cuBLASLt run is low); the
    # leave-one-out error of the 1024 point is large (35 %): that point alone pins the latency
    for n, v in vk.GEMM_SWEEP["tflops"].items():
        assert vk.gemm_tflops(A100, "fp16", n) == pytest.approx(v, rel=0.12), n
    loo = vk.leave_one_out()
    assert set(loo) == set(vk.GEMM_SWEEP["tflops"])
    assert abs(loo[8192]) < 0.08 and abs(loo[16384]) < 0.08


def test_fitted_latency_is_the_catalog_value():
    assert vk.fit_latency(vk.GEMM_SWEEP["tflops"]) == pytest.approx(
        get_device(A100).kernels.latency_s, rel=0.02)


def test_attention_reaches_the_papers_ceilings():
    assert vk.attention_tflops(A100, "bf16", 16384) == pytest.approx(0.73 * 312, rel=0.02)
    assert vk.attention_tflops("H100-SXM5-80GB", "bf16", 16384) == pytest.approx(740, rel=0.05)
    assert vk.attention_tflops("H100-SXM5-80GB", "fp8", 16384) == pytest.approx(1200, rel=0.05)
    # short sequences fill the SMs less: never faster than long ones
    assert (vk.attention_tflops("H100-SXM5-80GB", "bf16", 512)
            <= vk.attention_tflops("H100-SXM5-80GB", "bf16", 16384))


def test_op_time_uses_shape_and_falls_back_without_one():
    d = get_device("H100-SXM5-80GB")
    m = n = k = 8192
    flops, nbytes = 2.0 * m * n * k, 2.0 * 3 * m * n
    shaped = d.op_time_s(flops, nbytes, "bf16", shape=("gemm", m, n, k))
    t_k = d.kernels.compute_s(("gemm", m, n, k), flops, d.peak("bf16"), d.compute_efficiency,
                              "bf16") / d.framework_factor("bf16")
    assert shaped == pytest.approx(t_k)
    assert d.op_time_s(flops, nbytes, "bf16") == pytest.approx(
        flops / (d.peak("bf16") * d.framework_efficiency(flops, "bf16")))
    # an awkward shape (one row more than a tile multiple) is slower than the FLOPs suggest
    full = d.op_time_s(1.0, 0.0, "bf16", shape=("gemm", 128 * 132, 128, k))
    odd = d.op_time_s(1.0, 0.0, "bf16", shape=("gemm", 128 * 132 + 1, 128, k))
    assert odd > 1.9 * full
    # a device without a kernel entry ignores the shape
    b200 = get_device("B200")
    assert b200.op_time_s(flops, nbytes, "bf16", shape=("gemm", m, n, k)) == \
        b200.op_time_s(flops, nbytes, "bf16")


def test_bad_shape_message():
    with pytest.raises(ValueError, match=r"is not \('gemm', M, N, K\[, batch\]\)"):
        check_shape(("conv", 1, 2, 3))
    with pytest.raises(ValueError, match="positive sizes"):
        check_shape(("gemm", 0, 2, 3))


def test_workload_linear_ops_carry_gemm_shapes():
    from hwsim.workloads.ops import OpBuilder
    o = OpBuilder("l", 2, 2)
    o.linear("fc", 4096, 1024, 512, grad_bytes=0.0)
    fwd, = o.fwd
    dgrad, wgrad = o.backward()
    assert fwd.shape == ("gemm", 4096, 512, 1024)
    assert dgrad.shape == ("gemm", 4096, 1024, 512)
    assert wgrad.shape == ("gemm", 1024, 512, 4096)
    for op in (fwd, dgrad, wgrad):
        _, mm, nn, kk = op.shape
        assert 2 * mm * nn * kk == op.flops
    assert Op("x", 1.0, 1.0).shape == ()


def test_transformer_attention_ops_carry_their_shape():
    from hwsim.workloads.transformer import TransformerSpec, transformer_ops
    spec = TransformerSpec(layers=1, hidden=1024, heads=16, vocab=1000, seq_len=512)
    ops = transformer_ops(spec, micro_batch=2, tp=2)
    attn = next(op for op in ops.forward if op.name.endswith(".attention"))
    assert attn.shape == ("attention", 2 * 16 / 2, 512, 512, 64)
    _, bh, sq, skv, d = attn.shape
    assert 4 * bh * sq * skv * d == pytest.approx(attn.flops)


def _write(tmp_path, text):
    p = tmp_path / "kernels.yaml"
    p.write_text(text)
    return p


GOOD = """gemm_latency: 4 us
gemm_tile: [128, 128]
sources: {gemm_latency: fit, gemm_tile: guide}
devices:
  A100-SXM4-80GB:
    sms: 108
    attention: {fa2: {bf16: 0.7}}
    sources: {sms: wp, attention: paper}
"""


def test_kernels_file_parses(tmp_path):
    from hwsim.catalog import load_catalog
    out = parse_kernels_file(_write(tmp_path, GOOD), load_catalog().devices)
    assert out[A100].attention_ceiling == {"bf16": 0.7} and out[A100].latency_s == 4e-6


@pytest.mark.parametrize("old,new,field,msg", [
    ("sms: 108", "sms: 0", "devices.A100-SXM4-80GB.sms", "positive integer"),
    ("bf16: 0.7", "bf16: 1.7", "devices.A100-SXM4-80GB.attention.fa2.bf16", r"\(0, 1\]"),
    ("bf16: 0.7", "bf17: 0.7", "devices.A100-SXM4-80GB.attention.fa2.bf17", "unknown precision"),
    ("{fa2: {", "{fa9: {", "devices.A100-SXM4-80GB.attention.fa9", "unknown attention family"),
    ("A100-SXM4-80GB:", "A100-SXM4-80G:", "devices.A100-SXM4-80G", "did you mean"),
    ("[128, 128]", "[128]", "gemm_tile", r"\[rows, cols\]"),
    ("sources: {sms: wp, attention: paper}", "sources: {sms: wp}",
     "devices.A100-SXM4-80GB.sources.attention", "needs a source"),
])
def test_kernels_file_errors_name_file_and_field(tmp_path, old, new, field, msg):
    from hwsim.catalog import load_catalog
    p = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ScenarioError, match=msg) as info:
        parse_kernels_file(p, load_catalog().devices)
    text = str(info.value)
    assert str(p) in text and field in text and "Traceback" not in text


def test_shipped_ceiling_fraction_matches_papers():
    a = get_device(A100).kernels.attention_ceiling
    h = get_device("H100-SXM5-80GB").kernels.attention_ceiling
    assert a["bf16"] == 0.73
    assert h["bf16"] == pytest.approx(740 / 989, abs=1e-3)
    assert h["fp8"] == pytest.approx(1200 / 1979, abs=1e-3)
    assert math.isclose(get_device("H200-SXM-141GB").kernels.attention_ceiling["bf16"], h["bf16"])
    # FlashAttention-2 on Hopper: 35 % ([FA3] abstract), the family a 2023 stack ran
    assert get_device("H100-SXM5-80GB").kernels.attention["fa2"]["bf16"] == 0.35
    assert get_device("V100-SXM2-32GB").kernels.attention == {}
