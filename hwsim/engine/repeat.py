"""Advance a periodic stretch of a run exactly: repeat the records of one period.

When a job has verified that the run is periodic from some instant ``start`` on, with period
``period`` (every activity of ``[start + period, start + 2 period)`` is the one of
``[start, start + period)`` shifted by ``period``), running ``times`` more periods would record
the window's records again, each copy ``period`` later than the previous, and everything after
the window ``times * period`` later. :func:`repeat_window` writes exactly that into a
:class:`~hwsim.engine.recorder.Recorder` after the run, so the periods need not be simulated.

Every kind of record is placed by the instant it starts (an event's start, a block's start, a
level's or memory sample's time); a record that starts before the window and ends inside it has
its counterpart starting inside the window, so the copies hold it. Nothing here knows what the
records are.
"""

from __future__ import annotations

from hwsim.engine.recorder import Recorder

__all__ = ["repeat_window"]


def repeat_window(rec: Recorder, start: float, period: float, times: int) -> float:
    """Repeat the records that start in ``[start, start + period)`` *times* more times right
    after the window and shift every later record by ``times * period``; return that shift."""
    if period <= 0 or times < 0:
        raise ValueError(f"period(={period}) must be > 0 and times(={times}) >= 0")
    if times == 0:
        return 0.0
    end, shift = start + period, times * period

    def spread(rows: list[tuple], at: int, shifted: tuple[int, ...]) -> list[tuple]:
        before, window, after = [], [], []
        for row in rows:
            t = row[at]
            (before if t < start else window if t < end else after).append(row)
        out = before + window
        for j in range(1, times + 1):
            dt = j * period
            out += [_moved(row, shifted, dt) for row in window]
        out += [_moved(row, shifted, shift) for row in after]
        return out

    rec.events = spread(rec.events, 0, (0, 1))
    rec.levels = spread(rec.levels, 0, (0,))
    rec.memory = spread(rec.memory, 0, (0,))
    rec._blocks = spread(rec._blocks, 0, (0,))
    rec._raw = None
    return shift


def _moved(row: tuple, at: tuple[int, ...], dt: float) -> tuple:
    out = list(row)
    for i in at:
        out[i] = row[i] + dt
    return tuple(out)
