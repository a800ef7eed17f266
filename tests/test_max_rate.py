"""Saturation and SLOs (issue 14, point 7): ``hwsim.max_rate`` finds the highest arrival rate
that meets TTFT/TPOT percentiles, ``hwsim capacity serve --max-rate`` prints it, and a serving
run's bottleneck names queueing when queueing is what its TTFT tail is made of.

A 1.3B-parameter model (24 layers, hidden 2048) on one A100 with 200 requests per trial keeps
each search to one or two seconds."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import hwsim
from hwsim import cli
from hwsim.exceptions import ScenarioError

BASE = {
    "name": "max-rate-small", "seed": 0,
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 1,
                                     "intra_node": "nvlink3"}},
    "workload": {"kind": "inference", "precision": "fp16",
                 "model": {"layers": 24, "hidden": 2048, "heads": 16, "vocab": 32000},
                 "parallelism": {"tp": 1, "replicas": 1},
                 "scheduler": {"policy": "continuous", "max_batch_size": 16,
                               "max_batched_tokens": 2048},
                 "arrivals": {"process": "poisson", "rate_per_s": 1.0, "requests": 200,
                              "prompt_tokens": 256, "output_tokens": 32}},
}
TTFT, TPOT = 0.1, 0.01


def _at(rate: float, **slo: float) -> hwsim.Result:
    d = copy.deepcopy(BASE)
    d["workload"]["arrivals"]["rate_per_s"] = rate
    if slo:
        d["workload"]["slo"] = slo
    return hwsim.run(d)


def _p99(res: hwsim.Result, col: str) -> float:
    done = res.requests[np.isfinite(res.requests["end_s"])]
    return float(np.percentile(done[col].dropna(), 99))


@pytest.fixture(scope="module")
def found() -> hwsim.planning.MaxRate:
    return hwsim.max_rate(BASE, ttft_s=TTFT, tpot_s=TPOT)


def test_the_rate_found_meets_the_targets_and_a_rate_tol_higher_does_not(found):
    assert found.feasible and found.reason == "" and found.rel_tol == 0.02
    rate = found.rate_per_s
    at = _at(rate)
    assert _p99(at, "ttft_s") <= TTFT and _p99(at, "tpot_s") <= TPOT
    above = _at(rate * (1 + found.rel_tol))
    assert _p99(above, "ttft_s") > TTFT or _p99(above, "tpot_s") > TPOT
    assert found.limited_by in ("ttft", "tpot", "ttft+tpot")
    # the trials bracket it: every rate tried up to it meets, every one above misses, and the
    # lowest miss is within the tolerance
    t = found.trials
    assert t["rate_per_s"].is_monotonic_increasing
    assert t.loc[t["rate_per_s"] <= rate, "meets"].all()
    assert not t.loc[t["rate_per_s"] > rate, "meets"].any()
    lowest_miss = t.loc[t["rate_per_s"] > rate, "rate_per_s"].min()
    assert rate < lowest_miss <= rate * (1 + found.rel_tol)
    # the latency percentiles grow with the rate over the searched bracket (same requests at
    # every rate: only the spacing changes)
    near = t[(t["rate_per_s"] >= rate / 2) & (t["role"] != "saturation")]
    assert near["ttft_p99_s"].iloc[-1] > near["ttft_p99_s"].iloc[0]
    assert {"rate_per_s", "ttft_p99_s", "tpot_p99_s", "requests_per_s",
            "goodput_requests_per_s", "meets"} <= set(t.columns)


def test_saturation_throughput_and_knee(found):
    t = found.trials
    assert found.rate_per_s <= found.saturation_rate_per_s
    burst = t[t["role"] == "saturation"].iloc[0]
    assert not burst["meets"] and "above the saturation throughput" in burst["reason"]
    # the knee: the lowest rate tried whose TTFT p99 is at least twice that at the reference
    # load (a tenth of the saturation throughput), the next rate below it under twice
    ref = found.knee_reference
    assert ref["rate_per_s"] == pytest.approx(0.1 * found.saturation_rate_per_s)
    knee = found.knee_rate_per_s
    row = t[t["rate_per_s"] == knee].iloc[0]
    assert row["ttft_p99_s"] >= 2 * ref["ttft_p99_s"]
    below = t[t["rate_per_s"] < knee].iloc[-1]
    assert below["ttft_p99_s"] < 2 * ref["ttft_p99_s"]
    assert knee <= below["rate_per_s"] * (1 + found.rel_tol)
    # the low-load trial: Little's law puts 1 % of a request in the system
    low = t[t["role"] == "low_load"].iloc[0]
    assert low["requests_in_system_mean"] < 0.02 and found.low_load["ttft_p99_s"] < TTFT


def test_littles_law_on_a_trial(found):
    """L = lambda W. With every request completed, the time-average number in the system over
    [first arrival, last completion] times that span is the sum of the requests' times in the
    system, so L = (n / span) x mean e2e holds exactly with the measured throughput n / span.
    With the offered rate it holds up to the realised rate's deviation: the n - 1 exponential
    gaps sum to (n - 1) / rate within 3 / sqrt(n - 1) (three standard deviations), and the span
    adds the last request's time in the system (at most max e2e)."""
    t = found.trials
    row = t[t["rate_per_s"] <= found.rate_per_s].iloc[-1]
    res = _at(float(row["rate_per_s"]))
    s = res.summary
    assert s["requests_completed"] == s["requests"] == 200
    assert s["requests_in_system_mean"] == pytest.approx(
        s["requests_per_s"] * s["e2e_mean_s"], rel=1e-9)
    span = s["requests_completed"] / s["requests_per_s"]
    tol = 3 / math.sqrt(199) + res.requests["e2e_s"].max() / span
    offered = float(row["rate_per_s"]) * s["e2e_mean_s"]
    assert s["requests_in_system_mean"] == pytest.approx(offered, rel=tol)
    assert row["requests_in_system_mean"] == pytest.approx(s["requests_in_system_mean"])


