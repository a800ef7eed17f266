"""The layout of trace.json (processes, threads, their ids and metadata) and its counter tracks
(utilization and memory); the slices are :mod:`hwsim.analysis.trace`'s. The layout is documented
in docs/trace.md.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import numpy as np
import pandas as pd

__all__ = ["process_of", "Layout", "Counters"]

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


class Layout:
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


def _steps(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop samples that repeat the previous value (counters are step functions)."""
    keep = np.r_[True, values[1:] != values[:-1]] if len(values) else np.zeros(0, bool)
    return times[keep], values[keep]


class Counters:
    """The counter tracks of a trace: the utilization (busy fraction) of every resource of
    *utilization* and the bytes in use of every pool of *memory*, each a step function with
    repeats dropped, in the process of the resource's node. Built as arrays; :meth:`emit` yields
    the ``C`` events once the layout is numbered."""

    def __init__(self, utilization: pd.DataFrame | None, memory: pd.DataFrame | None) -> None:
        self.tracks: list[tuple[str, str, str, np.ndarray, np.ndarray]] = []
        if utilization is not None and len(utilization) and \
                {"resource", "time_s", "utilization"} <= set(utilization.columns):
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
                self.tracks.append((proc, label, "utilization", t, v))
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
                self.tracks.append((proc, f"{_short(dev, proc)} {pool}".strip(), "used_bytes",
                                    t, v))

    def __len__(self) -> int:
        return len(self.tracks)

    def want(self, layout: Layout) -> None:
        for proc, *_ in self.tracks:
            layout.want(proc)

    def emit(self, layout: Layout) -> Iterator[dict[str, Any]]:
        """The ``C`` events; process-level: the tid of the process's main thread, its pid."""
        for proc, label, arg, t, v in self.tracks:
            pid = layout.procs[proc]
            for a, b in zip(t.tolist(), v.tolist()):
                yield {"name": label, "ph": "C", "ts": a / 1000.0, "pid": pid,
                       "args": {arg: float(b)}, "tid": pid}
