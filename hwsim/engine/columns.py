"""Compact columns of a run's event records: dictionary-encoded text, numpy chunks, a spill file.

The recorder appends plain tuples (the cheapest thing during a run) and turns every few tens of
thousands of them into numpy columns (:func:`encode_events`): the five text columns become int32
codes into one :class:`Codes` dictionary each (a value's code is the order it was first seen;
None is -1), times, rank, bytes and FLOPs numpy arrays, and ``seq`` the record's
position (the tie-break that keeps equal rows in the order they were recorded): 68 bytes a row
instead of about 250 for a tuple of Python objects.

Sorted runs of such chunks can leave memory for a :class:`SpillFile` (raw column bytes appended
to one file) and come back merged, in order, by :func:`merge_runs`. Nothing here imports SimPy
or writes result files.
"""

from __future__ import annotations

import os
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, NamedTuple, Sequence

import numpy as np

from hwsim.columnar import Coded, Table

__all__ = ["EVENT_COLUMNS", "TEXT", "DTYPES", "Codes", "RowSet", "encode_events", "row_set",
           "concat", "take",
           "categories", "table",
           "empty_columns", "sort_order", "SpillFile", "merge_runs"]

EVENT_COLUMNS = ("start_s", "end_s", "resource", "kind", "name", "job", "rank", "bytes", "flops",
                 "category")
TEXT = ("resource", "kind", "name", "job", "category")
DTYPES: dict[str, Any] = {"start_s": np.float64, "end_s": np.float64, "rank": np.int64,
                          "bytes": np.float64, "flops": np.float64, "seq": np.int64,
                          **dict.fromkeys(TEXT, np.int32)}
"""The stored dtype of each column (text: codes); ``seq`` is the record's position."""
STORED = (*EVENT_COLUMNS, "seq")

Columns = dict[str, np.ndarray]


class Codes:
    """Dictionary encoding of one column: a value's code is the order it was first seen; None is
    -1."""

    def __init__(self) -> None:
        self.index: dict[Hashable, int] = {None: -1}
        self.values: list[Any] = []

    def code(self, value: Hashable) -> int:
        c = self.index.get(value)
        if c is None:
            c = self.index[value] = len(self.values)
            self.values.append(value)
        return c

    def encode(self, values: Sequence) -> np.ndarray:
        """Codes of *values* (any hashable objects), adding the new ones (dict lookups: several
        times faster than pandas' factorize on objects)."""
        index = self.index
        try:  # most chunks bring no new value
            return np.fromiter(map(index.__getitem__, values), np.int32, len(values))
        except KeyError:
            pass
        for v in values:  # the new ones, in the order first seen
            if v not in index:
                index[v] = len(self.values)
                self.values.append(v)
        return np.fromiter(map(index.__getitem__, values), np.int32, len(values))

    def sorted_rank(self) -> np.ndarray:
        """Each code's position among all values sorted, indexed by code; one more slot at the
        end holds -1, for the code -1."""
        order = sorted(range(len(self.values)), key=self.values.__getitem__)
        rank = np.empty(len(order) + 1, np.int64)
        rank[order] = np.arange(len(order))
        rank[-1] = -1
        return rank


class RowSet(NamedTuple):
    """Rows recorded many times over (:func:`encode_events`): their columns with times
    relative to an occurrence's start and without ``name``, and each row's name suffix."""

    cols: Columns
    suffixes: list[str]


def encode_events(rows: list[tuple], codes: dict[str, Codes], seq0: int,
                  sets: Sequence[RowSet] = ()) -> Columns:
    """Numpy columns of *rows* (tuples in :data:`EVENT_COLUMNS` order); ``seq`` counts from
    *seq0*. A row ``(start, i, prefix)`` stands for the rows of ``sets[i]`` from *start*, each
    named *prefix* + its suffix, numbered in turn."""
    if sets:
        marks = np.fromiter(map(len, rows), np.int64, len(rows)) == 3
        if marks.any():
            return _encode_mixed(rows, codes, seq0, sets, marks)
    n = len(rows)
    cols: Columns = {}
    for i, c in enumerate(EVENT_COLUMNS):  # not zip(*rows): an iterator per row, GC passes
        if c in TEXT:
            cols[c] = codes[c].encode(list(map(itemgetter(i), rows)))
        else:
            cols[c] = np.fromiter(map(itemgetter(i), rows), DTYPES[c], n)
    cols["seq"] = np.arange(seq0, seq0 + n, dtype=np.int64)
    return cols


