"""Channel loads and utilization frames from a recorder's compact records (numpy in, pandas out).

Channels (link directions, storage channels) come from their load *levels* ``(time, channel
code, bytes/s)`` and the *pulses* of repeated blocks; device streams from the ``(start, end,
resource)`` of their work intervals. Both are step functions, integrated exactly per bin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Hashable, Sequence

import numpy as np

if TYPE_CHECKING:  # pandas only where a frame is built: the engine runs without it
    import pandas as pd

__all__ = ["Levels", "loads_frame", "utilization_frame", "channel_name"]

LOAD_COLUMNS = ["time_s", "resource", "resource_class", "load_bytes_per_s", "capacity_bytes_per_s"]
UTIL_COLUMNS = ["time_s", "bin_s", "resource", "resource_class", "utilization", "bytes"]

Pulses = dict[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray]]


class Levels:
    """The load levels of a run's channels as numpy columns: ``time``, ``code`` (into
    ``channels``) and ``load``, in the order recorded."""

    def __init__(self, time: np.ndarray, code: np.ndarray, load: np.ndarray,
                 channels: Sequence[Hashable]) -> None:
        self.time, self.code, self.load, self.channels = time, code, load, channels

    def by_channel(self) -> dict[Hashable, tuple[np.ndarray, np.ndarray]]:
        """Per channel (in the order first recorded), its (times, loads) in recorded order."""
        if not len(self.code):
            return {}
        code = self.code
        small = len(self.channels) <= 1 << 16 and code.min() >= 0  # a radix sort
        by = np.argsort(code.astype(np.uint16) if small else code, kind="stable")
        bounds = np.searchsorted(code[by], np.arange(len(self.channels) + 1))
        present = np.flatnonzero(bounds[1:] > bounds[:-1])
        firsts = present[np.argsort(by[bounds[present]])].tolist()  # a stable sort: by[a] is
        # the channel's first record
        return {self.channels[c]: (self.time[by[bounds[c]:bounds[c + 1]]],
                                   self.load[by[bounds[c]:bounds[c + 1]]]) for c in firsts}


def channel_name(res: Hashable) -> str:
    if isinstance(res, tuple) and len(res) == 2:
        return f"{res[0]}->{res[1]}"
    return str(res)


def loads_frame(levels: Levels, pulses: Pulses, capacity: dict, label: dict) -> pd.DataFrame:
    """The load of every shared channel as a step function: one row per change, ``time_s,
    resource, resource_class, load_bytes_per_s, capacity_bytes_per_s``; the load holds from
    ``time_s`` until the resource's next row (levels and block pulses added together)."""
    import pandas as pd

    steps: dict[Hashable, list[tuple[np.ndarray, np.ndarray]]] = {}
    for res, (t, v) in levels.by_channel().items():
        # a level is absolute: as deltas it is v[i] - v[i-1]
        steps.setdefault(res, []).append((t, np.diff(v, prepend=0.0)))
    for res, (a, b, load) in pulses.items():
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


def utilization_frame(end_s: float, bin_s: float | None, levels: Levels, pulses: Pulses,
                      capacity: dict, label: dict,
                      streams: tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]] | None,
                      slots: dict[str, int]) -> pd.DataFrame:
    """Busy fraction per resource and time bin (:meth:`hwsim.engine.Recorder.utilization_frame`).

    *streams*: the ``(starts, ends, resource codes, resource names)`` of the work on device
    streams, or None for channels only."""
    import pandas as pd

    if end_s <= 0:
        return pd.DataFrame(columns=UTIL_COLUMNS)
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
    for res, (t, v) in levels.by_channel().items():
        carried_by[res] = np.diff(_integral_at(t, v, edges))
    for res, (a, b, load) in pulses.items():
        t = np.concatenate([a, b])
        delta = np.concatenate([load, -load])
        order = np.argsort(t, kind="stable")
        pulse = np.diff(_integral_at(t[order], np.cumsum(delta[order]), edges))
        carried_by[res] = carried_by.get(res, 0.0) + pulse
    for res in sorted(carried_by, key=channel_name):
        carried = carried_by[res]
        resources.append(channel_name(res))
        classes.append(label.get(res, ""))
        util.append(np.clip(carried / (capacity[res] * bin_s), 0.0, 1.0))
        carried_all.append(carried)
    if streams is not None and len(streams[0]):
        starts_all, ends_all, codes, names = streams
        by = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[by], np.arange(len(names) + 1))
        for k in sorted(np.unique(codes).tolist(), key=lambda c: str(names[c])):
            idx = by[bounds[k]:bounds[k + 1]]
            _stream_row(str(names[k]), starts_all[idx], ends_all[idx], slots, edges, bin_s,
                        resources, classes, util, carried_all, nb)
    if not resources:
        return pd.DataFrame(columns=UTIL_COLUMNS)
    k = len(resources)
    return pd.DataFrame({
        "time_s": np.tile(edges[:-1], k), "bin_s": bin_s,
        "resource": np.repeat(np.asarray(resources, dtype=object), nb),
        "resource_class": np.repeat(np.asarray(classes, dtype=object), nb),
        "utilization": np.concatenate(util), "bytes": np.concatenate(carried_all)},
        columns=UTIL_COLUMNS)


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
