"""Cyclic garbage collection around a run (:func:`frozen_heap`) and in a command line's start-up
(:func:`pause_collection`).

A run allocates many small objects (events, requests, iteration records), so Python's cyclic
collector makes several full passes during it, and each walks every object alive: the imported
modules (pandas, numpy, networkx, pydantic: about 100,000 objects), the catalogs and the graph,
about 0.05-0.1 s a pass, though none of them becomes garbage during the run.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

__all__ = ["frozen_heap", "pause_collection"]


_depth = 0  # frozen_heap blocks open
_ours = False  # whether the outermost one froze (and unfreezes at its end)
_paused = False  # pause_collection turned the collector off, and no frozen_heap block since


def pause_collection() -> None:
    """Turn the cyclic collector off until the first :func:`frozen_heap` block starts (which
    turns it back on for good), or until the process ends: for the ``hwsim`` command line,
    whose start-up (imports, reading the catalogs and the scenario, building its graph)
    allocates several hundred thousand objects and little garbage, so that the collector's
    passes over them (about 0.04 s of ``hwsim validate``'s 0.45 s) are not paid. What garbage
    the start-up leaves is frozen with the rest by that first block: bounded, once per
    process. Nothing is done when the collector is off already."""
    global _paused
    if gc.isenabled() and not _paused:
        gc.disable()
        _paused = True


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist when the block starts out of the collector's passes until the
    outermost such block ends (:func:`gc.freeze`, then :func:`gc.unfreeze`); objects made
    inside are collected as usual. An inner block freezes what was made since (the command
    line freezes the modules, the run then the loaded scenario too). Nothing is done when the
    collector is off or when the program froze objects itself (they stay frozen).
    (``gc.get_freeze_count`` walks the frozen objects: it is asked only when none of ours
    are.)"""
    global _depth, _ours, _paused
    if _paused:  # the command line's start-up is over: collect as usual from here
        _paused = False
        gc.enable()
    if not _depth:
        _ours = gc.isenabled() and not gc.get_freeze_count()
    if _ours:
        gc.freeze()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _ours:
            _ours = False
            gc.unfreeze()
