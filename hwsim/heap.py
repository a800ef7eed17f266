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


_depth = 0  # frozen_heap blocks open (the inner ones do nothing)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist when the block starts out of the collector's passes until it
    ends (:func:`gc.freeze`, then :func:`gc.unfreeze`); objects made inside are collected as
    usual. Nothing is done inside another such block, when the collector is off, or when the
    program froze objects itself (they stay frozen). (``gc.get_freeze_count`` walks the frozen
    objects: it is asked only when none of ours are.)"""
    global _depth
    if _depth or not gc.isenabled() or gc.get_freeze_count():
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    gc.freeze()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        gc.unfreeze()
