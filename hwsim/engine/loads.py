"""Channel loads and utilization frames from a recorder's compact records (numpy in, pandas out).

Channels (link directions, storage channels) come from their load *levels* ``(time, channel
code, bytes/s)`` and the *pulses* of repeated blocks; device streams from the ``(start, end,
resource)`` of their work intervals. Both are step functions, integrated exactly per bin.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Hashable, Iterator, NamedTuple, Sequence

import numpy as np

from hwsim.columnar import Coded, Table

if TYPE_CHECKING:  # pandas only where a frame is built: the engine runs without it
    import pandas as pd

__all__ = ["Block", "Levels", "Pulses", "channel_name", "expand", "loads_frame",
           "utilization_table", "union_busy_s"]

LOAD_COLUMNS = ["time_s", "resource", "resource_class", "load_bytes_per_s", "capacity_bytes_per_s"]
UTIL_COLUMNS = ["time_s", "bin_s", "resource", "resource_class", "utilization", "bytes"]

class Pulses(NamedTuple):
    """The pulses of a run's repeated blocks as numpy columns: a channel (``code``, into the
    levels' ``channels``) carries ``load`` bytes/s on top of its levels from ``start`` to
    ``end``; per channel in the order recorded."""

    start: np.ndarray
    end: np.ndarray
    load: np.ndarray
    code: np.ndarray


class Block(NamedTuple):
    """The pulses of one repeated block (relative ``start``, ``end``, ``load``, channel
    ``code``, one entry per pulse) at each of its occurrences' start times ``at``."""

    start: np.ndarray
    end: np.ndarray
    load: np.ndarray
    code: np.ndarray
    at: np.ndarray


CHUNK = 1 << 17
"""Pulses expanded at a time (a few MB a column: the arrays stay in cache, and a run's
millions of pulses are never held at once)."""


def expand(blocks: Sequence[Block], rows: int = CHUNK) -> Iterator[Pulses]:
    """The pulses of *blocks* at every occurrence, in chunks of about *rows*: in the order of
    the block, its pulse, the occurrence within a chunk (a block with more pulses at its
    occurrences than *rows* is split between chunks by occurrence)."""
    parts: list[Pulses] = []
    held = 0
    for b in blocks:
        k = len(b.start)
        if not k:
            continue
        per = max(1, rows // k)
        for i in range(0, len(b.at), per):
            t0 = b.at[i:i + per]
            n = len(t0)
            parts.append(Pulses((b.start[:, None] + t0).ravel(), (b.end[:, None] + t0).ravel(),
                                np.repeat(b.load, n), np.repeat(b.code, n)))
            held += k * n
            if held >= rows:
                yield _joined(parts)
                parts, held = [], 0
    if parts:
        yield _joined(parts)


def _joined(parts: Sequence[Pulses]) -> Pulses:
    return parts[0] if len(parts) == 1 else Pulses(*(np.concatenate(x) for x in zip(*parts)))


class Levels:
    """The load levels of a run's channels as numpy columns: ``time``, ``code`` (into
    ``channels``) and ``load``, in the order recorded."""

    def __init__(self, time: np.ndarray, code: np.ndarray, load: np.ndarray,
                 channels: Sequence[Hashable]) -> None:
        self.time, self.code, self.load, self.channels = time, code, load, channels

    def by_channel(self) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
        """Per channel (in the order first recorded), its (times, loads) in recorded order."""
        return _by_code(self.code, self.channels, self.time, self.load)

    def segments(self) -> Pulses:
        """The levels as pulses: each level from its time to the channel's next (the last one
        without end), by channel."""
        by = _code_order(self.code, len(self.channels))
        code, start = self.code[by], self.time[by]
        end = np.full(len(start), np.inf)
        more = np.flatnonzero(code[1:] == code[:-1])  # not the channel's last level
        end[more] = start[more + 1]
        return Pulses(start, end, self.load[by], code)


def _code_order(code: np.ndarray, n: int) -> np.ndarray:
    """A stable order of *code* (n codes from 0): a radix sort when they fit 16 bits."""
    small = n <= 1 << 16 and (not len(code) or code.min() >= 0)
    return np.argsort(code.astype(np.uint16) if small else code, kind="stable")


def _by_code(code: np.ndarray, channels: Sequence[Hashable], *columns: np.ndarray
             ) -> dict[Hashable, tuple[np.ndarray, ...]]:
    """Per channel (in the order first recorded), its rows of *columns* in recorded order."""
    if not len(code):
        return {}
    by = _code_order(code, len(channels))
    bounds = np.searchsorted(code[by], np.arange(len(channels) + 1))
    present = np.flatnonzero(bounds[1:] > bounds[:-1])
    firsts = present[np.argsort(by[bounds[present]])].tolist()  # a stable sort: by[a] is
    # the channel's first record
    return {channels[c]: tuple(x[by[bounds[c]:bounds[c + 1]]] for x in columns)
            for c in firsts}


def channel_name(res: Hashable) -> str:
    if isinstance(res, tuple) and len(res) == 2:
        return f"{res[0]}->{res[1]}"
    return str(res)


def loads_frame(levels: Levels, blocks: Sequence[Block], capacity: dict, label: dict
                ) -> pd.DataFrame:
    """The load of every shared channel as a step function: one row per change, ``time_s,
    resource, resource_class, load_bytes_per_s, capacity_bytes_per_s``; the load holds from
    ``time_s`` until the resource's next row (levels and block pulses added together)."""
    import pandas as pd

    steps: dict[Hashable, list[tuple[np.ndarray, np.ndarray]]] = {}
    for res, (t, v) in levels.by_channel().items():
        # a level is absolute: as deltas it is v[i] - v[i-1]
        steps.setdefault(res, []).append((t, np.diff(v, prepend=0.0)))
    pulses = _joined([*expand(blocks, rows=sys.maxsize)]  # one chunk: the order recorded
                     or [Pulses(*[np.empty(0)] * 3, np.empty(0, np.int32))])
    for res, (a, b, load) in _by_code(pulses.code, levels.channels, pulses.start, pulses.end,
                                      pulses.load).items():
        steps.setdefault(res, []).append((np.concatenate([a, b]),
                                          np.concatenate([load, -load])))
    frames = []
    for res in sorted(steps, key=channel_name):
        t = np.concatenate([x[0] for x in steps[res]])
        d = np.concatenate([x[1] for x in steps[res]])
        order = np.argsort(t, kind="stable")
        t, level = t[order], np.cumsum(d[order])
        keep = np.append(t[1:] != t[:-1], True)  # the last value at each instant
        frames.append(pd.DataFrame({
            "time_s": t[keep], "resource": channel_name(res),
            "resource_class": label.get(res, ""),
            "load_bytes_per_s": np.maximum(level[keep], 0.0),
            "capacity_bytes_per_s": capacity[res]}, columns=LOAD_COLUMNS))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("resource", "resource_class")
                                          else float) for c in LOAD_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def union_busy_s(starts: np.ndarray, ends: np.ndarray, codes: np.ndarray, names: Sequence[str],
                 end_s: float, suffix: str) -> dict[str, float]:
    """Per stream whose name ends with *suffix* (the key: the name without it), the length of
    the union of its work's intervals ``[starts, ends)`` clipped to ``[0, end_s]``."""
    out: dict[str, float] = {}
    for c, idx in _by_stream(codes, len(names)).items():
        name = str(names[c])
        if name.endswith(suffix):
            a, b = _union(np.clip(starts[idx].astype(float), 0.0, end_s),
                          np.clip(ends[idx].astype(float), 0.0, end_s))
            out[name.removesuffix(suffix)] = float(np.sum(b - a))
    return out


