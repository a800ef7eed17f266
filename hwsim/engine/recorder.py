"""The trace recorder: plain tuples appended during a run, compact columns kept, frames on request.

Three kinds of record, kept apart (interval records vs level records, as salabim does):

- ``event``: one activity with a start and an end (an op on a stream, a finished flow);
- ``level``: the load (bytes/s of capacity in use) of a shared channel, from that instant on;
- ``memory``: the bytes in use of a pool, from that instant on.

Work that repeats (the same ops and collectives every micro-batch) is recorded as *blocks*: a
template of events and channel-load pulses with times relative to its start, registered once
(:meth:`Recorder.template`), and one ``(start, template)`` pair per occurrence
(:meth:`Recorder.block`). The frames expand blocks with numpy, so a block of a hundred ops costs
one tuple during the run.

Every few tens of thousands of records the tuples become numpy columns (:mod:`.columns`). What
is kept of the events depends on the *level* (``outputs.record``):

- ``ops`` and ``full``: every event, in memory, or with *spill* (``hwsim run --out``) in sorted
  runs written to that file as the run goes, merged back in order by :meth:`event_batches`;
- ``summary``: only what the summary needs: rank 0's events and all events of the *keep_jobs*
  (transfer jobs, whose summary reads every rank), the ``(start, end, resource)`` of the work on
  device streams (their utilization) and each job's last end.

Channel levels, blocks and the stream intervals are kept at every level: utilization needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable, Iterable, Iterator, Sequence

import numpy as np

from hwsim.engine import blocks as _blocks
from hwsim.engine import loads as _loads
from hwsim.engine.repeat import check_repeat, spread
from hwsim.engine.columns import (EVENT_COLUMNS, TEXT, Codes, Columns, RowSet, SpillFile,
                                  categories, concat, empty_columns, encode_events, merge_runs,
                                  row_set, sort_order, table, take)
from hwsim.columnar import Table
from hwsim.exceptions import HwsimError

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

__all__ = ["Recorder", "STREAM_KINDS", "RECORD_LEVELS"]

STREAM_KINDS = ("compute", "host", "copy", "collective")
"""Event kinds recorded on device streams; their utilization is the covered share of time."""
RECORD_LEVELS = ("full", "ops", "summary")
"""``outputs.record``: what a run keeps of its events (module docstring)."""

CHUNK_ROWS = 32768
"""Tuples buffered before they become numpy columns (about 8 MB of tuples)."""
RUN_ROWS = 1 << 20
"""Rows sorted into one run of the spill file (about 70 MB of columns: a run of a million events
is one run, read back without a merge)."""
BATCH_ROWS = 131072
"""Rows per batch of :meth:`Recorder.event_batches` (a row group of events.parquet)."""
MERGE_ROWS = 16384
"""Rows read from each spilled run at a time while merging them (the merge's memory: this many
rows per run)."""


class Recorder:
    """Collects records of one run. Nothing here imports SimPy; the engine calls the methods.

    Parameters
    ----------
    level : str
        ``ops`` (default), ``full`` or ``summary`` (:data:`RECORD_LEVELS`, module docstring).
    spill : path, optional
        Stream the events to this file (created, and removed by :meth:`close`) instead of
        keeping them in memory; ignored at ``summary``.
    keep_jobs : iterable of str
        Jobs whose every event ``summary`` keeps (not only rank 0's).
    """

    def __init__(self, level: str = "ops", spill: str | Path | None = None,
                 keep_jobs: Iterable[str] = ()) -> None:
        if level not in RECORD_LEVELS:
            raise ValueError(f"Recorder: level {level!r}; valid: {', '.join(RECORD_LEVELS)}")
        self.record_level = level
        self.memory: list[tuple[float, str, float, float]] = []
        self.capacity: dict[Hashable, float] = {}
        self.label: dict[Hashable, str] = {}
        self.slots: dict[str, int] = {}
        self.keep_jobs = set(keep_jobs)
        self._codes = {c: Codes() for c in TEXT}
        self._ebuf: list[tuple] = []
        self._sets: list[RowSet] = []  # row_set(); _ebuf's (start, set, prefix) rows
        self._set_rows = 0  # rows in _ebuf beyond one per entry (of its row sets)
        self._n = 0  # plain events recorded (and flushed)
        keep_all = level != "summary"
        self._spill = SpillFile(spill) if keep_all and spill is not None else None
        self._all: list[Columns] | None = [] if keep_all and spill is None else None
        self._kept: list[Columns] = []  # without _all: rank 0 and keep_jobs
        self._pending: list[Columns] = []  # spill: chunks of the next sorted run
        self._seen = {c: np.zeros(0, bool) for c in TEXT}  # spill: codes present
        self._streams: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._job_end: dict[int, float] = {}
        self._lt: list[float] = []  # levels: three lists, no tuple per record (the hottest call)
        self._lr: list[Hashable] = []
        self._ll: list[float] = []
        self._lcodes = Codes()
        self._levels: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._templates: list[tuple[Columns, list[tuple], list[tuple]]] = []
        self._ptables: dict[int, _loads.Block] = {}  # template -> its pulses' columns
        self._work: tuple | None = None  # (what was recorded, _stream_work of it)
        self._bbuf: list[tuple[float, int]] = []
        self._blocks: list[tuple[np.ndarray, np.ndarray]] = []
        self._finished = False
        self._held: list[Columns] | None = None  # hold(): events not yet taken in

    # -- recording (hot paths: one append) ------------------------------------------------------
    def declare(self, resource: Hashable, capacity: float, label: str) -> None:
        """Declare a shared channel (capacity in bytes/s) and its class label."""
        self.capacity[resource] = capacity
        self.label[resource] = label

    def event(self, start_s: float, end_s: float, resource: str, kind: str, name: str, job: str,
              rank: int, nbytes: float, flops: float, category: str) -> None:
        buf = self._ebuf
        buf.append((start_s, end_s, resource, kind, name, job, rank, nbytes, flops, category))
        if len(buf) >= CHUNK_ROWS:
            self._flush_events()

    def kept(self, rows: Sequence[tuple]) -> list[tuple]:
        """Those of *rows* (:meth:`event` fields) of which this level keeps more than their
        job's last end: all but at ``summary``, where that is rank 0's rows, the kept jobs' and
        work on device streams (for a caller whose other rows end no later than a row it
        records)."""
        if self.record_level != "summary":
            return list(rows)
        return [r for r in rows if r[6] == 0 or r[3] in STREAM_KINDS or r[5] in self.keep_jobs]

    def event_rows(self, rows: Sequence[tuple], start_s: float | None = None) -> None:
        """Several :meth:`event` records at once, each the tuple of its arguments; with
        *start_s*, their start and end are relative to it."""
        buf = self._ebuf
        if start_s is None:
            buf.extend(rows)
        else:
            buf += [(start_s + r[0], start_s + r[1]) + r[2:] for r in rows]
        if len(buf) >= CHUNK_ROWS:
            self._flush_events()

    def row_set(self, rows: Sequence[tuple]) -> int:
        """Register rows recorded many times over (:meth:`event_set`): :meth:`event` fields
        with start and end relative to an occurrence's start and ``name`` a suffix. Returns
        its id."""
        self._sets.append(row_set(rows, self._codes))
        return len(self._sets) - 1

    def event_set(self, start_s: float, set_id: int, prefix: str) -> None:
        """The rows of row set *set_id* (:meth:`row_set`) from *start_s*, named *prefix* + their
        suffixes, as :meth:`event_rows` records them (columns made with the buffer's)."""
        buf = self._ebuf
        buf.append((start_s, set_id, prefix))
        self._set_rows += len(self._sets[set_id].suffixes) - 1
        if len(buf) + self._set_rows >= CHUNK_ROWS:
            self._flush_events()

    def level(self, time_s: float, resource: Hashable, load: float) -> None:
        self._lt.append(time_s)
        self._lr.append(resource)
        self._ll.append(load)
        if len(self._lt) >= CHUNK_ROWS:
            self._flush_levels()

    def template(self, events: list[tuple], pulses: list[tuple] = (),
                 shifted: list[tuple[float, Sequence[tuple]]] = ()) -> int:
        """Register a block: *events* as for :meth:`event` with start and end relative to the
        block's start; *pulses* ``(start, end, channel, load)``: a channel carries *load*
        bytes/s on top of its levels over that interval (relative times); *shifted*: ``(dt,
        pulses)`` pairs, pulses that start *dt* later (a pattern used at several instants,
        expanded only when the loads are read). Returns its id. At ``summary`` the other
        ranks' work on device streams is kept as the union of its intervals per stream
        (:func:`hwsim.engine.blocks.stream_spans`)."""
        rows = list(events)
        if rows and self.record_level == "summary":
            rows = _blocks.stream_spans(rows, STREAM_KINDS, self.keep_jobs)
        cols = encode_events(rows, self._codes, 0) if rows else empty_columns()
        self._templates.append((cols, list(pulses), list(shifted)))
        return len(self._templates) - 1

    def block(self, start_s: float, template: int) -> None:
        """One occurrence of a registered block, starting at *start_s*."""
        buf = self._bbuf
        buf.append((start_s, template))
        if len(buf) >= CHUNK_ROWS:
            self._flush_blocks()

    def mem(self, time_s: float, resource: str, used_bytes: float, capacity_bytes: float) -> None:
        self.memory.append((time_s, resource, used_bytes, capacity_bytes))

    # -- from tuples to columns -----------------------------------------------------------------
    def _flush_events(self) -> None:
        rows, self._ebuf = self._ebuf, []
        if not rows:
            return
        self._set_rows = 0
        cols = encode_events(rows, self._codes, self._n, self._sets)
        del rows
        self._n += len(cols["seq"])
        if self._held is not None:
            self._held.append(cols)
        else:
            self._take_in(cols)

    def _take_in(self, cols: Columns) -> None:
        self._note(cols)
        if self._all is not None:
            self._all.append(cols)
            return
        kept = self._kept_rows(cols)
        if kept.any():
            self._kept.append(take(cols, kept))
        if self._spill is not None:
            self._pending.append(cols)
            if sum(len(c["seq"]) for c in self._pending) >= RUN_ROWS:
                self._spill_pending()

    # -- periodic runs (hwsim.engine.repeat) ----------------------------------------------------
    def hold(self) -> None:
        """Keep the events from now on as they come, nothing written or derived from them,
        until :meth:`release`: a run that may be advanced by :meth:`repeat` calls it first."""
        self._flush_events()
        if self._held is None:
            self._held = []

    def repeat(self, start: float, period: float, times: int) -> float:
        """Record the records that start in ``[start, start + period)`` *times* more times right
        after that window and move every later record by ``times * period``; return that
        shift (:func:`hwsim.engine.repeat.spread`). Events: those held since :meth:`hold`;
        levels, memory samples and blocks: all."""
        check_repeat(period, times)
        if times == 0:
            return 0.0
        if self._held is None:
            raise ValueError("Recorder.repeat: the events are not held; call hold() before "
                             "the run records them")
        self._flush_events()
        cols = concat(self._held)
        if len(cols["seq"]):
            index, moved = spread(cols["start_s"], start, period, times)
            seq0 = int(cols["seq"][0])
            new = take(cols, index)
            new["start_s"] = new["start_s"] + moved
            new["end_s"] = new["end_s"] + moved
            new["seq"] = np.arange(seq0, seq0 + len(index), dtype=np.int64)
            self._held = [new]
            self._n = seq0 + len(index)
        self._flush_levels()
        self._levels = [self._spread_times(x, start, period, times) for x in self._levels]
        self._flush_blocks()
        self._blocks = [self._spread_times(x, start, period, times) for x in self._blocks]
        if self.memory:
            index, moved = spread([m[0] for m in self.memory], start, period, times)
            mem = self.memory
            self.memory = [(mem[i][0] + dt, *mem[i][1:]) for i, dt in
                           zip(index.tolist(), moved.tolist())]
        return times * period

    @staticmethod
    def _spread_times(arrays: tuple, start: float, period: float, times: int) -> tuple:
        """*arrays* (the first: times) rearranged by :func:`spread`."""
        index, moved = spread(arrays[0], start, period, times)
        return (arrays[0][index] + moved, *(a[index] for a in arrays[1:]))

    def release(self) -> None:
        """Take in the held events (:meth:`hold`) and record as usual from now on."""
        if self._held is None:
            return
        self._flush_events()
        held, self._held = self._held, None
        for cols in held:
            for a in range(0, len(cols["seq"]), CHUNK_ROWS):  # as they would have come
                self._take_in(take(cols, slice(a, a + CHUNK_ROWS)))

    def _note(self, cols: Columns) -> None:
        """What every level keeps of new events: the work intervals of device streams and each
        job's last end."""
        kinds = self._codes["kind"].values
        stream = np.fromiter((k in STREAM_KINDS for k in kinds), bool, len(kinds))
        work = np.append(stream, False)[cols["kind"]]
        if work.any():
            self._streams.append((cols["start_s"][work], cols["end_s"][work],
                                  cols["resource"][work]))
        self._note_ends(cols["job"], cols["end_s"])

    def _note_ends(self, jobs: np.ndarray, ends: np.ndarray) -> None:
        for j in np.unique(jobs).tolist():
            last = float(ends[jobs == j].max())
            self._job_end[j] = max(self._job_end.get(j, last), last)

    def _kept_rows(self, cols: Columns) -> np.ndarray:
        keep = cols["rank"] == 0
        for job in self.keep_jobs:
            code = self._codes["job"].index.get(job)
            if code is not None:
                keep |= cols["job"] == code
        return keep

    def _spill_pending(self) -> None:
        cols, self._pending = concat(self._pending), []
        if not len(cols["seq"]):
            return
        for c in TEXT:  # the categories of the whole file: every code present
            seen = np.zeros(len(self._codes[c].values), bool)
            seen[: len(self._seen[c])] = self._seen[c]
            seen[cols[c][cols[c] >= 0]] = True
            self._seen[c] = seen
        self._spill.add_run(take(cols, sort_order(cols, self._codes["resource"].sorted_rank())))

    def _flush_levels(self) -> None:
        if self._lt:
            t, res, load = self._lt, self._lr, self._ll
            self._lt, self._lr, self._ll = [], [], []
            self._levels.append((np.asarray(t, float), self._lcodes.encode(res),
                                 np.asarray(load, float)))

    def _flush_blocks(self) -> None:
        rows, self._bbuf = self._bbuf, []
        if rows:
            self._blocks.append((np.asarray([r[0] for r in rows], float),
                                 np.asarray([r[1] for r in rows], np.int64)))

    def _flush(self) -> None:
        self.release()
        self._flush_events()
        self._flush_levels()
        self._flush_blocks()
        if self._spill is None:
            return
        if not self._finished:  # the run is over: the blocks' events join the spilled runs
            self._finished = True
            for cols in self._block_rows():
                self._note_ends(cols["job"], cols["end_s"])
                kept = self._kept_rows(cols)
                if kept.any():
                    self._kept.append(take(cols, kept))
                self._pending.append(cols)
                if sum(len(c["seq"]) for c in self._pending) >= RUN_ROWS:
                    self._spill_pending()
        self._spill_pending()

    # -- blocks ---------------------------------------------------------------------------------
    def _blocks_as_one(self) -> bool:
        """Keep the occurrences recorded as one part; whether there are any."""
        if len(self._blocks) > 1:
            self._blocks = [tuple(np.concatenate(x) for x in zip(*self._blocks))]
        return bool(self._blocks)

    def _block_starts(self) -> dict[int, np.ndarray]:
        """Template id -> the starts of its occurrences, templates in order of first occurrence."""
        return _blocks.starts(*self._blocks[0]) if self._blocks_as_one() else {}

    def _block_rows(self, select: Any = None, columns: Sequence[str] = EVENT_COLUMNS
                    ) -> Iterator[Columns]:
        """The blocks' rows in chunks of :data:`RUN_ROWS` (:func:`hwsim.engine.blocks.rows`)."""
        return _blocks.rows([t[0] for t in self._templates], self._block_starts(), select,
                            columns, RUN_ROWS)

    def _blocks_expanded(self, select: Any = None, columns: Sequence[str] = EVENT_COLUMNS,
                         ordered: bool = True) -> list[Columns]:
        """:meth:`_block_rows` as one chunk, or none (:func:`hwsim.engine.blocks.expanded`)."""
        if not self._blocks_as_one():
            return []
        return _blocks.expanded([t[0] for t in self._templates], *self._blocks[0], select,
                                columns, ordered)

    def _pulse_blocks(self) -> list[_loads.Block]:
        """The pulses of every block, at its occurrences (channel codes those of the levels;
        each template's columns computed once: :func:`hwsim.engine.blocks.pulse_table`)."""
        self._flush_blocks()
        out = []
        for tid, t0 in self._block_starts().items():
            table = self._ptables.get(tid)
            if table is None:
                table = self._ptables[tid] = _blocks.pulse_table(*self._templates[tid][1:],
                                                                 self._lcodes)
            out.append(table._replace(at=t0))
        return out

    # -- events ---------------------------------------------------------------------------------
    def _not_kept(self, what: str) -> HwsimError:
        return HwsimError(
            f"{what}: this run kept no per-activity events (outputs.record: summary keeps "
            "only what the summary, the bottleneck breakdown and the utilization need); run "
            "the scenario with outputs.record: ops (the default) or full for one row per "
            "activity")

    def _select(self, rank: int | None, job: str | None):
        code = self._codes["job"].index.get(job, -2) if job is not None else None

        def select(cols: Columns) -> np.ndarray:
            keep = np.ones(len(cols["seq"]), bool)
            if rank is not None:
                keep &= cols["rank"] == rank
            if code is not None:
                keep &= cols["job"] == code
            return keep
        return select

    def events_frame(self, rank: int | None = None, job: str | None = None) -> pd.DataFrame:
        """:meth:`events_table` as a DataFrame (the text columns categorical)."""
        return self.events_table(rank, job).to_pandas()

    def events_table(self, rank: int | None = None, job: str | None = None) -> Table:
        """One row per activity, sorted by start time, end time and resource (then the order
        recorded); columns of ``EVENT_COLUMNS``, the text ones coded (the values present,
        sorted); only rank *rank*'s and job *job*'s when given.

        Raises
        ------
        HwsimError
            At ``summary``, for events it did not keep (other than rank 0's or a kept job's).
        """
        self._flush()
        select = self._select(rank, job) if rank is not None or job is not None else None
        if self._all is not None:
            chunks = self._all
        elif (rank == 0 or job in self.keep_jobs) and (self._spill is None or self._finished):
            chunks = self._kept
            if self._spill is None:  # summary: the blocks' kept rows are expanded here
                chunks = chunks + self._blocks_expanded(self._kept_rows)
        elif self._spill is not None:
            chunks = [cols for cols, _ in self._merged()]
        else:
            raise self._not_kept("Result.events")
        if select is not None:
            chunks = [take(c, select(c)) for c in chunks]
        if self._all is not None:
            chunks = chunks + self._blocks_expanded(select)
        return table(concat(chunks), self._codes)

    def event_batches(self, rows: int | None = None) -> Iterator[Table]:
        """Every event as Tables of about *rows* rows, in the order of :meth:`events_frame`,
        each with the categories of the whole (what a writer streams to a file: the
        concatenation equals ``events_frame()``; default :data:`BATCH_ROWS`). Raises HwsimError at
        ``summary``."""
        rows = rows or BATCH_ROWS
        self._flush()
        if self._spill is not None:
            cats = categories(self._codes, {c: np.flatnonzero(self._seen[c]) for c in TEXT})
            pending: list[Columns] = []
            size = 0
            for cols, n in self._merged():
                pending.append(cols)
                size += n
                if size >= rows:
                    yield table(concat(pending), self._codes, cats, ordered=True)
                    pending, size = [], 0
            if pending or not self._spill.rows():
                yield table(concat(pending), self._codes, cats, ordered=True)
            return
        if self._all is None:
            raise self._not_kept("events")
        cols = concat(self._all + self._blocks_expanded())
        cats = categories(self._codes, {c: np.unique(cols[c][cols[c] >= 0]) for c in TEXT})
        order = sort_order(cols, self._codes["resource"].sorted_rank())
        for a in range(0, max(len(order), 1), rows):
            yield table(take(cols, order[a:a + rows]), self._codes, cats, ordered=True)

    def _merged(self) -> Iterator[tuple[Columns, int]]:
        spill = self._spill
        if len(spill.runs) == 1:  # one sorted run: read back in order, nothing to merge
            for lo in range(0, spill.runs[0][0], BATCH_ROWS):
                cols = spill.read(0, lo, lo + BATCH_ROWS)
                yield cols, len(cols["seq"])
            return
        rank = self._codes["resource"].sorted_rank()
        for cols in merge_runs([n for n, _ in spill.runs], spill.read,
                               lambda c: (c["start_s"], c["end_s"], rank[c["resource"]],
                                          c["seq"]), MERGE_ROWS):
            yield cols, len(cols["seq"])

    def job_ends(self) -> dict[str, float]:
        """Each job's last event end (every rank's, blocks included)."""
        self._flush()
        if self._spill is None:  # blocks: spilled runs noted theirs as they were written
            for tid, t0 in self._block_starts().items():
                rows = self._templates[tid][0]
                if len(rows["seq"]):
                    self._note_ends(rows["job"], rows["end_s"] + float(t0.max()))
        values = self._codes["job"].values
        return {str(values[j]) if j >= 0 else "": t for j, t in self._job_end.items()}

    def close(self) -> None:
        """Remove the spill file (after the events went to their file)."""
        if self._spill is not None:
            self._spill.close(remove=True)

    # -- compatibility views (tests, benchmarks) ------------------------------------------------
    @property
    def events(self) -> list[tuple]:
        """The plain (not block) events kept, as tuples in recorded order."""
        self.release()
        self._flush_events()
        text = {c: self._codes[c].values + [None] for c in TEXT}
        return [tuple(text[c][cols[c][i]] if c in TEXT else cols[c][i].item()
                      for c in EVENT_COLUMNS)
                for cols in (self._all if self._all is not None else self._kept)
                for i in range(len(cols["seq"]))]

    @property
    def levels(self) -> list[tuple[float, Hashable, float]]:
        """Every level change ``(time_s, channel, load)`` in recorded order."""
        lv = self._levels_columns()
        return [(t, lv.channels[c], v) for t, c, v in
                zip(lv.time.tolist(), lv.code.tolist(), lv.load.tolist())]

    # -- frames ---------------------------------------------------------------------------------
    def _levels_columns(self) -> _loads.Levels:
        self._flush_levels()
        parts = self._levels
        if len(parts) > 1:  # keep them as one
            parts = self._levels = [tuple(np.concatenate(x) for x in zip(*parts))]
        t, code, load = parts[0] if parts else (np.empty(0), np.empty(0, np.int32), np.empty(0))
        return _loads.Levels(t, code, load, self._lcodes.values)

    def memory_table(self) -> Table:
        """``time_s, resource, used_bytes, capacity_bytes`` of every change of a pool's level."""
        t, res, used, cap = zip(*self.memory) if self.memory else ((),) * 4
        return Table({"time_s": np.asarray(t, float), "resource": [str(r) for r in res],
                      "used_bytes": np.asarray(used, float), "capacity_bytes": np.asarray(cap, float)})

    def loads_frame(self) -> pd.DataFrame:
        """The load of every shared channel as a step function: one row per change, ``time_s,
        resource, resource_class, load_bytes_per_s, capacity_bytes_per_s``; the load holds from
        ``time_s`` until the resource's next row (levels and block pulses added together)."""
        self._flush_blocks()
        return _loads.loads_frame(self._levels_columns(), self._pulse_blocks(), self.capacity,
                                  self.label)

    def _stream_work(self) -> tuple | None:
        """``(starts, ends, resource codes, resource names)`` of the work on device streams
        (:data:`STREAM_KINDS`), None if none; kept until more is recorded (power, utilization)."""
        self._flush_work()
        key = (len(self._streams), sum(len(b[0]) for b in self._blocks))
        if self._work is not None and self._work[0] == key:
            return self._work[1]
        self._work = (key, self._gather_work())
        return self._work[1]

    def _flush_work(self) -> None:
        """The work recorded so far as columns: events held, buffered, and block occurrences."""
        self.release()
        self._flush_events()
        self._flush_blocks()

    def _gather_work(self, streams: np.ndarray | None = None) -> tuple | None:
        """:meth:`_stream_work`'s tuple; *streams* (a mask over resource codes, one more slot
        last for the code -1): only the work of those streams."""
        parts = list(self._streams)
        if streams is not None:
            parts = [(a[m], b[m], r[m]) for a, b, r in parts for m in (streams[r],)]
        kinds = self._codes["kind"].values
        wanted = np.append(np.fromiter((k in STREAM_KINDS for k in kinds), bool, len(kinds)),
                           False)

        def select(rows: Columns) -> np.ndarray:
            keep = wanted[rows["kind"]]
            return keep if streams is None else keep & streams[rows["resource"]]
        # (one chunk: the parts are joined below anyway; in no order, as unions and sums take it)
        for cols in self._blocks_expanded(select, ("start_s", "end_s", "resource"), False):
            parts.append((cols["start_s"], cols["end_s"], cols["resource"]))
        if not parts:
            return None
        return (*(np.concatenate(x) for x in zip(*parts)), self._codes["resource"].values)

    def stream_busy_s(self, end_s: float, suffix: str = "/compute") -> dict[str, float]:
        """Busy seconds over ``[0, end_s]`` of every device stream whose name ends with
        *suffix* (:func:`hwsim.engine.loads.union_busy_s`), for the run's power summary. Only
        those streams' work is gathered (the other streams' rows are many: every collective's
        on the communication streams)."""
        self._flush_work()
        names = self._codes["resource"].values
        mask = np.fromiter((str(n).endswith(suffix) for n in names), bool, len(names))
        work = self._gather_work(np.append(mask, False)) if mask.any() else None  # (-1: none)
        return {} if work is None else _loads.union_busy_s(*work, end_s, suffix)

    def utilization_table(self, end_s: float, bin_s: float | None = None,
                          streams: bool = True) -> Table:
        """Busy fraction per resource and time bin.

        Channels: the time-weighted mean load over the bin divided by capacity (exact for the
        piecewise-constant loads of the fluid model), and the bytes carried. Device streams
        (event resources of kind ``compute``/``host``/``copy``/``collective``): the covered
        fraction of the bin; a pool of several slots (``slots``: a server's CPU threads) the
        mean busy slots over its slots. Bins are ``bin_s`` wide from 0 (default: 100 bins over
        the run); ``.to_pandas()`` gives ``Result.utilization``."""
        if not streams:
            self._flush_work()
        work = self._stream_work() if streams else None
        return _loads.utilization_table(end_s, bin_s, self._levels_columns(), self._pulse_blocks(),
                                        self.capacity, self.label, work, self.slots)
