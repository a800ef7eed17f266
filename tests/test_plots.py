"""Plots (hwsim.analysis.plots): each returns a Figure with the expected artists and labels;
pareto_mask is exact; the step Gantt of a 1F1B pipeline shows its bubbles as gaps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hwsim
from hwsim.analysis import plots
from hwsim.exceptions import HwsimError

pytest.importorskip("matplotlib", reason="the plots need the 'plot' extra (matplotlib)")
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpt3d() -> hwsim.Result:
    """TP 2 x PP 2 x DP 2 GPT-1.3B, 1F1B schedule, 2 steps."""
    return hwsim.run(ROOT / "scenarios" / "gpt-1.3b-3d-8xa100.yaml")


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


# -- pareto_mask -------------------------------------------------------------------------------

def test_pareto_mask_exact_on_a_small_table() -> None:
    df = pd.DataFrame({"cost": [1.0, 2.0, 3.0, 2.0, 1.0, np.nan, 5.0],
                       "time": [5.0, 3.0, 4.0, 3.0, 6.0, 0.1, 1.0]})
    # row 2 (3, 4) is dominated by row 1 (2, 3); row 4 (1, 6) by row 0 (1, 5); rows 1 and 3 are
    # duplicates (both kept); the NaN row is never on the front and dominates nothing.
    assert plots.pareto_mask(df, {"cost": "min", "time": "min"}).tolist() == [
        True, True, False, True, False, False, True]
    # maximise time instead: (1, 6) dominates (1, 5); (5, 1) is now dominated by everything
    # cheaper with a longer time
    assert plots.pareto_mask(df, {"cost": "min", "time": "max"}).tolist() == [
        False, False, False, False, True, False, False]
    assert plots.pareto_mask(df, {"cost": "min"}).tolist() == [
        True, False, False, False, True, False, False]


def test_pareto_mask_bad_objectives() -> None:
    df = pd.DataFrame({"a": [1, 2]})
    with pytest.raises(HwsimError, match=r"no column 'b'; columns: \['a'\]"):
        plots.pareto_mask(df, {"b": "min"})
    with pytest.raises(HwsimError, match="objective 'a' must be 'min' or 'max', got 'lowest'"):
        plots.pareto_mask(df, {"a": "lowest"})
    with pytest.raises(HwsimError, match="at least one objective"):
        plots.pareto_mask(df, {})


def test_pareto_front_draws_the_front_in_x_order() -> None:
    df = pd.DataFrame({"cost": [3.0, 1.0, 2.0, 2.5], "time": [1.0, 5.0, 3.0, 4.0],
                       "name": ["c", "a", "b", "d"]})
    fig = plots.pareto_front(df, "cost", "time", label="name")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    assert line.get_xdata().tolist() == [1.0, 2.0, 3.0]
    assert line.get_ydata().tolist() == [5.0, 3.0, 1.0]
    assert ax.collections[0].get_offsets().tolist() == [[2.5, 4.0]]  # the one dominated point
    assert [t.get_text() for t in ax.texts] == ["a", "b", "c"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("cost", "time")


# -- utilization heatmap --------------------------------------------------------------------

def test_utilization_heatmap_busiest_first() -> None:
    t = np.arange(4) * 0.5
    util = pd.DataFrame({
        "time_s": np.tile(t, 3), "bin_s": 0.5,
        "resource": np.repeat(["idle-link", "busy-link", "half-link"], 4),
        "resource_class": "nvlink",
        "utilization": [0, 0, 0.1, 0] + [1, 1, 0.9, 1] + [0.5, 0.5, 0.5, 0.5], "bytes": 0.0})
    fig = plots.utilization_heatmap(util, top=2)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    assert image.get_array().shape == (2, 4)
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["busy-link", "half-link"]
    assert image.get_array()[0].tolist() == [1, 1, 0.9, 1]
    assert image.get_extent()[:2] == [0.0, 2.0]  # the last bin's end
    assert ax.get_xlabel() == "time (s)"
    assert fig.axes[1].get_ylabel() == "busy fraction"


def test_plot_needs_its_columns() -> None:
    with pytest.raises(HwsimError, match=r"utilization_heatmap: the frame lacks column\(s\) "
                                         r"\['bin_s', 'utilization'\]"):
        plots.utilization_heatmap(pd.DataFrame({"time_s": [0.0], "resource": ["x"]}))


# -- step Gantt -------------------------------------------------------------------------------

def test_step_gantt_shows_pipeline_bubbles_as_gaps(gpt3d: hwsim.Result) -> None:
    ev = gpt3d.events
    lo, hi = plots.step_window(ev, 1)
    assert 0 < lo < hi <= gpt3d.summary["simulated_time_s"]
    # one step long, within the step-tagged events' slack (optimizer after the last tag)
    assert hi - lo == pytest.approx(gpt3d.summary["step_time_s"], rel=0.01)
    fig = plots.step_gantt(ev, step=1)
    rows = fig.hwsim_rows
    computes = [r for r in rows if r.endswith("/compute")]
    assert len(computes) == 8 and len([r for r in rows if r.endswith("/comm")]) == 8
    bubbles = ev[ev["kind"].astype(str) == "bubble"]
    for row in computes:
        spans = rows[row]
        first, last = spans[0][0], max(b for _, b in spans)
        idle = 1 - _union(spans) / (last - first)
        assert idle > 0.03, row  # 1F1B, 2 stages, 8 micro-batches: 24 % (stage 0), 6 % (1)
        # the explicit bubble events of this device show as gaps: bars cover little of them
        # (the optimizer may run inside the cooldown bubble, which lasts until the last stage
        # is done)
        device = row.rsplit("/", 1)[0]
        mine = bubbles[(bubbles["resource"].astype(str) == row).to_numpy()
                       & (bubbles["end_s"] > lo).to_numpy() & (bubbles["start_s"] < hi).to_numpy()]
        assert len(mine), device
        for a, b in zip(mine["start_s"], mine["end_s"], strict=True):
            a, b = max(a, lo), min(b, hi)
            covered = _union([(max(s, a), min(e, b)) for s, e in spans if s < b and e > a])
            assert covered <= 0.1 * (b - a), (device, a, b, covered)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"compute", "comm tp", "comm pp", "comm dp"} <= set(labels)
    assert all(isinstance(c, PolyCollection) for c in ax.collections)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows)
    assert ax.get_xlim() == pytest.approx((lo * 1e3, hi * 1e3))


def test_step_gantt_selects_devices(gpt3d: hwsim.Result) -> None:
    fig = plots.step_gantt(gpt3d.events, step=0, ranks=[0, "n0.gpu4"])
    assert list(fig.hwsim_rows) == ["n0.gpu0/comm", "n0.gpu0/compute", "n0.gpu4/comm",
                                    "n0.gpu4/compute"]


def test_step_gantt_exact_bars_and_job_filter() -> None:
    ev = pd.DataFrame({
        "start_s": [0.0, 1.0, 2.0, 0.5, 3.0, 0.0],
        "end_s": [1.0, 2.0, 3.0, 1.5, 4.0, 9.0],
        "resource": ["a.gpu0/compute", "a.gpu0/compute", "a.gpu0/comm", "a.gpu0/comm",
                     "a.gpu0/compute", "b.gpu0/compute"],
        "kind": ["compute", "bubble", "collective", "collective", "compute", "compute"],
        "name": ["l0.fwd", "pipeline.wait.step0", "dp.allreduce.step0", "l0.tp_allreduce",
                 "l1.fwd", "serve.decode"],
        "category": ["compute", "bubble", "comm:nvlink", "comm:nvlink", "compute", "compute"],
        "job": ["train"] * 5 + ["serve"]})
    fig = plots.step_gantt(ev, step=0, job="train")
    # step 0 ends with its last tagged event (3.0); the bubble is no bar; l1.fwd is outside
    assert fig.hwsim_rows == {"a.gpu0/comm": [(0.5, 1.5), (2.0, 3.0)],
                              "a.gpu0/compute": [(0.0, 1.0)]}
    colours = {c.get_label(): c for c in fig.axes[0].collections}
    assert set(colours) == {"compute", "exposed_comm_tp", "exposed_comm_dp"}
    assert len(plots.step_gantt(ev, step=0).hwsim_rows) == 3  # the other job's device too


def test_step_gantt_unknown_step(gpt3d: hwsim.Result) -> None:
    with pytest.raises(HwsimError, match=r"no event names step7 .*steps found: \[0, 1\]"):
        plots.step_gantt(gpt3d.events, step=7)


# -- bottleneck bars, memory -----------------------------------------------------------------

def test_bottleneck_bars_one_run_and_several() -> None:
    a = pd.DataFrame({"category": ["compute", "comm:nvlink"], "seconds": [3.0, 1.0],
                      "share": [0.75, 0.25]})
    b = pd.DataFrame({"category": ["storage", "compute"], "seconds": [1.0, 1.0],
                      "share": [0.5, 0.5]})
    ax = plots.bottleneck_bars(a).axes[0]
    assert sum(p.get_width() for p in ax.patches) == pytest.approx(1.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["compute", "comm:nvlink"]
    ax = plots.bottleneck_bars({"nvlink": a, "hdd": b}).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["nvlink", "hdd"]
    # categories in first-seen order, one bar per run each: compute (0.75, 0.5), comm, storage
    assert [round(p.get_width(), 6) for p in ax.patches] == [0.75, 0.5, 0.25, 0.0, 0.0, 0.5]
    assert ax.get_xlabel() == "share of critical path"


def test_memory_breakdown_from_summary_and_frame(gpt3d: hwsim.Result) -> None:
    s = gpt3d.summary
    parts = plots.memory_parts(s)
    assert set(parts["part"]) == {"weights", "gradients", "optimizer_states", "activations",
                                  "workspace", "context", "comm_buffers"}
    assert parts["gb"].sum() == pytest.approx(s["memory_per_device_gb"], rel=1e-6)
    ax = plots.memory_breakdown(s).axes[0]
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == pytest.approx(sorted(parts["gb"]))
    (cap,) = ax.get_lines()
    assert cap.get_xdata().tolist() == [80.0, 80.0]
    assert "capacity" in [t.get_text() for t in ax.get_legend().get_texts()]
    ax = plots.memory_breakdown(gpt3d.memory).axes[0]
    assert len(ax.get_yticklabels()) == 8
    used = [p.get_width() for p in ax.patches[:8]]
    peak = gpt3d.memory.groupby(gpt3d.memory["resource"].astype(str))["used_bytes"].max() / 1e9
    assert used == pytest.approx(peak.sort_index().tolist())


# -- serving ----------------------------------------------------------------------------------

def test_latency_cdf_panels() -> None:
    req = pd.DataFrame({"ttft_s": [0.1, 0.2, 0.3, 0.4], "tpot_s": [0.01, 0.02, 0.01, 0.03],
                        "e2e_s": [1.0, 2.0, 3.0, 4.0]})
    fig = plots.latency_cdf(req)
    assert len(fig.axes) == 3
    ttft = fig.axes[0].get_lines()[0]
    assert ttft.get_xdata().tolist() == pytest.approx([100, 200, 300, 400])
    assert ttft.get_ydata().tolist() == [0.25, 0.5, 0.75, 1.0]
    assert [ax.get_xlabel() for ax in fig.axes] == ["TTFT (ms)", "TPOT (ms)", "end to end (ms)"]
    # one-token responses have no TPOT: its panel is left out
    assert len(plots.latency_cdf(req.assign(tpot_s=np.nan)).axes) == 2


def test_serving_timeline() -> None:
    it = pd.DataFrame({"replica": [0, 0, 1], "start_s": [0.0, 1.0, 0.5],
                       "end_s": [1.0, 2.0, 1.5], "batch_size": [1, 3, 2],
                       "kv_blocks_used": [10, 30, 20], "kv_blocks_total": [100, 100, 100]})
    fig = plots.serving_timeline(it)
    assert [ax.get_ylabel() for ax in fig.axes] == ["batch size", "KV blocks used"]
    assert len(fig.axes[0].get_lines()) == 2  # a line per replica
    assert list(fig.axes[1].get_lines()[-1].get_ydata()) == [100.0, 100.0]
    no_kv = plots.serving_timeline(it.assign(kv_blocks_total=0))
    assert len(no_kv.axes) == 1


# -- without matplotlib -----------------------------------------------------------------------

def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(HwsimError, match=r"pip install 'hwsim\[plot\]'"):
        plots.bottleneck_bars(pd.DataFrame({"category": ["x"], "share": [1.0]}))
    assert plots.pareto_mask(pd.DataFrame({"a": [1, 2]}), {"a": "min"}).tolist() == [True, False]


def test_importing_hwsim_and_the_plot_modules_does_not_import_matplotlib() -> None:
    code = ("import sys, hwsim, hwsim.cli, hwsim.analysis.plots, hwsim.analysis.report; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"
