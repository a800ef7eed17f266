"""Progress bars for long runs and sweeps: shown on a terminal, silent everywhere else.

A bar is drawn (with rich, on stderr) only when stderr is a terminal and the environment variable
``HWSIM_PROGRESS`` is not ``0``; in a pipe, a file, a notebook or a test nothing is printed and a
bar costs a counter. Bars opened while another is shown join its display (a sweep's bar and the
bar of the run it is in), and each disappears when its ``with`` block ends.

A sweep of many scenario runs::

    from hwsim.progress import progress

    with progress(total=len(files), label="sweep") as bar:
        for f in files:
            results.append(hwsim.run(f))   # each run may show its own bar below the sweep's
            bar.advance()

``bar.update(completed)`` sets the count instead, ``bar.completed`` reads it (shown or not).
Pass ``console=rich.console.Console(...)`` to draw somewhere else (tests do), ``enabled=True``
or ``False`` to decide instead of the terminal check.

Imports nothing of hwsim; :mod:`hwsim.simulation` uses :func:`shown` to decide, before a run,
whether to step the simulation in chunks and report (only then: an unobserved run pays nothing).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

__all__ = ["progress", "shown", "silenced", "Bar"]

_ACTIVE: ContextVar[Any] = ContextVar("hwsim_progress", default=None)
"""The rich Progress display shown now in this context, if any."""
_SILENT: ContextVar[bool] = ContextVar("hwsim_progress_silent", default=False)


@contextmanager
def silenced() -> Iterator[None]:
    """No bar is shown inside the block (``hwsim run --quiet``)."""
    token = _SILENT.set(True)
    try:
        yield
    finally:
        _SILENT.reset(token)


def shown(console: Any = None) -> bool:
    """Whether a new bar would be drawn: one is shown already, or *console* (default: stderr) is
    a terminal and ``HWSIM_PROGRESS`` is not ``0`` (and not inside :func:`silenced`)."""
    if _SILENT.get() or os.environ.get("HWSIM_PROGRESS", "").strip() == "0":
        return False
    if _ACTIVE.get() is not None:
        return True
    if console is not None:
        return bool(console.is_terminal)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Bar:
    """One bar: :meth:`advance`, :meth:`update` and :attr:`completed`; draws only when shown."""

    def __init__(self, total: float | None, display: Any = None, task: Any = None) -> None:
        self.total = total
        self.completed = 0.0
        self._display, self._task = display, task

    def advance(self, n: float = 1) -> None:
        """Count *n* more done."""
        self.update(self.completed + n)

    def update(self, completed: float) -> None:
        """Set the count done to *completed*."""
        if completed == self.completed:
            return
        self.completed = completed
        if self._display is not None:
            self._display.update(self._task, completed=completed)


@contextmanager
def progress(total: float | None, label: str = "", *, console: Any = None,
             enabled: bool | None = None) -> Iterator[Bar]:
    """A bar of *total* units named *label*, for a ``with`` block.

    Parameters
    ----------
    total : float or None
        Units of work (runs of a sweep, steps, requests); None for an unknown total.
    label : str
        Shown before the bar.
    console : rich.console.Console, optional
        Where to draw (default: a console on stderr).
    enabled : bool, optional
        Draw or not; default :func:`shown`.

    Yields
    ------
    Bar
        Call ``advance()`` or ``update(n)``; ``completed`` holds the count either way.
    """
    outer = _ACTIVE.get()
    if not (shown(console) if enabled is None else enabled):
        yield Bar(total)
        return
    if outer is not None and console is None:  # nested: a line in the shown display
        task = outer.add_task(label, total=total)
        try:
            yield Bar(total, outer, task)
            outer.refresh()  # its last state drawn once before it goes
        finally:
            outer.remove_task(task)
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    display = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn(),
                       console=console or Console(stderr=True), transient=True)
    token = _ACTIVE.set(display)
    try:
        with display:
            task = display.add_task(label, total=total)
            bar = Bar(total, display, task)
            yield bar
            display.refresh()
    finally:
        _ACTIVE.reset(token)