def _by_stream(codes: np.ndarray, n: int) -> dict[int, np.ndarray]:
    """The rows of each stream code present in *codes* (n codes in all), in code order."""
    by = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[by], np.arange(n + 1))
    return {k: by[bounds[k]:bounds[k + 1]] for k in np.unique(codes).tolist()}


def utilization_table(end_s: float, bin_s: float | None, levels: Levels, blocks: Sequence[Block],
                      capacity: dict, label: dict,
                      streams: tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]] | None,
                      slots: dict[str, int]) -> Table:
    """Busy fraction per resource and time bin (:meth:`hwsim.engine.Recorder.utilization_table`).

    *streams*: the ``(starts, ends, resource codes, resource names)`` of the work on device
    streams, or None for channels only."""
    if end_s <= 0:
        return _no_utilization()
    if bin_s is None:
        bin_s = end_s / 100.0
    nbins = max(1, int(np.ceil(end_s / bin_s - 1e-9)))
    edges = np.arange(nbins + 1) * bin_s
    nb = len(edges) - 1
    resources: list[str] = []
    classes: list[str] = []
    util: list[np.ndarray] = []
    carried_all: list[np.ndarray] = []
    code = np.concatenate([levels.code, *(b.code for b in blocks)])
    if len(code):
        present = np.flatnonzero(np.bincount(code, minlength=len(levels.channels)))
        compact = np.zeros(len(levels.channels), np.int64)
        compact[present] = np.arange(len(present))
        acc = _Binned(edges, len(present))
        seg = levels.segments()
        for i in range(0, len(seg.code), CHUNK):
            acc.add(compact[seg.code[i:i + CHUNK]], seg.start[i:i + CHUNK],
                    seg.end[i:i + CHUNK], seg.load[i:i + CHUNK])
        for p in expand(blocks):
            acc.add(compact[p.code], p.start, p.end, p.load)
        carried = acc.carried()
        names = [channel_name(levels.channels[c]) for c in present.tolist()]
        order = sorted(range(len(present)), key=names.__getitem__)
        keys = [levels.channels[c] for c in present[order].tolist()]
        carried = carried[order]
        resources += [names[i] for i in order]
        classes += [label.get(res, "") for res in keys]
        cap = np.fromiter((capacity[res] for res in keys), float, len(keys))
        util += list(np.clip(carried / (cap[:, None] * bin_s), 0.0, 1.0))
        carried_all += list(carried)
    if streams is not None and len(streams[0]):
        starts_all, ends_all, codes, names = streams
        rows = _by_stream(codes, len(names))
        for k in sorted(rows, key=lambda c: str(names[c])):
            idx = rows[k]
            _stream_row(str(names[k]), starts_all[idx], ends_all[idx], slots, edges, bin_s,
                        resources, classes, util, carried_all, nb)
    if not resources:
        return _no_utilization()
    k = len(resources)
    return Table({
        "time_s": np.tile(edges[:-1], k), "bin_s": np.full(k * nb, float(bin_s)),
        "resource": Coded(np.repeat(np.arange(k), nb), resources, plain=True),
        "resource_class": Coded(np.repeat(np.arange(k), nb), classes, plain=True),
        "utilization": np.concatenate(util), "bytes": np.concatenate(carried_all)})


