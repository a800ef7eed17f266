"""Advance a periodic stretch of a run exactly: repeat the records of one period.

When a job has verified that the run is periodic from some instant ``start`` on, with period
``period`` (every activity of ``[start + period, start + 2 period)`` is the one of
``[start, start + period)`` shifted by ``period``), running ``times`` more periods would record
the window's records again, each copy ``period`` later than the previous, and everything after
the window ``times * period`` later. :func:`spread` gives that rearrangement of any kind of
record as an index and a time offset per output row; :meth:`Recorder.repeat
<hwsim.engine.recorder.Recorder.repeat>` applies it to the records a run held, so the periods
need not be simulated.

Every kind of record is placed by the instant it starts (an event's start, a block's start, a
level's or memory sample's time); a record that starts before the window and ends inside it has
its counterpart starting inside the window, so the copies hold it. Nothing here knows what the
records are.
"""

from __future__ import annotations

import numpy as np

__all__ = ["spread", "check_repeat"]


def check_repeat(period: float, times: int) -> None:
    if period <= 0 or times < 0:
        raise ValueError(f"period(={period}) must be > 0 and times(={times}) >= 0")


def spread(t: np.ndarray, start: float, period: float, times: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """For records starting at *t*: the rows of the advanced run, as indices into *t* and the
    time each is moved by. Records before the window stay, in order; the window's follow, then
    its *times* copies (copy ``j`` moved by ``j * period``), then the records after the window,
    moved by ``times * period``; each group in the order recorded."""
    check_repeat(period, times)
    t = np.asarray(t, float)
    end = start + period
    before = np.flatnonzero(t < start)
    window = np.flatnonzero((t >= start) & (t < end))
    after = np.flatnonzero(t >= end)
    k = len(window)
    index = np.concatenate([before, window, np.tile(window, times), after])
    moved = np.concatenate([np.zeros(len(before) + k),
                            *(np.full(k, j * period) for j in range(1, times + 1)),
                            np.full(len(after), times * period)])
    return index, moved
