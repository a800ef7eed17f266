"""A serving engine's own GEMM ceilings (engines.yaml ``gemm_ceiling``): fitted to the engine's
measured Linear layers (benchmarks/fit_engine_gemm.py, benchmarks/aic_gemm_trtllm.csv), applied
only to the engine's runs, and refused when malformed."""

from __future__ import annotations

from importlib import resources

import pytest

from hwsim.catalog import get_device
from hwsim.catalog.engines import get_engine, parse_engines_file
from hwsim.exceptions import ScenarioError
from report_checks import load_benchmark

fe = load_benchmark("fit_engine_gemm")


def test_the_engines_ceilings_are_the_fits_of_the_measured_rows():
    """Every (device, precision) of the data file: the fit reproduces engines.yaml's figure, and
    the fitted model is within 11 % (mean absolute) of the measured Linear times."""
    rows = fe.load_rows()
    assert len(rows) == 16 and all(len(r) == 384 for r in rows.values())
    table = get_engine("trtllm").gemm_ceiling
    for (dev, prec), r in rows.items():
        spec = get_device(dev)
        c = fe.fit(spec, prec, r)
        assert table[dev][prec] == pytest.approx(c, abs=1e-4), (dev, prec)
        err = fe.errors(spec, prec, c, r)
        assert abs(err).mean() < 0.11, (dev, prec)


def test_fp4_on_blackwell_ultra_reaches_less_than_cublaslt_and_the_method_recovers_fp8():
    """The finding the figures encode: TensorRT-LLM's NVFP4 GEMMs reach well below the
    devices' cuBLASLt FP4 ceilings (most on B300/GB300), while its FP8 GEMMs land within 5 % of
    the measured FP8 ceilings of GB200, GB300 and H100 (the method's check)."""
    table = get_engine("trtllm").gemm_ceiling
    for dev in ("B300", "GB300"):
        assert table[dev]["fp4"] < 0.8 * get_device(dev).ceiling("fp4")
    for dev in ("B200", "GB200"):
        assert 0.85 * get_device(dev).ceiling("fp4") < table[dev]["fp4"] < get_device(dev).ceiling("fp4")
    for dev in ("GB200", "GB300"):
        assert table[dev]["fp8"] == pytest.approx(get_device(dev).ceiling("fp8"), rel=0.05)
    h100 = get_device("H100-SXM5-80GB")
    assert table["H100-SXM5-80GB"]["fp8"] == pytest.approx(
        h100.kernels.ceiling_of(("gemm",), h100.ceiling("fp8"), "fp8"), rel=0.05)


@pytest.mark.parametrize("dev", ["B300", "H100-SXM5-80GB"])
def test_the_engines_ceiling_times_its_gemms_and_no_other_engines(dev):
    """A large GEMM on the engine's spec takes the device's time scaled by the ratio of the
    ceilings (compute-bound, so exactly that on the FLOP ramp; within the kernel model's tile
    rounding on a device with one); another engine's spec keeps the device's ceiling."""
    spec, prec = get_device(dev), ("fp4" if dev == "B300" else "fp8")
    m = n = k = 16384
    args = (2.0 * m * n * k, (m * k + n * k) + m * n * 2.0, prec)
    base = spec.op_time_s(*args, shape=("gemm", m, n, k))
    trt = get_engine("trtllm")
    own = trt.device_spec(spec)
    dev_ceiling = (spec.kernels.ceiling_of(("gemm",), spec.ceiling(prec), prec)
                   if spec.kernels is not None else spec.ceiling(prec))
    ratio = own.op_time_s(*args, shape=("gemm", m, n, k)) / base
    assert ratio == pytest.approx(dev_ceiling / trt.gemm_ceiling[dev][prec], rel=0.02)
    other = get_engine("vllm").device_spec(spec)
    assert other.op_time_s(*args, shape=("gemm", m, n, k)) == pytest.approx(base, rel=1e-12)
    assert get_engine("trtllm").device_spec(get_device("A100-SXM4-80GB")).gemm_ceiling == \
        get_device("A100-SXM4-80GB").gemm_ceiling  # not measured: the device's own


def test_bad_gemm_ceiling_is_pinned(tmp_path):
    src = resources.files("hwsim.catalog").joinpath("data/engines.yaml").read_text()
    line = "      B300: {bf16: 0.7539, fp8: 0.6380, fp4: 0.4327}\n"
    assert line in src
    for bad, msg in ((line.replace("B300", "B301"),
                      r"engines\.trtllm\.gemm_ceiling\.B301: unknown device; valid: catalog "
                      r"device ids"),
                     (line.replace("fp4:", "fp3:"),
                      r"engines\.trtllm\.gemm_ceiling\.B300\.fp3: unknown precision; valid: "
                      r"fp64, fp32"),
                     (line.replace("0.4327", "1.4327"),
                      r"engines\.trtllm\.gemm_ceiling\.B300\.fp4: expected a fraction in "
                      r"\(0, 1\], got 1\.4327"),
                     ("      B300: 0.5\n",
                      r"engines\.trtllm\.gemm_ceiling\.B300: expected \{precision: fraction")):
        f = tmp_path / "engines.yaml"
        f.write_text(src.replace(line, bad))
        with pytest.raises(ScenarioError, match=msg):
            parse_engines_file(f)
