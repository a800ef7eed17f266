"""MLPerf Inference Llama 2 70B Offline rows (benchmarks/mlperf_inference.py, issue 16): the
workload statistics used are the source's, every copied row is a consistent MLPerf result, and
the simulated rows stay where docs/validation.md reports them."""

from __future__ import annotations

import pandas as pd
import pytest

from report_checks import check_rows, load_benchmark

vs = load_benchmark("validate_serving")
mi = load_benchmark("mlperf_inference")

FAMILY = "mlperf_llama2_70b_offline"
BOUND_ROW, BOUND_MAPE = 0.30, 0.15      # issue 16: every row within 30 %, MAPE <= 15 %

# Where each row stands (docs/validation.md, "MLPerf Inference: Llama 2 70B across
# generations"): every row within the issue's 30 % since TensorRT-LLM's own GEMM ceilings
# (engines.yaml trtllm gemm_ceiling, fitted to its Linear-layer microbenchmarks, not to these
# rows). MI355X sits nearest the bound (vllm-rocm's per-sequence host cost at 3,450 sequences).
SYSTEMS = {"DGX-H100_H100-SXM-80GBx8_TRT", "H200-SXM-141GBx8_TRT", "B200-SXM-180GBx8_TRT",
           "GB200-NVL72_GB200-186GB_aarch64x4_TRT", "GB200-NVL72_GB200-186GB_aarch64x72_TRT",
           "B300-SXM-270GBx8_TRT", "GB300-NVL72_GB300-288GB_aarch64x72_TRT",
           "8xMI300X_2xEPYC-9374F", "8xMI300X_2xEPYC_9575F", "8xMI325X_2xEPYC_9575F_1",
           "8xMI355X_2xEPYC_9575F"}


def _rows():
    return mi.section()["families"][FAMILY]["rows"]


def test_workload_statistics_are_the_sources():
    sec = mi.section()
    d = sec["dataset"]
    # mlcommons/inference language/llama2-70b: 24,576 samples, inputs and references < 1,024
    assert d["samples"] == 24576 and d["seqlen_limit"] == 1024
    assert d["input_tokens"] == {"min": 48, "max": 1021, "sum": 5463976}
    assert d["reference_output_tokens"] == {"min": 3, "max": 1016, "sum": 5379553}
    assert d["reference_run_tokens_per_sample"] == 294.45
    for stat in (d["input_tokens"], d["reference_output_tokens"]):
        assert stat["min"] <= stat["sum"] / d["samples"] <= stat["max"] < d["seqlen_limit"]
    mean_in, mean_ref = mi.dataset_means()
    assert mean_in == pytest.approx(222.33, abs=0.01) and mean_ref == pytest.approx(218.89, abs=0.01)
    cases = mi.load_cases()
    assert {c.input_len for c in cases} == {222}                  # round(5,463,976 / 24,576)
    assert all(c.requests == sec["requests_per_replica"] == d["samples"] for c in cases)


def test_every_row_is_a_consistent_offline_result(tmp_path):
    rows, cases = _rows(), mi.load_cases()
    assert len(rows) == len(cases) == 11
    assert len({c.id for c in cases}) == len(cases)
    for row, c in zip(rows, cases):
        tps = row["tokens_per_s"] / row["samples_per_s"]
        # MLPerf's submission checker caps tokens per sample at 1.1 x the reference run's
        assert 0.9 * 294.45 < tps <= 1.1 * 294.45, row["system"]
        assert c.output_len == round(tps) and c.published == row["tokens_per_s"]
        assert row["round"] in mi.section()["repos"] and row["path"].endswith(
            "llama2-70b-99/Offline/performance/run_1/mlperf_log_summary.txt")
        assert row["path"].split("/")[3] == row["system"] and row["submitter"] in row["path"]
        assert c.replicas * c.tp == row["gpus"] and c.metric == "output_tokens_per_s"
        scen = vs.scenario_for(c, tmp_path)
        w, node = scen["workload"], scen["cluster"]["node"]
        assert node["gpu"] == row["gpu"] and node["gpus_per_node"] == row["tp"]
        # AMD rows ran vLLM's ROCm builds: the vllm-rocm profile (the family's assumptions)
        assert w["engine"] == ("trtllm" if row["submitter"] == "NVIDIA" else "vllm-rocm-mlperf")
        assert w["scheduler"]["policy"] == "continuous"
        for k, v in row["scheduler"].items():
            assert w["scheduler"][k] == v, (row["system"], k)
        trace = pd.read_csv(w["arrivals"]["trace"])
        assert len(trace) == c.requests and (trace["arrival_s"] == 0).all()   # Offline
        assert (trace["prompt_tokens"] == 222).all() and (trace["output_tokens"] == c.output_len).all()


