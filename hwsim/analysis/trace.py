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
  rest is merged per stream: activities separated by idle gaps up to a chosen width become one
  slice (``cat: "merged"``, args: how many, the first and last names, summed bytes, FLOPs and
  busy time); a stream's merged slices never overlap each other. An instant event marks where
  merging starts.

Times are integer nanoseconds, written as microseconds with three decimals, so nesting checks
done here hold in the viewer, which converts back to nanoseconds.

The events come in frames (:class:`TraceEvents` keeps them as compact columns, about 60 bytes an
event, so a run's events can be streamed in batches). The slices, the budget and the lanes are
:mod:`hwsim.analysis.trace_slices`' (numpy over all events, Python only over what is drawn).
:func:`write_trace` writes the file as it goes, a few thousand trace events at a time, each as
JSON text made directly; :func:`chrome_trace` parses the same text into one object, so the two
agree byte for byte.
"""

from __future__ import annotations

import json
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from hwsim.analysis.trace_layout import Counters, Layout, _ns, process_of
from hwsim.columnar import Coded, Table

if TYPE_CHECKING:
    import pandas as pd
from hwsim.analysis.trace_slices import Slices

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
        self._luts: dict[str, tuple[list, np.ndarray]] = {}

    def _code(self, column: str, value: Any) -> int:
        index = self._index[column]
        c = index.get(value)
        if c is None:
            c = index[value] = len(self.values[column])
            self.values[column].append(value)
        return c

    def _lut(self, column: str, uniques: Any) -> np.ndarray:
        """The codes of *uniques*, then the code of a missing value."""
        if column == "resource":  # as text: a missing one is "nan"
            lut = [self._code(column, str(u)) for u in uniques] + [self._code(column, "nan")]
        elif column in ("name", "kind"):
            lut = [self._code(column, str(u)) for u in uniques] + [-1]
        else:
            lut = [self._code(column, u) for u in uniques] + [-1]
        return np.asarray(lut, np.int32)

    def _encode(self, column: str, table: Table) -> np.ndarray:
        col = table[column] if table.frame is None else table.frame[column]
        if table.frame is not None and col.dtype.name == "category":
            col = Coded(col.cat.codes.to_numpy(), list(col.cat.categories))
        if isinstance(col, Coded):  # the batches of a run: the same categories each time,
            last = self._luts.get(column)  # coded once
            if last is None or last[0] != list(col.values):
                last = self._luts[column] = (list(col.values), self._lut(column, col.values))
            return last[1][np.asarray(col.codes)]  # -1 (missing): the last entry
        index: dict = {}  # codes in order of first appearance; None (or NaN) missing
        local = np.fromiter((-1 if v is None or (isinstance(v, float) and v != v)
                             else index.setdefault(v, len(index)) for v in col), np.int64,
                            len(col))
        return self._lut(column, list(index))[local]

    def add(self, frame: pd.DataFrame | Table | None) -> None:
        """Add the events of *frame* (a DataFrame or Table of Result.events' columns)."""
        if frame is None or not len(frame):
            return
        table = Table.of(frame)
        start, end = table.floats("start_s"), table.floats("end_s")
        ok = np.isfinite(start) & np.isfinite(end)
        s = _ns(start[ok])
        part = {"s": s, "e": np.maximum(_ns(end[ok]), s)}
        n = len(s)
        columns = set(table.columns)
        for c in _TEXT:
            part[c] = (self._encode(c, table)[ok] if c in columns
                       else self._encode(c, Table({c: [None] * n})))
        for c in ("rank", "bytes", "flops"):
            part[c] = table.floats(c)[ok] if c in columns else np.full(n, np.nan)
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


def _events_table(events: pd.DataFrame | Table | TraceEvents | Iterable[pd.DataFrame | Table]
                  | None) -> TraceEvents:
    if isinstance(events, TraceEvents):
        return events
    table = TraceEvents()
    if events is None or isinstance(events, Table) or hasattr(events, "columns"):
        table.add(events)
    else:
        for frame in events:
            table.add(frame)
    return table


def _build(events: Any, utilization: pd.DataFrame | None, memory: pd.DataFrame | None,
           max_slices: int) -> tuple[Iterator[str], dict[str, Any]]:
    """The JSON text of every trace event, in order (an iterator), and ``otherData``."""
    table = _events_table(events)
    layout = Layout()
    info: dict[str, Any] = {"generator": "hwsim", "events": 0, "slices": 0,
                            "merged_after_s": None}
    slices = Slices(table, max_slices, info) if len(table) else None
    if slices is not None:
        slices.want(layout)
    counters = Counters(utilization, memory)
    counters.want(layout)
    meta = [_dump(m) for m in layout.number()]
    body = slices.emit(layout) if slices is not None else iter(())
    return chain(meta, body, counters.emit(layout)), info


_dump = json.JSONEncoder(allow_nan=False, default=str, separators=(",", ":")).encode
_EMPTY = '{"traceEvents":[],"displayTimeUnit":"ms"}'


def _text(events: Any, utilization: pd.DataFrame | None, memory: pd.DataFrame | None,
          max_slices: int, chunk: int) -> Iterator[str]:
    """The file's text in pieces of *chunk* trace events."""
    items, info = _build(events, utilization, memory, max_slices)
    wrote = False
    while True:
        part = list(islice(items, chunk))
        if not part:
            break
        yield (',' if wrote else '{"traceEvents":[') + ",".join(part)
        wrote = True
    yield '],"displayTimeUnit":"ms","otherData":' + _dump(info) + "}" if wrote else _EMPTY


def chrome_trace(events: pd.DataFrame | TraceEvents | Iterable[pd.DataFrame] | None,
                 utilization: pd.DataFrame | None = None,
                 memory: pd.DataFrame | None = None, *,
                 max_slices: int = DEFAULT_MAX_SLICES) -> dict[str, Any]:
    """Return the Chrome trace-event form of a run (layout: module docstring, docs/trace.md):
    the object :func:`write_trace` writes.

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
    return json.loads("".join(_text(events, utilization, memory, max_slices, 1 << 16)))


def write_trace(path: str | Path, events: pd.DataFrame | TraceEvents | Iterable[pd.DataFrame]
                | None, utilization: pd.DataFrame | None = None,
                memory: pd.DataFrame | None = None, *,
                max_slices: int = DEFAULT_MAX_SLICES, chunk: int = 4096) -> None:
    """Write :func:`chrome_trace`'s object to *path* as compact JSON (the same bytes as
    ``json.dumps(chrome_trace(...), separators=(",", ":"))``), *chunk* trace events at a time,
    so the whole text is never held: each event is written as JSON text directly (no object
    and no encoder per event)."""
    with open(path, "w", encoding="utf-8") as fh:
        for piece in _text(events, utilization, memory, max_slices, chunk):
            fh.write(piece)
