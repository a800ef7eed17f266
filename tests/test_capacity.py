"""Capacity questions (docs/planning.md, "Capacity questions"): the cheapest training cluster,
the fewest serving devices, their cost and energy, and Pareto fronts. Small models, few steps and
requests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import hwsim
from hwsim.catalog import get_device
from hwsim.exceptions import ScenarioError

TRAIN = {
    "name": "cap-train", "seed": 0,
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 2,
                                     "intra_node": "nvlink3"}},
    "workload": {"kind": "training", "seq_len": 512, "precision": "bf16", "global_batch": 16,
                 "model": {"layers": 4, "hidden": 512, "heads": 8, "vocab": 32000},
                 "parallelism": {"micro_batch": 4}, "optimizer": "adamw", "steps": 1},
}
SERVE = {
    "name": "cap-serve", "seed": 0,
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 1,
                                     "intra_node": "nvlink3"}},
    "workload": {"kind": "inference", "precision": "fp16",
                 "model": {"layers": 24, "hidden": 2048, "heads": 16, "vocab": 32000},
                 "parallelism": {"tp": 1, "replicas": 1},
                 "scheduler": {"policy": "continuous", "max_batch_size": 16,
                               "max_batched_tokens": 2048},
                 "arrivals": {"process": "poisson", "rate_per_s": 1.0, "requests": 150,
                              "prompt_tokens": 256, "output_tokens": 32}},
}
DEVS = ["A100-SXM4-80GB", "H100-SXM5-80GB"]
TOKENS = 2e9


@pytest.fixture(scope="module")
def train_df() -> pd.DataFrame:
    return hwsim.cheapest_training(TRAIN, TOKENS, 1.0, devices=DEVS, counts=[2, 4, 8])


def test_training_answer_is_the_cheapest_feasible(train_df):
    feas = train_df[train_df["feasible"]]
    assert len(feas) >= 2 and train_df["answer"].sum() == 1
    best = train_df[train_df["answer"]].iloc[0]
    assert best["feasible"] and (best["cost_usd"] <= feas["cost_usd"]).all()
    assert set(train_df["device"]) == set(DEVS) and set(train_df["count"]) == {2, 4, 8}
    # the layout: tp and pp kept, dp = count, global batch fixed (micro-batch shrinks to fit)
    row = train_df[(train_df["count"] == 8)].iloc[0]
    assert (row["tp"], row["pp"], row["dp"], row["micro_batch"]) == (1, 1, 8, 2)


def test_training_cost_closed_form_and_deadline(train_df):
    for _, r in train_df.iterrows():
        price = get_device(r["device"]).price_usd_per_hour
        assert r["price_per_hour"] == price
        assert r["cost_usd"] == pytest.approx(r["count"] * price * r["time_to_train_s"] / 3600,
                                              rel=1e-12)
        assert r["time_to_train_days"] == pytest.approx(r["time_to_train_s"] / 86400)
        assert r["feasible"] == (r["fits"] and r["time_to_train_s"] <= 86400)
    # time to train is the step time times the steps the budget needs
    r = train_df.iloc[0]
    steps = np.ceil(TOKENS / (16 * 512))
    assert r["time_to_train_s"] == pytest.approx(steps * r["step_time_s"], rel=1e-6)


def test_training_energy_between_idle_and_peak_bounds(train_df):
    for _, r in train_df.iterrows():
        spec, t, n = get_device(r["device"]), r["time_to_train_s"], r["count"]
        lo, hi = n * spec.idle_power_w * t / 3.6e6, n * spec.peak_power_w * t / 3.6e6
        assert lo < r["energy_kwh"] < hi
        assert r["energy_kwh"] == pytest.approx(n * (spec.idle_power_w * t + (
            spec.busy_w - spec.idle_power_w) * r["busy_share"] * t) / 3.6e6, rel=1e-9)
        assert 0.0 < r["busy_share"] <= 1.0
        # the site's energy: the run's facility power (every component, PUE 1) over T, at
        # least the devices' own
        assert r["energy_mwh"] == pytest.approx(r["power_mw"] * t / 3600.0, rel=1e-12)
        assert r["energy_mwh"] * 1e3 > r["energy_kwh"]


def test_more_days_never_raise_the_minimum_cost(train_df):
    times = train_df["time_to_train_s"].sort_values().to_numpy()
    costs = []
    for days in [times[0] / 86400 * 1.01, times[len(times) // 2] / 86400 * 1.01,
                 times[-1] / 86400 * 1.01]:
        df = hwsim.cheapest_training(TRAIN, TOKENS, days, devices=DEVS, counts=[2, 4, 8])
        costs.append(df.loc[df["answer"], "cost_usd"].iloc[0])
    assert costs[0] >= costs[1] >= costs[2]
    assert costs[2] == pytest.approx(train_df["cost_usd"].min())  # all feasible: the global min
    none = hwsim.cheapest_training(TRAIN, TOKENS, times[0] / 86400 * 0.5, devices=DEVS,
                                   counts=[2, 4, 8])
    assert not none["answer"].any() and none["reason"].str.contains("days >").all()


def test_price_override_changes_the_ranking(train_df):
    best = train_df.loc[train_df["answer"], "device"].iloc[0]
    other = next(d for d in DEVS if d != best)
    df = hwsim.cheapest_training(TRAIN, TOKENS, 1.0, devices=DEVS, counts=[2, 4, 8],
                                 prices={other: 0.01})
    assert df.loc[df["answer"], "device"].iloc[0] == other
    assert (df.loc[df["device"] == other, "price_per_hour"] == 0.01).all()
    # times and energy do not depend on the price
    key = ["device", "count"]
    a, b = train_df.set_index(key).sort_index(), df.set_index(key).sort_index()
    np.testing.assert_allclose(a["time_to_train_s"], b["time_to_train_s"])


def test_infeasible_layouts_name_the_reason():
    df = hwsim.cheapest_training(TRAIN, TOKENS, 1.0, counts=[6, 32], search_layouts=False)
    reasons = dict(zip(df["count"], df["reason"]))
    assert reasons[6] == "global_batch 16 is not divisible by dp = 6"
    assert reasons[32] == "global_batch 16 is not divisible by dp = 32"
    assert not df["feasible"].any() and not df["answer"].any()
    assert (df["layout"] == "").all() and df["tp"].isna().all()
    tp2 = {**TRAIN, "workload": {**TRAIN["workload"], "parallelism": {"tp": 4}}}
    df = hwsim.cheapest_training(tp2, TOKENS, 1.0, counts=[2, 4], search_layouts=False)
    assert df.set_index("count").loc[2, "reason"] == (
        "2 devices are not a multiple of tp x pp x cp = 4")
    assert df.set_index("count").loc[4, "dp"] == 1


def test_layout_search_where_the_base_layout_does_not_run():
    """By default a count the base layout cannot use gets the layout of least model
    parallelism that runs and fits (dp 16 divides the batch of 16 on 32 devices); a count with
    no layout at all keeps the reason."""
    df = hwsim.cheapest_training(TRAIN, TOKENS, 1.0, counts=[2, 6, 32]).set_index("count")
    assert df.loc[6, "reason"] == ("no layout runs on 6 devices (the base layout: global_batch "
                                   "16 is not divisible by dp = 6)")
    r = df.loc[32]
    assert r["layout"] == "searched" and r["fits"] and r["time_to_train_s"] > 0
    assert (r["tp"] * r["pp"], r["dp"], r["zero"], r["micro_batch"]) == (2, 16, 0, 1)
    assert df.loc[2, "layout"] == "base" and (df.loc[2, "tp"], df.loc[2, "dp"]) == (1, 2)
    tp2 = {**TRAIN, "workload": {**TRAIN["workload"], "parallelism": {"tp": 4}}}
    df = hwsim.cheapest_training(tp2, TOKENS, 1.0, counts=[2]).set_index("count")
    assert df.loc[2, "layout"] == "searched" and df.loc[2, "tp"] <= 2 and df.loc[2, "fits"]


def test_auto_counts_are_whole_servers():
    df = hwsim.cheapest_training(TRAIN, TOKENS, 1.0, max_nodes=4)
    assert set(df["count"]) >= {2, 4, 8} and (df["count"] % 2 == 0).all()
    assert df["count"].max() <= 8


@pytest.fixture(scope="module")
def serve_df() -> pd.DataFrame:
    return hwsim.fewest_serving(SERVE, 400.0, 0.5, 0.05, devices=DEVS)


def _serve_run(device: str, replicas: int, rate: float, ttft: float, tpot: float) -> dict:
    s = yaml.safe_load(yaml.safe_dump(SERVE))
    s["cluster"]["nodes"] = replicas
    s["cluster"]["node"]["gpu"] = device
    if device != "A100-SXM4-80GB":
        s["cluster"]["node"]["intra_node"] = "nvlink4"
    if replicas > 1:
        s["cluster"]["node"].update(nic="ib-ndr-400" if device != "A100-SXM4-80GB"
                                    else "ib-hdr-200", nics_per_node=1)
        s["cluster"]["fabric"] = {"topology": "fat-tree"}
    s["workload"]["parallelism"]["replicas"] = replicas
    s["workload"]["arrivals"]["rate_per_s"] = rate
    return hwsim.run(s).summary


def test_serving_answer_meets_slos_and_one_fewer_does_not(serve_df):
    assert serve_df["feasible"].all()
    assert (serve_df["ttft_p99_s"] <= 0.5).all() and (serve_df["tpot_p99_s"] <= 0.05).all()
    a100 = serve_df.set_index("device").loc["A100-SXM4-80GB"]
    assert a100["replicas"] > 1 and a100["devices"] == a100["replicas"]
    for _, r in serve_df.iterrows():
        s = _serve_run(r["device"], int(r["replicas"]), 400.0, 0.5, 0.05)
        assert s["ttft_p99_s"] == pytest.approx(r["ttft_p99_s"])
        if r["replicas"] > 1:
            s = _serve_run(r["device"], int(r["replicas"]) - 1, 400.0, 0.5, 0.05)
            assert s["ttft_p99_s"] > 0.5 or s["tpot_p99_s"] > 0.05
        assert r["cost_per_hour_usd"] == pytest.approx(
            r["devices"] * get_device(r["device"]).price_usd_per_hour)
        assert r["energy_per_request_j"] > 0
        assert int(r["replicas"]) in r["tried"]


def test_tighter_ttft_never_needs_fewer_gpus(serve_df):
    loose = serve_df.set_index("device")["devices"]
    tight = hwsim.fewest_serving(SERVE, 400.0, 0.05, 0.05, devices=DEVS).set_index("device")
    for dev in DEVS:
        if tight.loc[dev, "feasible"]:
            assert tight.loc[dev, "devices"] >= loose[dev]
    assert (tight["devices"] > loose.reindex(tight.index)).any()


def test_serving_energy_per_request_within_bounds():
    df = hwsim.fewest_serving(SERVE, 5.0, 1.0, 0.1)
    r = df.iloc[0]
    res = hwsim.run({**SERVE, "workload": {**SERVE["workload"], "arrivals": {
        **SERVE["workload"]["arrivals"], "rate_per_s": 5.0}, "slo": {"ttft_s": 1.0,
                                                                      "tpot_s": 0.1}}})
    wall = float(hwsim.resource_summary(res).query("kind == 'device'")["busy_s"].iloc[0]
                 / hwsim.resource_summary(res).query("kind == 'device'")["busy_share"].iloc[0])
    spec = get_device("A100-SXM4-80GB")
    n = res.summary["requests_completed"]
    assert r["replicas"] == 1
    assert spec.idle_power_w * wall / n < r["energy_per_request_j"] < spec.peak_power_w * wall / n


def test_pareto_marks_the_front():
    df = pd.DataFrame({"time_to_train_s": [1.0, 2.0, 3.0, 2.0, 0.5],
                       "cost_usd": [5.0, 3.0, 4.0, 3.0, 1.0],
                       "energy_kwh": [1.0, 1.0, 1.0, 1.0, 9.0],
                       "feasible": [True, True, True, True, False]})
    out = hwsim.pareto(df)
    assert out["pareto"].tolist() == [True, True, False, True, False]
    assert hwsim.pareto(df, feasible_only=False)["pareto"].tolist() == [
        True, True, False, True, True]
    with pytest.raises(ScenarioError, match="no column 'dollars'; valid: time_to_train_s"):
        hwsim.pareto(df, {"dollars": "min"})


def test_pareto_on_a_training_table(train_df):
    out = hwsim.pareto(train_df)
    front = out[out["pareto"]]
    assert len(front) >= 1 and front["feasible"].all()
    for _, f in front.iterrows():  # nothing feasible beats a front row in all three
        cols = ["time_to_train_s", "cost_usd", "energy_kwh"]
        others = out[out["feasible"]][cols]
        dominated = ((others <= f[cols]).all(axis=1) & (others < f[cols]).any(axis=1)).any()
        assert not dominated


# ------------------------------------------------------------------------------- bad input

def test_device_without_a_price_names_the_option():
    with pytest.raises(ScenarioError, match=r"the catalog has no price_per_hour for "
                       r"A100-PCIe-80GB; give one \(CLI: --price A100-PCIe-80GB=USD_PER_H"):
        hwsim.cheapest_training(TRAIN, TOKENS, 1.0, devices=["A100-PCIe-80GB"], counts=[2])
    df = hwsim.cheapest_training(TRAIN, TOKENS, 1.0, devices=["A100-PCIe-80GB"], counts=[2],
                                 prices={"A100-PCIe-80GB": 2.0})
    assert df["price_per_hour"].iloc[0] == 2.0


@pytest.mark.parametrize("call, pattern", [
    (lambda: hwsim.cheapest_training(TRAIN, TOKENS, 1.0, counts=[3]),
     r"counts: 3 is not a positive multiple of gpus_per_node = 2"),
    (lambda: hwsim.cheapest_training(TRAIN, TOKENS, 1.0, max_nodes=0),
     r"max_nodes: must be a positive integer, got 0"),
    (lambda: hwsim.cheapest_training(TRAIN, -1, 1.0), r"train_tokens: must be a positive number"),
    (lambda: hwsim.cheapest_training(TRAIN, TOKENS, 0), r"days: must be a positive number"),
    (lambda: hwsim.cheapest_training(SERVE, TOKENS, 1.0), r"workload: cheapest_training needs "
     r"a training workload"),
    (lambda: hwsim.fewest_serving(TRAIN, 1.0, 1.0, 0.1), r"workload: fewest_serving needs an "
     r"inference workload"),
    (lambda: hwsim.cheapest_training(TRAIN, TOKENS, 1.0, devices=["A100-80GB"]),
     r"unknown device id 'A100-80GB'"),
    (lambda: hwsim.cheapest_training(TRAIN, TOKENS, 1.0, prices={"A100-SXM4-80GB": -1}),
     r"prices: price of A100-SXM4-80GB must be a number >= 0"),
])
def test_pinned_errors(call, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        call()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_train_and_missing_price(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(TRAIN))
    p = _cli("capacity", "train", str(f), "--tokens", "2e9", "--days", "1", "--devices",
             "A100-SXM4-80GB,H100-SXM5-80GB", "--max-nodes", "2")
    assert p.returncode == 0, p.stderr
    assert "answer: " in p.stdout and "pareto front (time, cost, energy): " in p.stdout
    p = _cli("capacity", "train", str(f), "--tokens", "2e9", "--days", "1", "--devices",
             "A100-PCIe-80GB")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"{f}" in p.stderr and "--price A100-PCIe-80GB=USD_PER_H" in p.stderr
    p = _cli("capacity", "train", str(f), "--tokens", "2e9", "--days", "1", "--price", "oops")
    assert p.returncode == 1 and "expected ID=USD_PER_H" in p.stderr


def test_cli_serve(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(SERVE))
    p = _cli("capacity", "serve", str(f), "--rate", "5", "--ttft", "1", "--tpot", "0.1",
             "--requests", "60")
    assert p.returncode == 0, p.stderr
    assert "answer: 1 x A100-SXM4-80GB (1 replicas)" in p.stdout


def test_serving_limit_is_reported_not_exceeded():
    df = hwsim.fewest_serving(SERVE, 400.0, 0.5, 0.05, max_replicas=1)
    r = df.iloc[0]
    assert not r["feasible"] and r["replicas"] == 1 and r["tried"] == [1]
    assert r["reason"].startswith("p99 targets not met with 1 replicas (ttft_p99_s ")
    with pytest.raises(ScenarioError, match=r"max_replicas: must be a positive integer, got 0"):
        hwsim.fewest_serving(SERVE, 400.0, 0.5, 0.05, max_replicas=0)


def test_a_scenario_file_with_a_relative_hf_config_works_from_any_folder(tmp_path, monkeypatch):
    """Relative paths in the base file are read from its folder, for the base and every
    candidate alike (the loader's own resolution)."""
    folder = tmp_path / "scen"
    (folder / "hf").mkdir(parents=True)
    (folder / "hf" / "small.json").write_text(
        '{"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 512, '
        '"num_attention_heads": 8, "num_key_value_heads": 8, "intermediate_size": 1376, '
        '"vocab_size": 32000, "max_position_embeddings": 2048}')
    base = yaml.safe_load(yaml.safe_dump(TRAIN))
    base["workload"]["model"] = {"hf_config": "hf/small.json"}
    (folder / "train.yaml").write_text(yaml.safe_dump(base))
    monkeypatch.chdir(tmp_path)
    df = hwsim.cheapest_training(folder / "train.yaml", TOKENS, 1.0, devices=DEVS[:1], counts=[2])
    assert bool(df["feasible"].iloc[0]), df["reason"].iloc[0]


# ------------------------------------------------ models that do not fit one server (issue 12)

SCEN = Path(__file__).resolve().parent.parent / "scenarios"
FSDP70B = str(SCEN / "llama2-70b-fsdp-64xh100.yaml")


def _no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr + p.stdout, p.stderr


def _cli_wide(*args: str) -> subprocess.CompletedProcess:
    """The CLI with a terminal wide enough that table cells are not wrapped."""
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "400"})


