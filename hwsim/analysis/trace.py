"""A run as a Chrome trace-event file (``trace.json``), laid out for ui.perfetto.dev and
chrome://tracing. The layout is documented in docs/trace.md.

- **Processes**: one per server (``n0``, ``dc1/n0``: a node name up to its first ``.``), per
  shared storage tier (``storage.lustre``) and per switch or router that carries traffic.
- **Threads**: one per device stream (``gpu0 compute``, ``gpu0 comm``, ``cpu0 cores``...);
  activities that overlap on one stream go to numbered lanes (``gpu0 compute #2``), because the
  viewers draw only properly nested slices on one thread. A flow ``a->b`` (a transfer, a piece of
  a collective, a storage read) is a slice on ``<a> out`` in a's process and on ``<b> in`` in b's,
  joined by a flow arrow (``s``/``f`` events) from sender to receiver. The links a flow crosses
  are not in the events; each link channel is a counter track instead.
- **Counters**: utilization (busy fraction, 0..1) of every link channel, storage channel and
  device stream, and the bytes in use of every memory pool, in the process of the channel's
  source node or the pool's device.
- **Budget**: above *max_slices* slices, the first part of the run keeps every activity and the
  rest is merged per thread: consecutive slices with gaps up to a chosen width become one
  slice (``cat: "merged"``, args: how many, the first and last names, summed bytes, FLOPs and
  busy time). An instant event marks where merging starts.

Times are integer nanoseconds, written as microseconds with three decimals, so nesting checks
done here hold in the viewer, which converts back to nanoseconds.

The events come in frames (:class:`TraceEvents` keeps them as compact columns, about 60 bytes an
event, so a run's events can be streamed in batches) and :func:`write_trace` writes the file as
it goes, a few thousand trace events at a time; :func:`chrome_trace` returns the same content as
one object.
"""

from __future__ import annotations

import heapq
import json
import math
from itertools import chain, islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd

from hwsim.analysis.trace_layout import Counters, Layout, _ns, _short, _us, process_of

__all__ = ["chrome_trace", "write_trace", "TraceEvents", "DEFAULT_MAX_SLICES", "process_of"]

DEFAULT_MAX_SLICES = 100_000
"""Slices (``X`` events) above which the later part of a run is merged (about 20 MB of JSON)."""

_TEXT = ("resource", "name", "kind", "job", "category")


class TraceEvents:
    """The events a trace draws, gathered frame by frame (:meth:`add`; any columns of
    :data:`~hwsim.analysis.result.EVENT_COLUMNS`, the missing ones empty) as compact columns:
    nanosecond times, codes of the text columns (into :attr:`values`, -1 missing), rank, bytes
    and FLOPs. Rows whose start or end is not a finite number are left out."""

    def __init__(self) -> None:
        self._index: dict[str, dict] = {c: {} for c in _TEXT}
        self.values: dict[str, list] = {c: [] for c in _TEXT}
        self._parts: list[dict[str, np.ndarray]] = []
        self._cols: dict[str, np.ndarray] | None = None

    def _code(self, column: str, value: Any) -> int:
        index = self._index[column]
        c = index.get(value)
        if c is None:
            c = index[value] = len(self.values[column])
            self.values[column].append(value)
        return c

    def _encode(self, column: str, series: pd.Series) -> np.ndarray:
        local, uniques = pd.factorize(series)
        if column == "resource":  # as text: a missing one is "nan"
            lut = [self._code(column, str(u)) for u in uniques] + [self._code(column, "nan")]
        elif column in ("name", "kind"):
            lut = [self._code(column, str(u)) for u in uniques] + [-1]
        else:
            lut = [self._code(column, u) for u in uniques] + [-1]
        return np.asarray(lut, np.int32)[local]

    def add(self, frame: pd.DataFrame | None) -> None:
        if frame is None or not len(frame):
            return
        start = pd.to_numeric(frame["start_s"], errors="coerce").to_numpy(float)
        end = pd.to_numeric(frame["end_s"], errors="coerce").to_numpy(float)
        ok = np.isfinite(start) & np.isfinite(end)
        s = _ns(start[ok])
        part = {"s": s, "e": np.maximum(_ns(end[ok]), s)}
        n = len(s)
        for c in _TEXT:
            part[c] = (self._encode(c, frame[c])[ok] if c in frame.columns
                       else self._encode(c, pd.Series([None] * n, dtype=object)))
        for c in ("rank", "bytes", "flops"):
            part[c] = (pd.to_numeric(frame[c], errors="coerce").to_numpy(float)[ok]
                       if c in frame.columns else np.full(n, np.nan))
        self._parts.append(part)
        self._cols = None

    def columns(self) -> dict[str, np.ndarray]:
        if self._cols is None:
            keys = ("s", "e", *_TEXT, "rank", "bytes", "flops")
            self._cols = {k: np.concatenate([p[k] for p in self._parts]) if self._parts else
                          np.empty(0) for k in keys}
            self._parts = [self._cols] if self._parts else []
        return self._cols

    def __len__(self) -> int:
        return sum(len(p["s"]) for p in self._parts)