def test_same_result_twice(found):
    again = hwsim.max_rate(BASE, ttft_s=TTFT, tpot_s=TPOT)
    assert again.rate_per_s == found.rate_per_s and again.knee_rate_per_s == found.knee_rate_per_s
    pd.testing.assert_frame_equal(again.trials, found.trials)
    assert again.as_dict() == found.as_dict()


def test_a_faster_device_never_gives_a_lower_max_rate(found):
    h100 = copy.deepcopy(BASE)
    h100["cluster"]["node"].update(gpu="H100-SXM5-80GB", intra_node="nvlink4")
    fast = hwsim.max_rate(h100, ttft_s=TTFT, tpot_s=TPOT)
    assert fast.rate_per_s >= found.rate_per_s
    assert fast.saturation_rate_per_s >= found.saturation_rate_per_s
    # looser targets never lower it either
    loose = hwsim.max_rate(BASE, ttft_s=2 * TTFT, tpot_s=2 * TPOT)
    assert loose.rate_per_s >= found.rate_per_s


def test_tpot_alone_is_capped_by_the_saturation_throughput():
    """TPOT is bounded by the batch cap, so above the saturation throughput the TPOT of a
    finite run can still look fine while the queue grows: such rates never meet."""
    r = hwsim.max_rate(BASE, tpot_s=0.05, rel_tol=0.05)
    assert r.limited_by == "saturation" and r.rate_per_s == r.saturation_rate_per_s
    assert "TTFT" not in r.answer.split("(")[0]


def test_targets_below_the_unloaded_latency_are_a_result_not_an_error():
    r = hwsim.max_rate(BASE, ttft_s=0.001, tpot_s=TPOT)
    assert r.rate_per_s is None and not r.feasible and r.knee_rate_per_s is None
    assert r.reason.startswith("at the low-load rate ")
    assert "(0.01 requests in the system on average) TTFT p99 " in r.reason
    assert r.reason.endswith(" s > 0.001 s; a lower rate does not lower the unloaded latency")
    assert r.answer.startswith("no rate meets TTFT p99 <= 0.001 s and TPOT p99 <= 0.01 s: ")


def test_a_replica_that_does_not_fit_is_a_result():
    big = copy.deepcopy(BASE)
    big["workload"]["model"] = {"preset": "llama2-70b"}
    r = hwsim.max_rate(big, ttft_s=1.0)
    assert r.rate_per_s is None and r.reason.startswith("does not fit in device memory (")
    assert len(r.trials) == 1


