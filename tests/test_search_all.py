"""The whole-space parallelism search (issue 15 point 7): ``budget="all"`` simulates every
memory-feasible layout, in this process or in workers (the same frame either way), sequence
parallelism is a searched field only where tp > 1, a layout the event budget would refuse is a
row with the reason, and bad budgets are pinned errors. The GPT-3 175B / 1,024 A100 whole space
is benchmarks/search_all.py (minutes), not a test."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
from typer.testing import CliRunner

import hwsim
from hwsim.cli import app
from scenario_edit import edited
from test_search import BASE as SEARCH_BASE
from hwsim.exceptions import ScenarioError
from hwsim.planning.search import (LAYOUT, SEARCH_FIELDS, default_space, enumerate_layouts,
                                   layout_text, search)

# The 5B GPT on one 8x A100-80GB server of tests/test_search.py: fitting and pruned layouts
BASE = edited(SEARCH_BASE, {"name": "search-all-5b-8xa100"})
SPACE = {"tp": [1, 2], "pp": [1, 2], "micro_batch": [2], "virtual_stages": [1, 2],
         "recompute": ["none"], "zero": [0, 1]}  # 24 combinations: 17 fit, 1 does not


@pytest.fixture(scope="module")
def whole() -> pd.DataFrame:
    return search(BASE, SPACE, budget="all")


def test_budget_all_simulates_every_feasible_layout(whole):
    counts = whole.attrs["counts"]
    assert whole.attrs["budget"] == "all"
    assert counts["not_simulated"] == 0 and counts["pruned_memory"] > 0
    assert counts["simulated"] == 17
    cap = whole.attrs["capacity_gb"]
    sim = whole[whole["status"] == "simulated"]
    runnable = whole[whole["status"].isin(["simulated", "not_simulated"])]
    assert len(sim) == len(runnable) == (whole["memory_per_device_gb"] <= cap).sum()
    assert sim["step_time_s"].notna().all() and sim["step_time_s"].is_monotonic_increasing
    assert (sim["simulation_s"] > 0).all() and (sim["micro_batches_simulated"] >= 1).all()
    # every combination is a row once; tp 2 layouts come with and without sequence parallelism
    assert len(whole) == whole.attrs["candidates"] == sum(counts.values())
    assert not whole.duplicated(list(LAYOUT)).any()
    tp2 = sim[sim["tp"] == 2]
    assert set(tp2["sequence_parallel"]) == {False, True}
    assert not sim[sim["tp"] == 1]["sequence_parallel"].any()
    # a numeric budget as large simulates the same layouts to the same step times
    same = search(BASE, SPACE, budget=len(sim))
    assert same.attrs["counts"] == counts
    pd.testing.assert_series_equal(same["step_time_s"], whole["step_time_s"])


def test_simulated_rows_are_the_runs_of_their_layouts(whole):
    """The search reuses the graph, routes and collectives' memos across layouts; each row is
    still exactly what hwsim.run of its scenario gives."""
    sim = whole[whole["status"] == "simulated"]
    for i in (0, len(sim) // 2, len(sim) - 1):
        row = sim.iloc[i]
        s = copy.deepcopy(BASE)
        s["workload"]["parallelism"] = {k: row[k].item() if hasattr(row[k], "item") else row[k]
                                        for k in LAYOUT}
        summary = hwsim.run(s).summary
        for key in ("step_time_s", "mfu", "memory_per_device_gb", "time_bubble_s",
                    "time_exposed_comm_tp_s", "bottleneck"):
            assert row[key] == summary[key], (layout_text(row), key)


def test_workers_give_the_same_frame(whole):
    pooled = search(BASE, SPACE, budget="all", workers=2)
    assert pooled.attrs["counts"] == whole.attrs["counts"]
    drop = ["simulation_s"]  # CPU seconds: the only column that is not a result
    pd.testing.assert_frame_equal(pooled.drop(columns=drop), whole.drop(columns=drop))


def test_sequence_parallel_only_with_tensor_parallelism():
    assert default_space(BASE)["sequence_parallel"] == (False, True)
    assert "sequence_parallel" in SEARCH_FIELDS and "sequence_parallel" in LAYOUT
    space = {"tp": [1, 2, 4], "pp": [1], "micro_batch": [1], "virtual_stages": [1],
             "recompute": ["full"], "zero": [0]}
    for invalid in (False, True):
        rows = enumerate_layouts(BASE, space, invalid=invalid)
        by_tp = {tp: sorted(r["sequence_parallel"] for r in rows if r["tp"] == tp)
                 for tp in (1, 2, 4)}
        assert by_tp == {1: [False], 2: [False, True], 4: [False, True]}
    # sequence parallelism alone: a tp 1 layout is still listed once, without it
    only = enumerate_layouts(BASE, {**space, "sequence_parallel": [True]})
    assert [(r["tp"], r["sequence_parallel"]) for r in only] == [(1, False), (2, True),
                                                                 (4, True)]
    off = enumerate_layouts(BASE, {**space, "sequence_parallel": False})
    assert [r["sequence_parallel"] for r in off] == [False] * 3
    assert layout_text(only[1]) == "tp 2, pp 1, dp 4, mb 1, v 1, recompute full, zero 0, sp"
    assert layout_text(off[1]) == "tp 2, pp 1, dp 4, mb 1, v 1, recompute full, zero 0"


def test_layouts_beyond_the_event_budget_are_rows_with_the_reason():
    base = copy.deepcopy(BASE)
    base["limits"] = {"max_events": 1000}
    f = search(base, {"tp": [2], "pp": [2], "micro_batch": [2], "virtual_stages": [1],
                      "recompute": ["full"], "zero": [1]}, budget="all")
    assert f.attrs["counts"]["simulated"] == 0 and f.attrs["counts"]["not_simulated"] == 2
    assert f["reason"].str.startswith("refused by the event budget: about ").all()
    assert f["reason"].str.endswith("beyond the limit of 1,000 (limits.max_events)").all()


@pytest.mark.parametrize("budget", ["some", "ALL", 0, -3, 1.5, True, None])
def test_bad_budget_is_pinned(budget):
    with pytest.raises(ScenarioError) as err:
        search(BASE, SPACE, budget=budget)
    assert err.value.field == "search.budget"
    assert err.value.reason == (f"{budget!r}; valid: an integer >= 1, or 'all' (every "
                                "memory-feasible layout)")


def test_bad_sequence_parallel_value_is_pinned():
    with pytest.raises(ScenarioError) as err:
        search(BASE, {"sequence_parallel": ["yes"]})
    assert err.value.field == "space.sequence_parallel"
    assert err.value.reason == "'yes'; valid: false, true"


TINY = """# a tiny GPT on one 4-GPU server
name: tiny-search-all
cluster:
  nodes: 1
  node: {gpu: A100-SXM4-80GB, gpus_per_node: 4, intra_node: nvlink3}
workload:
  kind: training
  model: {layers: 2, hidden: 256, heads: 4, vocab: 4096}
  seq_len: 256
  precision: bf16
  global_batch: 4
  parallelism: {tp: 1}
  steps: 1
"""


def test_cli_budget_all_and_its_errors(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    out = tmp_path / "all.csv"
    res = CliRunner().invoke(app, ["search", str(path), "--budget", "all", "--workers", "2",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert (frame["status"] == "not_simulated").sum() == 0
    assert (frame["status"] == "simulated").sum() > 20
    assert " 0 not simulated, " in res.output
    bad = CliRunner().invoke(app, ["search", str(path), "--budget", "most"])
    assert bad.exit_code == 1
    assert bad.output.startswith(f"error: {path}: search.budget: 'most'; valid: an integer >= "
                                 "1, or 'all' (every memory-feasible layout)")
    assert "Traceback" not in bad.output
    help_text = CliRunner().invoke(app, ["search", "--help"]).output
    assert "'all'" in help_text
