"""Plots of a run's frames: one function per plot, each returning a matplotlib Figure.

Nothing here shows or saves a figure (no ``plt.show``); :mod:`hwsim.analysis.report` embeds them
in the HTML report, a notebook displays them. matplotlib is the optional ``plot`` extra and is
imported on first use with the Agg backend, so ``import hwsim`` works without it.
:func:`pareto_mask` is plain pandas/NumPy and needs no matplotlib.

- :func:`utilization_heatmap`: resources x time bins of ``utilization``, busiest first.
- :func:`step_gantt`: one training step, one row per device stream; bars coloured by what the
  time is (compute, communication by parallelism); idle time, pipeline bubbles included, is left
  as gaps.
- :func:`bottleneck_bars`: the critical-path breakdown of one run or several, as stacked bars.
- :func:`memory_breakdown`: weights / gradients / optimizer states / activations / ... per job,
  from the summary, or peak use per memory pool from the ``memory`` frame.
- :func:`latency_cdf`: empirical CDFs of TTFT, TPOT and end-to-end latency of served requests.
- :func:`serving_timeline`: batch size and KV-cache blocks over time from ``iterations``.
- :func:`pareto_front`: points of a sweep and their Pareto front (:func:`pareto_mask`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hwsim.exceptions import HwsimError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["utilization_heatmap", "step_gantt", "step_window", "bottleneck_bars",
           "memory_breakdown", "latency_cdf", "serving_timeline", "pareto_front", "pareto_mask",
           "memory_parts", "require_matplotlib"]

_MEMORY_KEY = re.compile(r"^(?:(job\.[^.]+)\.)?memory_(.+)_gb$")
_NOT_PARTS = {"per_device", "capacity_per_device"}
# colours of step_gantt's parts (hwsim.analysis.parallelism.PARTS), colour-blind-safe (Okabe-Ito)
_PART_COLOURS = {"compute": "#0072B2", "exposed_comm_tp": "#E69F00",
                 "exposed_comm_pp": "#D55E00", "exposed_comm_dp": "#009E73",
                 "exposed_comm_cp": "#CC79A7", "exposed_comm_ep": "#F0E442",
                 "exposed_comm_other": "#999999", "optimizer": "#56B4E9",
                 "data_loading": "#8C564B", "other": "#444444"}


def require_matplotlib() -> None:
    """Import matplotlib (Agg canvas), or raise :class:`HwsimError` naming the extra to install."""
    try:
        for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
            importlib.import_module(module)
    except ImportError as err:  # the optional extra
        raise HwsimError("plots and reports need matplotlib, which is not installed; install it "
                         "with: pip install 'hwsim[plot]'") from err


def _figure(width: float = 8.0, height: float = 4.0) -> Figure:
    """A new Figure on the Agg canvas (no pyplot state, no window)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _need(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise HwsimError(f"{what}: the frame lacks column(s) {missing}; it has "
                         f"{list(frame.columns)}")


def _empty(fig: Figure, title: str, why: str) -> Figure:
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _finish_barh(ax: Any, xlabel: str, title: str) -> None:
    """Horizontal bars read top-down, labelled, with the legend outside on the right."""
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def utilization_heatmap(util: pd.DataFrame, top: int = 20) -> Figure:
    """Busy fraction of the *top* busiest resources (by mean utilization) over time.

    Parameters
    ----------
    util : pandas.DataFrame
        A run's ``utilization`` frame (``time_s``, ``bin_s``, ``resource``, ``utilization``).
    top : int
        How many resources to show (rows), busiest at the top.
    """
    _need(util, ("time_s", "bin_s", "resource", "utilization"), "utilization_heatmap")
    if util.empty:
        return _empty(_figure(), "Utilization", "no utilization samples")
    frame = util.assign(resource=util["resource"].astype(str))
    grid = frame.pivot_table(index="resource", columns="time_s", values="utilization",
                             aggfunc="mean", fill_value=0.0, observed=True)
    order = grid.mean(axis=1).sort_values(ascending=False, kind="stable").index[:top]
    grid = grid.loc[order]
    t0 = float(grid.columns.min())
    t1 = float(frame["time_s"].max() + frame.loc[frame["time_s"].idxmax(), "bin_s"])
    fig = _figure(9.0, 1.2 + 0.28 * len(grid))
    ax = fig.add_subplot()
    image = ax.imshow(grid.to_numpy(), aspect="auto", interpolation="nearest", cmap="viridis",
                      vmin=0.0, vmax=1.0, extent=(t0, t1, len(grid) - 0.5, -0.5))
    ax.set_yticks(range(len(grid)), list(grid.index), fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title(f"Utilization, {len(grid)} busiest of {frame['resource'].nunique()} resources")
    fig.colorbar(image, ax=ax, label="busy fraction")
    return fig


def step_window(events: pd.DataFrame, step: int) -> tuple[float, float]:
    """The time span of training step *step* (0-based) as the events show it.

    Steps are delimited by the events whose name carries ``step<k>`` as a dot-separated token
    (``pipeline.warmup.step0``, ``dp.allreduce.step1.c0.b0``, ``read.step3``): step *k* runs from
    the end of the last ``step<k-1>`` event (the first event's start for step 0) to the end of
    the last ``step<k>`` event. Raises :class:`HwsimError` when no event names step *k*.
    """
    names = events["name"].astype(str)
    tags = names.str.extract(r"(?:^|\.)step(\d+)(?:\.|$)", expand=False)
    steps = pd.to_numeric(tags, errors="coerce")
    mine = events[(steps == step).to_numpy()]
    if mine.empty:
        found = sorted({int(s) for s in steps.dropna().unique()})
        raise HwsimError(f"step_gantt: no event names step{step} (a '.step{step}' token); steps "
                         f"found: {found or 'none'}")
    before = events[(steps == step - 1).to_numpy()]
    start = float(before["end_s"].max()) if step > 0 and not before.empty else float(
        events["start_s"].min())
    return start, float(mine["end_s"].max())


GANTT_DEVICES = 64
"""Devices the step Gantt draws by default (two rows each: compute and communication streams);
the title says when a run has more."""


def step_gantt(events: pd.DataFrame, step: int = 0, ranks: Sequence[int | str] | None = None,
               window: tuple[float, float] | None = None, job: str | None = None) -> Figure:
    """One training step as a Gantt chart: a row per device stream (``n0.gpu3/compute``,
    ``n0.gpu3/comm``), a bar per activity coloured by its part
    (:func:`hwsim.analysis.parallelism.classify`: compute, exposed_comm_tp/pp/dp/..., optimizer,
    data loading). Bubble and idle time are not drawn: pipeline bubbles show as gaps.

    Parameters
    ----------
    events : pandas.DataFrame
        A run's ``events`` frame.
    step : int
        The step (0-based) whose span (:func:`step_window`) is drawn, unless *window* is given.
    ranks : sequence, optional
        Which devices: device names (``"n0.gpu3"``) or indices into the devices in order of
        first appearance in the step; default all, up to :data:`GANTT_DEVICES` (the title then
        says how many of how many are drawn).
    window : (start_s, end_s), optional
        Draw this span instead of the step's.
    job : str, optional
        Only this job's events (a shared cluster's ``jobs:``).

    The figure's ``hwsim_rows`` attribute maps each row label to its (start, end) bars, and
    ``hwsim_devices`` is (devices drawn, devices with events in the span).
    """
    from hwsim.analysis.parallelism import PARTS, classify_events

    _need(events, ("start_s", "end_s", "resource", "kind", "name", "category"), "step_gantt")
    if job is not None and "job" in events.columns:
        events = events[(events["job"].astype(str) == job).to_numpy()]
    if events.empty:
        return _empty(_figure(), "Step", "no events")
    lo, hi = window if window is not None else step_window(events, step)
    res = events["resource"].astype(str)
    stream = res.str.contains("/", regex=False) & ~res.str.endswith("/memory")
    inside = (events["end_s"] > lo) & (events["start_s"] < hi)
    ev = events[(stream & inside).to_numpy()]
    ev = ev[(ev["kind"].astype(str) != "bubble").to_numpy()]
    owners = list(dict.fromkeys(ev["resource"].astype(str).str.rsplit("/", n=1).str[0]))
    if ranks is None:
        chosen = owners[:GANTT_DEVICES]
    else:
        chosen = [owners[r] if isinstance(r, (int, np.integer)) else str(r) for r in ranks]
    owner = ev["resource"].astype(str).str.rsplit("/", n=1).str[0]
    ev = ev[owner.isin(chosen).to_numpy()]
    parts = classify_events(ev) if len(ev) else np.array([], dtype=object)
    rows = sorted(set(ev["resource"].astype(str)),
                  key=lambda r: (chosen.index(r.rsplit("/", 1)[0]), r))
    fig = _figure(10.0, 1.4 + min(0.3 * max(len(rows), 1), 18.0))
    ax = fig.add_subplot()
    fig.hwsim_rows = {}
    shown = len({r.rsplit("/", 1)[0] for r in rows})
    fig.hwsim_devices = (shown, len(owners))
    res = ev["resource"].astype(str).to_numpy()
    start = np.clip(ev["start_s"].to_numpy(float), lo, hi)
    end = np.clip(ev["end_s"].to_numpy(float), lo, hi)
    for y, row in enumerate(rows):
        here = res == row
        fig.hwsim_rows[row] = sorted(zip(start[here].tolist(), end[here].tolist(), strict=True))
        for part in PARTS:
            sel = here & (parts == part)
            if sel.any():
                spans = [(a * 1e3, (b - a) * 1e3) for a, b in zip(start[sel], end[sel],
                                                                   strict=True)]
                ax.broken_barh(spans, (y - 0.4, 0.8), color=_PART_COLOURS.get(part, "#444444"),
                               label=part, linewidth=0)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        ax.legend([unique[k] for k in unique], [k.replace("exposed_comm_", "comm ")
                                                for k in unique],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_yticks(range(len(rows)), rows, fontsize=7 if len(rows) <= 60 else 5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(lo * 1e3, hi * 1e3)
    ax.set_xlabel("time (ms)")
    what = f"step {step}" if window is None else f"{lo:.4g}-{hi:.4g} s"
    devices = (f"{shown} devices" if shown == len(owners) else
               f"{shown} of {len(owners)} devices")
    ax.set_title(f"Gantt of {what}, {devices}: gaps are idle time (pipeline bubbles, waits)")
    return fig


def bottleneck_bars(breakdown: pd.DataFrame | Mapping[str, pd.DataFrame]) -> Figure:
    """Critical-path time by category as stacked horizontal bars of shares.

    Parameters
    ----------
    breakdown : pandas.DataFrame or mapping
        A run's ``bottleneck`` frame (``category``, ``share``; with a ``job`` column one bar per
        job), or ``{run name: bottleneck frame}`` for one bar per run.
    """
    if isinstance(breakdown, Mapping):
        bars = {str(k): v for k, v in breakdown.items()}
    elif "job" in breakdown.columns:
        bars = {str(k): g for k, g in breakdown.groupby("job", sort=False, observed=True)}
    else:
        bars = {"run": breakdown}
    for frame in bars.values():
        _need(frame, ("category", "share"), "bottleneck_bars")
    bars = {k: v for k, v in bars.items() if not v.empty}
    if not bars:
        return _empty(_figure(), "Bottleneck", "no bottleneck breakdown")
    categories = list(dict.fromkeys(str(c) for f in bars.values() for c in f["category"]))
    fig = _figure(8.0, 1.5 + 0.45 * len(bars))
    ax = fig.add_subplot()
    cmap = _colours(len(categories))
    left = np.zeros(len(bars))
    names = list(bars)
    for i, cat in enumerate(categories):
        share = np.array([float(f.loc[f["category"].astype(str) == cat, "share"].sum())
                          for f in bars.values()])
        ax.barh(names, share, left=left, color=cmap[i], label=cat)
        left += share
    ax.set_xlim(0, max(1.0, float(left.max())))
    _finish_barh(ax, "share of critical path", "Bottleneck breakdown")
    return fig


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def memory_parts(summary: Mapping[str, Any]) -> pd.DataFrame:
    """The per-device memory parts a summary reports (``memory_<part>_gb`` keys, per job for a
    shared cluster's ``job.<name>.memory_<part>_gb``): columns ``job``, ``part``, ``gb``;
    ``memory_per_device_gb`` and ``memory_capacity_per_device_gb`` are totals, not parts."""
    rows = []
    for key, value in summary.items():
        m = _MEMORY_KEY.match(str(key))
        if m and m.group(2) not in _NOT_PARTS and isinstance(value, (int, float)):
            job = m.group(1)[4:] if m.group(1) else "run"
            rows.append((job, m.group(2), float(value)))
    return pd.DataFrame(rows, columns=["job", "part", "gb"])


def memory_breakdown(source: Mapping[str, Any] | pd.DataFrame) -> Figure:
    """Memory per device as stacked bars.

    Parameters
    ----------
    source : dict or pandas.DataFrame
        A summary: one bar per job of its parts (:func:`memory_parts`: weights, gradients,
        optimizer states, activations, workspace, KV cache...) against the device capacity
        (``memory_capacity_per_device_gb``, dashed); or a ``memory`` frame: one bar per memory
        pool, its peak use, against its capacity.
    """
    if isinstance(source, pd.DataFrame):
        return _memory_pools(source)
    parts = memory_parts(source)
    if parts.empty:
        return _empty(_figure(), "Memory", "the summary reports no memory parts")
    jobs = list(dict.fromkeys(parts["job"]))
    names = list(dict.fromkeys(parts["part"]))
    fig = _figure(8.0, 1.6 + 0.45 * len(jobs))
    ax = fig.add_subplot()
    cmap = _colours(len(names))
    left = np.zeros(len(jobs))
    for i, part in enumerate(names):
        gb = np.array([float(parts[(parts["job"] == j) & (parts["part"] == part)]["gb"].sum())
                       for j in jobs])
        ax.barh(jobs, gb, left=left, color=cmap[i], label=part.replace("_", " "))
        left += gb
    for y, job in enumerate(jobs):
        key = "memory_capacity_per_device_gb" if job == "run" else \
            f"job.{job}.memory_capacity_per_device_gb"
        cap = source.get(key)
        if isinstance(cap, (int, float)):
            ax.plot([cap, cap], [y - 0.45, y + 0.45], "k--", linewidth=1.2,
                    label="capacity" if y == 0 else None)
    _finish_barh(ax, "GB per device", "Memory per device")
    return fig


def _memory_pools(memory: pd.DataFrame) -> Figure:
    _need(memory, ("resource", "used_bytes", "capacity_bytes"), "memory_breakdown")
    if memory.empty:
        return _empty(_figure(), "Memory", "no memory samples")
    peak = memory.assign(resource=memory["resource"].astype(str)).groupby(
        "resource", sort=True)[["used_bytes", "capacity_bytes"]].max()
    fig = _figure(8.0, 1.4 + 0.3 * len(peak))
    ax = fig.add_subplot()
    ax.barh(peak.index, peak["used_bytes"] / 1e9, color="#0072B2", label="peak used")
    free = (peak["capacity_bytes"] - peak["used_bytes"]).clip(lower=0) / 1e9
    ax.barh(peak.index, free, left=peak["used_bytes"] / 1e9, color="#DDDDDD", label="free")
    _finish_barh(ax, "GB", "Memory pools: peak use and capacity")
    return fig


def latency_cdf(requests: pd.DataFrame) -> Figure:
    """Empirical CDFs of time to first token (``ttft_s``), time per output token (``tpot_s``)
    and end-to-end latency (``e2e_s``) of served requests, one panel each; a panel whose column
    has no values (TPOT of one-token responses) is left out."""
    _need(requests, ("ttft_s", "e2e_s"), "latency_cdf")
    cols = [(c, t) for c, t in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end to end"))
            if c in requests.columns and requests[c].notna().any()]
    if not cols:
        return _empty(_figure(), "Latency", "no completed requests")
    fig = _figure(4.0 * len(cols), 3.4)
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    for ax, (col, title) in zip(axes, cols, strict=True):
        values = np.sort(requests[col].dropna().to_numpy(float)) * 1e3
        ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=title)
        for q, style in ((0.5, ":"), (0.99, "--")):
            ax.axvline(float(np.quantile(values, q)), color="grey", linestyle=style, linewidth=1)
        ax.set_xlabel(f"{title} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title}: p50 {np.quantile(values, 0.5):.4g} ms, "
                     f"p99 {np.quantile(values, 0.99):.4g} ms", fontsize=9)
    return fig


def serving_timeline(iterations: pd.DataFrame) -> Figure:
    """Batch size and KV-cache blocks in use over time, per replica, from a serving run's
    ``iterations`` frame (``replica``, ``start_s``, ``batch_size``, ``kv_blocks_used``)."""
    _need(iterations, ("replica", "start_s", "batch_size"), "serving_timeline")
    if iterations.empty:
        return _empty(_figure(), "Serving", "no iterations")
    kv = "kv_blocks_used" in iterations and iterations.get("kv_blocks_total",
                                                           pd.Series([0])).max() > 0
    fig = _figure(9.0, 5.0 if kv else 3.0)
    axes = fig.subplots(2 if kv else 1, 1, sharex=True, squeeze=False)[:, 0]
    keys = ["replica"] + (["job"] if "job" in iterations else [])
    for key, g in iterations.groupby(keys, sort=True):
        label = "replica " + " ".join(str(k) for k in np.atleast_1d(key))
        axes[0].step(g["start_s"], g["batch_size"], where="post", label=label, linewidth=0.8)
        if kv:
            axes[1].step(g["start_s"], g["kv_blocks_used"], where="post", label=label,
                         linewidth=0.8)
    axes[0].set_ylabel("batch size")
    axes[0].set_title("Batch size" + (" and KV-cache blocks" if kv else "") + " over time")
    if kv:
        total = float(iterations["kv_blocks_total"].max())
        axes[1].axhline(total, color="k", linestyle="--", linewidth=1, label="KV blocks total")
        axes[1].set_ylabel("KV blocks used")
    axes[-1].set_xlabel("time (s)")
    axes[0].legend(fontsize=7, frameon=False, loc="upper right")
    return fig


def pareto_mask(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """Which rows of *df* are Pareto-optimal (not dominated by another row).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per candidate (a sweep's runs).
    objectives : mapping
        ``{column: "min" | "max"}``.

    Returns
    -------
    numpy.ndarray of bool
        True for the rows no other row dominates: row *b* dominates *a* when it is at least as
        good in every objective and strictly better in one. Rows with a NaN objective are never
        on the front and dominate nothing; exact duplicates are both on the front.

    >>> df = pd.DataFrame({"cost": [1, 2, 3, 2], "time": [5, 3, 4, 3]})
    >>> pareto_mask(df, {"cost": "min", "time": "min"}).tolist()
    [True, True, False, True]
    """
    if not objectives:
        raise HwsimError("pareto_mask: give at least one objective, e.g. {'time_s': 'min'}")
    cols = []
    for col, sense in objectives.items():
        if col not in df.columns:
            raise HwsimError(f"pareto_mask: no column {col!r}; columns: {list(df.columns)}")
        if sense not in ("min", "max"):
            raise HwsimError(f"pareto_mask: objective {col!r} must be 'min' or 'max', "
                             f"got {sense!r}")
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        cols.append(values if sense == "min" else -values)
    x = np.column_stack(cols) if cols else np.empty((len(df), 0))
    valid = ~np.isnan(x).any(axis=1)
    mask = valid.copy()
    pts = x[valid]
    idx = np.flatnonzero(valid)
    for i, p in zip(idx, pts, strict=True):
        dominated = np.all(pts <= p, axis=1) & np.any(pts < p, axis=1)
        mask[i] = not dominated.any()
    return mask


def pareto_front(df: pd.DataFrame, x: str, y: str,
                 minimize: bool | tuple[bool, bool] = True, label: str | None = None) -> Figure:
    """A sweep's points in (*x*, *y*) and their Pareto front (:func:`pareto_mask`), joined in
    order of *x*.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per run; columns *x* and *y*.
    minimize : bool or (bool, bool)
        Whether smaller is better, for both axes or per axis.
    label : str, optional
        A column whose values annotate the front's points.
    """
    mx, my = (minimize, minimize) if isinstance(minimize, bool) else minimize
    mask = pareto_mask(df, {x: "min" if mx else "max", y: "min" if my else "max"})
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    ax.scatter(df.loc[~mask, x], df.loc[~mask, y], color="#BBBBBB", label="dominated")
    front = df[mask].sort_values(x)
    ax.plot(front[x], front[y], "o-", color="#D55E00", label="Pareto front")
    if label is not None:
        for _, row in front.iterrows():
            ax.annotate(str(row[label]), (row[x], row[y]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"Pareto front ({'min' if mx else 'max'} {x}, {'min' if my else 'max'} {y})")
    ax.legend(fontsize=8, frameon=False)
    return fig
