"""The validation report (benchmarks/validate_training.py): structure on a few fast cases; the full
run is a benchmark (``pytest -m benchmark``)."""

from __future__ import annotations

import pytest
import yaml

from report_checks import CALIBRATION, check_rows as _check_rows, load_benchmark

vt = load_benchmark("validate_training")


def test_every_family_yields_cases_with_published_values():
    cases = vt.load_cases()
    spec = vt.load_spec()
    families = {c.family for c in cases}
    assert families == set(vt.FAMILIES) | set(spec["tables"])
    assert len(cases) == 8 + 5 + 6 + 11 + sum(len(f["rows"]) for f in spec["tables"].values())
    for name, f in spec["tables"].items():  # every table names its source and its choices
        assert f["source"].strip() and f["assumptions"], name
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids)
    for c in cases:
        assert c.published > 0
        assert c.metric in vt.METRICS
        scen = vt.scenario_for(c)
        assert scen["cluster"]["nodes"] * scen["cluster"]["node"]["gpus_per_node"] == c.gpus
        if c.family == "resnet50":    # the source's input pipeline: DALI threads per GPU
            data = scen["workload"]["data"]
            assert data["storage"] == "memory" and data["workers"] in (8, 16)
            assert scen["workload"]["steps"] == vt.INPUT_ROUNDS * data["workers"] + 1
        else:                         # batches ready: no data loading modelled
            assert "data" not in scen["workload"] and scen["workload"]["steps"] == 2


@pytest.mark.skipif(not CALIBRATION.exists(), reason="shared calibration data not present")
def test_cases_file_copies_calibration_rows():
    cal = yaml.safe_load(CALIBRATION.read_text())
    spec = vt.load_spec()
    for fam in vt.FAMILIES:
        key = spec[fam]["calibration_key"]
        assert spec[fam]["source"] == cal[key]["source"]
        if "rows" in spec[fam]:
            for row in spec[fam]["rows"]:
                assert row in cal[key]["rows"]
    assert spec["megatron2020"]["single_node_iteration_ms"] == \
        cal["megatron_2020_readme"]["single_node_iteration_ms"]


def test_report_on_fast_cases_has_the_promised_structure():
    cases = vt.load_cases(only=["resnet50", "megatron2020", "megatron2021"])
    fast = [c for c in cases if c.id in ("resnet50 1xA100 amp b256", "resnet50 1xV100 fp32 b112",
                                         "megatron2020 dgx_a100 1B tp1")]
    big = [c for c in cases if c.family == "megatron2021"][:1]
    assert len(fast) == 3 and big and big[0].gpus == 32
    rows = vt.report(cases=fast + big, max_gpus=16)
    _check_rows(rows)
    assert all(r.predicted is not None for r in rows[:3])
    # A case over the GPU limit is listed, not dropped.
    assert rows[3].predicted is None and vt.NOT_RUNNABLE in rows[3].note
    text = vt.format_table(rows, markdown=True)
    assert sum(line.startswith("| ") for line in text.splitlines()) == len(rows) + 1
    assert "mean absolute error" in text and "within 15 %" in text


def test_a_failing_case_is_recorded_not_raised():
    c = vt.load_cases(only=["megatron2020"])[0]
    bad = vt.Case(**{**c.__dict__, "id": "bad", "model": {"preset": "no-such-model"}})
    (row,) = vt.report(cases=[bad])
    assert row.predicted is None and row.error is None and row.note
    assert "mean absolute error n/a" in vt.format_table([row])


@pytest.mark.benchmark
def test_full_validation_report():
    rows = vt.report()
    _check_rows(rows)
    print("\n" + vt.format_table(rows, markdown=True))


def test_fitted_rows_are_the_rows_the_stacks_say_they_were_fitted_to():
    """Each stack's fitted constant names its rows (stacks.yaml fitted_to); the report treats
    exactly those (and the input pipeline's) as fitted, a minority, each of its own stack."""
    from hwsim.catalog.stacks import get_stack

    spec = vt.load_spec()
    cases = {c.id: c for c in vt.load_cases()}
    per_stack = vt.stack_rows(spec)
    assert set(per_stack) == {c.stack for c in cases.values()}
    fitted = [r for rows in per_stack.values() for r in rows]
    assert len(set(fitted)) == len(fitted) and set(fitted) <= set(cases)
    assert len(vt.fitted_rows(spec)) * 2 < len(cases)  # a minority
    for name, rows in per_stack.items():
        if rows:  # a fitted factor: two or more rows of its own stack
            assert len(rows) >= 2 and all(cases[r].stack == name for r in rows), name
            st = get_stack(name)  # the compute factor, or another constant beside a stand-in
            assert st.stand_in_for is None or st.fitted_field != "compute_factor", name
        else:     # a stand-in names where its factor comes from
            assert get_stack(name).stand_in_for is not None, name
    for c in cases.values():
        assert vt.scenario_for(c)["workload"]["stack"] == c.stack


def test_leave_one_out_is_the_refit_on_the_other_rows():
    """The linearised leave-one-out: two rows with the same slope predict each other's error
    exactly shifted by the difference of their errors."""
    x = vt.gauss_newton_step({"a": 0.1}, {"a": -1.0})
    assert x == pytest.approx(0.1)  # a time metric 10 % too slow: raise the factor by 10 % (log)
    assert vt.gauss_newton_step({"a": 0.1, "b": -0.1}, {"a": 1.0, "b": 1.0}) == 0.0


def test_cross_validated_errors_take_loo_for_fitted_rows_and_apart_rows_never():
    """The per-family table's errors: a validated row as it is, a fitted row by its
    leave-one-out error, an apart row (hardware or workload hwsim cannot represent) not at all;
    families are GPU x stack x precision x scale band."""
    rows = [vt.Row("a", "f", "iteration_ms", 1.0, 1.1, 0.10, role="validated", gpus=8),
            vt.Row("b", "f", "iteration_ms", 1.0, 1.02, 0.02, role="fitted", gpus=64),
            vt.Row("c", "f", "iteration_ms", 1.0, 2.0, 1.00, role="apart", gpus=8),
            vt.Row("d", "f", "iteration_ms", 1.0, None, None, role="validated", gpus=8)]
    cv = vt.cross_validated(rows, [{"loo": {"b": -0.05}}])
    assert cv == {"a": 0.10, "b": -0.05}
    case = next(c for c in vt.load_cases() if c.gpus == 1024 and c.family == "megatron2021")
    assert vt.family_key(case) == ("A100", "megatron-2021", "bf16", "513-4096")