def test_cli_train_70b_that_does_not_fit_one_server():
    """The issue's command: Llama-2-70B (FSDP) does not fit on one 8-GPU server, so the first
    candidate does not fit; it is a row with the reason, every larger count gets a layout that
    fits (the scenario's where it runs, else a searched one: dp cannot exceed the global batch
    of 128), and the answer is a sentence, not a traceback."""
    p = _cli_wide("capacity", "train", FSDP70B, "--tokens", "2e12", "--days", "60")
    _no_traceback(p)
    assert p.returncode == 0, p.stderr
    out = " ".join(p.stdout.split())
    assert "does not fit in device memory with any of" in out
    # 16 GPUs fitted (about 75 GB) before fp32 main gradients and the CUDA context (85 GB)
    assert "tp1 pp1 dp32 zero3 mb1 (base)" in out and "(searched)" in out
    assert "tp1 pp1 dp16" not in out
    assert "answer: no candidate trains 2e+12 tokens within 60 days: the fastest, " in out


def test_api_70b_layouts_fit_and_say_which():
    df = hwsim.cheapest_training(FSDP70B, 2e12, 600, counts=[8, 64, 256]).set_index("count")
    assert not df.loc[8, "fits"] and df.loc[8, "layout"] == "" and pd.isna(df.loc[8, "tp"])
    assert df.loc[8, "reason"].startswith("does not fit in device memory with any of ")
    assert df.loc[8, "memory_per_device_gb"] > 80  # the least any layout needs
    assert (df.loc[64, "layout"], df.loc[64, "dp"], df.loc[64, "zero"]) == ("base", 64, 3)
    r = df.loc[256]  # dp 256 does not divide the batch of 128: tp 2 (least model parallelism)
    assert (r["layout"], r["tp"], r["pp"], r["dp"]) == ("searched", 2, 1, 128)
    for c in (64, 256):
        assert df.loc[c, "fits"] and df.loc[c, "memory_per_device_gb"] <= 80
    assert df.attrs["answer"].startswith("64 x H100-SXM5-80GB (8 servers; tp 1, pp 1, dp 64, "
                                         "zero 3, micro_batch 1, base layout): ")