def test_the_metric_counts_every_replica():
    c = mi.load_cases()[0]                                         # H100: 4 replicas of tp 2
    req = pd.DataFrame({"arrival_s": [0.0, 0.0], "end_s": [1.0, 2.0], "output_tokens": [100, 300]})
    assert vs.metric_of(c, req) == pytest.approx(200.0 * 4)
    assert vs.metric_of(vs.Case(**{**c.__dict__, "per_gpu": True}), req) == pytest.approx(100.0)


def test_rows_apart_name_their_reason():
    apart = mi.apart_rows()
    assert {r.case.split()[2] for r in apart} == {"B200-SXM-180GBx1_TRT"}
    assert all(r.role == "apart" and r.predicted is None and r.note for r in apart)


def test_the_gb300_row_runs_on_the_catalogs_gb300_with_its_own_batch_limit():
    from hwsim.catalog import get_device
    row = next(r for r in _rows() if r["system"] == "GB300-NVL72_GB300-288GB_aarch64x72_TRT")
    gb200 = next(r for r in _rows() if r["system"] == "GB200-NVL72_GB200-186GB_aarch64x72_TRT")
    assert row["gpu"] == "GB300" and get_device("GB300").peak("fp4") == pytest.approx(15e15)
    assert row["tokens_per_s"] == 1126850 and row["samples_per_s"] == 4126.88
    assert row["scheduler"] == {**gb200["scheduler"], "max_batch_size": 3072}


@pytest.fixture(scope="module")
def family_rows():
    return vs.report(only=[FAMILY])


def test_family_meets_the_issue_target(family_rows):
    """Issue 16: every validated row within 30 %, the family's MAPE <= 15 %."""
    ran = [r for r in family_rows if r.role == "validated"]
    check_rows(family_rows)
    assert len(ran) == 11 and all(r.predicted is not None for r in ran), [r.note for r in ran]
    assert {r.case.split()[2] for r in ran} == SYSTEMS
    for r in ran:
        assert abs(r.error) <= BOUND_ROW, (r.case, r.error)
    f = vs.family_stats(family_rows)[0]
    assert f["mape"] <= BOUND_MAPE and abs(f["worst"]) <= BOUND_ROW


def test_the_dataset_lengths_reproduce_its_statistics():
    """The percentiles in the cases file give the dataset's published means and bounds (the
    input sum 5,463,976 and reference-output sum 5,379,553 over 24,576 samples) and its spread;
    rescaled to a row's mean they keep it within MLPerf's output limit."""
    import numpy as np

    d = mi.section()["dataset"]
    n = d["samples"]
    x = mi.dataset_lengths(np.random.default_rng(0), 200_000, "input_percentiles")
    y = mi.dataset_lengths(np.random.default_rng(1), 200_000, "reference_output_percentiles")
    assert abs(x.mean() / (d["input_tokens"]["sum"] / n) - 1) < 0.01
    assert abs(y.mean() / (d["reference_output_tokens"]["sum"] / n) - 1) < 0.01
    assert x.min() >= d["input_tokens"]["min"] and x.max() <= d["input_tokens"]["max"]
    assert y.min() >= d["reference_output_tokens"]["min"]
    assert 0.7 < x.std() / x.mean() < 0.85 and 0.7 < y.std() / y.mean() < 0.85
    z = mi.dataset_lengths(np.random.default_rng(2), 200_000, "reference_output_percentiles",
                           mean=291.0)
    assert abs(z.mean() - 291.0) < 1.0 and z.max() <= d["seqlen_limit"] - 1 and z.min() >= 1


def test_server_rows_are_valid_results_and_run():
    """Every row carries its Server figures (copied from the Server summary: a VALID result, so
    within MLPerf's bounds, p99 TTFT <= 2 s and p99 TPOT <= 200 ms) and Server settings the
    engine knows; one replica of a row at its published rate runs and keeps up, with its p99
    TPOT within the bound the submission met (docs/validation.md, "Server scenario")."""
    from hwsim.catalog.engines import SCHEDULER_FIELDS

    rows = mi.server_rows()
    assert {c.id.split()[2] for c, _ in rows} == SYSTEMS
    for c, srv in rows:
        assert 0 < srv["ttft_p99_ms"] <= 2000 and 0 < srv["tpot_p99_ms"] <= 200, c.id
        assert srv["samples_per_s"] <= srv["target_qps"] * 1.001, c.id
        tokens_per_sample = srv["tokens_per_s"] / srv["samples_per_s"]
        assert 250 < tokens_per_sample < 1.1 * 294.45, c.id
        assert set(srv["scheduler"]) <= set(SCHEDULER_FIELDS), c.id
        assert srv["path"].endswith("/Server/performance/run_1/mlperf_log_summary.txt")
    case, srv = next((c, s) for c, s in rows if "GB200-NVL72_GB200-186GB_aarch64x4" in c.id)
    r = mi.server_run(case, srv, requests=1500)
    assert r["completed"] == 1500
    assert 0 < r["ttft_p99_ms"] < 2000 and 0 < r["tpot_p99_ms"] <= 200