def _bad(**changes):
    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = d
        *head, last = path.split("__")
        for k in head:
            node = node[k]
        node[last] = value
    return d


@pytest.mark.parametrize("scenario, kwargs, message", [
    (BASE, {}, "ttft_s: max_rate needs a target: ttft_s and/or tpot_s (seconds), e.g. "
               "ttft_s=1.0, tpot_s=0.05"),
    (BASE, {"ttft_s": -1}, "ttft_s: must be a positive number, got -1"),
    (BASE, {"tpot_s": "fast"}, "tpot_s: must be a positive number, got 'fast'"),
    (BASE, {"ttft_s": 1, "percentile": 101},
     "percentile: must be in (0, 100], got 101; valid: e.g. 50, 90, 99"),
    (BASE, {"ttft_s": 1, "percentile": 0}, "percentile: must be a positive number, got 0"),
    (BASE, {"ttft_s": 1, "rel_tol": 0.9}, "rel_tol: must be in (0, 0.5], got 0.9; valid: "
                                          "e.g. 0.02"),
    (BASE, {"ttft_s": 1, "knee_factor": 1}, "knee_factor: must be > 1, got 1; valid: e.g. 2"),
    (BASE, {"ttft_s": 1, "knee_metric": "p99"},
     "knee_metric: unknown knee metric 'p99'; valid: ttft, tpot, e2e"),
    (BASE, {"ttft_s": 1, "requests": 5}, "requests: must be a whole number >= 10, got 5"),
    (_bad(workload__scheduler__policy="static"), {"ttft_s": 1},
     "workload.scheduler.policy: max_rate searches continuous-batching LLM serving, not "
     "policy 'static'; valid: continuous"),
    (_bad(workload__arrivals={"process": "closed", "clients": 4, "requests": 50}),
     {"ttft_s": 1}, "workload.arrivals.process: max_rate varies an open-loop arrival rate; "
                    "process 'closed' has none (the clients' think time and the service set "
                    "the rate); valid: poisson, gamma, constant"),
])
def test_bad_input_is_a_pinned_scenario_error(scenario, kwargs, message):
    with pytest.raises(ScenarioError) as err:
        hwsim.max_rate(scenario, **kwargs)
    assert str(err.value) == message


def test_trace_classic_and_training_scenarios_are_refused(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,16,4\n0.5,16,4\n")
    d = _bad(workload__arrivals={"process": "trace", "trace": str(trace)})
    with pytest.raises(ScenarioError, match=r"^workload\.arrivals\.process: max_rate varies an "
                       r"open-loop arrival rate; process 'trace' has none \(the trace's "
                       r"timestamps set the arrivals\); valid: poisson, gamma, constant$"):
        hwsim.max_rate(d, ttft_s=1)
    with pytest.raises(ScenarioError, match=r"^workload\.scheduler\.policy: max_rate searches "
                       r"continuous-batching LLM serving, not policy 'dynamic'"):
        hwsim.max_rate("scenarios/resnet50-serving-gpu.yaml", ttft_s=0.02)
    with pytest.raises(ScenarioError, match=r"^workload\.kind: max_rate needs an inference "
                       r"workload, not kind 'training'"):
        hwsim.max_rate("scenarios/quickstart.yaml", ttft_s=1)
    with pytest.raises(ScenarioError, match=r"^workload: max_rate needs one serving workload"):
        hwsim.max_rate("scenarios/shared-train-and-serve.yaml", ttft_s=1)


# ------------------------------------------------------------------ the bottleneck's label

def test_the_bottleneck_names_queueing_when_the_ttft_tail_is_queueing(found):
    light = _at(1.0, ttft_s=TTFT).summary
    assert light["bottleneck_of"] == "e2e" and not light["saturated"]
    assert light["bottleneck"] != "queueing"
    over = _at(300.0).summary  # several times the saturation throughput, no SLO
    assert over["saturated"] and over["keep_up_ratio"] < 0.9
    assert over["bottleneck"] == "queueing" and over["bottleneck_of"] == "ttft_p99"
    assert over["bottleneck_share"] == over["ttft_p99_share_queueing"] > 0.5
    # just past the TTFT target, not saturated: queueing when the SLO is about TTFT ...
    t = found.trials
    miss = t[(t["reason"].str.startswith("TTFT")) & (t["keep_up_ratio"] >= 0.9)].iloc[0]
    near = _at(float(miss["rate_per_s"]), ttft_s=TTFT).summary
    assert not near["saturated"] and near["ttft_p99_s"] > TTFT
    assert near["bottleneck"] == "queueing" and near["bottleneck_of"] == "ttft_p99"
    # ... and the largest part of the requests' time without an SLO
    plain = _at(float(miss["rate_per_s"])).summary
    assert plain["bottleneck_of"] == "e2e" and plain["bottleneck"] != "queueing"
    assert plain["time_share_queueing"] == near["time_share_queueing"]


# --------------------------------------------------------------------------------- the CLI

def _cli(*args: str) -> SimpleNamespace:
    """The command in this process (typer's runner; stdout and stderr apart)."""
    r = CliRunner().invoke(cli.app, list(args))
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr)