def test_cli_counts_option():
    p = _cli_wide("capacity", "train", FSDP70B, "--tokens", "2e12", "--days", "2000",
                  "--counts", "32, 64")  # 16 no longer fits (fp32 main gradients, CUDA context)
    _no_traceback(p)
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith("H100-SXM5-80GB ")]
    assert [int(row[1]) for row in rows] == [32, 64]
    assert "answer: 32 x H100-SXM5-80GB (4 servers; tp 1, pp 1, dp 32" in p.stdout
    assert "pareto front (time, cost, energy): 32 x H100-SXM5-80GB; 64 x H100-SXM5-80GB" \
        in p.stdout


@pytest.mark.parametrize("counts, words", [
    ("16,abc", ["--counts '16,abc': 'abc' is not a whole number > 0", "e.g. --counts 64,128"]),
    ("0", ["--counts '0': '0' is not a whole number > 0"]),
    ("-8", ["'-8' is not a whole number > 0"]),
    ("16,,32", ["an empty count"]),
    ("1.5e2", ["'1.5e2' is not a whole number"]),
    ("12", ["llama2-70b-fsdp-64xh100.yaml: --counts: 12 is not a positive multiple of "
            "gpus_per_node = 8; valid: whole servers of 8 devices"]),
])
def test_cli_counts_errors(counts, words):
    p = _cli("capacity", "train", FSDP70B, "--tokens", "2e12", "--days", "60",
             "--counts", counts)
    _no_traceback(p)
    assert p.returncode == 1 and p.stdout == ""
    err = p.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err  # one paragraph
    for w in words:
        assert w in err


