"""Test helper: a copy of a scenario dict with fields changed by dotted path."""

from __future__ import annotations

import copy
from typing import Any, Mapping


def edited(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict:
    """A deep copy of *base* with each ``"a.b.c": value`` of *changes* set (missing mappings on
    the way are created)."""
    s = copy.deepcopy(dict(base))
    for path, value in changes.items():
        node = s
        *parents, last = path.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    return s
