"""Behaviour of the hardware catalog: ids, units, sources, calibrated efficiencies, validation."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

import hwsim.catalog as catalog
from hwsim.catalog import (Catalog, DeviceSpec, LinkSpec, StorageSpec, catalog_rows, fit_compute_ramp,
                           get_device, get_link, get_storage, load_catalog, parse_catalog_file)
from hwsim.catalog.stacks import get_stack
from hwsim.exceptions import ScenarioError

DEVICE_IDS = ["V100-SXM2-32GB", "A100-SXM4-40GB", "A100-SXM4-80GB", "A100-PCIe-80GB", "H100-SXM5-80GB",
              "H100-PCIe-80GB", "H200-SXM-141GB", "B200", "L40S", "MI300X", "TPU-v4", "TPU-v5e", "TPU-v5p",
              "EPYC-7742", "EPYC-9654", "Xeon-8480"]
LINK_IDS = ["nvlink2", "nvlink3", "nvlink4", "nvlink5", "pcie3-x16", "pcie4-x16", "pcie5-x16", "ib-edr-100",
            "ib-hdr-200", "ib-ndr-400", "roce-400", "eth-25g", "eth-100g", "eth-400g", "opa-100", "tpu-ici-v4",
            "wan-10g", "wan-100g"]
STORAGE_IDS = ["ddr4-host", "ddr5-host", "nvme-gen4", "nvme-gen5", "sata-ssd", "hdd-7200", "lustre",
               "object-store"]

# calibration.yaml gemm_by_size_a100_fp16 (Azure ND A100 v4, cuBLASLt, m=n=k -> TFLOP/s), copied verbatim
GEMM_BY_SIZE_A100_FP16 = {1024: 119.4, 2048: 221.8, 4096: 228.0, 8192: 253.7, 16384: 256.5}
A100_PLATEAU = 271.2e12  # calibration.yaml gemm_achievable bf16_tflops A100-SXM achieved

# Fields that are not figures (identity, text, provenance); every other field present needs a source.
NON_FIGURES = {"id", "kind", "name", "link_class", "price_date", "sources",
               "kernels"}  # the kernel model: its own figures and sources (tests/test_kernels.py)
# Fields that name a catalog link (not a quantity) but, like a figure, need a source.
LINK_FIELDS = {"host_link"}


def _all_specs():
    cat = load_catalog()
    return [*cat.devices.values(), *cat.links.values(), *cat.storage.values()]


# --- ids ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("section, ids, get", [("devices", DEVICE_IDS, get_device), ("links", LINK_IDS, get_link),
                                               ("storage", STORAGE_IDS, get_storage)])
def test_every_design_id_exists_and_resolves_case_insensitively(section, ids, get):
    for ident in ids:
        spec = get(ident)
        assert spec.id == ident
        assert get(ident.lower()) is spec and get(ident.upper()) is spec and get(f" {ident.swapcase()} ") is spec


def test_catalog_methods_match_shortcuts_and_load_is_cached():
    cat = load_catalog()
    assert isinstance(cat, Catalog) and load_catalog() is cat
    assert cat.device("a100-sxm4-80gb") is get_device("A100-SXM4-80GB")
    assert cat.link("NVLINK3") is get_link("nvlink3")
    assert cat.storage_tier("Lustre") is get_storage("lustre")
    assert all(isinstance(d, DeviceSpec) for d in cat.devices.values())
    assert all(isinstance(k, LinkSpec) for k in cat.links.values())
    assert all(isinstance(s, StorageSpec) for s in cat.storage.values())


def test_unknown_device_id_suggests_the_closest_and_points_to_the_list():
    with pytest.raises(ScenarioError) as info:
        get_device("A100-SXM-80GB")
    msg = str(info.value)
    assert msg == ("unknown device id 'A100-SXM-80GB'; did you mean 'A100-SXM4-80GB'? (every device "
                   "id: `hwsim catalog devices`)")
    assert "\n" not in msg  # one paragraph


@pytest.mark.parametrize("wanted, section, close", [
    ("A100", "device", ["A100-SXM4-40GB", "A100-SXM4-80GB", "A100-PCIe-80GB"]),
    ("h100 sxm", "device", ["H100-SXM5-80GB"]), ("a100 80gb", "device", ["A100-SXM4-80GB", "A100-PCIe-80GB"]),
    ("nvme", "storage", ["nvme-gen4", "nvme-gen5"]), ("ssd", "storage", ["sata-ssd"]),
    ("100g", "link", ["eth-100g", "wan-100g"]), ("hdr", "link", ["ib-hdr-200"])])
def test_a_partial_id_gets_a_short_did_you_mean_not_every_id(wanted, section, close):
    """``gpu: A100`` listed all 17 device ids with no suggestion (issue 12 item 8): the ids that
    contain or nearly spell what was written come first, the whole list is one command away."""
    getter, listing = {"device": (get_device, "devices"), "link": (get_link, "links"),
                       "storage": (get_storage, "storage")}[section]
    with pytest.raises(ScenarioError) as info:
        getter(wanted)
    msg = str(info.value)
    names = " or ".join(", ".join(repr(c) for c in close).rsplit(", ", 1))
    assert f"; did you mean {names}?" in msg, msg
    assert msg.endswith(f"(every {section} id: `hwsim catalog {listing}`)")
    assert "valid" not in msg and len(msg) < 160


def test_unknown_link_and_storage_ids_suggest_and_gibberish_does_not():
    with pytest.raises(ScenarioError, match=r"unknown link id 'nvlink-3'; did you mean 'nvlink3'\?"):
        get_link("nvlink-3")
    with pytest.raises(ScenarioError, match=r"unknown storage id 'nvme-gen6'; .*did you mean 'nvme-gen4' or 'nvme-gen5'\?"):
        get_storage("nvme-gen6")
    with pytest.raises(ScenarioError, match=r"unknown device id 'zzzz'; valid device ids: [^?]*$"):
        get_device("zzzz")
    with pytest.raises(ScenarioError, match=r"unknown device id None"):
        get_device(None)  # type: ignore[arg-type]


# --- sources -----------------------------------------------------------------------------------------

def test_every_figure_has_a_nonempty_source():
    for spec in _all_specs():
        for f in dataclasses.fields(spec):
            if f.name in NON_FIGURES or getattr(spec, f.name) is None:
                continue
            text = spec.sources.get(f.name, "")
            assert isinstance(text, str) and len(text.strip()) > 10, (spec.id, f.name)
        assert set(spec.sources) <= {f.name for f in dataclasses.fields(spec)} - NON_FIGURES, spec.id


def test_sources_quote_the_calibration_measurements_they_use():
    a100 = get_device("A100-SXM4-80GB")
    assert "gemm_achievable" in a100.sources["compute_efficiency"] and "271.2" in a100.sources["compute_efficiency"]
    assert "hbm_stream_tb_per_s" in a100.sources["memory_efficiency"] and "1.61" in a100.sources["memory_efficiency"]
    assert "gemm_by_size_a100_fp16" in a100.sources["compute_ramp_flops"]
    assert "231.58" in get_link("nvlink3").sources["efficiency"]
    assert "26.28" in get_link("pcie4-x16").sources["efficiency"]
    assert "788" in get_device("H200-SXM-141GB").sources["compute_efficiency"]


# --- values: SI units and sanity ---------------------------------------------------------------------

def test_a100_figures_are_si():
    a = get_device("A100-SXM4-80GB")
    assert a.peak_flops_per_s["bf16"] == pytest.approx(312e12)
    assert a.peak_flops_per_s["tf32"] == pytest.approx(156e12)
    assert a.memory_bytes == pytest.approx(80e9)
    assert a.mem_bw_bytes_per_s == pytest.approx(2.039e12)
    assert a.peak_power_w == 400 and a.launch_overhead_s == pytest.approx(10e-6)
    assert a.compute_efficiency == pytest.approx(271.2 / 312, abs=1e-3)
    assert a.memory_efficiency == pytest.approx(1.61 / 2.039, abs=1e-3)


@pytest.mark.parametrize("ident, eff", [("H100-SXM5-80GB", 794.5 / 989), ("H200-SXM-141GB", 788 / 989),
                                        ("B200", 1745 / 2250), ("A100-PCIe-80GB", 252.9 / 312)])
def test_compute_efficiency_is_the_measured_gemm_fraction(ident, eff):
    assert get_device(ident).compute_efficiency == pytest.approx(eff, abs=1e-3)


def test_mi300x_model_reproduces_the_measured_gemm_rate():
    d = get_device("MI300X")
    assert d.peak("bf16") * d.compute_efficiency == pytest.approx(668.4e12, rel=1e-3)


@pytest.mark.parametrize("ident, eff", [("H100-SXM5-80GB", 2.90 / 3.35), ("H200-SXM-141GB", 4.01 / 4.8)])
def test_memory_efficiency_is_the_measured_stream_fraction(ident, eff):
    assert get_device(ident).memory_efficiency == pytest.approx(eff, abs=1e-3)


@pytest.mark.parametrize("ident, bw", [("nvlink2", 150e9), ("nvlink3", 300e9), ("nvlink4", 450e9), ("nvlink5", 900e9),
                                       ("ib-hdr-200", 25e9), ("ib-ndr-400", 50e9), ("ib-edr-100", 12.5e9),
                                       ("eth-25g", 3.125e9), ("pcie4-x16", 32e9), ("pcie5-x16", 64e9),
                                       ("wan-10g", 1.25e9)])
def test_link_bandwidth_is_per_direction_in_bytes_per_s(ident, bw):
    assert get_link(ident).bw_bytes_per_s == pytest.approx(bw)


def test_link_efficiencies_come_from_the_measurements():
    assert get_link("nvlink3").efficiency == pytest.approx(231.58 / 300, abs=1e-3)
    assert get_link("nvlink4").efficiency == pytest.approx(367.2 / 450, abs=1e-3)
    assert get_link("pcie4-x16").efficiency == pytest.approx(26.28 / 32, abs=1e-3)
    assert get_link("pcie5-x16").efficiency == pytest.approx(51 / 64, abs=1e-3)
    assert get_link("pcie4-x16").effective_bw_bytes_per_s == pytest.approx(26.28e9, rel=1e-3)


def test_every_efficiency_in_unit_interval_and_every_quantity_positive():
    for spec in _all_specs():
        for f in dataclasses.fields(spec):
            v = getattr(spec, f.name)
            if f.name in NON_FIGURES | LINK_FIELDS or v is None:
                continue
            values = v.values() if isinstance(v, dict) else [v]
            assert all(math.isfinite(x) and x > 0 for x in values), (spec.id, f.name)
            if "efficiency" in f.name:
                assert 0 < v <= 1, (spec.id, f.name)


def test_device_figures_are_sane():
    for d in load_catalog().devices.values():
        assert 0 < d.idle_power_w < d.peak_power_w <= 1400, d.id  # MI355X: 1,400 W TBP
        assert 1e9 < d.memory_bytes < 2e12 and 5e10 < d.mem_bw_bytes_per_s < 1e13, d.id
        assert 0 < d.launch_overhead_s <= 20e-6, d.id
        assert (d.cores is not None) == (d.kind == "cpu"), d.id
        if d.kind == "gpu":  # dense, not sparse: tensor peaks ordered tf32 < bf16 < fp8
            p = d.peak_flops_per_s
            assert p.get("tf32", 0) < p.get("bf16", p["fp16"]) < p.get("fp8", math.inf), d.id
            assert p.get("fp8", 0) <= p.get("fp6", math.inf) <= p.get("fp4", math.inf), d.id
    # dense figures, not the 2:4-sparse ones the datasheets headline
    assert get_device("H100-SXM5-80GB").peak("bf16") == pytest.approx(989e12)
    assert get_device("B200").peak("fp8") == pytest.approx(4.5e15)
    # CPU peak = cores x base clock x FLOP/cycle
    assert get_device("EPYC-7742").peak("fp64") == pytest.approx(64 * 2.25e9 * 16)
    assert get_device("Xeon-8480").peak("fp32") == pytest.approx(56 * 2.0e9 * 64)
    assert get_device("EPYC-9654").mem_bw_bytes_per_s == pytest.approx(12 * 4800e6 * 8)


def test_storage_figures_are_sane():
    cat = load_catalog()
    lat = {k: s.latency_s for k, s in cat.storage.items()}
    assert lat["ddr4-host"] < lat["nvme-gen5"] < lat["sata-ssd"] < lat["hdd-7200"] < lat["object-store"]
    hdd = get_storage("hdd-7200")
    assert hdd.read_bw_bytes_per_s == pytest.approx(250e6) and 100 <= hdd.read_iops <= 300
    assert 5e-3 <= hdd.latency_s <= 10e-3
    assert hdd.effective_read_bw(4096) == pytest.approx(hdd.read_iops * 4096)  # random 4 KiB is IOPS-bound
    for s in cat.storage.values():
        assert s.read_iops * 4096 <= s.read_bw_bytes_per_s * 1.001, s.id  # IOPS never beat the bandwidth
    assert get_storage("ddr5-host").read_bw_bytes_per_s > get_storage("nvme-gen5").read_bw_bytes_per_s


def test_prices_have_dates():
    for spec in [*load_catalog().devices.values(), *load_catalog().storage.values()]:
        priced = spec.price_usd is not None or spec.price_usd_per_hour is not None
        assert priced == (spec.price_date is not None), spec.id
        if spec.price_date:
            assert re.fullmatch(r"\d{4}-\d{2}", spec.price_date), spec.id
    assert get_device("TPU-v5e").price_usd_per_hour == pytest.approx(1.20)


# --- the compute ramp --------------------------------------------------------------------------------

def test_ramp_fit_reproduces_the_catalog_value():
    points = {2.0 * n ** 3: t * 1e12 for n, t in GEMM_BY_SIZE_A100_FP16.items()}
    ramp, residuals = fit_compute_ramp(points, A100_PLATEAU)
    # an independent brute-force check of the same least-squares problem
    grid = np.logspace(6, 13, 70001)
    f, y = np.array(list(points)), np.array(list(points.values()))
    cost = ((A100_PLATEAU * f[None, :] / (f[None, :] + grid[:, None]) / y[None, :] - 1.0) ** 2).sum(axis=1)
    assert ramp == pytest.approx(grid[np.argmin(cost)], rel=1e-3)
    assert get_device("A100-SXM4-80GB").compute_ramp_flops == pytest.approx(ramp, rel=0.05)
    # the residuals stated in the YAML source text
    assert [round(100 * r, 1) for r in residuals] == [-2.1, 5.0, 16.5, 6.6, 5.7]
    assert max(abs(r) for r in residuals) < 0.2


def test_other_devices_scale_the_a100_ramp_by_bf16_peak():
    a100 = get_device("A100-SXM4-80GB")
    for d in load_catalog().devices.values():
        expected = a100.compute_ramp_flops * d.peak("bf16") / a100.peak("bf16")
        assert d.compute_ramp_flops == pytest.approx(expected, rel=0.01), d.id


def test_efficiency_ramp_halves_at_the_ramp_and_saturates():
    d = get_device("A100-SXM4-80GB")
    assert d.efficiency(d.compute_ramp_flops) == pytest.approx(d.compute_efficiency / 2)
    assert d.efficiency(1e18) == pytest.approx(d.compute_efficiency, rel=1e-6)
    for n, measured in GEMM_BY_SIZE_A100_FP16.items():  # within the stated fit residuals (< 20%)
        assert d.peak("fp16") * d.efficiency(2.0 * n ** 3) == pytest.approx(measured * 1e12, rel=0.2)


# --- op_time_s closed form ---------------------------------------------------------------------------

def _in_stack(ident: str):
    """The device as the default transformer stack runs it (framework factors set)."""
    return get_stack("megatron-core").apply(get_device(ident))


def test_op_time_compute_bound_closed_form():
    d = _in_stack("A100-SXM4-80GB")
    flops, nbytes = 2.0 * 8192 ** 3, 3 * 2 * 8192 ** 2
    # the framework's loss on the useful FLOPs, the small-op ramp as the kernel alone pays it
    expected = (flops / d.framework_compute_factor + d.compute_ramp_flops) / (
        312e12 * d.compute_efficiency)
    assert d.op_time_s(flops, nbytes, "bf16") == pytest.approx(expected, rel=1e-12)
    assert d.op_bound(flops, nbytes, "bf16") == "compute"
    assert d.op_time_s(flops, nbytes, "bf16", speed=0.5) == pytest.approx(2 * expected)


def test_tiny_ops_cost_the_host_dispatch_time():
    """A Dense(1) forward on a batch of 32 is tiny: it takes the larger of the dispatch time and
    the ramp time (ramp / (bf16 peak x efficiency)), and is reported as overhead-bound."""
    d = get_device("A100-SXM4-80GB")
    flops, nbytes = 2 * 32 * 100, 4 * (32 * 100 + 100 + 32)
    ramp_s = d.compute_ramp_flops / (312e12 * d.compute_efficiency)
    assert d.op_time_s(flops, nbytes, "fp32") == pytest.approx(max(ramp_s, d.launch_overhead_s), rel=1e-3)
    assert d.op_bound(flops, nbytes, "fp32") == "overhead"
    cpu = get_device("EPYC-7742")
    assert cpu.op_time_s(flops, nbytes, "fp32") >= cpu.launch_overhead_s
    assert cpu.op_bound(flops, nbytes, "fp32") == "overhead"


def test_ramp_scales_with_the_precision_peak():
    """The ramp is stated at the bf16 peak; at fp32 (16x lower peak on an A100) half efficiency is
    reached with 16x fewer FLOPs, i.e. after the same time."""
    d = get_device("A100-SXM4-80GB")
    f32_half = d.compute_ramp_flops * 19.5 / 312
    assert d.efficiency(f32_half, "fp32") == pytest.approx(d.compute_efficiency / 2)


def test_op_time_memory_bound_closed_form():
    d = _in_stack("H100-SXM5-80GB")
    flops, nbytes = 1e9, 4e9  # elementwise-like: 0.25 FLOP/byte
    expected = nbytes / (3.35e12 * (2.90 / 3.35) * d.framework_memory_factor)
    assert d.op_time_s(flops, nbytes, "bf16") == pytest.approx(expected, rel=1e-3)
    assert d.op_bound(flops, nbytes, "bf16") == "memory"


# --- in-framework efficiency -------------------------------------------------------------------------

def test_framework_factor_applies_at_matrix_unit_precisions_only():
    """Tensor-Core precisions (peak above fp32) get framework_compute_factor; fp32 runs on the
    vector units at its kernel efficiency; the isolated-kernel efficiency() is unchanged."""
    d = _in_stack("A100-SXM4-80GB")
    phi = d.framework_compute_factor
    assert 0 < phi < 1
    for dtype in ("tf32", "fp16", "bf16", "int8"):
        assert d.matrix_unit(dtype)
        ramp = d.compute_ramp_flops * d.peak(dtype) / d.peak("bf16")
        assert d.framework_efficiency(1e12, dtype) == pytest.approx(
            d.ceiling(dtype) * 1e12 / (1e12 / phi + ramp))
        # the loss is on the work, not on the ramp: more than efficiency x phi for a small op
        assert d.framework_efficiency(1e9, dtype) > d.efficiency(1e9, dtype) * phi
    assert not d.matrix_unit("fp32") and not d.matrix_unit("fp64")  # fp64 19.5 = fp32 19.5
    assert d.framework_efficiency(1e12, "fp32") == d.efficiency(1e12, "fp32")
    # the plateau, far beyond the ramp
    assert d.framework_efficiency(1e20, "bf16") == pytest.approx(d.compute_efficiency * phi)
    assert d.efficiency(1e20, "bf16") == pytest.approx(d.compute_efficiency)


def test_framework_bandwidth_closed_form():
    d = _in_stack("V100-SXM2-32GB")
    assert d.framework_bandwidth() == pytest.approx(
        900e9 * d.memory_efficiency * d.framework_memory_factor)
    tc, tm = d.roofline_s(0.0, 1e9, "fp16")
    assert tc == 0.0 and tm == pytest.approx(1e9 / d.framework_bandwidth())


def test_unset_framework_factors_mean_one():
    cpu = get_device("EPYC-7742")
    assert cpu.framework_compute_factor is None and cpu.framework_memory_factor is None
    assert cpu.framework_efficiency(1e12, "fp32") == cpu.efficiency(1e12, "fp32")
    assert cpu.framework_bandwidth() == pytest.approx(cpu.mem_bw_bytes_per_s * cpu.memory_efficiency)
    d = get_device("A100-SXM4-80GB")  # straight from the catalog: no stack, factor 1
    assert d.framework_efficiency(1e12, "bf16") == d.efficiency(1e12, "bf16")


@pytest.mark.parametrize("ident", ["V100-SXM2-32GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "B200",
                                   "MI300X", "TPU-v4"])
@pytest.mark.parametrize("dtype", ["fp32", "tf32", "bf16"])
def test_a_bigger_op_is_never_less_efficient_nor_faster(ident, dtype):
    d = get_device(ident)
    flops = np.logspace(3, 16, 60)
    eff = np.array([d.framework_efficiency(f, dtype) for f in flops])
    assert np.all(np.diff(eff) >= 0) and np.all(eff > 0)
    assert eff[-1] <= d.compute_efficiency
    # time grows with FLOPs at fixed bytes and with bytes at fixed FLOPs
    t_f = [d.op_time_s(f, 1e6, dtype) for f in flops]
    t_b = [d.op_time_s(1e9, b, dtype) for b in np.logspace(3, 12, 40)]
    assert np.all(np.diff(t_f) >= 0) and np.all(np.diff(t_b) >= 0)


def test_in_framework_time_is_never_below_the_isolated_kernel_time():
    for d in load_catalog().devices.values():
        for dtype in ("fp32", "bf16"):
            for flops, nbytes in ((1e12, 1e8), (1e9, 1e9), (1e15, 1e10)):
                t_c, t_m = d.roofline_s(flops, nbytes, dtype)
                assert t_c >= flops / (d.peak(dtype) * d.efficiency(flops, dtype)) * (1 - 1e-12)
                assert t_m >= nbytes / (d.mem_bw_bytes_per_s * d.memory_efficiency) * (1 - 1e-12)


def test_the_device_catalog_carries_no_framework_factor_the_stack_does():
    """What a framework reaches of the hardware is software: no device entry carries a framework
    factor (was one fitted GPU value, before that one pre-Hopper and one Hopper value fitted to
    one row); a software stack (hwsim/catalog/data/stacks.yaml) sets both on the devices a job
    runs, and leaves CPUs alone."""
    stack = get_stack("megatron-core")
    for d in load_catalog().devices.values():
        assert d.framework_compute_factor is None and d.framework_memory_factor is None, d.id
        assert "framework_compute_factor" not in d.sources, d.id
        run = stack.apply(d)
        if d.kind == "cpu":
            assert run == d
        else:
            assert run.framework_compute_factor == stack.compute_factor
            assert run.framework_memory_factor == stack.memory_factor