def test_cli_does_not_fit_at_any_count_up_to_n():
    """A model that fits no layout of up to --max-nodes servers: a result line and exit 3."""
    p = _cli("capacity", "train", FSDP70B, "--tokens", "2e12", "--days", "60",
             "--max-nodes", "1")
    _no_traceback(p)
    assert p.returncode == 3, p.stderr
    out = " ".join(p.stdout.split())
    assert ("answer: no candidate trains 2e+12 tokens within 60 days: does not fit in device "
            "memory at any count up to 8 (H100-SXM5-80GB); the least memory needed is ") in out
    assert "pareto front (time, cost, energy): none" in out
    df = hwsim.cheapest_training(FSDP70B, 2e12, 60, max_nodes=1, search_layouts=False)
    assert df.attrs["answer"].endswith("(--max-nodes, or --counts with larger counts) or "
                                       "devices with more memory")
    assert df["reason"].iloc[0].startswith("the base layout needs ")


def test_counts_api_errors():
    for bad in ([], "16", [16.0], [True], [2, "a"], 4):
        with pytest.raises(ScenarioError, match=r"counts: "):
            hwsim.cheapest_training(TRAIN, TOKENS, 1.0, counts=bad)


def test_cli_serve_a_model_that_does_not_fit_one_device(tmp_path):
    """Llama-2-70B at tp 1 does not fit one 80 GB device: tp doubles until a replica fits
    (the row says so); with --keep-layout the row says why not and the exit status is 3."""
    s = yaml.safe_load(yaml.safe_dump(SERVE))
    s["cluster"]["node"].update(gpu="H100-SXM5-80GB", gpus_per_node=8, intra_node="nvlink4")
    s["workload"]["model"] = {"preset": "llama2-70b"}
    s["workload"]["arrivals"].update(requests=20, prompt_tokens=128, output_tokens=8)
    f = tmp_path / "s70.yaml"
    f.write_text(yaml.safe_dump(s))
    p = _cli("capacity", "serve", str(f), "--rate", "0.5", "--ttft", "5", "--tpot", "0.5")
    _no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert "answer: 2 x H100-SXM5-80GB (1 replicas of tp 2, searched layout)" in p.stdout
    p = _cli("capacity", "serve", str(f), "--rate", "0.5", "--ttft", "5", "--tpot", "0.5",
             "--keep-layout")
    _no_traceback(p)
    assert p.returncode == 3, p.stderr
    out = " ".join(p.stdout.split())
    assert "answer: no device type meets both targets (H100-SXM5-80GB: a replica of tp 1, pp 1 " \
           "does not fit in device memory" in out
    df = hwsim.fewest_serving(s, 0.5, 5, 0.5, devices=["A100-SXM4-40GB"])
    r = df.iloc[0]  # 40 GB: tp 4 is the first that fits
    assert (r["tp"], r["layout"], r["replicas"], bool(r["feasible"])) == (4, "searched", 1, True)


