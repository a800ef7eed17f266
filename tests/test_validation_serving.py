"""The serving validation report (benchmarks/validate_serving.py): structure on the fastest
cases; the full run is a benchmark (``pytest -m benchmark``)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from report_checks import CALIBRATION, check_rows as _check_rows, load_benchmark

vs = load_benchmark("validate_serving")


def test_every_published_row_is_a_case(tmp_path):
    spec = vs.load_spec()
    cases = vs.load_cases(spec, only=vs.FAMILIES)
    assert {c.family for c in cases} == set(vs.FAMILIES)
    assert len(cases) == len(spec["throughput_rows"]) + len(spec["ttft_batch1_rows"]) == 8
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids)
    for c in cases:
        assert c.published > 0 and c.metric in vs.METRICS
        scen = vs.scenario_for(c, tmp_path, spec)
        node, w = scen["cluster"]["node"], scen["workload"]
        assert scen["cluster"]["nodes"] == 1 and node["gpus_per_node"] == c.tp
        assert node["gpu"] == "A100-SXM4-80GB" and node["intra_node"] == "nvlink3"
        assert w["kind"] == "inference" and w["precision"] == "fp16"
        assert w["parallelism"] == {"tp": c.tp, "pp": 1, "replicas": 1}
        sched = w["scheduler"]
        assert sched["policy"] == "static" and sched["max_batch_size"] == c.batch
        assert sched["max_batched_tokens"] >= c.batch * c.input_len  # one prefill iteration
        trace = pd.read_csv(w["arrivals"]["trace"])
        assert len(trace) == c.batch and (trace["arrival_s"] == 0).all()  # all at once
        assert (trace["prompt_tokens"] == c.input_len).all()
        assert (trace["output_tokens"] == c.output_len).all()
        if c.family == "ttft":
            assert c.batch == 1 and c.output_len == 1


@pytest.mark.skipif(not CALIBRATION.exists(), reason="shared calibration data not present")
def test_cases_file_copies_calibration_rows():
    cal = yaml.safe_load(CALIBRATION.read_text())
    spec = vs.load_spec()
    src = cal[spec["calibration_key"]]
    for key in ("source", "models", "throughput_columns", "throughput_rows",
                "ttft_batch1_columns", "ttft_batch1_rows"):
        assert spec[key] == src[key], key


def test_every_table_row_is_a_case_of_its_engine_and_system(tmp_path):
    spec = vs.load_spec()
    tables = spec["tables"]
    runnable = [n for n, f in tables.items() if f.get("metric") in vs.TABLE_METRICS]
    mlperf = load_benchmark("mlperf_inference").families(spec)  # issue 16's MLPerf families
    assert vs.families(spec)[2:] == runnable + mlperf and len(runnable) >= 10
    cases = vs.load_cases(spec, only=runnable)
    assert len(cases) == sum(len(tables[n]["rows"]) for n in runnable) >= 100
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids)
    for c in cases:
        f = tables[c.family]
        scen = vs.scenario_for(c, tmp_path, spec)
        w, node = scen["workload"], scen["cluster"]["node"]
        assert w["engine"] == f["engine"] and node["gpu"] == c.gpu
        assert c.gpu == f["system"]["gpu"] or "gpu" in f["columns"]  # a row may name its GPU
        assert w["precision"] == c.precision and w.get("kv_precision") == c.kv_precision
        assert w.get("weight_precision") == c.weight_precision
        own = f["models"][c.model]  # a model's own precision overrides the family's
        for k in vs.MODEL_SETTINGS:
            assert getattr(c, k) == own.get(k, (f.get("common") or {}).get(k))
        trace = pd.read_csv(w["arrivals"]["trace"])
        assert (trace["arrival_s"] == 0).all() and len(trace) == c.requests
        if f["batching"] == "static":
            assert w["scheduler"]["policy"] == "static"
            assert w["scheduler"]["max_batch_size"] == c.batch == c.requests
        else:
            assert w["scheduler"]["policy"] == "continuous"


def test_family_stats_count_rows_within_25_percent():
    rows = [vs.Row("a", "f", "ttft_ms", 10.0, 11.0, 0.10), vs.Row("b", "f", "ttft_ms", 10.0,
                                                                   14.0, 0.40),
            vs.Row("c", "g", "ttft_ms", 10.0, note="failed")]
    f, g = vs.family_stats(rows)
    assert (f["rows"], f["run"], f["within"]) == (2, 2, 1)
    assert f["mape"] == pytest.approx(0.25) and f["worst"] == pytest.approx(0.40)
    assert (g["run"], g["mape"]) == (0, None)


def test_presets_are_the_published_models():
    from hwsim.workloads import resolve_model

    spec = vs.load_spec()
    for name, m in spec["models"].items():
        model = resolve_model({"preset": spec["preset_of"][name]})
        assert (model.layers, model.hidden, model.heads, model.kv_heads, model.ffn_hidden,
                model.vocab) == (m["layers"], m["hidden"], m["heads"], m["kv_heads"], m["ffn"],
                                 m["vocab"]), name


def test_report_on_fast_cases_has_the_promised_structure():
    cases = vs.load_cases()
    fast = [c for c in cases if c.family == "ttft"] + [
        c for c in cases if c.id == "llama2-70b tp4 b1024 in128 out128"]
    assert len(fast) == 5
    rows = vs.report(cases=fast)
    _check_rows(rows)
    assert all(r.predicted is not None for r in rows), [r.note for r in rows]
    for r in rows:  # every published batch fits in the KV cache, as one batch
        assert r.kv_need_gb <= r.kv_room_gb and r.weights_gb > 0
    # the batch-1 rows: TTFT is the prefill; the 70B batch: 1,024 x 128 tokens per GPU group
    assert rows[0].predicted == pytest.approx(rows[0].ttft_s * 1e3)
    assert rows[4].tpot_s > 0 and rows[4].ttft_s > rows[4].tpot_s
    text = vs.format_table(rows, markdown=True)
    fams = len({r.family for r in rows})
    assert sum(line.startswith("| ") for line in text.splitlines()) == \
        2 * (len(rows) + 1) + fams + 1
    assert "mean absolute error" in text and "within 25 %" in text


def test_a_failing_case_is_recorded_not_raised():
    c = vs.load_cases(only=["ttft"])[0]
    bad = vs.Case(**{**c.__dict__, "id": "bad", "tp": 3})          # 3 does not divide 32 heads
    unknown = vs.Case(**{**c.__dict__, "id": "unknown", "preset": "no-such-model"})
    rows = vs.report(cases=[bad, unknown])
    _check_rows(rows)
    assert all(r.predicted is None and r.error is None and r.note for r in rows)
    assert "mean absolute error n/a" in vs.format_table(rows)


def test_a_batch_that_does_not_fit_is_reported_not_changed():
    # 512 x (2,048 + 128) tokens of Llama-2-70B KV cache need 91 GB per GPU at tp 4
    big = vs.Case("throughput", "too big", "output_tokens_per_s_per_gpu", 100.0, "test",
                  "llama2-70b", 4, 512, 2048, 128, "llama2-70b", requests=512)
    (row,) = vs.report(cases=[big])
    _check_rows([row])
    assert row.predicted is None and "does not fit" in row.note
    assert row.kv_need_gb > row.kv_room_gb


def test_what_if_changes_the_gpu_for_the_run_only():
    from hwsim.catalog import get_device

    before = get_device("A100-SXM4-80GB")
    c = [c for c in vs.load_cases(only=["ttft"]) if c.input_len == 128 and c.tp == 1]
    base = vs.report(cases=c)[0].predicted
    slow = vs.report(cases=c, changes={"mem_bw_bytes_per_s": 1e11})[0].predicted
    assert slow > 10 * base                       # the weights now stream at 100 GB/s
    assert get_device("A100-SXM4-80GB") is before  # restored
    assert vs.report(cases=c)[0].predicted == base
    with pytest.raises(ValueError, match="unknown device field"):
        vs.report(cases=c, changes={"no_such_field": 0.0})
    assert get_device("A100-SXM4-80GB") is before
    assert "What-if" in vs.format_table(vs.report(cases=c, changes={"launch_overhead_s": 0.0}),
                                        changes={"launch_overhead_s": 0.0})


@pytest.mark.benchmark
def test_full_serving_report():
    rows = vs.report()
    _check_rows(rows)
    ran = [r for r in rows if r.role != "apart"]  # rows apart are reported, not simulated
    assert all(r.predicted is not None for r in ran), [r.note for r in ran]
    print("\n" + vs.format_table(rows, markdown=True))


def test_a_models_entry_takes_only_known_settings():
    spec = vs.load_spec()
    name = "trtllm_v090_h100_fp8_throughput"
    f = spec["tables"][name]
    mix = [c for c in vs.table_cases(name, f) if c.model == "mixtral-8x7b"]
    assert mix and all((c.precision, c.weight_precision, c.kv_precision) == ("fp16", "int8", "fp16")
                       for c in mix)
    f["models"]["mixtral-8x7b"]["precison"] = "fp8"
    with pytest.raises(ValueError, match=r"tables\.trtllm_v090_h100_fp8_throughput\.models\."
                                         r"mixtral-8x7b: unknown key\(s\) precison; valid: preset, "
                                         r"precision, kv_precision, weight_precision"):
        vs.table_cases(name, f)