class _Events:
    """Per-event lookups of a :class:`TraceEvents` for the slices' names and args."""

    def __init__(self, table: TraceEvents) -> None:
        self.c = table.columns()
        v = table.values
        self.kinds = [str(k) for k in v["kind"]] + ["activity"]
        self.names = [None if x is None or x == "" else str(x) for x in v["name"]] + [None]
        self.jobs, self.categories = v["job"] + [None], v["category"] + [None]
        self.rank_code = np.nan_to_num(self.c["rank"], nan=-2.0)

    def kind(self, k: int) -> str:
        return self.kinds[self.c["kind"][k]]

    def name(self, k: int) -> str:
        return self.names[self.c["name"][k]] or self.kind(k)

    def kind_names(self, rows: np.ndarray) -> list[str]:
        """:meth:`kind` of each event of *rows*."""
        kinds = self.kinds
        return [kinds[c] for c in self.c["kind"][rows].tolist()]

    def names_of(self, rows: np.ndarray) -> list[str]:
        """:meth:`name` of each event of *rows*."""
        names, kinds = self.names, self.kinds
        return [names[n] or kinds[k] for n, k in zip(self.c["name"][rows].tolist(),
                                                      self.c["kind"][rows].tolist())]

    def args_of(self, rows: np.ndarray) -> Iterator[dict[str, Any]]:
        """:meth:`args` of each event of *rows*, the columns read once."""
        c = self.c
        for b, f, j, cat, r in zip(c["bytes"][rows].tolist(), c["flops"][rows].tolist(),
                                   c["job"][rows].tolist(), c["category"][rows].tolist(),
                                   c["rank"][rows].tolist()):
            args: dict[str, Any] = {}
            if math.isfinite(b):
                args["bytes"] = b
            if math.isfinite(f):
                args["flops"] = f
            v = self.jobs[j]
            if isinstance(v, str) and v:
                args["job"] = v
            v = self.categories[cat]
            if isinstance(v, str) and v:
                args["category"] = v
            if math.isfinite(r):
                args["rank"] = int(r)
            yield args

    def args(self, k: int) -> dict[str, Any]:
        """bytes, flops, job, rank, category of event *k*; NaN and missing ones left out."""
        out: dict[str, Any] = {}
        for key in ("bytes", "flops"):
            v = float(self.c[key][k])
            if math.isfinite(v):
                out[key] = v
        for key, values in (("job", self.jobs), ("category", self.categories)):
            v = values[self.c[key][k]]
            if isinstance(v, str) and v:
                out[key] = v
        r = float(self.c["rank"][k])
        if math.isfinite(r):
            out["rank"] = int(r)
        return out