def test_count_beyond_the_size_budget_is_a_row_not_minutes():
    """A count of millions is refused by the size budget before its graph is built: the row
    says so (the budget's message), the command answers at once."""
    p = _cli_wide("capacity", "train", FSDP70B, "--tokens", "2e12", "--days", "60",
                  "--counts", "8000000")
    _no_traceback(p)
    assert "refused by the size budget" in " ".join(p.stdout.split())


# -- a site's power limit -------------------------------------------------------------------------
def test_site_power_limit_rules_out_what_draws_more(train_df):
    """With --max-mw, a candidate drawing more than the site is not feasible and says so; the
    answer is the cheapest of the rest; a limit above every draw changes nothing."""
    draws = train_df["power_mw"].astype(float)
    cut = float(draws.sort_values().iloc[len(draws) // 2])  # about half of them draw more
    limited = hwsim.cheapest_training(TRAIN, TOKENS, 1.0, devices=DEVS, counts=[2, 4, 8],
                                      max_power_mw=cut)
    for _, r in limited.iterrows():
        over = float(r["power_mw"]) > cut
        late = r["time_to_train_s"] > 86400.0
        assert r["feasible"] == (not over and not late)
        if over:
            assert f"draws {r['power_mw']:.3g} MW > the site's {cut:g} MW" in r["reason"]
    best = limited[limited["answer"]]
    if len(best):
        feas = limited[limited["feasible"]]
        assert (best.iloc[0]["cost_usd"] <= feas["cost_usd"]).all()
    loose = hwsim.cheapest_training(TRAIN, TOKENS, 1.0, devices=DEVS, counts=[2, 4, 8],
                                    max_power_mw=float(draws.max()) * 2)
    assert loose["feasible"].tolist() == train_df["feasible"].tolist()


def test_site_power_limit_below_every_draw_names_the_least():
    df = hwsim.cheapest_training(TRAIN, TOKENS, 1.0, devices=DEVS, counts=[2, 4],
                                 max_power_mw=1e-6)
    assert not df["feasible"].any()
    assert "within the site's 1e-06 MW: those that finish in time draw" in df.attrs["answer"]
    with pytest.raises(ScenarioError, match="max_power_mw"):
        hwsim.cheapest_training(TRAIN, TOKENS, 1.0, max_power_mw=0)


def test_cli_max_mw(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(TRAIN))
    p = _cli("capacity", "train", str(f), "--tokens", "2e9", "--days", "1", "--max-nodes", "2",
             "--max-mw", "0.000001")
    assert "Traceback" not in p.stderr
    assert "within the site's 1e-06 MW" in p.stdout, (p.stdout, p.stderr)
