"""The slices of trace.json: every event on its track (a flow on two), the slice budget (the
first part of the run as it is, the rest merged per track), the lanes of overlapping slices, and
their JSON text. The layout is documented in docs/trace.md; :mod:`hwsim.analysis.trace` writes
the file.

Everything over all events is numpy (a gather, a partition, a radix sort by track, running
maxima, sums per group); only what is drawn (at most the budget) goes through Python: laned with
a heap where slices overlap, and written as JSON text with the names encoded once per value.
"""

from __future__ import annotations

import heapq
import json
import math
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from hwsim.analysis.trace_layout import Layout, _short, process_of

if TYPE_CHECKING:
    from hwsim.analysis.trace import TraceEvents

__all__ = ["Slices"]

MERGED_NOTE = "hwsim: later slices merged (trace budget)"


class Slices:
    """Every event of *table* as slices on its tracks (a flow twice: side 0 on its sender's
    ``out`` track, side 1 on its receiver's ``in`` track) with the budget applied: the slices
    that start before the cut as they are, the later ones merged per track into groups; both
    laned (:func:`lanes`). Fills *info* (``events``, ``slices``, ``merged_after_s``)."""

    def __init__(self, table: TraceEvents, max_slices: int, info: dict[str, Any]) -> None:
        c = self.c = table.columns()
        self.values = table.values
        s, e = c["s"], c["e"]
        n = len(s)
        info["events"] = n
        send_of, recv_of = self._tracks(c["resource"])
        send, recv = send_of[self._codes], recv_of[self._codes]  # each event's track(s)
        del self._codes
        self.is_flow = recv >= 0
        flows = np.flatnonzero(self.is_flow)  # drawn twice: where it leaves and where it arrives
        # the events in order of (start, end): as they come (a run's batches), but for rare
        # ties of the start in nanoseconds; in that order, a radix sort by track gives each
        # track's slices by (start, end) unless a track holds both sides of flows
        by_time, ties = _by_time(s, e)
        trusted = not set(send_of.tolist()) & set(recv_of.tolist())
        flows_by_time = flows if by_time is None else by_time[self.is_flow[by_time]]
        self.cut = None
        if n + len(flows) > max(max_slices, 1):  # the k-th start of a slice: of the first k + 1
            k = max(max_slices // 2, 1)  # of each side, both in order of start
            first = by_time[:k + 1] if by_time is not None else slice(0, k + 1)
            self.cut = int(np.partition(np.concatenate([s[first], s[flows_by_time[:k + 1]]]),
                                        k)[k])

        def pick(keep: np.ndarray | None, sides: bool = True) -> tuple[np.ndarray, ...]:
            """The slices of the events *keep* (all: None) as (event, track, start, end, on
            side 1? (with *sides*)), sorted by track, start, end, then side 0 (the event's own
            track or its sender's) before side 1, each in order of event."""
            if by_time is None:
                ev0 = np.arange(n) if keep is None else np.flatnonzero(keep)
                ev1 = flows.copy() if keep is None else flows[keep[flows]]
                for a, b, run in ties:  # (*keep* is one value over a run: one start)
                    for ev in (ev0, ev1):
                        lo, hi = np.searchsorted(ev, (a, b))
                        ev[lo:hi] = run[np.isin(run, ev[lo:hi])]
            else:
                ev0 = by_time if keep is None else by_time[keep[by_time]]
                ev1 = flows_by_time if keep is None else flows_by_time[keep[flows_by_time]]
            event = np.concatenate([ev0, ev1])
            track = np.concatenate([send[ev0], recv[ev1]])
            order = _order(track, s, e, event, trusted)
            event = event[order]
            return (event, track[order], s[event], e[event],
                    order >= len(ev0) if sides else None)

        # the detailed slices (all, under the budget)
        self.event, self.track, self.ts, self.te, side = pick(
            None if self.cut is None else s < self.cut)
        self.side = side.astype(np.int8)
        self.groups = None
        if self.cut is not None:
            event, track, ts, te, _ = pick(s >= self.cut, sides=False)
            self.groups = _groups(event, track, ts, te, c, max_slices - len(self.event))
            del event, track, ts, te
        g = self.groups
        self.lane, glane = _lanes_of(self.track, self.ts, self.te,
                                     None if g is None else (g["track"], g["ts"], g["te"]))
        if g is not None:
            g["lane"] = glane
        info["slices"] = len(self.event) + (0 if g is None else len(g["ka"]))
        info["merged_after_s"] = None if self.cut is None else self.cut / 1e9

    def _tracks(self, resource: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tracks (``(process, thread)``, numbered in order of first appearance) and, per
        resource, its sending and receiving track (-1: not a flow)."""
        self._codes, uniq = _first_seen(resource)
        resources = self.values["resource"]
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
        return np.asarray(send, np.int32), np.asarray(recv, np.int32)

    def _keys(self) -> tuple[np.ndarray, int]:
        track, lane = self.track, self.lane
        if self.groups is not None:
            track = np.concatenate([track, self.groups["track"]])
            lane = np.concatenate([lane, self.groups["lane"]])
        width = int(lane.max()) + 1 if len(lane) else 1
        return np.unique(track.astype(np.int64) * width + lane), width

    def want(self, layout: Layout) -> None:
        """Every (track, lane) a slice is drawn on."""
        keys, width = self._keys()
        for key in keys.tolist():
            proc, thread = self.names[key // width]
            layout.want(proc, thread, key % width)

    def emit(self, layout: Layout) -> Iterator[str]:
        """The JSON text of each trace event: the detailed slices, the flow arrows between
        them, the merged slices and the instant that marks the cut."""
        text = _Text(self, layout)
        yield from text.slices(self.event, self.track, self.lane, self.ts, self.te)
        yield from text.arrows(self)
        if self.cut is None:
            return
        yield from text.groups(self.groups)
        pid = layout.procs[self.names[0][0]]
        yield (f'{{"name":{json.dumps(MERGED_NOTE)},"ph":"i","s":"g","ts":{self.cut / 1000.0!r},'
               f'"pid":{pid},"tid":{pid}}}')


def _first_seen(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of *values* (small integers, -1 or more) numbered in order of first appearance,
    and the distinct values in that order (``pd.factorize`` of them; no sort of the rows)."""
    v = np.asarray(values, np.int64) + 1
    n = len(v)
    first = np.full(int(v.max()) + 1 if n else 0, n, np.int64)
    np.minimum.at(first, v, np.arange(n))
    present = np.flatnonzero(first < n)
    present = present[np.argsort(first[present], kind="stable")]
    lut = np.empty(len(first), np.int64)
    lut[present] = np.arange(len(present))
    return lut[v], present - 1


def _by_time(start: np.ndarray, end: np.ndarray
             ) -> tuple[np.ndarray | None, list[tuple[int, int, np.ndarray]]]:
    """The events in order of (start, end), stable: None and no ties when they come in it;
    None and the ties (event ranges ``[a, b)`` of one start, and their order) when only runs of
    one start are out of order (times rounded to nanoseconds); else the whole order."""
    if len(start) < 2:
        return None, []
    if (start[1:] < start[:-1]).any():
        return np.lexsort((end, start)), []
    bad = np.flatnonzero((start[1:] == start[:-1]) & (end[1:] < end[:-1]))
    if not len(bad):
        return None, []
    runs = np.append(np.flatnonzero(np.r_[True, start[1:] != start[:-1]]), len(start))
    ties = []
    for r in np.unique(np.searchsorted(runs, bad, side="right") - 1).tolist():
        a, b = int(runs[r]), int(runs[r + 1])
        ties.append((a, b, a + np.argsort(end[a:b], kind="stable")))
    return None, ties


def _order(track: np.ndarray, start: np.ndarray, end: np.ndarray, event: np.ndarray,
           trusted: bool) -> np.ndarray:
    """The stable order of slices (of the events *event*, on *track*, in order of start and
    end) by track, start and end (*start* and *end*: per event): a radix sort by track alone,
    unless a track holds both sides of flows (not *trusted*: then checked)."""
    if not len(track):
        return np.zeros(0, np.intp)
    small = track.min() >= 0 and track.max() < 1 << 16
    order = np.argsort(track.astype(np.uint16) if small else track, kind="stable")
    if not trusted:
        t, k = track[order], event[order]
        s, e = start[k], end[k]
        if ((t[1:] == t[:-1]) & ((s[1:] < s[:-1]) | ((s[1:] == s[:-1]) & (e[1:] < e[:-1])))
                ).any():
            order = np.lexsort((end[event], start[event], track))
    return order


def _running_max(first: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The running maximum of *values* (int64) within each segment (*first*: a segment starts
    at that row)."""
    if not len(values):
        return values
    low = int(values.min())
    span = int(values.max()) - low + 1
    if (int(first.sum()) + 1) * span <= 1 << 63:  # segments offset apart: one accumulate
        offset = np.cumsum(first, dtype=np.int64)
        offset *= span
        out = values - low
        out += offset
        np.maximum.accumulate(out, out=out)
        out -= offset
        out += low
        return out
    out = np.empty_like(values)
    bounds = np.r_[np.flatnonzero(first), len(values)]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        out[a:b] = np.maximum.accumulate(values[a:b])
    return out


def lanes(track: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Lane of each slice (rows sorted by track, start, end): 0 unless it overlaps an earlier
    slice of its track, then the lowest free lane. Tracks without overlaps cost numpy only."""
    lane = np.zeros(len(track), np.int32)
    if len(track) < 2:
        return lane
    first = np.r_[True, track[1:] != track[:-1]]
    reach = _running_max(first, end)
    overlap = np.r_[False, ~first[1:] & (start[1:] < reach[:-1])]
    if not overlap.any():
        return lane
    seg = np.cumsum(first) - 1
    bounds = np.r_[np.flatnonzero(first), len(track)]
    for g in np.unique(seg[overlap]).tolist():
        a, b = int(bounds[g]), int(bounds[g + 1])
        busy: list[tuple[int, int]] = []  # (end, lane) of the slices still running
        free: list[int] = []  # lanes free again; a slice takes the lowest, else a new one
        out = []
        for st, en in zip(start[a:b].tolist(), end[a:b].tolist()):
            while busy and busy[0][0] <= st:
                heapq.heappush(free, heapq.heappop(busy)[1])
            ln = heapq.heappop(free) if free else len(busy)
            heapq.heappush(busy, (en, ln))
            out.append(ln)
        lane[a:b] = out
    return lane


def _lanes_of(track: np.ndarray, ts: np.ndarray, te: np.ndarray,
              groups: tuple[np.ndarray, np.ndarray, np.ndarray] | None
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Lanes of the detailed slices (sorted by track, start, end) and of the merged groups
    (sorted by track, start; they start at or after the cut, so after every detailed slice of
    their track: a detailed slice that crosses the cut pushes a group to another lane)."""
    if groups is None:
        return lanes(track, ts, te), None
    n = len(track)
    t = np.concatenate([track, groups[0]])
    order = np.argsort(t, kind="stable")  # both parts sorted; per track, detailed ones first
    lane = np.empty(len(t), np.int32)
    lane[order] = lanes(t[order], np.concatenate([ts, groups[1]])[order],
                        np.concatenate([te, groups[2]])[order])
    return lane[:n], lane[n:]


def _groups(k: np.ndarray, track: np.ndarray, ts: np.ndarray, te: np.ndarray,
            c: dict[str, np.ndarray], budget: int) -> dict[str, np.ndarray]:
    """Merge the slices after the cut (events *k* on *track*, sorted by track, start, end) per
    track: a slice that starts more than the chosen width after every earlier slice of its
    track has ended starts a new group; the width is the smallest that fits *budget* (groups on
    a track never overlap). Returns the groups as arrays (first and last event, track, start,
    end, count, sums of bytes, FLOPs and durations, time covered, uniform job, category and
    rank)."""
    first = np.empty(len(k), bool)
    first[:1] = True
    np.not_equal(track[1:], track[:-1], out=first[1:])
    reach = _running_max(first, te)  # the latest end so far on the track
    gaps = ts[1:] - reach[:-1]
    base = int(first.sum())
    fits = gaps[~first[1:] & (gaps >= 0)]  # where a group may end: nothing of its track runs
    room = max(budget, base) - base
    wide = fits[fits > 0]  # (most gaps are 0: back-to-back work; a partition of them is slow)
    if room >= len(fits):
        width = -1  # every gap splits
    elif room >= len(wide):
        width = 0
    else:  # the room widest gaps split, the narrower ones merge
        width = int(np.partition(wide, len(wide) - 1 - room)[len(wide) - 1 - room])
    del fits, wide
    new = first.copy()
    new[1:] |= gaps > width
    starts = np.flatnonzero(new)
    last = np.append(starts[1:] - 1, len(k) - 1)
    # the time covered: a group's span less the idle gaps inside it
    idle = np.maximum(gaps, 0, out=gaps)
    idle[new[1:]] = 0
    del new, first

    def total(column: str) -> np.ndarray:
        return np.nan_to_num(np.add.reduceat(np.nan_to_num(c[column][k], copy=False), starts))

    out = {"ka": k[starts], "kb": k[last], "track": track[starts], "ts": ts[starts],
           "te": reach[last], "count": np.diff(np.append(starts, len(k))),
           "bytes": total("bytes"), "flops": total("flops"),
           "busy": np.add.reduceat(te - ts, starts)}
    out["covered"] = out["te"] - out["ts"] - np.add.reduceat(np.append(idle, 0), starts)
    for col in ("job", "category", "rank"):  # one value over the group?
        codes = c[col][k]
        if col == "rank":
            codes = np.nan_to_num(codes, copy=False, nan=-2.0)
        out[f"uniform_{col}"] = (np.minimum.reduceat(codes, starts)
                                 == np.maximum.reduceat(codes, starts))
    return out


def _us(ns: np.ndarray, repeats: bool = False) -> list[str]:
    """Nanoseconds as the JSON text of microseconds (``repr`` of ``ns / 1000.0``, as
    ``json.dumps`` writes a float); with *repeats* (durations: many alike) each value once."""
    if repeats and len(ns) > 64:
        values, index = np.unique(ns, return_inverse=True)
        return np.asarray(_us(values), object)[index].tolist()
    return list(map(repr, (ns / 1000.0).tolist()))


class _Text:
    """JSON text of slices, written the way ``json.dumps(..., separators=(",", ":"))`` writes
    the same objects (floats by ``repr``, strings ASCII-escaped): each name, kind, job and
    category encoded once, each thread's ``pid``/``tid`` once, each distinct ``args`` once."""

    def __init__(self, sl: Slices, layout: Layout) -> None:
        self.c, v = sl.c, sl.values
        self.kinds = [json.dumps(str(k)) for k in v["kind"]] + ['"activity"']
        self.names = [None if x is None or x == "" else json.dumps(str(x)) for x in v["name"]]
        self.names.append(None)
        self.jobs = [f',"job":{json.dumps(x)}' if isinstance(x, str) and x else ""
                     for x in v["job"]] + [""]
        self.cats = [f',"category":{json.dumps(x)}' if isinstance(x, str) and x else ""
                     for x in v["category"]] + [""]
        track_of = {name: t for t, name in enumerate(sl.names)}
        self.width = 1 + max((lane for _, _, lane in layout.threads), default=0)
        self.where = np.full(len(sl.names) * self.width, "", object)  # track, lane -> pid, tid
        for (proc, thread, lane), tid in layout.threads.items():
            if (proc, thread) in track_of:
                self.where[track_of[(proc, thread)] * self.width + lane] = \
                    f',"pid":{layout.procs[proc]},"tid":{tid}'
        self._args: dict[tuple, str] = {}

    def place(self, track: np.ndarray, lane: np.ndarray) -> list[str]:
        """The ``,"pid":..,"tid":..`` of each slice."""
        return self.where[track.astype(np.int64) * self.width + lane].tolist()

    def name_kind(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """The encoded name (else the kind) and kind of each event of *rows*."""
        names, kinds = self.names, self.kinds
        kc = self.c["kind"][rows].tolist()
        return ([names[n] or kinds[k] for n, k in zip(self.c["name"][rows].tolist(), kc)],
                [kinds[k] for k in kc])

    def args(self, rows: np.ndarray) -> list[str]:
        """The ``args`` object of each event of *rows*: bytes, flops, job, category, rank (NaN
        and missing ones left out), each distinct one written once."""
        c, cache = self.c, self._args
        missing = np.inf  # NaN as a key would never match itself
        number = [np.where(np.isfinite(v), v + 0.0, missing).tolist()  # (-0.0 is 0.0)
                  for v in (c["bytes"][rows], c["flops"][rows], c["rank"][rows])]
        out = []
        for key in zip(*number, c["job"][rows].tolist(), c["category"][rows].tolist()):
            text = cache.get(key)
            if text is None:
                b, f, r, j, cat = key
                text = (f',"bytes":{b!r}' if b != missing else "") + \
                    (f',"flops":{f!r}' if f != missing else "") + self.jobs[j] + \
                    self.cats[cat] + (f',"rank":{int(r)}' if r != missing else "")
                text = cache[key] = "{" + text[1:] + "}"
            out.append(text)
        return out

    def slices(self, event: np.ndarray, track: np.ndarray, lane: np.ndarray, ts: np.ndarray,
               te: np.ndarray) -> Iterator[str]:
        names, kinds = self.name_kind(event)
        for name, kind, a, d, w, args in zip(names, kinds, _us(ts), _us(te - ts, True),
                                             self.place(track, lane), self.args(event)):
            yield f'{{"name":{name},"cat":{kind},"ph":"X","ts":{a},"dur":{d}{w},"args":{args}}}'

    def arrows(self, sl: Slices) -> Iterator[str]:
        """An arrow from each flow's sending slice to its receiving one, both drawn (in order
        of the first of them drawn); none for a flow shorter than 2 ns."""
        rows = np.flatnonzero(sl.is_flow[sl.event])
        if not len(rows):
            return
        k = sl.event[rows]
        by = np.lexsort((sl.side[rows], k))  # per flow: its side 0, then its side 1
        rows, k = rows[by], k[by]
        pair = np.flatnonzero((k[1:] == k[:-1]) & (sl.side[rows[:-1]] == 0)
                              & (sl.side[rows[1:]] == 1))
        snd, rcv = rows[pair], rows[pair + 1]
        keep = sl.te[snd] - sl.ts[snd] >= 2
        snd, rcv = snd[keep], rcv[keep]
        by = np.argsort(np.minimum(snd, rcv), kind="stable")
        snd, rcv = snd[by], rcv[by]
        for k, mid, w_snd, w_rcv in zip(sl.event[snd].tolist(), _us((sl.ts[snd] + sl.te[snd]) // 2),
                                        self.place(sl.track[snd], sl.lane[snd]),
                                        self.place(sl.track[rcv], sl.lane[rcv])):
            yield f'{{"name":"flow","cat":"flow","ph":"s","id":{k},"ts":{mid}{w_snd}}}'
            yield f'{{"name":"flow","cat":"flow","ph":"f","bp":"e","id":{k},"ts":{mid}{w_rcv}}}'

    def groups(self, g: dict[str, np.ndarray]) -> list[str]:
        """The merged slices, in order; a group of one event is that event's slice."""
        one = g["count"] == 1
        out = np.empty(len(one), object)
        out[one] = list(self.slices(*(g[k][one] for k in ("ka", "track", "lane", "ts", "te"))))
        out[~one] = self.merged(g, np.flatnonzero(~one))
        return out.tolist()

    def merged(self, g: dict[str, np.ndarray], rows: np.ndarray) -> list[str]:
        """The slices of the groups *rows* of several events."""
        ka = g["ka"][rows]
        c, jobs, cats = self.c, self.jobs, self.cats
        names, kinds = self.name_kind(ka)
        lasts, _ = self.name_kind(g["kb"][rows])
        ts, te, busy, covered = (g[k][rows] for k in ("ts", "te", "busy", "covered"))
        out = []
        for (start, dur, w, n, nbytes, flops, busy, overlap, covered, same_job, same_cat,
             same_rank, job, cat, rank, name, kind, last) in zip(
                _us(ts), _us(te - ts, True), self.place(g["track"][rows], g["lane"][rows]),
                *(g[k][rows].tolist() for k in ("count", "bytes", "flops")), _us(busy, True),
                (busy != covered).tolist(), _us(covered, True),
                *(g[k][rows].tolist() for k in ("uniform_job", "uniform_category",
                                                 "uniform_rank")),
                c["job"][ka].tolist(), c["category"][ka].tolist(), c["rank"][ka].tolist(),
                names, kinds, lasts):
            extra = (f',"covered_us":{covered}' if overlap else "") + \
                (jobs[job] if same_job else "") + (cats[cat] if same_cat else "") + \
                (f',"rank":{int(rank)}' if same_rank and math.isfinite(rank) else "")
            out.append(f'{{"name":"{n} \\u00d7 {kind[1:-1]}","cat":"merged","ph":"X",'
                       f'"ts":{start},"dur":{dur}{w},"args":{{"events":{n},"first":{name},'
                       f'"last":{last},"bytes":{nbytes!r},"flops":{flops!r},'
                       f'"busy_us":{busy}{extra}}}}}')
        return out
