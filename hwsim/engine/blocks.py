"""The event rows of recorded blocks (:meth:`hwsim.engine.Recorder.template` and ``block``):
a block is a template of rows with times relative to its start, recorded at many starts; its
rows exist only when they are read, expanded here. Pure functions over numpy columns (a
template's columns as :func:`hwsim.engine.columns.encode_events` makes them; the occurrences as
arrays of starts and template ids), and the reduction a template's rows get at
``outputs.record: summary`` (:func:`stream_spans`). Nothing here imports SimPy.
"""

from __future__ import annotations

from typing import Any, Container, Iterator, Sequence

import numpy as np

from hwsim.engine.columns import STORED, Codes, Columns, take
from hwsim.engine.loads import Block

__all__ = ["BLOCK_SEQ", "starts", "rows", "expanded", "stream_spans", "pulse_table"]

BLOCK_SEQ = 1 << 40
"""``seq`` of the first block row: blocks come after the plain events, as they always have."""


def starts(t0: np.ndarray, tid: np.ndarray) -> dict[int, np.ndarray]:
    """Template id -> the starts of its occurrences, templates in order of first occurrence
    (occurrences at *t0* of templates *tid*)."""
    by = np.argsort(tid, kind="stable")
    ids, first = np.unique(tid, return_index=True)
    bounds = np.searchsorted(tid[by], ids)
    ends = np.append(bounds[1:], len(tid))
    return {int(ids[i]): t0[by[bounds[i]:ends[i]]] for i in np.argsort(first)}


def rows(templates: Sequence[Columns], at: dict[int, np.ndarray], select: Any,
         columns: Sequence[str], run_rows: int) -> Iterator[Columns]:
    """The rows of every occurrence (*at*: :func:`starts`) of the *templates* in the order
    they are numbered (template by first occurrence, occurrence, row), in chunks of about
    *run_rows* rows; *select* (template columns -> bool mask, or None) keeps some rows of each
    template; only *columns* (and ``seq``) are made."""
    seq = BLOCK_SEQ
    for tid, t0 in at.items():
        cols = templates[tid]
        if select is not None:
            cols = take(cols, select(cols))
        k = len(cols["seq"])
        if not k:
            continue
        per = max(1, run_rows // k)
        for a in range(0, len(t0), per):
            t = t0[a:a + per]
            out = {c: (t[:, None] + cols[c][None, :]).ravel() if c in ("start_s", "end_s")
                   else np.tile(cols[c], len(t)) for c in columns}
            out["seq"] = np.arange(seq, seq + len(t) * k, dtype=np.int64)
            seq += len(t) * k
            yield out


def expanded(templates: Sequence[Columns], t0: np.ndarray, tid: np.ndarray, select: Any,
             columns: Sequence[str], ordered: bool = True) -> list[Columns]:
    """What :func:`rows` gives (the same rows, order and ``seq``) as one chunk, worked out for
    all templates and occurrences at once (no Python per template or occurrence); no chunk
    when there is no row. For callers that hold every row anyway. *ordered* False: the same
    rows in another order, without ``seq`` (for sums and unions)."""
    n = len(templates)
    sizes = np.fromiter((len(t["seq"]) for t in templates), np.int64, n)
    cols = {k: np.concatenate([t[k] for t in templates]) for k in STORED}
    of = np.repeat(np.arange(n), sizes)  # each template row's template
    if select is not None:
        keep = select(cols)
        cols, of = take(cols, keep), of[keep]
    counts = np.bincount(of, minlength=n)  # rows kept per template
    if ordered:  # the occurrences by template (in order of first occurrence), then as recorded
        ids, first = np.unique(tid, return_index=True)
        order = np.empty(n, np.int64)
        order[ids[np.argsort(first)]] = np.arange(len(ids))
        occ = np.argsort(order[tid], kind="stable")
        t0, tid = t0[occ], tid[occ]
    per = counts[tid]  # rows of each occurrence
    total = int(per.sum())
    if not total:
        return []
    at = np.cumsum(counts) - counts  # each template's first kept row
    idx = np.repeat(at[tid] - (np.cumsum(per) - per), per) + np.arange(total)
    start = np.repeat(t0, per)
    out = {c: start + cols[c][idx] if c in ("start_s", "end_s") else cols[c][idx]
           for c in columns}
    if ordered:
        out["seq"] = np.arange(BLOCK_SEQ, BLOCK_SEQ + total, dtype=np.int64)
    return [out]


def stream_spans(events: list[tuple], stream_kinds: Container[str],
                 keep_jobs: Container[str]) -> list[tuple]:
    """A template's *events* (:meth:`~hwsim.engine.Recorder.event` fields) at ``summary``:
    rank 0's, those of *keep_jobs* and those not of *stream_kinds* as they are; the other
    ranks' work on a device stream (the rows of one stream, kind, job and rank) as the union
    of its intervals, one row per interval, unnamed, with their bytes and FLOPs: what that
    level reads of them (the streams' busy and covered time, the jobs' ends) is the same, from
    a fraction of the rows (a tensor-parallel lane's block holds each op once per rank)."""
    out, spans = [], {}
    for r in events:
        if r[6] == 0 or r[3] not in stream_kinds or r[5] in keep_jobs:
            out.append(r)
        else:
            spans.setdefault((r[2], r[3], r[5], r[6]), []).append(r)
    for (res, kind, job, rank), group in spans.items():
        group.sort(key=lambda r: r[0])
        a, b, nbytes, flops, cat = group[0][0], group[0][1], 0.0, 0.0, group[0][9]
        for r in group:
            if r[0] > b:  # a gap: the interval so far is whole
                out.append((a, b, res, kind, "", job, rank, nbytes, flops, cat))
                a, b, nbytes, flops = r[0], r[1], 0.0, 0.0
            elif r[1] > b:
                b = r[1]
            nbytes += r[7]
            flops += r[8]
        out.append((a, b, res, kind, "", job, rank, nbytes, flops, cat))
    return out


def pulse_table(pulses: Sequence[tuple], shifted: Sequence[tuple], codes: Codes) -> Block:
    """A template's channel pulses ``(start, end, channel, load)`` and its *shifted* ones
    (``(dt, pulses)``: at their offset) as one :class:`~hwsim.engine.loads.Block` without its
    occurrences (``at`` empty), the channels coded by *codes* (the levels')."""
    rows = list(pulses) + [(dt + a, dt + b, ch, load)
                           for dt, group in shifted for a, b, ch, load in group]
    return Block(np.asarray([r[0] for r in rows], float), np.asarray([r[1] for r in rows], float),
                 np.asarray([r[3] for r in rows], float),
                 codes.encode([r[2] for r in rows]).astype(np.int64), np.empty(0))