def test_cli_max_rate(tmp_path, found):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(BASE))
    p = _cli("capacity", "serve", str(f), "--max-rate", "--ttft", str(TTFT), "--tpot",
             str(TPOT), "--format", "json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert set(out) == {"max_rate", "trials"}
    assert out["max_rate"][0]["rate_per_s"] == found.rate_per_s
    assert out["max_rate"][0]["knee_rate_per_s"] == found.knee_rate_per_s
    assert len(out["trials"]) == len(found.trials)
    p = _cli("capacity", "serve", str(f), "--max-rate", "--ttft", str(TTFT), "--tpot",
             str(TPOT))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "highest rate at p99 TTFT 0.1 s, TPOT 0.01 s (tolerance 0.02)"
    assert f"max rate: {found.rate_per_s:.4g} requests/s (a rate 1.02x higher misses: " \
           f"{found.limited_by})" in lines
    assert any(ln.startswith(f"knee: {found.knee_rate_per_s:.4g} requests/s (TTFT p99 "
                             "reaches 2x its ") for ln in lines)
    assert lines[-1] == f"answer: {found.answer}"
    p = _cli("capacity", "serve", str(f), "--max-rate", "--tpot", "0.05", "--percentile",
             "90", "--tolerance", "0.1", "--requests", "100", "--format", "csv")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert rows[0]["table"] == "max_rate" and rows[0]["percentile"] == "90.0"
    assert "tpot_p90_s" in rows[1] and rows[1]["table"] == "trials"


def test_cli_max_rate_errors_and_exit_status(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(BASE))
    p = _cli("capacity", "serve", str(f), "--ttft", "1", "--tpot", "0.1")
    assert p.returncode == 1 and p.stderr.strip() == (
        f"error: {f}: give --rate R (the fewest devices that serve R requests/s within p99 "
        "targets) or --max-rate (the highest rate the scenario's replicas serve within "
        "targets), e.g. --rate 40 --ttft 1 --tpot 0.05")
    p = _cli("capacity", "serve", str(f), "--max-rate")
    assert p.returncode == 1 and p.stderr.strip() == (
        f"error: {f}: --max-rate needs a target: --ttft S and/or --tpot S (seconds), e.g. "
        "--max-rate --ttft 1 --tpot 0.05")
    p = _cli("capacity", "serve", str(f), "--max-rate", "--ttft", "1", "--devices",
             "H100-SXM5-80GB")
    assert p.returncode == 1 and "--devices does not apply to --max-rate" in p.stderr
    p = _cli("capacity", "serve", str(f), "--rate", "5", "--ttft", "1")
    assert p.returncode == 1 and "--rate needs --tpot (p99 targets in seconds)" in p.stderr
    p = _cli("capacity", "serve", str(f), "--max-rate", "--ttft", "1", "--percentile", "200")
    assert p.returncode == 1 and p.stderr.strip() == (
        f"error: {f}: --percentile: must be in (0, 100], got 200.0; valid: e.g. 50, 90, 99")
    big = copy.deepcopy(BASE)
    big["workload"]["model"] = {"preset": "llama2-70b"}
    f.write_text(yaml.safe_dump(big))
    p = _cli("capacity", "serve", str(f), "--max-rate", "--ttft", "1")
    assert p.returncode == 3 and "max rate: none (does not fit in device memory" in p.stdout
