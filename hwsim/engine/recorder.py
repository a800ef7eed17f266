"""The trace recorder: plain tuples appended during a run, DataFrames built once, on request.

Three kinds of record, kept apart (interval records vs level records, as salabim does):

- ``event``: one activity with a start and an end (an op on a stream, a finished flow);
- ``level``: the load (bytes/s of capacity in use) of a shared channel, from that instant on;
- ``memory``: the bytes in use of a pool, from that instant on.

Work that repeats (the same ops and collectives every micro-batch) is recorded as *blocks*: a
template of events and channel-load pulses with times relative to its start, registered once
(:meth:`Recorder.template`), and one ``(start, template)`` pair per occurrence
(:meth:`Recorder.block`). The frames expand blocks with numpy, so a block of a hundred ops costs
one tuple during the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Hashable

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Recorder", "STREAM_KINDS"]

STREAM_KINDS = ("compute", "host", "copy", "collective")
"""Event kinds recorded on device streams; their utilization is the covered share of time."""

_TEXT = ("resource", "kind", "name", "job", "category")
_DTYPES = {"start_s": float, "end_s": float, "resource": object, "kind": object, "name": object,
           "job": object, "rank": np.int64, "bytes": float, "flops": float, "category": object}
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
        self.slots: dict[str, int] = {}
        self._templates: list[tuple[list[tuple], list[tuple]]] = []
        self._blocks: list[tuple[float, int]] = []
        self._raw: tuple | None = None

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

    def template(self, events: list[tuple], pulses: list[tuple] = ()) -> int:
        """Register a block: *events* as for :meth:`event` with start and end relative to the
        block's start; *pulses* ``(start, end, channel, load)``: a channel carries *load*
        bytes/s on top of its levels over that interval (relative times). Returns its id."""
        self._templates.append((list(events), list(pulses)))
        return len(self._templates) - 1

    def block(self, start_s: float, template: int) -> None:
        """One occurrence of a registered block, starting at *start_s*."""
        self._blocks.append((start_s, template))

    def _block_starts(self) -> dict[int, np.ndarray]:
        by: dict[int, list[float]] = {}
        for t0, tid in self._blocks:
            by.setdefault(tid, []).append(t0)
        return {tid: np.asarray(v, float) for tid, v in by.items()}

    def _events_raw(self) -> dict[str, np.ndarray]:
        """Events and expanded blocks as numpy columns, unsorted (built once per state of the
        records)."""
        state = (len(self.events), len(self._blocks), len(self._templates))
        if self._raw is not None and self._raw[0] == state:
            return self._raw[1]
        cols: dict[str, list[np.ndarray]] = {c: [] for c in _EVENT_COLUMNS}
        if self.events:
            for c, v in zip(_EVENT_COLUMNS, zip(*self.events)):
                cols[c].append(np.asarray(v, dtype=_DTYPES[c]))
        for tid, t0 in self._block_starts().items():
            rows = self._templates[tid][0]
            if not rows:
                continue
            n = len(t0)
            for c, v in zip(_EVENT_COLUMNS, zip(*rows)):
                v = np.asarray(v, dtype=_DTYPES[c])
                cols[c].append((t0[:, None] + v[None, :]).ravel() if c in ("start_s", "end_s")
                               else np.tile(v, n))
        out = {c: np.concatenate(v) if v else np.empty(0, dtype=_DTYPES[c])
               for c, v in cols.items()}
        self._raw = (state, out)
        return out

    def _pulses(self) -> dict[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per channel, the (starts, ends, loads) of every pulse of every block."""
        acc: dict[Hashable, list] = {}
        for tid, t0 in self._block_starts().items():
            for a, b, ch, load in self._templates[tid][1]:
                acc.setdefault(ch, []).append((t0 + a, t0 + b, np.full(len(t0), load)))
        return {ch: tuple(np.concatenate(x) for x in zip(*v)) for ch, v in acc.items()}

    def mem(self, time_s: float, resource: str, used_bytes: float, capacity_bytes: float) -> None:
        self.memory.append((time_s, resource, used_bytes, capacity_bytes))

    # -- frames ---------------------------------------------------------------------------------
    def events_frame(self, rank: int | None = None) -> pd.DataFrame:
        """One row per activity, sorted by start time, end time and resource; columns of
        ``EVENT_COLUMNS``, the text ones categorical; only rank *rank*'s when given."""
        import pandas as pd
        if rank is not None and self._raw is None:  # filter the tuples before converting
            sub = Recorder()
            sub.events = [e for e in self.events if e[6] == rank]
            sub._templates = [([e for e in ev if e[6] == rank], []) for ev, _ in self._templates]
            sub._blocks = self._blocks
            raw = sub._events_raw()
        else:
            raw = self._events_raw()
            if rank is not None:
                sel = raw["rank"] == rank
                raw = {c: v[sel] for c, v in raw.items()}
        res_codes = pd.factorize(raw["resource"], sort=True)[0]
        order = np.lexsort((res_codes, raw["end_s"], raw["start_s"]))
        cols = {}
        for c in _EVENT_COLUMNS:
            if c in _TEXT:  # few distinct strings: categorical (dictionary-encoded in parquet)
                codes, uniques = pd.factorize(raw[c], sort=True)
                cols[c] = pd.Categorical.from_codes(codes[order],
                                                    pd.Index(uniques.astype(str), dtype=str))
            else:
                cols[c] = raw[c][order]
        return pd.DataFrame(cols, columns=_EVENT_COLUMNS)

    def memory_frame(self) -> pd.DataFrame:
        import pandas as pd
        return pd.DataFrame(self.memory, columns=["time_s", "resource", "used_bytes",
                                                  "capacity_bytes"]).astype(
            {"time_s": float, "resource": str, "used_bytes": float, "capacity_bytes": float})

    def loads_frame(self) -> pd.DataFrame:
        """The load of every shared channel as a step function: one row per change, ``time_s,
        resource, resource_class, load_bytes_per_s, capacity_bytes_per_s``; the load holds from
        ``time_s`` until the resource's next row (levels and block pulses added together)."""
        import pandas as pd
        cols = ["time_s", "resource", "resource_class", "load_bytes_per_s",
                "capacity_bytes_per_s"]
        steps: dict[Hashable, list[tuple[np.ndarray, np.ndarray]]] = {}
        if self.levels:
            lv = pd.DataFrame(self.levels, columns=["t", "r", "load"])
            for res, g in lv.groupby("r", sort=False):
                t, v = g["t"].to_numpy(float), g["load"].to_numpy(float)
                # a level is absolute: as deltas it is v[i] - v[i-1]
                steps.setdefault(res, []).append((t, np.diff(v, prepend=0.0)))
        for res, (a, b, load) in self._pulses().items():
            steps.setdefault(res, []).append((np.concatenate([a, b]),
                                              np.concatenate([load, -load])))
        frames = []
        for res in sorted(steps, key=_name):
            t = np.concatenate([x[0] for x in steps[res]])
            d = np.concatenate([x[1] for x in steps[res]])
            order = np.argsort(t, kind="stable")
            t, level = t[order], np.cumsum(d[order])
            keep = np.append(t[1:] != t[:-1], True)  # the last value at each instant
            frames.append(pd.DataFrame({
                "time_s": t[keep], "resource": _name(res),
                "resource_class": self.label.get(res, ""),
                "load_bytes_per_s": np.maximum(level[keep], 0.0),
                "capacity_bytes_per_s": self.capacity[res]}, columns=cols))
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object if c in ("resource", "resource_class")
                                              else float) for c in cols})
        return pd.concat(frames, ignore_index=True)

    def utilization_frame(self, end_s: float, bin_s: float | None = None,
                          streams: bool = True) -> pd.DataFrame:
        """Busy fraction per resource and time bin.

        Channels: the time-weighted mean load over the bin divided by capacity (exact for the
        piecewise-constant loads of the fluid model), and the bytes carried. Device streams
        (event resources of kind ``compute``/``host``/``copy``): the covered fraction of the bin;
        a pool of several slots (``slots``: a server's CPU threads) the mean busy slots over its
        slots.
        Bins are ``bin_s`` wide from 0 (default: 100 bins over the run).
        """
        import pandas as pd
        cols = ["time_s", "bin_s", "resource", "resource_class", "utilization", "bytes"]
        if end_s <= 0:
            return pd.DataFrame(columns=cols)
        if bin_s is None:
            bin_s = end_s / 100.0
        nbins = max(1, int(np.ceil(end_s / bin_s - 1e-9)))
        edges = np.arange(nbins + 1) * bin_s
        nb = len(edges) - 1
        resources: list[str] = []
        classes: list[str] = []
        util: list[np.ndarray] = []
        carried_all: list[np.ndarray] = []
        carried_by: dict[Hashable, np.ndarray] = {}
        if self.levels:
            lv = pd.DataFrame(self.levels, columns=["t", "r", "load"])
            for res, g in lv.groupby("r", sort=False):
                carried_by[res] = np.diff(_integral_at(g["t"].to_numpy(), g["load"].to_numpy(),
                                                       edges))
        for res, (a, b, load) in self._pulses().items():
            t = np.concatenate([a, b])
            delta = np.concatenate([load, -load])
            order = np.argsort(t, kind="stable")
            pulse = np.diff(_integral_at(t[order], np.cumsum(delta[order]), edges))
            carried_by[res] = carried_by.get(res, 0.0) + pulse
        for res in sorted(carried_by, key=_name):
            carried = carried_by[res]
            resources.append(_name(res))
            classes.append(self.label.get(res, ""))
            util.append(np.clip(carried / (self.capacity[res] * bin_s), 0.0, 1.0))
            carried_all.append(carried)
        if streams and (self.events or self._blocks):
            raw = self._events_raw()
            keep = np.isin(raw["kind"], STREAM_KINDS)
            codes, names = pd.factorize(raw["resource"][keep], sort=True)
            starts_all, ends_all = raw["start_s"][keep], raw["end_s"][keep]
            by_res = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[by_res], np.arange(len(names) + 1))
            for k, res in enumerate(names):
                idx = by_res[bounds[k]:bounds[k + 1]]
                slots = self.slots.get(str(res), 1)
                # a pool of slots (a server's threads): busy slots over slots; a stream: covered
                starts, ends = ((starts_all[idx], ends_all[idx]) if slots > 1 else
                                _union(starts_all[idx], ends_all[idx]))
                # busy(t) as a step function: +1 at starts, -1 at ends
                t = np.concatenate([starts, ends])
                d = np.concatenate([np.ones_like(starts), -np.ones_like(ends)])
                order = np.argsort(t, kind="stable")
                t, level = t[order], np.cumsum(d[order])
                busy = np.diff(_integral_at(t, level, edges)) / slots
                resources.append(str(res))
                classes.append("stream")
                util.append(np.clip(busy / bin_s, 0.0, 1.0))
                carried_all.append(np.full(nb, np.nan))
        if not resources:
            return pd.DataFrame(columns=cols)
        k = len(resources)
        return pd.DataFrame({
            "time_s": np.tile(edges[:-1], k), "bin_s": bin_s,
            "resource": np.repeat(np.asarray(resources, dtype=object), nb),
            "resource_class": np.repeat(np.asarray(classes, dtype=object), nb),
            "utilization": np.concatenate(util), "bytes": np.concatenate(carried_all)},
            columns=cols)


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
    """Merge overlapping (or touching) intervals."""
    if len(starts) == 0:
        return np.asarray(starts, float), np.asarray(ends, float)
    order = np.argsort(starts, kind="stable")
    s, e = np.asarray(starts, float)[order], np.asarray(ends, float)[order]
    reach = np.maximum.accumulate(e)
    new = np.concatenate([[True], s[1:] > reach[:-1]])
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(s) - 1)
    return s[first], reach[last]