def _no_utilization() -> Table:
    return Table({c: [] if c in ("resource", "resource_class") else np.empty(0)
                  for c in UTIL_COLUMNS})


def _stream_row(name: str, starts: np.ndarray, ends: np.ndarray, slots: dict[str, int],
                edges: np.ndarray, bin_s: float, resources: list, classes: list, util: list,
                carried_all: list, nb: int) -> None:
    """One device stream's bins: the covered share of each (a pool of slots: busy slots over
    slots)."""
    n = slots.get(name, 1)
    # a pool of slots (a server's threads): busy slots over slots; a stream: covered
    if n <= 1:
        starts, ends = _union(starts, ends)
    # busy(t) as a step function: +1 at starts, -1 at ends
    t = np.concatenate([starts, ends])
    d = np.concatenate([np.ones_like(starts), -np.ones_like(ends)])
    order = np.argsort(t, kind="stable")
    t, level = t[order], np.cumsum(d[order])
    busy = np.diff(_integral_at(t, level, edges)) / n
    resources.append(name)
    classes.append("stream")
    util.append(np.clip(busy / bin_s, 0.0, 1.0))
    carried_all.append(np.full(nb, np.nan))


class _Binned:
    """Bytes per (channel code, bin) of pulses added in chunks: for every pulse, its load times
    its overlap with the bin (*n* channels, codes from 0; bins between *edges*, which start at
    0). The bins a pulse starts and ends in get their partial overlaps; the bins between, its
    load as a rate (added at the first, taken off after the last, summed along the bins once
    at the end)."""

    def __init__(self, edges: np.ndarray, n: int) -> None:
        self.edges, self.n, self.nb = edges, n, len(edges) - 1
        self.size = n * (self.nb + 1)
        self.direct = np.zeros(self.size)
        self.rate = np.zeros(self.size)

    def add(self, code: np.ndarray, start: np.ndarray, end: np.ndarray, load: np.ndarray
            ) -> None:
        edges, size = self.edges, self.size
        a, b = np.maximum(start, 0.0), np.minimum(end, edges[-1])
        keep = (b > a) & (load != 0)
        if not keep.all():
            code, a, b, load = code[keep], a[keep], b[keep], load[keep]
        ia, ib = _bin_of(a, edges), _bin_of(b, edges)  # ib: nb for a pulse up to the end
        row = code * (self.nb + 1)
        same = ia == ib
        self.direct += np.bincount(row + ia, load * (np.where(same, b, edges[ia + 1]) - a),
                                   minlength=size)
        apart = np.flatnonzero(~same)
        if len(apart):
            r, i, j, w = row[apart], ia[apart], ib[apart], load[apart]
            self.direct += np.bincount(r + j, w * (b[apart] - edges[j]), minlength=size)
            full = j > i + 1
            if full.any():
                r, w = r[full], w[full]
                self.rate += np.bincount(r + i[full] + 1, w, minlength=size)
                self.rate -= np.bincount(r + j[full], w, minlength=size)

    def carried(self) -> np.ndarray:
        n, nb = self.n, self.nb
        width = np.append(np.diff(self.edges), 0.0)
        out = self.direct.reshape(n, nb + 1) + np.cumsum(self.rate.reshape(n, nb + 1),
                                                         axis=1) * width
        return out[:, :nb]


def _bin_of(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each x in [0, edges[-1]]: ``searchsorted(edges, x, "right") - 1``, for the
    evenly spaced edges from 0 by division and a correction where it rounds across an edge."""
    nb = len(edges) - 1
    k = np.minimum((x * (nb / edges[-1])).astype(np.int64), nb)
    k -= edges[k] > x
    k += edges[np.minimum(k + 1, nb)] <= x
    return np.minimum(k, nb)


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