class _Slices:
    """Every event as slices on its tracks (a flow twice: side 0 out, side 1 in), laned, and the
    budget applied: the slices before the cut drawn as they are, the later ones merged."""

    def __init__(self, table: TraceEvents, max_slices: int, info: dict[str, Any]) -> None:
        ev = self.ev = _Events(table)
        c = ev.c
        n = len(c["s"])
        info["events"] = n
        codes, uniq = pd.factorize(c["resource"])  # tracks in order of first appearance
        resources = table.values["resource"]
        tracks: dict[tuple[str, str], int] = {}
        send, recv = [], []
        for r in (resources[u] for u in uniq):
            src, arrow, dst = r.partition("->")
            if arrow:
                ps, pd_ = process_of(src), process_of(dst)
                send.append(tracks.setdefault((ps, f"{_short(src, ps)} out"), len(tracks)))
                recv.append(tracks.setdefault((pd_, f"{_short(dst, pd_)} in"), len(tracks)))
            else:
                dev, slash, stream = r.rpartition("/")
                if not slash:
                    dev, stream = r, ""
                p = process_of(dev)
                send.append(tracks.setdefault((p, f"{_short(dev, p)} {stream}".strip()),
                                              len(tracks)))
                recv.append(-1)
        self.names = list(tracks)
        codes = codes.astype(np.int32)
        send_of, recv_of = np.asarray(send, np.int32), np.asarray(recv, np.int32)
        f = np.flatnonzero(recv_of[codes] >= 0).astype(np.int32)  # flows: drawn twice
        event = np.concatenate([np.arange(n, dtype=np.int32), f])
        track = np.concatenate([send_of[codes], recv_of[codes[f]]])
        del codes
        self.is_flow = np.zeros(n, bool)
        self.is_flow[f] = True
        order = np.lexsort((c["e"][event], c["s"][event], track))
        self.event, self.track = event[order], track[order]
        self.side = (order >= n).astype(np.int8)  # the second slice of a flow: its receiver's
        del event, track, order, f
        self.ts, self.te = c["s"][self.event], c["e"][self.event]
        self.lane = _lanes(self.track, self.ts, self.te)
        m = len(self.event)
        # the budget: slices starting before `cut` stay whole, later ones are merged per lane
        self.cut = None
        if m > max_slices:
            k = max(max_slices // 2, 1)
            self.cut = int(np.partition(self.ts, k)[k])
        self.detailed = np.ones(m, bool) if self.cut is None else self.ts < self.cut
        self.groups = None if self.cut is None else _groups(self, ev,
                                                            max_slices - int(self.detailed.sum()))
        info["slices"] = int(self.detailed.sum()) + (0 if self.groups is None
                                                     else len(self.groups["ka"]))
        info["merged_after_s"] = None if self.cut is None else self.cut / 1e9
        # what is left to draw: every (track, lane) used, and the slices before the cut
        self.width = int(self.lane.max()) + 1 if m else 1
        self.keys = np.unique(self.track.astype(np.int64) * self.width + self.lane)
        if self.cut is not None:
            keep = np.flatnonzero(self.detailed)
            for a in ("event", "track", "side", "ts", "te", "lane"):
                setattr(self, a, getattr(self, a)[keep])
        del self.detailed

    def want(self, layout: Layout) -> None:
        """Every (track, lane) a slice is drawn on."""
        for key in self.keys.tolist():
            proc, thread = self.names[key // self.width]
            layout.want(proc, thread, key % self.width)

    def emit(self, layout: Layout) -> Iterator[dict[str, Any]]:
        """The slices before the cut, the flow arrows between them, the merged slices and the
        instant that marks the cut."""
        ev, names, procs, threads = self.ev, self.names, layout.procs, layout.threads
        flow_rows: dict[int, list] = {}
        event = self.event
        rows = zip(event.tolist(), self.track.tolist(), self.lane.tolist(), self.ts.tolist(),
                   self.te.tolist(), self.side.tolist(), self.is_flow[event].tolist(),
                   ev.kind_names(event), ev.names_of(event), ev.args_of(event))
        for k, track, lane, a, b, side, flow, kind, name, args in rows:
            proc, thread = names[track]
            tid = threads[(proc, thread, lane)]
            pid = procs[proc]
            yield {"name": name, "cat": kind, "ph": "X", "ts": a / 1000.0,
                   "dur": (b - a) / 1000.0, "pid": pid, "tid": tid, "args": args}
            if flow:
                flow_rows.setdefault(k, [None, None])[side] = (pid, tid, a, b)
        for k, (snd, rcv) in flow_rows.items():
            if snd is None or rcv is None or snd[3] - snd[2] < 2:
                continue
            mid = _us((snd[2] + snd[3]) // 2)
            yield {"name": "flow", "cat": "flow", "ph": "s", "id": k, "ts": mid,
                   "pid": snd[0], "tid": snd[1]}
            yield {"name": "flow", "cat": "flow", "ph": "f", "bp": "e", "id": k, "ts": mid,
                   "pid": rcv[0], "tid": rcv[1]}
        if self.cut is None:
            return
        yield from _emit_groups(self.groups, ev, names, layout)
        pid = procs[names[0][0]]
        yield {"name": "hwsim: later slices merged (trace budget)", "ph": "i", "s": "g",
               "ts": _us(self.cut), "pid": pid, "tid": pid}


def _lanes(key: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Lane of each slice (rows sorted by key, start, end): 0 unless it overlaps an earlier
    slice of its track, then the lowest free lane."""
    lane = np.zeros(len(key), np.int32)
    if len(key) < 2:
        return lane
    bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        s, e = start[a:b], end[a:b]
        if b - a < 2 or (s[1:] >= np.maximum.accumulate(e)[:-1]).all():
            continue
        busy: list[tuple[int, int]] = []  # (end, lane) of the slices still running
        free: list[int] = []  # lanes free again; a slice takes the lowest, else a new one
        out = []
        for st, en in zip(s.tolist(), e.tolist()):
            while busy and busy[0][0] <= st:
                heapq.heappush(free, heapq.heappop(busy)[1])
            ln = heapq.heappop(free) if free else len(busy)
            heapq.heappush(busy, (en, ln))
            out.append(ln)
        lane[a:b] = out
    return lane


def _groups(sl: _Slices, ev: _Events, budget: int) -> dict[str, np.ndarray]:
    """Merge the slices after the cut per lane: a gap wider than the chosen width starts a new
    slice; the width is the smallest that fits *budget*. Returns the groups as arrays (first and
    last event, track, lane, start, end, count, sums, uniform job, category and rank)."""
    rows = np.flatnonzero(~sl.detailed)
    if not len(rows):
        return {"ka": np.zeros(0, np.int64)}
    rows = rows[np.lexsort((sl.ts[rows], sl.lane[rows], sl.track[rows]))]  # track, lane, start
    k, track, lane, ts, te = (a[rows] for a in (sl.event, sl.track, sl.lane, sl.ts, sl.te))
    del rows
    same = (track[1:] == track[:-1]) & (lane[1:] == lane[:-1])
    gaps = ts[1:] - te[:-1]
    base = 1 + int((~same).sum())
    inner = np.sort(gaps[same])[::-1]
    room = max(budget, base) - base
    width = -1 if room >= len(inner) else int(inner[room])  # gaps > width split
    new = np.r_[True, ~same | (gaps > width)]
    starts = np.flatnonzero(new)
    del same, gaps, inner, new
    last = np.r_[starts[1:] - 1, len(k) - 1]
    out = {"ka": k[starts], "kb": k[last], "track": track[starts], "lane": lane[starts],
           "ts": ts[starts], "te": te[last],  # ends rise along a lane
           "bytes": np.add.reduceat(np.nan_to_num(ev.c["bytes"][k]), starts),
           "flops": np.add.reduceat(np.nan_to_num(ev.c["flops"][k]), starts),
           "busy": np.add.reduceat(te - ts, starts), "count": np.diff(np.r_[starts, len(k)])}
    for col, codes in (("job", ev.c["job"]), ("category", ev.c["category"]),
                       ("rank", ev.rank_code)):  # one value over the group?
        codes = codes[k]
        out[f"uniform_{col}"] = (np.minimum.reduceat(codes, starts)
                                 == np.maximum.reduceat(codes, starts))
    return out


def _emit_groups(g: dict[str, np.ndarray], ev: _Events, names: list[tuple[str, str]],
                 layout: Layout) -> Iterator[dict[str, Any]]:
    ka = g["ka"]
    if not len(ka):
        return
    rows = zip(g["track"].tolist(), g["lane"].tolist(), ka.tolist(), g["kb"].tolist(),
               g["ts"].tolist(), g["te"].tolist(), g["count"].tolist(), g["bytes"].tolist(),
               g["flops"].tolist(), g["busy"].tolist(), g["uniform_job"].tolist(),
               g["uniform_category"].tolist(), g["uniform_rank"].tolist(),
               ev.kind_names(ka), ev.names_of(ka), ev.args_of(ka))
    for (track, lane, a, b, start, end, count, nbytes, flops, busy, same_job, same_cat,
         same_rank, kind, name, first) in rows:
        proc, thread = names[track]
        pid, tid = layout.procs[proc], layout.threads[(proc, thread, lane)]
        if count == 1:
            yield {"name": name, "cat": kind, "ph": "X", "ts": _us(start),
                   "dur": _us(end - start), "pid": pid, "tid": tid, "args": first}
            continue
        args = {"events": count, "first": name, "last": ev.name(b),
                "bytes": float(nbytes), "flops": float(flops), "busy_us": _us(busy)}
        args.update({c: first[c] for c, same in (("job", same_job), ("category", same_cat),
                                                 ("rank", same_rank)) if same and c in first})
        yield {"name": f"{count} × {kind}", "cat": "merged", "ph": "X",
               "ts": _us(start), "dur": _us(end - start), "pid": pid, "tid": tid,
               "args": args}


def _events_table(events: pd.DataFrame | TraceEvents | Iterable[pd.DataFrame] | None
                  ) -> TraceEvents:
    if isinstance(events, TraceEvents):
        return events
    table = TraceEvents()
    if isinstance(events, pd.DataFrame) or events is None:
        table.add(events)
    else:
        for frame in events:
            table.add(frame)
    return table


def _build(events: Any, utilization: pd.DataFrame | None, memory: pd.DataFrame | None,
           max_slices: int) -> tuple[list[dict], Iterator[dict], dict[str, Any]]:
    """The metadata events, the rest as an iterator, and ``otherData``."""
    table = _events_table(events)
    layout = Layout()
    info: dict[str, Any] = {"generator": "hwsim", "events": 0, "slices": 0,
                            "merged_after_s": None}
    slices = _Slices(table, max_slices, info) if len(table) else None
    if slices is not None:
        slices.want(layout)
    counters = Counters(utilization, memory)
    counters.want(layout)
    meta = layout.number()
    body = slices.emit(layout) if slices is not None else iter(())
    return meta, chain(body, counters.emit(layout)), info


def chrome_trace(events: pd.DataFrame | TraceEvents | Iterable[pd.DataFrame] | None,
                 utilization: pd.DataFrame | None = None,
                 memory: pd.DataFrame | None = None, *,
                 max_slices: int = DEFAULT_MAX_SLICES) -> dict[str, Any]:
    """Return the Chrome trace-event form of a run (layout: module docstring, docs/trace.md).

    Parameters
    ----------
    events : pandas.DataFrame, frames of one, or TraceEvents
        Columns of :data:`~hwsim.analysis.result.EVENT_COLUMNS`. ``resource`` is a device
        stream ``node/stream`` or a flow ``src->dst``.
    utilization : pandas.DataFrame, optional
        :data:`~hwsim.analysis.result.UTILIZATION_COLUMNS`: a counter per resource.
    memory : pandas.DataFrame, optional
        :data:`~hwsim.analysis.result.MEMORY_COLUMNS`: a counter of ``used_bytes`` per pool.
    max_slices : int
        Slices kept as they are at most; beyond, the later part of the run is merged.

    Returns
    -------
    dict
        ``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``: ``M``
        metadata, ``X`` slices, ``s``/``f`` flow arrows, ``C`` counters and, when merged, one
        global ``i`` instant; integer ``pid``/``tid``; no NaN.
    """
    meta, rest, info = _build(events, utilization, memory, max_slices)
    trace = meta + list(rest)
    if not trace:
        return {"traceEvents": [], "displayTimeUnit": "ms"}
    return {"traceEvents": trace, "displayTimeUnit": "ms", "otherData": info}


def write_trace(path: str | Path, events: pd.DataFrame | TraceEvents | Iterable[pd.DataFrame]
                | None, utilization: pd.DataFrame | None = None,
                memory: pd.DataFrame | None = None, *,
                max_slices: int = DEFAULT_MAX_SLICES, chunk: int = 4096) -> None:
    """Write :func:`chrome_trace`'s object to *path* as compact JSON (the same bytes as
    ``json.dumps(chrome_trace(...), separators=(",", ":"))``), *chunk* trace events at a time,
    so the whole list is never held."""
    meta, rest, info = _build(events, utilization, memory, max_slices)
    dump = json.JSONEncoder(allow_nan=False, default=str, separators=(",", ":")).encode
    with open(path, "w", encoding="utf-8") as fh:
        items = chain(meta, rest)
        wrote = False
        while True:
            part = list(islice(items, chunk))
            if not part:
                break
            fh.write((',' if wrote else '{"traceEvents":[') + dump(part)[1:-1])
            wrote = True
        if not wrote:
            fh.write('{"traceEvents":[],"displayTimeUnit":"ms"}')
            return
        fh.write('],"displayTimeUnit":"ms","otherData":' + dump(info) + "}")