def _encode_mixed(rows: list[tuple], codes: dict[str, Codes], seq0: int,
                  sets: Sequence[RowSet], marks: np.ndarray) -> Columns:
    """:func:`encode_events` of rows among which some (*marks*) stand for row sets."""
    at = np.flatnonzero(marks)
    entries = [rows[i] for i in at.tolist()]
    which = np.fromiter((e[1] for e in entries), np.int64, len(entries))
    starts = np.fromiter((e[0] for e in entries), np.float64, len(entries))
    count = np.ones(len(rows), np.int64)
    count[at] = np.fromiter((len(x.suffixes) for x in sets), np.int64, len(sets))[which]
    first = seq0 + np.cumsum(count) - count  # each row's (first) seq
    plain = np.flatnonzero(~marks)
    parts = []
    if len(plain):
        cols = encode_events([rows[i] for i in plain.tolist()], codes, 0)
        cols["seq"] = first[plain]
        parts.append(cols)
    for sid in np.unique(which).tolist():
        sel = np.flatnonzero(which == sid)
        rs, m = sets[sid], len(sel)
        t0 = starts[sel][:, None]
        cols = {c: np.tile(v, m) for c, v in rs.cols.items() if c not in ("start_s", "end_s")}
        cols["start_s"] = (t0 + rs.cols["start_s"][None, :]).ravel()
        cols["end_s"] = (t0 + rs.cols["end_s"][None, :]).ravel()
        cols["name"] = codes["name"].encode([entries[i][2] + x for i in sel.tolist()
                                             for x in rs.suffixes])
        k = len(rs.suffixes)
        cols["seq"] = (first[at[sel]][:, None] + np.arange(k)[None, :]).ravel()
        parts.append(cols)
    out = concat(parts)  # in seq order, as encode_events gives them (Recorder.repeat reads the
    return take(out, np.argsort(out["seq"], kind="stable"))  # first row's seq as the least)


def row_set(rows: Sequence[tuple], codes: dict[str, Codes]) -> RowSet:
    """The :class:`RowSet` of *rows* (:data:`EVENT_COLUMNS` tuples, times relative to an
    occurrence's start, ``name`` the suffix)."""
    cols = (encode_events([(*r[:4], None, *r[5:]) for r in rows], codes, 0) if rows
            else empty_columns())
    cols.pop("name")
    cols.pop("seq")
    return RowSet(cols, [r[4] for r in rows])


def empty_columns() -> Columns:
    return {c: np.empty(0, DTYPES[c]) for c in STORED}


def concat(chunks: Sequence[Columns]) -> Columns:
    if not chunks:
        return empty_columns()
    if len(chunks) == 1:
        return chunks[0]
    return {c: np.concatenate([ch[c] for ch in chunks]) for c in STORED}


def take(cols: Columns, index: np.ndarray | slice) -> Columns:
    return {c: v[index] for c, v in cols.items()}


def sort_order(cols: Columns, resource_rank: np.ndarray) -> np.ndarray:
    """The order of the events frame: start, end, resource name (its *resource_rank*), then
    the order recorded."""
    return np.lexsort((cols["seq"], resource_rank[cols["resource"]], cols["end_s"],
                       cols["start_s"]))


