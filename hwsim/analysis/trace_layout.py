"""The layout of trace.json (processes, threads, their ids and metadata) and its counter tracks
(utilization and memory); the slices are :mod:`hwsim.analysis.trace`'s. The layout is documented
in docs/trace.md.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from hwsim.columnar import Table

if TYPE_CHECKING:
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


def _label(res: str) -> tuple[str, str]:
    """The process and counter name of a utilization resource."""
    src, arrow, dst = res.partition("->")
    if arrow and dst in _CHANNEL_OPS:  # a storage tier's read or write channel
        proc = process_of(src)
        return proc, f"{_short(src, proc)} {dst}"
    if arrow:  # a link direction
        proc = process_of(src)
        return proc, f"link {_short(src, proc)}->{_short(dst, proc) if process_of(dst) == proc else dst}"
    dev, slash, stream = res.rpartition("/")
    dev = dev if slash else res
    proc = process_of(dev)
    return proc, f"{_short(dev, proc)} {stream}".strip()


def _rows(table: Table, value: str) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    """Per row of *table*: the code of its resource (into the sorted names, -1 missing), the
    names, its time in ns and its *value*; rows without a finite value or with a negative time
    marked -1."""
    codes, names = table.text("resource")
    t = _ns(table.numbers("time_s"))
    v = table.floats(value)
    valid = np.isfinite(v) & (t >= 0)
    if "" in names:  # a missing resource
        valid &= codes != names.index("")
    return np.where(valid, codes, -1), names, t, v


def _tracks(code: np.ndarray, t: np.ndarray, v: np.ndarray) -> Iterator[tuple[int, np.ndarray,
                                                                            np.ndarray]]:
    """Per resource (rows grouped by code, in order), its samples with the repeats of the
    previous value dropped (counters are step functions)."""
    first = np.r_[True, code[1:] != code[:-1]] if len(code) else np.zeros(0, bool)
    keep = first.copy()
    keep[1:] |= v[1:] != v[:-1]
    code, t, v, first = code[keep], t[keep], v[keep], first[keep]
    bounds = np.r_[np.flatnonzero(first), len(code)]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        yield int(code[a]), t[a:b], v[a:b]


class Counters:
    """The counter tracks of a trace: the utilization (busy fraction) of every resource of
    *utilization* and the bytes in use of every pool of *memory*, each a step function with
    repeats dropped, in the process of the resource's node. Built as arrays (a sort by
    resource, no group objects); :meth:`emit` yields the ``C`` events once the layout is
    numbered."""

    def __init__(self, utilization: pd.DataFrame | Table | None,
                 memory: pd.DataFrame | Table | None) -> None:
        self.tracks: list[tuple[str, str, str, np.ndarray, np.ndarray]] = []
        utilization = None if utilization is None else Table.of(utilization)
        memory = None if memory is None else Table.of(memory)
        if utilization is not None and len(utilization) and \
                {"resource", "time_s", "utilization"} <= set(utilization.columns):
            codes, names, t, v = _rows(utilization, "utilization")
            rows = np.flatnonzero(codes >= 0)
            rows = rows[np.argsort(codes[rows], kind="stable")]  # per resource, in order
            code, t, v = codes[rows], t[rows], v[rows]
            if "bin_s" in utilization and len(rows):  # the series drops to 0 after its last bin
                w = _ns(utilization.numbers("bin_s"))[rows]
                last = np.r_[code[1:] != code[:-1], True]
                after = np.flatnonzero(last) + 1
                t = np.insert(t, after, t[last] + w[last])
                v = np.insert(v, after, 0.0)
                code = np.insert(code, after, code[last])
            for k, tk, vk in _tracks(code, t, v):
                self.tracks.append((*_label(str(names[k])), "utilization", tk, vk))
        if memory is not None and len(memory) and {"resource", "time_s", "used_bytes"} <= \
                set(memory.columns):
            codes, names, t, v = _rows(memory, "used_bytes")
            rows = np.lexsort((memory.numbers("time_s"), codes))  # per pool, by time
            rows = rows[codes[rows] >= 0]
            code, t, v = codes[rows], t[rows], v[rows]
            # several changes at one instant: the last one holds
            keep = np.r_[(t[1:] != t[:-1]) | (code[1:] != code[:-1]), True] if len(t) else \
                np.zeros(0, bool)
            for k, tk, vk in _tracks(code[keep], t[keep], v[keep]):
                res = str(names[k])
                dev, slash, pool = res.rpartition("/")
                dev = dev if slash else res
                proc = process_of(dev)
                self.tracks.append((proc, f"{_short(dev, proc)} {pool}".strip(), "used_bytes",
                                    tk, vk))

    def __len__(self) -> int:
        return len(self.tracks)

    def want(self, layout: Layout) -> None:
        for proc, *_ in self.tracks:
            layout.want(proc)

    def emit(self, layout: Layout) -> Iterator[str]:
        """The JSON text of the ``C`` events (as ``json.dumps`` writes them, compact);
        process-level: the tid of the process's main thread, its pid."""
        for proc, label, arg, t, v in self.tracks:
            pid = layout.procs[proc]
            head = f'{{"name":{json.dumps(label)},"ph":"C","ts":'
            tail = f',"pid":{pid},"args":{{{json.dumps(arg)}:'
            end = f'}},"tid":{pid}}}'
            for a, b in zip(t.tolist(), v.astype(float).tolist()):
                yield f"{head}{a / 1000.0!r}{tail}{b!r}{end}"
