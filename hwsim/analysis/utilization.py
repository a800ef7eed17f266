"""Utilization of any resource at any resolution, and a per-resource summary (busy time, bytes,
FLOPs, energy), from a :class:`~hwsim.analysis.result.Result`'s frames (docs/analysis.md).

Two kinds of resource, each with an exact busy function ``u(t)`` in [0, 1]:

- a **stream** (``n0.gpu0/compute``, ``n0.gpu0/comm``, ``n0.gpu0/copy``, ``n0.gpu0/host``, a
  server's thread pool ``n0.cores``): from ``Result.events`` of kind ``compute``, ``host``,
  ``copy`` or ``collective`` on it; u is 1 while any such event runs (the union of their
  intervals), or for a pool of *k* slots (``Result.slots``) the running events over *k*;
- a **channel** (a link direction ``n0.gpu0->n0.nvswitch``, a storage channel
  ``n0.nvme->read``): from ``Result.loads``, u = min(load / capacity, 1), and the bytes it
  carried are the integral of the load.

Both are step functions, so the busy seconds of any bin are integrals computed exactly: the
bins of :func:`utilization` at every width sum to :func:`resource_summary`'s ``busy_s``.
Pandas in, pandas out; nothing of SimPy.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from hwsim.analysis.energy import device_energy_j

if TYPE_CHECKING:
    import pandas as pd
    from hwsim.analysis.result import Result

__all__ = ["utilization", "resource_summary", "select_resources", "STREAM_KINDS",
           "UTILIZATION_COLUMNS", "SUMMARY_COLUMNS"]

STREAM_KINDS = ("compute", "host", "copy", "collective")
"""Event kinds that keep a stream busy (a ``bubble`` event is a wait, not work)."""
UTILIZATION_COLUMNS = ("time_s", "bin_s", "resource", "resource_class", "utilization", "busy_s",
                       "bytes")
SUMMARY_COLUMNS = ("resource", "kind", "resource_class", "busy_s", "busy_share", "bytes", "flops",
                   "events", "energy_j")


def _run_end(result: Result) -> float:
    end = result.summary.get("simulated_time_s")
    if end is None:
        ev, ld = result.events, result.loads
        end = max([float(ev["end_s"].max()) if len(ev) else 0.0,
                   float(ld["time_s"].max()) if len(ld) else 0.0])
    return float(end)


def _step_functions(result: Result) -> dict[str, tuple[str, str, np.ndarray, np.ndarray,
                                                        np.ndarray | None]]:
    """Per resource: (kind, class, change times, u after each change, load after each change or
    None for streams). u and load hold from a change to the next; they are 0 before the first."""
    import pandas as pd

    out: dict[str, Any] = {}
    ev = result.events
    if len(ev):
        work = ev[ev["kind"].astype(str).isin(STREAM_KINDS)]
        codes, names = pd.factorize(work["resource"].astype(str), sort=True)
        starts = work["start_s"].to_numpy(float)
        ends = work["end_s"].to_numpy(float)
        kinds = work["kind"].astype(str).to_numpy()
        by = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[by], np.arange(len(names) + 1))
        for k, name in enumerate(names):
            idx = by[bounds[k]:bounds[k + 1]]
            slots = int(result.slots.get(name, 1))
            t = np.concatenate([starts[idx], ends[idx]])
            d = np.concatenate([np.ones(len(idx)), -np.ones(len(idx))])
            order = np.lexsort((-d, t))  # at a shared instant, count starts before ends
            t, level = t[order], np.cumsum(d[order])
            keep = np.append(t[1:] != t[:-1], True)  # the level after the instant's changes
            t, level = t[keep], level[keep]
            u = np.minimum(level, 1.0) if slots == 1 else level / slots
            values, counts = np.unique(kinds[idx], return_counts=True)
            out[str(name)] = ("stream", str(values[np.argmax(counts)]), t, u, None)
    ld = result.loads
    if len(ld):
        for name, g in ld.groupby(ld["resource"].astype(str), sort=True):
            load = g["load_bytes_per_s"].to_numpy(float)
            cap = float(g["capacity_bytes_per_s"].iloc[0])
            cls = str(g["resource_class"].iloc[0])
            kind = "storage" if cls == "storage" else "link"
            out[name] = (kind, cls, g["time_s"].to_numpy(float), np.minimum(load / cap, 1.0),
                         load)
    return out


def _integral(t: np.ndarray, value: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Integral from -inf to each x of the step function equal to value[i] on [t[i], t[i+1])
    and 0 before t[0]."""
    if len(t) == 0:
        return np.zeros(len(x))
    cum = np.concatenate([[0.0], np.cumsum(value[:-1] * np.diff(t))])
    idx = np.searchsorted(t, x, side="right") - 1
    out = np.zeros(len(x))
    ok = idx >= 0
    out[ok] = cum[idx[ok]] + value[idx[ok]] * (x[ok] - t[idx[ok]])
    return out


