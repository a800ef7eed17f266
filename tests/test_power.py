"""Power and energy (docs/analysis.md, "Power"): power between idle and busy, energy the integral
of power, a power cap that never speeds a run up nor raises its power, the facility keys, rack
limits and the ``power:`` section's pinned errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import hwsim
from hwsim import cli
from hwsim.analysis.power import (CLOCK_POWER_EXPONENT, capped_spec, check_rack_limit,
                                  clock_factor, component_power, device_power, energy_j, power_w)
from hwsim.analysis.headline import headline
from hwsim.analysis.result import Result
from hwsim.catalog import get_device, load_catalog
from hwsim.exceptions import ScenarioError
from hwsim.scenario import load_scenario
from hwsim.scenario.build import scenario_graph

TRAIN = {
    "name": "power-train",
    "cluster": {"nodes": 2, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8,
                                     "cpu": "Xeon-8480", "intra_node": "nvlink4",
                                     "nic": "ib-ndr-400", "nics_per_node": 8},
                "fabric": {"topology": "fat-tree"}},
    "workload": {"kind": "training", "model": {"preset": "llama2-7b"}, "seq_len": 2048,
                 "precision": "bf16", "global_batch": 32,
                 "parallelism": {"micro_batch": 2, "zero": 3}, "steps": 2,
                 "train_tokens": 1.0e9},
}


def _with_power(power: dict | None) -> dict:
    s = copy.deepcopy(TRAIN)
    if power is not None:
        s["power"] = power
    return s


@pytest.fixture(scope="module")
def runs() -> dict:
    """The training scenario at PUE 1.3 without a cap and at three caps (W)."""
    out = {}
    for cap in (None, 600.0, 450.0, 300.0):
        p = {"pue": 1.3} if cap is None else {"pue": 1.3, "gpu_power_cap_w": cap}
        out[cap] = hwsim.run(_with_power(p))
    return out


# -- the model, closed forms ----------------------------------------------------------------

def test_power_stays_between_idle_and_busy() -> None:
    u = np.linspace(-0.5, 1.5, 41)
    p = power_w(70.0, 576.0, u)
    assert p.min() == 70.0 and p.max() == 576.0
    assert np.all(np.diff(p) >= 0)  # more utilisation, never less power
    assert float(power_w(70.0, 576.0, 0.25)) == 70.0 + 0.25 * 506.0


def test_energy_is_the_integral_of_power_closed_form() -> None:
    # bins of 1 s, 2 s and 1 s at utilisation 0, 0.5 and 1: busy 2 s of 4 s
    e = energy_j(70.0, 576.0, [0.0, 0.5, 1.0], [1.0, 2.0, 1.0])
    assert e == pytest.approx(70.0 * 4.0 + (576.0 - 70.0) * 2.0, rel=1e-15)
    spec = get_device("H100-SXM5-80GB")
    assert hwsim.device_energy_j(spec, 2.0, 4.0) == pytest.approx(e, rel=1e-15)


def test_device_power_frame_integrates_to_resource_summary_energy() -> None:
    """One op of 1 s on n0.gpu0 in a 4 s run: at any bin width the frame's power stays in
    [idle, busy] and its energy sums to the closed form (and to resource_summary's)."""
    ev = pd.DataFrame({"start_s": [0.5], "end_s": [1.5], "resource": ["n0.gpu0/compute"],
                       "kind": ["compute"], "name": ["gemm"], "job": ["t"], "rank": [0],
                       "bytes": [1e9], "flops": [2e14], "category": ["compute"]})
    r = Result(name="one-op", summary={"simulated_time_s": 4.0}, events=ev,
               utilization=pd.DataFrame(), memory=pd.DataFrame(), bottleneck=pd.DataFrame(),
               device_specs={"n0.gpu0": "H100-SXM5-80GB"})
    spec = get_device("H100-SXM5-80GB")
    closed = spec.idle_power_w * 4.0 + (spec.busy_w - spec.idle_power_w) * 1.0
    for width in (0.3, 1.0, 4.0):
        f = device_power(r, bin_s=width)
        assert f["power_w"].between(spec.idle_power_w, spec.busy_w).all()
        assert f["energy_j"].sum() == pytest.approx(closed, rel=1e-12)
    rs = hwsim.resource_summary(r).set_index("resource")
    assert rs.loc["n0.gpu0", "energy_j"] == pytest.approx(closed, rel=1e-12)
    # under a cap the same op draws at most the cap
    capped = r.summary | {"gpu_power_cap_w": 300.0}
    r.summary = capped
    f = device_power(r, bin_s=0.5)
    assert f["power_w"].max() == pytest.approx(300.0)
    assert hwsim.resource_summary(r).set_index("resource").loc["n0.gpu0", "energy_j"] == \
        pytest.approx(spec.idle_power_w * 4.0 + (300.0 - spec.idle_power_w) * 1.0, rel=1e-12)


def test_clock_factor_closed_form_and_monotone() -> None:
    assert CLOCK_POWER_EXPONENT == 1.0
    assert clock_factor(70.0, 576.0, None) == 1.0
    assert clock_factor(70.0, 576.0, 600.0) == 1.0  # a cap above the busy draw costs nothing
    assert clock_factor(70.0, 576.0, 323.0) == pytest.approx(0.5, rel=1e-12)
    caps = np.linspace(80.0, 700.0, 32)
    f = [clock_factor(70.0, 576.0, c) for c in caps]
    assert all(b >= a for a, b in zip(f, f[1:])) and 0 < f[0] < f[-1] == 1.0
    with pytest.raises(ValueError, match=r"a power cap of 60 W is at or below the board's idle "
                                         r"power 70 W"):
        clock_factor(70.0, 576.0, 60.0)
    spec = capped_spec(get_device("H100-SXM5-80GB"), 323.0)
    assert spec.peak("bf16") == pytest.approx(0.5 * 989e12, rel=1e-12)
    assert spec.busy_w == 323.0 and spec.peak_power_w == 323.0
    assert spec.mem_bw_bytes_per_s == get_device("H100-SXM5-80GB").mem_bw_bytes_per_s


def test_catalog_busy_power_between_idle_and_tdp_with_a_source() -> None:
    for d in load_catalog().devices.values():
        assert d.idle_power_w < d.busy_w <= d.peak_power_w, d.id
        if d.busy_power_w is None:  # not in the entry: the TDP, an upper bound
            assert d.busy_w == d.peak_power_w, d.id
            continue
        src = d.sources["busy_power_w"]
        if d.busy_w == d.peak_power_w and d.kind != "tpu":
            assert "upper bound" in src, d.id  # no measurement: says the TDP is used
    h100 = get_device("H100-SXM5-80GB")
    assert h100.busy_w == 576.0 and "LATIF-2024" in h100.sources["busy_power_w"]


# -- a run's summary keys --------------------------------------------------------------------

def test_summary_keys_add_up(runs: dict) -> None:
    s = runs[None].summary
    parts = [s[f"power_{k}_kw"] for k in ("gpu", "cpu", "nic", "switch", "storage")]
    assert sum(parts) == pytest.approx(s["power_it_kw"], rel=1e-12)
    assert s["pue"] == 1.3
    assert s["power_avg_kw"] == pytest.approx(1.3 * s["power_it_kw"], rel=1e-12)
    assert s["energy_kwh"] == pytest.approx(s["power_avg_kw"] * s["simulated_time_s"] / 3600,
                                            rel=1e-12)
    watts = s["power_avg_kw"] * 1e3
    assert s["energy_per_token_j"] == pytest.approx(watts / s["tokens_per_s"], rel=1e-12)
    assert s["energy_per_sample_j"] == pytest.approx(
        watts * s["step_time_s"] / s["global_batch"], rel=1e-12)
    assert s["energy_to_train_mwh"] == pytest.approx(watts * s["time_to_train_s"] / 3.6e9,
                                                     rel=1e-12)
    # 16 GPUs between idle and busy; 16 NICs (ConnectX-7 optics 9 W) and their switch ends
    h100 = get_device("H100-SXM5-80GB")
    assert 16 * h100.idle_power_w < s["power_gpu_kw"] * 1e3 < 16 * h100.busy_w
    assert h100.idle_power_w < s["gpu_power_w"] < h100.busy_w
    assert s["power_nic_kw"] == pytest.approx(16 * 9.0 / 1e3)
    assert s["power_switch_kw"] >= s["power_nic_kw"]
    assert s["power_busy_kw"] >= s["power_it_kw"]


def test_gpu_power_is_the_integral_of_the_device_frames(runs: dict) -> None:
    r = runs[None]
    f = device_power(r, bin_s=r.summary["simulated_time_s"] / 37)
    gpus = f[f["spec"] == "H100-SXM5-80GB"]
    assert gpus["device"].nunique() == 16  # every GPU simulated: no folding here
    assert gpus["energy_j"].sum() / r.summary["simulated_time_s"] / 1e3 == pytest.approx(
        r.summary["power_gpu_kw"], rel=1e-9)


def test_lower_cap_never_faster_never_more_power(runs: dict) -> None:
    caps = [None, 600.0, 450.0, 300.0]
    s = [runs[c].summary for c in caps]
    assert s[1]["step_time_s"] == pytest.approx(s[0]["step_time_s"])  # above the busy draw
    for a, b in zip(s, s[1:]):
        assert b["step_time_s"] >= a["step_time_s"] * (1 - 1e-12)
        assert b["power_avg_kw"] <= a["power_avg_kw"] * (1 + 1e-12)
        assert b["gpu_power_w"] <= a["gpu_power_w"] * (1 + 1e-12)
    for c, x in zip(caps[1:], s[1:]):
        assert x["gpu_power_cap_w"] == c and x["gpu_power_w"] <= c
        assert x["gpu_clock_factor"] == pytest.approx(clock_factor(70.0, 576.0, c))
    assert s[3]["step_time_s"] > 1.2 * s[0]["step_time_s"]  # a 300 W cap bites
    assert s[3]["mfu"] < s[0]["mfu"]  # MFU stays against the uncapped datasheet peak


def test_serving_energy_per_output_token() -> None:
    res = hwsim.run("scenarios/llama2-7b-1xa100-serving.yaml")
    s = res.summary
    watts = s["power_avg_kw"] * 1e3
    assert s["energy_per_output_token_j"] == pytest.approx(watts / s["output_tokens_per_s"],
                                                           rel=1e-12)
    assert s["energy_per_request_j"] == pytest.approx(watts / s["requests_per_s"], rel=1e-12)
    a100 = get_device("A100-SXM4-80GB")
    assert a100.idle_power_w <= s["gpu_power_w"] <= a100.busy_w


def test_folded_devices_beyond_the_simulated_run_at_their_mean_share() -> None:
    g = scenario_graph(load_scenario(_with_power(None)))
    h100 = get_device("H100-SXM5-80GB")
    gpus = sorted(n for n, d in g.nodes(data=True) if d.get("kind") == "gpu")
    p = component_power(g, {gpus[0]: 1.0, gpus[1]: 0.5}, used=8)
    mean = h100.idle_power_w + 0.75 * (h100.busy_w - h100.idle_power_w)
    expect = h100.busy_w + float(power_w(h100.idle_power_w, h100.busy_w, 0.5)) \
        + 6 * mean + 8 * h100.idle_power_w
    assert p["gpu"] == pytest.approx(expect, rel=1e-12)


# -- the power: section, rack limits and pinned errors ---------------------------------------

def test_rack_limit_error_names_field_and_numbers() -> None:
    with pytest.raises(ScenarioError) as err:
        scenario_graph(load_scenario(_with_power({"rack_limit_kw": 10,
                                                  "servers_per_rack": 2})))
    assert str(err.value) == (
        "power.rack_limit_kw: rack 0 draws 10.76 kW with every component busy (2 servers of "
        "5.38 kW each), over the rack limit of 10 kW; valid: fewer servers per rack (at most 1 "
        "at 5.38 kW), a higher limit, or a GPU power cap (power.gpu_power_cap_w)")
    # the same racks fit under a cap: 8 x 450 + 2 x 350 + 8 x 9 = 4.372 kW a server
    g = scenario_graph(load_scenario(_with_power({"rack_limit_kw": 10, "servers_per_rack": 2,
                                                  "gpu_power_cap_w": 450})))
    assert check_rack_limit(g, 10.0, 2) == pytest.approx(2 * 4.372)


@pytest.mark.parametrize("power, message", [
    ({"pue": 0.9}, "power.pue: input should be greater than or equal to 1 (got 0.9)"),
    ({"gpu_power_cap_w": 800}, "power.gpu_power_cap_w: 800 W is outside the power range of "
     "H100-SXM5-80GB: a cap must lie above its idle power (70 W) and at most its TDP (700 W); "
     "e.g. gpu_power_cap_w: 560"),
    ({"gpu_power_cap_w": 50}, "power.gpu_power_cap_w: 50 W is outside the power range of "
     "H100-SXM5-80GB: a cap must lie above its idle power (70 W) and at most its TDP (700 W); "
     "e.g. gpu_power_cap_w: 560"),
    ({"rack_limit_kw": 10}, "power: rack_limit_kw needs servers_per_rack: how many servers "
     "share one rack's budget (e.g. rack_limit_kw: 40, servers_per_rack: 4)"),
    ({"watts": 3}, "power.watts: unknown key 'watts'"),
])
def test_bad_power_sections_pinned(tmp_path: Path, power: dict, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(_with_power(power)))
    result = CliRunner().invoke(cli.app, ["validate", str(f)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {f}: {message}")


def test_pue_default_is_one() -> None:
    s = load_scenario(_with_power(None))
    assert s.power.pue == 1.0 and s.power.gpu_power_cap_w is None
    assert math.isclose(load_scenario(_with_power({"gpu_power_cap_w": "450 W"}))
                        .power.gpu_power_cap_w, 450.0)


def test_power_cap_scenario_answers_its_question() -> None:
    """scenarios/llama2-7b-power-cap-16xh100.yaml: the 10 kW rack fits only under the cap; the
    cap's price in time and energy against the same run uncapped in a roomier rack."""
    path = Path(__file__).resolve().parent.parent / "scenarios" / "llama2-7b-power-cap-16xh100.yaml"
    base = yaml.safe_load(path.read_text())
    capped = hwsim.run(path)
    s = capped.summary
    assert s["gpu_power_cap_w"] == 450.0 and s["pue"] == 1.3
    assert s["power_busy_kw"] == pytest.approx(2 * 4.372 + 16 * 9.0 / 1e3)  # + switch ports
    uncapped = copy.deepcopy(base)
    del uncapped["power"]["gpu_power_cap_w"]
    with pytest.raises(ScenarioError, match=r"rack 0 draws 10\.76 kW"):
        hwsim.run(uncapped)
    uncapped["power"]["rack_limit_kw"] = 11
    u = hwsim.run(uncapped).summary
    assert s["step_time_s"] > u["step_time_s"] and s["power_avg_kw"] < u["power_avg_kw"]
    # with alpha = 1 the cap's slower clock costs more idle-power time than it saves
    assert s["energy_per_token_j"] > u["energy_per_token_j"]
    assert s["energy_to_train_mwh"] == pytest.approx(
        s["power_avg_kw"] * s["time_to_train_s"] / 3.6e6, rel=1e-12)
    line = headline(s, capped.config)[-1]
    assert line.startswith("power: 10.1 kW facility (7.78 kW IT, PUE 1.3), GPUs capped at "
                           "450 W (compute clock 75%), 0.0719 J per token, ")


@pytest.mark.parametrize("stem, devices", [("gpt3-175b-1024xa100", 1024),
                                           ("shared-train-and-serve", 16)])
def test_cluster_gpu_power_within_bounds_folded_and_shared(stem: str, devices: int) -> None:
    """A folded run (16 simulated ranks standing for 1,024 GPUs) and a shared cluster (two jobs)
    power every GPU of the cluster between idle and busy."""
    s = hwsim.run(f"scenarios/{stem}.yaml").summary
    a100 = get_device("A100-SXM4-80GB") if stem.startswith("gpt3") else None
    gpus = [d for d in load_scenario(f"scenarios/{stem}.yaml").cluster.node_specs()]
    spec = a100 or get_device(gpus[0].gpu)
    assert devices * spec.idle_power_w < s["power_gpu_kw"] * 1e3 < devices * spec.busy_w
    assert s["power_it_kw"] == pytest.approx(sum(
        s[f"power_{k}_kw"] for k in ("gpu", "cpu", "nic", "switch", "storage")), rel=1e-12)


def test_hdd_storage_draws_its_idle_power() -> None:
    s = hwsim.run("scenarios/logistic-gpu-hdd.yaml").summary
    assert s["power_storage_kw"] == pytest.approx(5.3e-3)  # Seagate Exos X18 idle, 1 drive


def test_a_cap_on_a_cluster_without_gpus_is_an_error(tmp_path: Path) -> None:
    scen = yaml.safe_load(Path("scenarios/gpt-350m-tpuv4-2x2x2.yaml").read_text())
    scen["power"] = {"gpu_power_cap_w": 150}
    f = tmp_path / "tpu.yaml"
    f.write_text(yaml.safe_dump(scen))
    result = CliRunner().invoke(cli.app, ["validate", str(f)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(
        f"error: {f}: power.gpu_power_cap_w: the cluster has no GPUs to cap (a power cap "
        "applies to GPUs only); remove gpu_power_cap_w")


def test_power_cap_sweep_finds_the_caps_that_fit_the_rack() -> None:
    """scenarios/sweeps/llama2-7b-power-caps.yaml: the 576 W point (no cap in effect) is refused
    by the rack limit with its reason; the others fit, slower and cooler as the cap drops."""
    df = hwsim.sweep("scenarios/sweeps/llama2-7b-power-caps.yaml").sort_values(
        "power.gpu_power_cap_w")
    assert list(df["feasible"]) == [True, True, True, True, False]
    assert "power.rack_limit_kw: rack 0 draws 10.76 kW" in df["reason"].iloc[-1]
    ok = df[df["feasible"]]
    assert ok["step_time_s"].is_monotonic_decreasing
    assert ok["power_avg_kw"].is_monotonic_increasing
    assert (ok["power_busy_kw"] <= 10.0 + 16 * 9.0 / 1e3).all()


def test_hwsim_run_refuses_a_rack_over_its_limit(tmp_path: Path) -> None:
    f = tmp_path / "rack.yaml"
    f.write_text(yaml.safe_dump(_with_power({"rack_limit_kw": 10, "servers_per_rack": 2})))
    result = CliRunner().invoke(cli.app, ["run", str(f), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {f}: power.rack_limit_kw: rack 0 draws 10.76 kW")
    assert not (tmp_path / "out").exists()


def test_serving_at_a_lower_cap_never_faster_never_more_power() -> None:
    """Serving at a fixed request rate: lower caps never shorten TTFT or TPOT nor raise the
    power; at a fixed load the energy per output token falls until the server saturates."""
    base = yaml.safe_load(Path("scenarios/llama2-7b-1xa100-serving.yaml").read_text())
    runs = []
    for cap in (None, 300, 200):
        scen = copy.deepcopy(base)
        if cap is not None:
            scen["power"] = {"gpu_power_cap_w": cap}
        runs.append(hwsim.run(scen).summary)
    for a, b in zip(runs, runs[1:]):
        assert b["ttft_p50_s"] >= a["ttft_p50_s"] and b["tpot_p50_s"] >= a["tpot_p50_s"]
        assert b["power_avg_kw"] <= a["power_avg_kw"]
        assert b["energy_per_output_token_j"] < a["energy_per_output_token_j"]


def _shared_run(rate: float = 8.0) -> dict:
    data = yaml.safe_load(Path("scenarios/shared-train-and-serve.yaml").read_text())
    data["jobs"][1]["workload"]["arrivals"]["rate_per_s"] = rate
    return hwsim.run(data).summary


def test_shared_cluster_energy_splits_by_job_and_adds_up() -> None:
    """A shared run's energy is split over the jobs that hold devices (their devices' own energy
    over the run, the rest by devices held), so the jobs' energies add up to the run's; each
    job's is at least its devices' idle energy and at most their busy energy plus the whole
    shared remainder; a transfer job holds no devices and gets no key; per-unit keys are the
    job's mean power over its own rates, as a single run's (docs/analysis.md, "Power")."""
    s = _shared_run()
    jobs = ("train", "serve")
    assert sum(s[f"job.{j}.energy_kwh"] for j in jobs) == pytest.approx(s["energy_kwh"],
                                                                          rel=1e-12)
    assert "job.upload.energy_kwh" not in s
    a100 = get_device("A100-SXM4-80GB")
    wall_j = s["simulated_time_s"]
    shared_j = (s["power_it_kw"] * 1e3 - 16 * a100.idle_power_w) * wall_j  # at most
    for j in jobs:
        joules = s[f"job.{j}.energy_kwh"] * 3.6e6
        assert 8 * a100.idle_power_w * wall_j < joules < 8 * a100.busy_w * wall_j + shared_j
    watts = {j: s[f"job.{j}.energy_kwh"] * 3.6e6 / wall_j for j in jobs}  # mean power
    assert s["job.train.energy_per_sample_j"] == pytest.approx(
        watts["train"] * s["job.train.step_time_s"] / s["job.train.global_batch"], rel=1e-12)
    assert s["job.serve.energy_per_output_token_j"] == pytest.approx(
        watts["serve"] / s["job.serve.output_tokens_per_s"], rel=1e-12)


def test_more_serving_work_more_serving_power() -> None:
    """Doubling the serving job's request rate makes its devices busier: its mean power (its
    energy over the run's length) rises."""
    lo, hi = _shared_run(4.0), _shared_run(8.0)
    busy = lambda s: s["job.serve.energy_kwh"] / s["simulated_time_s"]  # noqa: E731
    assert busy(hi) > busy(lo)
