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
"""

from __future__ import annotations

import heapq
import math
import re
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["chrome_trace", "DEFAULT_MAX_SLICES", "process_of"]

DEFAULT_MAX_SLICES = 100_000
"""Slices (``X`` events) above which the later part of a run is merged (about 20 MB of JSON)."""

_STREAM_ORDER = {"compute": 0, "comm": 1, "copy": 2, "host": 3, "cores": 4, "checkpoint": 5,
                 "out": 8, "in": 9}
_CHANNEL_OPS = ("read", "write")


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def process_of(node: str) -> str:
    """The process (trace group) of a graph node: its server for ``n0.gpu0`` (``n0``; with a
    site, ``dc1/n0``), the node itself for a shared tier (``storage.lustre``), a switch or a
    router."""
    site, slash, bare = node.rpartition("/")
    proc = bare if bare.startswith("storage.") else bare.partition(".")[0]
    return f"{site}/{proc}" if slash else proc


def _short(node: str, proc: str) -> str:
    """*node*'s name inside its process: ``gpu0`` for ``n0.gpu0`` in ``n0``."""
    if node.startswith(proc + "."):
        return node[len(proc) + 1:]
    return node.rpartition("/")[2]


def _ns(seconds: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(seconds, float) * 1e9).astype(np.int64)


def _us(ns: int | np.integer) -> float:
    return int(ns) / 1000.0


class _Layout:
    """pid/tid numbering: processes and threads sorted (servers, then tiers, then switches;
    streams in a fixed order), tids unique across processes (Perfetto keys thread names by tid)."""

    def __init__(self) -> None:
        self.threads: dict[tuple[str, str, int], int] = {}  # (process, thread, lane) -> tid
        self.procs: dict[str, int] = {}
        self.has_slices: set[str] = set()

    def want(self, proc: str, thread: str | None = None, lane: int = 0) -> None:
        self.procs.setdefault(proc, 0)
        if thread is not None:
            self.has_slices.add(proc)
            self.threads.setdefault((proc, thread, lane), 0)

    def number(self) -> list[dict[str, Any]]:
        def pkey(p: str) -> tuple:
            tier = p.rpartition("/")[2].startswith("storage.")
            return (1 if tier else 0 if p in self.has_slices else 2, _natural(p))
        for i, p in enumerate(sorted(self.procs, key=pkey), start=1):
            self.procs[p] = i
        meta: list[dict[str, Any]] = []
        for p, pid in sorted(self.procs.items(), key=lambda kv: kv[1]):
            meta.append({"ph": "M", "name": "process_name", "pid": pid, "tid": pid, "ts": 0,
                         "args": {"name": p}})
            meta.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": pid,
                         "ts": 0, "args": {"sort_index": pid}})

        def tkey(k: tuple[str, str, int]) -> tuple:
            proc, thread, lane = k
            dev, _, stream = thread.rpartition(" ")
            return (self.procs[proc], _natural(dev), _STREAM_ORDER.get(stream, 6),
                    _natural(stream), lane)
        base = len(self.procs) + 1
        for i, key in enumerate(sorted(self.threads, key=tkey)):
            tid = self.threads[key] = base + i
            proc, thread, lane = key
            pid = self.procs[proc]
            meta.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "ts": 0,
                         "args": {"name": thread if lane == 0 else f"{thread} #{lane + 1}"}})
            meta.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                         "ts": 0, "args": {"sort_index": i}})
        return meta


def _tracks(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                            list[tuple[str, str]]]:
    """The slices to draw: an event on its stream, a flow twice (side 0 out, side 1 in).
    Returns (event index, track code, side) per slice and the (process, thread) of each code."""
    codes, uniq = pd.factorize(events["resource"].astype(str), sort=False)
    tracks: dict[tuple[str, str], int] = {}
    send, recv = [], []
    for r in uniq:
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
            send.append(tracks.setdefault((p, f"{_short(dev, p)} {stream}".strip()), len(tracks)))
            recv.append(-1)
    recv_of = np.asarray(recv, np.int64)[codes]
    idx = np.arange(len(events))
    f = np.flatnonzero(recv_of >= 0)
    event = np.r_[idx, f]
    track = np.r_[np.asarray(send, np.int64)[codes], recv_of[f]]
    side = np.r_[np.zeros(len(idx), np.int64), np.ones(len(f), np.int64)]
    return event, track, side, list(tracks)


