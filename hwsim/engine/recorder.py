"""The trace recorder: plain tuples appended during a run, DataFrames built once, on request.

Three kinds of record, kept apart (interval records vs level records, as salabim does):

- ``event``: one activity with a start and an end (an op on a stream, a finished flow);
- ``level``: the load (bytes/s of capacity in use) of a shared channel, from that instant on;
- ``memory``: the bytes in use of a pool, from that instant on.
"""

from __future__ import annotations

from typing import Hashable

import numpy as np
import pandas as pd

__all__ = ["Recorder", "STREAM_KINDS"]

STREAM_KINDS = ("compute", "host", "copy", "collective")
"""Event kinds recorded on device streams; their utilization is the covered share of time."""

_EVENT_COLUMNS = ["start_s", "end_s", "resource", "kind", "name", "job", "rank", "bytes", "flops",
                  "category"]


class Recorder:
    """Collects records of one run. Nothing here imports SimPy; the engine calls the methods."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.levels: list[tuple[float, Hashable, float]] = []
        self.memory: list[tuple[float, str, float, float]] = []
        self.capacity: dict[Hashable, float] = {}
        self.label: dict[Hashable, str] = {}

    def declare(self, resource: Hashable, capacity: float, label: str) -> None:
        """Declare a shared channel (capacity in bytes/s) and its class label."""
        self.capacity[resource] = capacity
        self.label[resource] = label

    def event(self, start_s: float, end_s: float, resource: str, kind: str, name: str, job: str,
              rank: int, nbytes: float, flops: float, category: str) -> None:
        self.events.append((start_s, end_s, resource, kind, name, job, rank, nbytes, flops,
                            category))

    def level(self, time_s: float, resource: Hashable, load: float) -> None:
        self.levels.append((time_s, resource, load))

    def mem(self, time_s: float, resource: str, used_bytes: float, capacity_bytes: float) -> None:
        self.memory.append((time_s, resource, used_bytes, capacity_bytes))

    # -- frames ---------------------------------------------------------------------------------
    def events_frame(self) -> pd.DataFrame:
        """One row per activity, sorted by start time; columns of ``EVENT_COLUMNS``."""
        df = pd.DataFrame(self.events, columns=_EVENT_COLUMNS)
        df = df.astype({"start_s": float, "end_s": float, "resource": str, "kind": str,
                        "name": str, "job": str, "rank": "int64", "bytes": float,
                        "flops": float, "category": str})
        return df.sort_values(["start_s", "end_s", "resource"], kind="stable").reset_index(drop=True)

    def memory_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.memory, columns=["time_s", "resource", "used_bytes",
                                                  "capacity_bytes"]).astype(
            {"time_s": float, "resource": str, "used_bytes": float, "capacity_bytes": float})

    def utilization_frame(self, end_s: float, bin_s: float | None = None,
                          streams: bool = True) -> pd.DataFrame:
        """Busy fraction per resource and time bin.

        Channels: the time-weighted mean load over the bin divided by capacity (exact for the
        piecewise-constant loads of the fluid model), and the bytes carried. Device streams
        (event resources of kind ``compute``/``host``/``copy``): the covered fraction of the bin.
        Bins are ``bin_s`` wide from 0 (default: 100 bins over the run).
        """
        cols = ["time_s", "bin_s", "resource", "resource_class", "utilization", "bytes"]
        if end_s <= 0:
            return pd.DataFrame(columns=cols)
        if bin_s is None:
            bin_s = end_s / 100.0
        nbins = max(1, int(np.ceil(end_s / bin_s - 1e-9)))
        edges = np.arange(nbins + 1) * bin_s
        parts: list[pd.DataFrame] = []
        if self.levels:
            lv = pd.DataFrame(self.levels, columns=["t", "r", "load"])
            for res, g in lv.groupby("r", sort=True):
                cap = self.capacity[res]
                t = g["t"].to_numpy()
                load = g["load"].to_numpy()
                integ = _integral_at(t, load, edges)
                carried = np.diff(integ)
                parts.append(pd.DataFrame({
                    "time_s": edges[:-1], "bin_s": bin_s, "resource": _name(res),
                    "resource_class": self.label.get(res, ""),
                    "utilization": np.clip(carried / (cap * bin_s), 0.0, 1.0), "bytes": carried}))
        if streams and self.events:
            ev = pd.DataFrame(self.events, columns=_EVENT_COLUMNS)
            ev = ev[ev["kind"].isin(STREAM_KINDS)]
            for res, g in ev.groupby("resource", sort=True):
                starts, ends = _union(g["start_s"].to_numpy(), g["end_s"].to_numpy())
                # busy(t) as a step function: +1 at starts, -1 at ends
                t = np.concatenate([starts, ends])
                d = np.concatenate([np.ones_like(starts), -np.ones_like(ends)])
                order = np.argsort(t, kind="stable")
                t, level = t[order], np.cumsum(d[order])
                busy = np.diff(_integral_at(t, level, edges))
                parts.append(pd.DataFrame({
                    "time_s": edges[:-1], "bin_s": bin_s, "resource": str(res),
                    "resource_class": "stream", "utilization": np.clip(busy / bin_s, 0.0, 1.0),
                    "bytes": np.nan}))
        if not parts:
            return pd.DataFrame(columns=cols)
        return pd.concat(parts, ignore_index=True)[cols]


def _name(res: Hashable) -> str:
    if isinstance(res, tuple) and len(res) == 2:
        return f"{res[0]}->{res[1]}"
    return str(res)


def _integral_at(t: np.ndarray, value: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Integral from 0 to each x of the step function equal to value[i] on [t[i], t[i+1])."""
    # keep the last value at each instant
    keep = np.append(t[1:] != t[:-1], True)
    t, value = t[keep], value[keep]
    cum = np.concatenate([[0.0], np.cumsum(value[:-1] * np.diff(t))])
    idx = np.searchsorted(t, x, side="right") - 1
    out = np.zeros_like(x, dtype=float)
    ok = idx >= 0
    out[ok] = cum[idx[ok]] + value[idx[ok]] * (x[ok] - t[idx[ok]])
    return out


def _union(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge overlapping intervals."""
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    out_s, out_e = [], []
    for a, b in zip(s, e):
        if out_e and a <= out_e[-1]:
            out_e[-1] = max(out_e[-1], b)
        else:
            out_s.append(a)
            out_e.append(b)
    return np.asarray(out_s, float), np.asarray(out_e, float)