class SpillFile:
    """Sorted runs of event columns written to one file as they come (raw bytes of each column
    in turn) and read back in slices; the file is the caller's to place and remove."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "wb")  # noqa: SIM115 - kept open for the run
        self.runs: list[tuple[int, dict[str, int]]] = []  # (rows, column -> byte offset)
        self._at = 0

    def add_run(self, cols: Columns) -> None:
        n = len(cols["seq"])
        if not n:
            return
        offsets = {}
        for c in STORED:
            data = np.ascontiguousarray(cols[c], dtype=DTYPES[c]).tobytes()
            offsets[c] = self._at
            self._fh.write(data)
            self._at += len(data)
        self.runs.append((n, offsets))

    def rows(self) -> int:
        return sum(n for n, _ in self.runs)

    def read(self, run: int, lo: int, hi: int) -> Columns:
        """Rows [lo, hi) of run *run*."""
        self._fh.flush()
        n, offsets = self.runs[run]
        hi = min(hi, n)
        out = {}
        with open(self.path, "rb") as fh:
            for c in STORED:
                size = np.dtype(DTYPES[c]).itemsize
                fh.seek(offsets[c] + lo * size)
                out[c] = np.frombuffer(fh.read((hi - lo) * size), dtype=DTYPES[c])
        return out

    def close(self, remove: bool = True) -> None:
        if not self._fh.closed:
            self._fh.close()
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def merge_runs(sizes: Sequence[int], read: Callable[[int, int, int], Columns],
               key: Callable[[Columns], tuple[np.ndarray, ...]], batch_rows: int = 16384
               ) -> Iterator[Columns]:
    """Merge runs, each sorted by *key* (a tuple of arrays, most significant first, the last one
    unique), into batches in that order, reading *batch_rows* rows of a run at a time: the
    memory is one slice per run, whatever the runs' lengths."""
    nxt = [min(batch_rows, n) for n in sizes]
    bufs = [read(i, 0, nxt[i]) if n else None for i, n in enumerate(sizes)]
    while True:
        live = [i for i, b in enumerate(bufs) if b is not None and len(b["seq"])]
        if not live:
            return
        keys = {i: key(bufs[i]) for i in live}
        limited = [i for i in live if nxt[i] < sizes[i]]  # rows not read yet: they bound the batch
        bound = min((tuple(k[-1] for k in keys[i]) for i in limited), default=None)
        parts = []
        for i in live:
            if bound is None:
                cut = len(bufs[i]["seq"])
            else:
                cut = int(_at_most(keys[i], bound).sum())  # a prefix: the run is sorted
            if cut:
                parts.append(take(bufs[i], slice(0, cut)))
                bufs[i] = take(bufs[i], slice(cut, None))
            if not len(bufs[i]["seq"]) and nxt[i] < sizes[i]:
                bufs[i] = read(i, nxt[i], nxt[i] + batch_rows)
                nxt[i] = min(nxt[i] + batch_rows, sizes[i])
        out = concat(parts)
        k = key(out)
        yield take(out, np.lexsort(k[::-1]))


def _at_most(keys: tuple[np.ndarray, ...], bound: tuple) -> np.ndarray:
    """Rows whose key tuple is lexicographically <= *bound*."""
    result = keys[-1] <= bound[-1]
    for k, b in zip(keys[-2::-1], bound[-2::-1]):
        result = (k < b) | ((k == b) & result)
    return result


def categories(codes: dict[str, Codes], present: dict[str, np.ndarray]
               ) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per text column, the map from its *codes* to category codes and the categories: the
    values *present* (codes), sorted, as strings. Made once for all the batches of a run."""
    out = {}
    for c, present_codes in present.items():
        values = codes[c].values
        keep = present_codes.tolist()
        keep.sort(key=values.__getitem__)
        lut = np.full(len(values) + 1, -1, np.int64)
        lut[keep] = np.arange(len(keep))
        out[c] = lut, [str(values[k]) for k in keep]
    return out


def table(cols: Columns, codes: dict[str, Codes],
          cats: dict[str, tuple[np.ndarray, list[str]]] | None = None,
          ordered: bool = False) -> Table:
    """The events of *cols* as a :class:`~hwsim.columnar.Table` in the columns of the
    events frame (text columns coded into their categories: by *cats* or the values present),
    sorted as :func:`sort_order` unless *ordered*."""
    if not ordered:
        cols = take(cols, sort_order(cols, codes["resource"].sorted_rank()))
    if cats is None:
        cats = categories(codes, {c: np.unique(cols[c][cols[c] >= 0]) for c in TEXT})
    out: dict[str, Any] = {}
    for c in EVENT_COLUMNS:
        v = cols[c]
        if c in TEXT:
            lut, values = cats[c]
            out[c] = Coded(lut[v], values)
        else:
            out[c] = v
    return Table(out)