def _lanes(key: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Lane of each slice (rows sorted by key, start, end): 0 unless it overlaps an earlier
    slice of its track, then the lowest free lane."""
    lane = np.zeros(len(key), np.int64)
    if len(key) < 2:
        return lane
    bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        s, e = start[a:b], end[a:b]
        if b - a < 2 or (s[1:] >= np.maximum.accumulate(e)[:-1]).all():
            continue
        busy: list[tuple[int, int]] = []
        free: list[int] = []
        for i in range(a, b):
            while busy and busy[0][0] <= start[i]:
                heapq.heappush(free, heapq.heappop(busy)[1])
            ln = heapq.heappop(free) if free else len(busy)
            heapq.heappush(busy, (int(end[i]), ln))
            lane[i] = ln
    return lane


def _args(ev: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """bytes, flops, job, rank, category of event *i*; NaN and missing ones left out."""
    out: dict[str, Any] = {}
    for key in ("bytes", "flops"):
        v = float(ev[key][i])
        if math.isfinite(v):
            out[key] = v
    for key in ("job", "category"):
        v = ev[key][i]
        if isinstance(v, str) and v:
            out[key] = v
    r = float(ev["rank"][i])
    if math.isfinite(r):
        out["rank"] = int(r)
    return out


def chrome_trace(events: pd.DataFrame, utilization: pd.DataFrame | None = None,
                 memory: pd.DataFrame | None = None, *,
                 max_slices: int = DEFAULT_MAX_SLICES) -> dict[str, Any]:
    """Return the Chrome trace-event form of a run (layout: module docstring, docs/trace.md).

    Parameters
    ----------
    events : pandas.DataFrame
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
    layout = _Layout()
    body: list[dict[str, Any]] = []
    info: dict[str, Any] = {"generator": "hwsim", "events": 0, "slices": 0,
                            "merged_after_s": None}
    if events is not None and len(events):
        body += _slices(events, layout, max_slices, info)
    counters = _counters(utilization, memory, layout)
    meta = layout.number()
    for ev in body:
        ev["pid"] = layout.procs[ev["pid"]]
        ev["tid"] = layout.threads[ev["tid"]] if "tid" in ev else ev["pid"]
    for ev in counters:  # process-level events: the tid of the process's main thread, its pid
        ev["pid"] = ev["tid"] = layout.procs[ev["pid"]]
    if not meta and not body and not counters:
        return {"traceEvents": [], "displayTimeUnit": "ms"}
    return {"traceEvents": meta + body + counters, "displayTimeUnit": "ms", "otherData": info}


def _slices(events: pd.DataFrame, layout: _Layout, max_slices: int,
            info: dict[str, Any]) -> list[dict[str, Any]]:
    missing = [c for c in ("name", "kind", "job", "category", "rank", "bytes", "flops")
               if c not in events.columns]
    if missing:  # a partial frame (hand-made): the absent columns are empty
        events = events.assign(**{c: None for c in missing})
    start = pd.to_numeric(events["start_s"], errors="coerce").to_numpy(float)
    end = pd.to_numeric(events["end_s"], errors="coerce").to_numpy(float)
    ok = np.isfinite(start) & np.isfinite(end)
    events = events[ok].reset_index(drop=True)
    s_ns = _ns(start[ok])
    e_ns = np.maximum(_ns(end[ok]), s_ns)
    ev: dict[str, np.ndarray] = {}
    for c in ("name", "kind", "job", "category"):
        codes, uniques = pd.factorize(events[c])  # categorical columns: no string copies
        values = [str(u) for u in uniques] if c in ("name", "kind") else list(uniques)
        ev[c] = np.asarray(values + ["activity" if c == "kind" else None], dtype=object)[codes]
        ev[f"{c}_code"] = codes
    unnamed = np.asarray([v is None or v == "" for v in ev["name"]], bool)
    ev["name"][unnamed] = ev["kind"][unnamed]
    ev["bytes"] = pd.to_numeric(events["bytes"], errors="coerce").to_numpy(float)
    ev["flops"] = pd.to_numeric(events["flops"], errors="coerce").to_numpy(float)
    ev["rank"] = pd.to_numeric(events["rank"], errors="coerce").to_numpy(float)
    ev["rank_code"] = np.nan_to_num(ev["rank"], nan=-2.0)
    event, track, side, names = _tracks(events)
    is_flow = np.zeros(len(events), bool)
    is_flow[event[side == 1]] = True
    ts, te = s_ns[event], e_ns[event]
    order = np.lexsort((te, ts, track))
    event, track, side, ts, te = event[order], track[order], side[order], ts[order], te[order]
    lane = _lanes(track, ts, te)
    info["events"] = int(len(events))
    n = len(event)
    # the budget: slices starting before `cut` stay whole, later ones are merged per lane
    cut = None
    if n > max_slices:
        cut = int(np.partition(ts, max(max_slices // 2, 1))[max(max_slices // 2, 1)])
    detailed = np.ones(n, bool) if cut is None else ts < cut
    out: list[dict[str, Any]] = []
    flow_rows: dict[int, list[tuple]] = {}
    for i in np.flatnonzero(detailed).tolist():
        k = int(event[i])
        proc, thread = names[track[i]]
        key = (proc, thread, int(lane[i]))
        layout.want(*key)
        a, b = int(ts[i]), int(te[i])
        out.append({"name": ev["name"][k], "cat": ev["kind"][k], "ph": "X", "ts": a / 1000.0,
                    "dur": (b - a) / 1000.0, "pid": proc, "tid": key,
                    "args": _args(ev, k)})
        if is_flow[k]:
            flow_rows.setdefault(k, [None, None])[int(side[i])] = (key, a, b)
    out += _arrows(flow_rows)
    if cut is not None:
        m = ~detailed
        out += _merged(event[m], track[m], lane[m], ts[m], te[m], names, ev, layout,
                       max_slices - int(detailed.sum()))
        out.append({"name": "hwsim: later slices merged (trace budget)", "ph": "i", "s": "g",
                    "ts": _us(cut), "pid": names[0][0]})
        info["merged_after_s"] = cut / 1e9
    info["slices"] = sum(1 for e in out if e["ph"] == "X")
    return out


def _arrows(flow_rows: dict[int, list]) -> list[dict[str, Any]]:
    out = []
    for k, (snd, rcv) in flow_rows.items():
        if snd is None or rcv is None or snd[2] - snd[1] < 2:
            continue
        mid = _us((snd[1] + snd[2]) // 2)
        out.append({"name": "flow", "cat": "flow", "ph": "s", "id": k, "ts": mid,
                    "pid": snd[0][0], "tid": snd[0]})
        out.append({"name": "flow", "cat": "flow", "ph": "f", "bp": "e", "id": k, "ts": mid,
                    "pid": rcv[0][0], "tid": rcv[0]})
    return out


def _merged(k: np.ndarray, track: np.ndarray, lane: np.ndarray, ts: np.ndarray,
            te: np.ndarray, names: list[tuple[str, str]], ev: dict[str, np.ndarray],
            layout: _Layout, budget: int) -> list[dict[str, Any]]:
    """Merge slices (event *k* on *track*, *lane*, from *ts* to *te*) per lane: a gap wider
    than the chosen width starts a new slice; the width is the smallest that fits *budget*."""
    if not len(k):
        return []
    order = np.lexsort((ts, lane, track))
    k, track, lane, ts, te = k[order], track[order], lane[order], ts[order], te[order]
    same = (track[1:] == track[:-1]) & (lane[1:] == lane[:-1])
    gaps = ts[1:] - te[:-1]
    base = 1 + int((~same).sum())
    inner = np.sort(gaps[same])[::-1]
    room = max(budget, base) - base
    width = -1 if room >= len(inner) else int(inner[room])  # gaps > width split
    new = np.r_[True, ~same | (gaps > width)]
    starts = np.flatnonzero(new)
    last = np.r_[starts[1:] - 1, len(k) - 1]
    nbytes = np.add.reduceat(np.nan_to_num(ev["bytes"][k]), starts)
    flops = np.add.reduceat(np.nan_to_num(ev["flops"][k]), starts)
    busy = np.add.reduceat(te - ts, starts)
    count = np.diff(np.r_[starts, len(k)])
    uniform = {}  # job, category, rank: one value over the group?
    for col in ("job", "category", "rank"):
        codes = ev[f"{col}_code"][k]
        uniform[col] = (np.minimum.reduceat(codes, starts) == np.maximum.reduceat(codes, starts))
    out = []
    for g, (a, b) in enumerate(zip(starts.tolist(), last.tolist())):
        proc, thread = names[track[a]]
        tkey = (proc, thread, int(lane[a]))
        layout.want(*tkey)
        ka, kb = int(k[a]), int(k[b])
        end = int(te[b])  # ends rise along a lane
        if count[g] == 1:
            out.append({"name": ev["name"][ka], "cat": ev["kind"][ka], "ph": "X",
                        "ts": _us(ts[a]), "dur": _us(end - ts[a]), "pid": proc, "tid": tkey,
                        "args": _args(ev, ka)})
            continue
        args = {"events": int(count[g]), "first": ev["name"][ka], "last": ev["name"][kb],
                "bytes": float(nbytes[g]), "flops": float(flops[g]), "busy_us": _us(busy[g])}
        first = _args(ev, ka)
        args.update({c: first[c] for c in uniform if uniform[c][g] and c in first})
        out.append({"name": f"{count[g]} × {ev['kind'][ka]}", "cat": "merged", "ph": "X",
                    "ts": _us(ts[a]), "dur": _us(end - ts[a]), "pid": proc, "tid": tkey,
                    "args": args})
    return out


def _steps(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop samples that repeat the previous value (counters are step functions)."""
    keep = np.r_[True, values[1:] != values[:-1]] if len(values) else np.zeros(0, bool)
    return times[keep], values[keep]


def _counters(utilization: pd.DataFrame | None, memory: pd.DataFrame | None,
              layout: _Layout) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if utilization is not None and len(utilization) and {"resource", "time_s", "utilization"} <= \
            set(utilization.columns):
        for res, g in utilization.groupby("resource", sort=True):
            res = str(res)
            src, arrow, dst = res.partition("->")
            if arrow and dst in _CHANNEL_OPS:  # a storage tier's read or write channel
                proc = process_of(src)
                label = f"{_short(src, proc)} {dst}"
            elif arrow:  # a link direction
                proc = process_of(src)
                label = f"link {_short(src, proc)}->{_short(dst, proc) if process_of(dst) == proc else dst}"
            else:
                dev, slash, stream = res.rpartition("/")
                dev = dev if slash else res
                proc = process_of(dev)
                label = f"{_short(dev, proc)} {stream}".strip()
            t = _ns(g["time_s"].to_numpy(float))
            v = pd.to_numeric(g["utilization"], errors="coerce").to_numpy(float)
            ok = np.isfinite(v) & (t >= 0)
            t, v = t[ok], v[ok]
            if not len(t):
                continue
            if "bin_s" in g:
                w = _ns(g["bin_s"].to_numpy(float))[ok]
                t, v = np.r_[t, t[-1] + w[-1]], np.r_[v, 0.0]
            t, v = _steps(t, v)
            layout.want(proc)
            out += [{"name": label, "ph": "C", "ts": _us(a), "pid": proc,
                     "args": {"utilization": float(b)}} for a, b in zip(t, v)]
    if memory is not None and len(memory) and {"resource", "time_s", "used_bytes"} <= \
            set(memory.columns):
        for res, g in memory.groupby("resource", sort=True):
            dev, slash, pool = str(res).rpartition("/")
            dev = dev if slash else str(res)
            proc = process_of(dev)
            g = g.sort_values("time_s", kind="stable")
            t = _ns(g["time_s"].to_numpy(float))
            v = pd.to_numeric(g["used_bytes"], errors="coerce").to_numpy(float)
            ok = np.isfinite(v) & (t >= 0)
            t, v = t[ok], v[ok]
            # several changes at one instant: the last one holds
            keep = np.r_[t[1:] != t[:-1], True] if len(t) else np.zeros(0, bool)
            t, v = _steps(t[keep], v[keep])
            if not len(t):
                continue
            layout.want(proc)
            out += [{"name": f"{_short(dev, proc)} {pool}".strip(), "ph": "C", "ts": _us(a),
                     "pid": proc, "args": {"used_bytes": float(b)}} for a, b in zip(t, v)]
    return out
