"""A serving replica's iterations, as the iteration table (``Result.iterations``) has them.

An iteration run on its own is one tuple ``(start, end, batch size, tokens, KV blocks used,
prefill tokens, KV-blocked, blocks cached, idle cached)``; a fast-forwarded run of decode
iterations (:mod:`hwsim.jobs.serving_ff`) is one record of its pieces, its batch and the blocks
it opens, which :meth:`IterationLog.columns` expands with numpy into one row per iteration, in
the order they ran. The log is a sequence of the tuples (``len``, iteration, indexing), so
what reads the iterations one by one need not know about runs.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from hwsim.jobs.serving_ff import piece_end

__all__ = ["IterationLog", "LOG_COLUMNS"]

LOG_COLUMNS = ("start_s", "end_s", "batch_size", "tokens", "kv_blocks_used", "prefill_tokens",
               "kv_blocked", "kv_blocks_cached", "kv_blocks_cached_idle")
"""The fields of an iteration, in the order of its tuple."""
_DTYPES = (float, float, np.int64, np.int64, np.int64, np.int64, bool, np.int64, np.int64)


class IterationLog:
    """The iterations of one replica: ``rows`` (one tuple per iteration run on its own) and
    ``runs`` (one record per fast-forwarded run, with the number of rows before it); and, kept
    as they come for the summary, ``busy`` (their seconds), ``batch_busy`` (batch size times
    seconds), ``blocked_busy`` (the seconds of those with the queue's head waiting for KV
    blocks) and ``used_max`` (the most KV blocks in use)."""

    __slots__ = ("rows", "runs", "_in_runs", "busy", "batch_busy", "blocked_busy", "used_max")

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.runs: list[tuple] = []
        self._in_runs = 0
        self.busy = self.batch_busy = self.blocked_busy = 0.0
        self.used_max = 0

    def append(self, row: tuple) -> None:
        """One iteration (a tuple of :data:`LOG_COLUMNS`)."""
        self.rows.append(row)
        self._count(row[1] - row[0], row[2], row[6], row[4])

    def _count(self, seconds: float, batch: int, blocked: bool, used: int) -> None:
        self.busy += seconds
        self.batch_busy += batch * seconds
        if blocked:
            self.blocked_busy += seconds
        if used > self.used_max:
            self.used_max = used

    def run(self, pieces: tuple[tuple[float, int, float, float], ...], n: int, tokens: int,
            used: int, blocked: bool, opens: tuple[int, ...] | None, end: float,
            used_last: int) -> None:
        """A run of decode iterations: *pieces* ``(start, iterations, seconds of the first,
        seconds more each)`` (:func:`~hwsim.jobs.serving_ff.piece_end`), *n* sequences
        and *tokens* each, *used* blocks at its start, *blocked* (the head of the queue waits
        for blocks), *opens*: the blocks its ``j``-th iteration opens, by ``j % block_tokens``
        (None: none); *end*: its last iteration's end, *used_last*: the blocks in use at that
        iteration's start (the most of the run)."""
        self.runs.append((len(self.rows), pieces, n, tokens, used, blocked, opens))
        for p in pieces:
            self._in_runs += p[1]
        self._count(end - pieces[0][0], n, blocked, used_last)

    def __len__(self) -> int:
        return len(self.rows) + self._in_runs

    def tuples(self) -> list[tuple]:
        """Every iteration's tuple, in order."""
        return list(zip(*(c.tolist() for c in self.columns().values())))

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.tuples())

    def __getitem__(self, i):
        return self.tuples()[i]

    def columns(self) -> dict[str, np.ndarray]:
        """:data:`LOG_COLUMNS` as numpy columns, one row per iteration in the order they ran."""
        single = (np.array(self.rows, dtype=float) if self.rows
                  else np.zeros((0, len(LOG_COLUMNS))))
        if not self.runs:
            return {c: single[:, i].astype(t) for i, (c, t) in
                    enumerate(zip(LOG_COLUMNS, _DTYPES))}
        pos, pieces, n, tokens, used, blocked, opens = zip(*self.runs)
        flat = [p for run in pieces for p in run]
        ts, k, a, b = (np.array(c) for c in zip(*flat))
        k = k.astype(np.int64)
        per_run = np.array([len(run) for run in pieces])
        length = np.add.reduceat(k, np.cumsum(per_run) - per_run)  # iterations of each run
        total = int(length.sum())
        at = np.arange(total)
        x = at - np.repeat(np.cumsum(k) - k, k)  # the iteration's place in its piece
        ts, a, b = np.repeat(ts, k), np.repeat(a, k), np.repeat(b, k)
        j = at - np.repeat(np.cumsum(length) - length, length)  # its place in its run
        bt = next((len(o) for o in opens if o is not None), 1)
        pattern = np.array([o if o is not None else [0] * bt for o in opens], dtype=np.int64)
        inc = pattern[np.repeat(np.arange(len(opens)), length), j % bt]
        before = np.cumsum(inc) - inc  # blocks opened by the run's earlier iterations
        before -= np.repeat(before[np.cumsum(length) - length], length)
        zero = np.zeros(total, np.int64)
        ran = [piece_end(ts, a, b, x), piece_end(ts, a, b, x + 1), np.repeat(n, length),
               np.repeat(tokens, length), np.repeat(used, length) + before, zero,
               np.repeat(blocked, length), zero, zero]
        # a run's rows come before the row that was next when it was recorded
        m = len(single)
        ahead = np.cumsum(np.bincount(pos, weights=length, minlength=m + 1)).astype(np.int64)
        to_single = np.arange(m) + ahead[:m]
        to_run = np.repeat(np.asarray(pos, dtype=np.int64), length) + at
        out = {}
        for i, (c, t) in enumerate(zip(LOG_COLUMNS, _DTYPES)):
            col = np.empty(m + total, dtype=t)
            col[to_single] = single[:, i]
            col[to_run] = ran[i]
            out[c] = col
        return out