def select_resources(names: Iterable[str], resource: Any, who: str = "utilization") -> list[str]:
    """The names of *names* that *resource* selects: None all; a string an exact name, else a
    regular expression that must match a whole name; a list exact names. ValueError naming a few
    valid names when nothing (or an unknown listed name) is selected."""
    names = sorted(set(names))
    if resource is None:
        return names
    if isinstance(resource, str):
        if resource in names:
            return [resource]
        try:
            rx = re.compile(resource)
        except re.error:
            rx = None
        picked = [n for n in names if rx is not None and rx.fullmatch(n)]
        bad = resource if not picked else None
    else:
        wanted = [str(r) for r in resource]
        bad = next((w for w in wanted if w not in names), None)
        picked = [n for n in names if n in set(wanted)]
    if bad is not None:
        shown = ", ".join(names[:6]) + (f" ... ({len(names)} in all)" if len(names) > 6 else "")
        raise ValueError(f"{who}: no resource {bad!r} in this result; valid: a resource name or "
                         f"a regular expression matching whole names, e.g. {shown or 'none'}")
    return picked


def utilization(result: Result, resource: Any = None, bin_s: float | None = None, *,
                start_s: float = 0.0, end_s: float | None = None) -> pd.DataFrame:
    """Busy fraction of resources over time, in bins of any width, exact.

    Parameters
    ----------
    result : Result
    resource : None, str or list of str
        None: every stream and channel; a name (``"n0.gpu0/compute"``) or a regular expression
        matching whole names (``r"n0\\.gpu\\d/compute"``); or a list of names.
    bin_s : float, optional
        Bin width in seconds (default: 100 bins over the window). The last bin may be shorter.
    start_s, end_s : float
        The window (default: 0 to the end of the run, ``summary["simulated_time_s"]``).

    Returns
    -------
    pandas.DataFrame
        :data:`UTILIZATION_COLUMNS`: ``time_s`` (bin start), ``bin_s`` (its width),
        ``resource``, ``resource_class`` (the link class, ``storage``, or a stream's event kind:
        ``compute``, ``collective``, ``copy``, ``host``), ``utilization`` (busy seconds / bin
        width, in [0, 1]), ``busy_s`` and ``bytes`` (carried by a channel in the bin; NaN for
        streams). One row per resource and bin, by resource then time.
    """
    import pandas as pd

    end = _run_end(result) if end_s is None else float(end_s)
    lo = float(start_s)
    if not end > lo:
        raise ValueError(f"utilization: need end_s > start_s, got {lo} and {end}")
    width = (end - lo) / 100.0 if bin_s is None else float(bin_s)
    if not width > 0:
        raise ValueError(f"utilization: bin_s(={bin_s}) must be > 0")
    funcs = _step_functions(result)
    names = select_resources(funcs, resource)
    n = max(1, int(np.ceil((end - lo) / width - 1e-9)))
    edges = np.minimum(lo + np.arange(n + 1) * width, end)
    edges[-1] = end
    frames = []
    for name in names:
        kind, cls, t, u, load = funcs[name]
        busy = np.diff(_integral(t, u, edges))
        carried = np.diff(_integral(t, load, edges)) if load is not None else np.full(n, np.nan)
        widths = np.diff(edges)
        frames.append(pd.DataFrame({
            "time_s": edges[:-1], "bin_s": widths, "resource": name, "resource_class": cls,
            "utilization": np.clip(busy / widths, 0.0, 1.0), "busy_s": busy, "bytes": carried},
            columns=list(UTILIZATION_COLUMNS)))
    if not frames:
        return pd.DataFrame({c: [] for c in UTILIZATION_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def resource_summary(result: Result, *, start_s: float = 0.0,
                     end_s: float | None = None) -> pd.DataFrame:
    """One row per resource over a window (default: the whole run).

    Returns
    -------
    pandas.DataFrame
        :data:`SUMMARY_COLUMNS`, sorted by kind then resource:

        - ``resource``; ``kind``: ``stream``, ``link``, ``storage`` or ``device`` (a compute
          device: its streams together);
        - ``resource_class``: link class, ``storage``, a stream's event kind, or a device's
          catalog id;
        - ``busy_s``: seconds busy (streams: covered time, pools: slot-seconds over slots;
          channels: the integral of min(load / capacity, 1); devices: their compute stream's);
          ``busy_share``: over the window;
        - ``bytes``: streams and devices: the bytes of their events that start in the window
          (an op's memory traffic, a collective's payload); channels: the bytes carried (the
          integral of the load);
        - ``flops``: of the events that start in the window (streams and devices; 0 for
          channels); ``events``: how many (channels: NaN);
        - ``energy_j``: devices only (:func:`~hwsim.analysis.energy.device_energy_j` of the
          catalog's idle and busy power, under the run's GPU power cap ``gpu_power_cap_w`` if
          any; busy = the compute stream's busy time, wall = the window); NaN elsewhere: links,
          switches and storage are in the run's power summary keys (docs/analysis.md, "Power"),
          not per resource.
    """
    import pandas as pd

    end = _run_end(result) if end_s is None else float(end_s)
    lo = float(start_s)
    wall = end - lo
    funcs = _step_functions(result)
    x = np.array([lo, end])
    ev = result.events
    rows = []
    if len(ev):
        inside = ev[(ev["start_s"] >= lo) & (ev["start_s"] <= end)]
        agg = inside.groupby(inside["resource"].astype(str), observed=True).agg(
            bytes=("bytes", "sum"), flops=("flops", "sum"), events=("bytes", "size"))
    else:
        agg = pd.DataFrame(columns=["bytes", "flops", "events"])
    for name, (kind, cls, t, u, load) in funcs.items():
        busy = float(np.diff(_integral(t, u, x))[0])
        if load is not None:
            rows.append((name, kind, cls, busy, float(np.diff(_integral(t, load, x))[0]), 0.0,
                         np.nan, np.nan))
        else:
            a = agg.loc[name] if name in agg.index else None
            rows.append((name, kind, cls, busy, float(a["bytes"]) if a is not None else 0.0,
                         float(a["flops"]) if a is not None else 0.0,
                         float(a["events"]) if a is not None else 0.0, np.nan))
    from hwsim.analysis.power import capped_spec
    from hwsim.catalog import get_device

    cap = result.summary.get("gpu_power_cap_w")
    streams = {r[0]: r for r in rows if r[1] == "stream"}
    for device, spec_id in sorted(result.device_specs.items()):
        mine = [r for n, r in streams.items() if n.rsplit("/", 1)[0] == device]
        if not mine:
            continue  # a device the run did not use
        busy = streams[f"{device}/compute"][3] if f"{device}/compute" in streams else 0.0
        spec = get_device(spec_id)
        if cap is not None and spec.kind == "gpu":
            spec = capped_spec(spec, float(cap))
        energy = device_energy_j(spec, busy, wall)
        rows.append((device, "device", spec_id, busy, sum(r[4] for r in mine),
                     sum(r[5] for r in mine), sum(r[6] for r in mine), energy))
    out = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS if c != "busy_share"]
                       if rows else None)
    if not rows:
        return pd.DataFrame({c: [] for c in SUMMARY_COLUMNS})
    out["busy_share"] = out["busy_s"] / wall if wall > 0 else 0.0
    out["_order"] = out["kind"].map({"device": 0, "stream": 1, "link": 2, "storage": 3})
    out = out.sort_values(["_order", "resource"], kind="stable")
    return out[list(SUMMARY_COLUMNS)].reset_index(drop=True)
