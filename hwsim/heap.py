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


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist when the block starts out of the collector's passes until it
    ends (:func:`gc.freeze`, then :func:`gc.unfreeze`); objects made inside are collected as
    usual. Nothing is done when the collector is off or objects are frozen already (by an
    enclosing block, or by the program: its frozen objects stay frozen)."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
