"""Cyclic garbage collection around a run (:func:`frozen_heap`).

A run allocates many small objects (events, requests, iteration records), so Python's cyclic
collector makes several full passes during it, and each walks every object alive: the imported
modules (pandas, numpy, networkx, pydantic: about 100,000 objects), the catalogs and the graph,
about 0.05-0.1 s a pass, though none of them becomes garbage during the run.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

__all__ = ["frozen_heap"]


_depth = 0  # frozen_heap blocks open
_ours = False  # whether the outermost one froze (and unfreezes at its end)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist when the block starts out of the collector's passes until the
    outermost such block ends (:func:`gc.freeze`, then :func:`gc.unfreeze`); objects made
    inside are collected as usual. An inner block freezes what was made since (the command
    line freezes the modules, the run then the loaded scenario too). Nothing is done when the
    collector is off or when the program froze objects itself (they stay frozen).
    (``gc.get_freeze_count`` walks the frozen objects: it is asked only when none of ours
    are.)"""
    global _depth, _ours
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
