"""Bottleneck attribution: what the critical path was waiting for (DESIGN.md "Bottleneck
attribution").

A wall interval is split by a sweep line over the recorded events: at each instant the time counts
toward the highest-priority category active then, and time no event covers is ``idle``. The
priority order is

    compute > memory > overhead > comm:* > storage > host > bubble > other categories > idle

so communication that overlaps compute is hidden (counts as compute) and only *exposed*
communication is charged to the link class. When several communication classes are active at the
same instant, the one with the most active events wins, ties broken by name. Categories outside the
list (none are expected) are kept, below ``bubble``, in name order, never dropped.

Pandas in, pandas out (or the run's :class:`~hwsim.columnar.Table`, which it reads without
pandas); this module knows nothing of SimPy. The sweep is vectorised: sorted
boundaries and per-category ``searchsorted`` counts, no Python loop per event, so a million events
take about a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from hwsim.columnar import Table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["critical_path_breakdown", "bottleneck", "bottleneck_label", "category_tier", "PRIORITY",
           "IDLE"]

PRIORITY = ("compute", "memory", "overhead", "comm", "storage", "host", "bubble")
"""Categories from the highest priority down; ``comm`` stands for every ``comm:<link class>``."""
IDLE = "idle"
"""Time covered by no selected event."""

def _empty() -> Table:
    return Table({"category": [], "seconds": np.empty(0), "share": np.empty(0)})


def _is_comm(category: str) -> bool:
    return category == "comm" or category.startswith("comm:")


def _rank_key(category: str) -> tuple[int, str]:
    """Sort key of a category: its tier in :data:`PRIORITY` (comm classes share one tier; unknown
    categories come after ``bubble``), then its name."""
    if category == IDLE:
        return (len(PRIORITY) + 1, category)
    tier = PRIORITY.index("comm") if _is_comm(category) else (
        PRIORITY.index(category) if category in PRIORITY else len(PRIORITY))
    return (tier, category)


def category_tier(category: str) -> int:
    """Priority tier of a category, 0 the highest: its index in :data:`PRIORITY` (every
    ``comm:<link class>`` shares the ``comm`` tier), unknown categories after ``bubble``, ``idle``
    last. Other sweeps over the same events (:mod:`hwsim.analysis.parallelism`) rank by it so
    that their totals per tier agree with :func:`critical_path_breakdown`.

    >>> [category_tier(c) for c in ("compute", "comm:nvlink", "bubble", "checkpoint", "idle")]
    [0, 3, 6, 7, 8]
    """
    return _rank_key(str(category))[0]


def active_counts(first: np.ndarray, last: np.ndarray, select: np.ndarray | None,
                  n: int) -> np.ndarray:
    """How many of some events are active on each of *n* elementary intervals ``[t[i],
    t[i + 1])``, the events given by the indices into ``t`` of their starts (*first*) and ends
    (*last*), those of *select* (a boolean mask; None: all): one bincount and a running sum."""
    a, b = (first, last) if select is None else (first[select], last[select])
    return np.cumsum(np.bincount(a, minlength=n + 1) - np.bincount(b, minlength=n + 1))[:n]


def select_rows(events: Table, column: str, wanted: Any) -> np.ndarray:
    """Rows of *events* whose *column* equals *wanted* (or is among them, a list)."""
    many = not isinstance(wanted, (str, bytes)) and isinstance(wanted, Iterable)
    wanted = list(wanted) if many else [wanted]
    if all(isinstance(w, (int, float, np.number)) and not isinstance(w, bool) for w in wanted):
        try:
            return np.isin(events.numbers(column), np.asarray(wanted, float))
        except (TypeError, ValueError):  # a text column asked for a number: no row is
            return np.zeros(len(events), bool)
    codes, names = events.text(column)
    text = {str(w) for w in wanted}
    hit = np.fromiter((n in text for n in names), bool, len(names))
    return hit[codes] if len(names) else np.zeros(len(events), bool)


def intervals(events: pd.DataFrame | Table, who: str) -> tuple[np.ndarray, np.ndarray]:
    """``start_s`` and ``end_s`` of *events* as float arrays; ValueError (naming *who* and the
    first bad event) unless every one is finite and ends no earlier than it starts."""
    events = Table.of(events)
    starts = events.numbers("start_s")
    ends = events.numbers("end_s")
    if not (np.isfinite(starts).all() and np.isfinite(ends).all()):
        raise ValueError(f"{who}: start_s and end_s must be finite numbers")
    if (ends < starts).any():
        i = int(np.argmax(ends < starts))
        row = events.take(np.array([i]))
        name, category = (row.strings(c)[0] if c in row else None for c in ("name", "category"))
        raise ValueError(f"{who}: an event ends before it starts (start_s={starts[i]}, "
                         f"end_s={ends[i]}, name={name!r}, category={category!r})")
    return starts, ends


def critical_path_breakdown(events: pd.DataFrame | Table, *, job: Any = None, rank: Any = None,
                            start_s: float | None = None,
                            end_s: float | None = None) -> pd.DataFrame:
    """Split a wall interval into the category the critical path was waiting for.

    Parameters
    ----------
    events : pandas.DataFrame
        At least ``start_s``, ``end_s`` and ``category`` (and ``job`` / ``rank`` when filtering on
        them), as :attr:`hwsim.analysis.result.Result.events`.
    job, rank : optional
        Keep only the events of this job / rank (a value or a list of values); ``None`` keeps all.
    start_s, end_s : float, optional
        The wall interval; default: the first start to the last end of the selected events. Events
        are clipped to it.

    Returns
    -------
    pandas.DataFrame
        Columns ``category, seconds, share``, one row per category with time attributed to it
        (``idle`` for uncovered time), sorted by seconds descending (ties: by priority). Shares sum
        to 1. Empty (with these columns) when nothing is selected and no interval is given, or
        when the interval has zero length.

    Raises
    ------
    ValueError
        A required column is missing, a time is not finite, an event ends before it starts, or
        ``end_s < start_s``.

    Examples
    --------
    >>> import pandas as pd
    >>> ev = pd.DataFrame({"start_s": [0.0, 1.0, 3.0], "end_s": [2.0, 3.0, 4.0],
    ...                    "category": ["compute", "comm:nvlink", "storage"]})
    >>> critical_path_breakdown(ev).to_dict("list")
    {'category': ['compute', 'comm:nvlink', 'storage'], 'seconds': [2.0, 1.0, 1.0], 'share': [0.5, 0.25, 0.25]}
    """
    return breakdown_table(events, job=job, rank=rank, start_s=start_s, end_s=end_s).to_pandas()


def breakdown_table(events: pd.DataFrame | Table, *, job: Any = None, rank: Any = None,
                    start_s: float | None = None, end_s: float | None = None) -> Table:
    """:func:`critical_path_breakdown` as a :class:`~hwsim.columnar.Table` (what a run's
    summary takes, without pandas)."""
    events = Table.of(events)
    needed = ["start_s", "end_s", "category"] + (["job"] if job is not None else []) + (
        ["rank"] if rank is not None else [])
    missing = [c for c in needed if c not in events.columns]
    if missing:
        raise ValueError(f"critical_path_breakdown: events lack column(s) {missing}; expected "
                         f"the columns of Result.events, e.g. start_s, end_s, category, job, rank")
    if start_s is not None and end_s is not None and end_s < start_s:
        raise ValueError(f"critical_path_breakdown: end_s(={end_s}) must be >= start_s(={start_s})")

    keep = np.ones(len(events), dtype=bool)
    if job is not None:
        keep &= select_rows(events, "job", job)
    if rank is not None:
        keep &= select_rows(events, "rank", rank)
    starts, ends = intervals(events.take(keep), "critical_path_breakdown")
    codes, names = events.text("category")
    codes = codes[keep]

    if len(starts) == 0 and (start_s is None or end_s is None):
        return _empty()
    lo = float(starts.min()) if start_s is None else float(start_s)
    hi = float(ends.max()) if end_s is None else float(end_s)
    if not hi > lo:
        if hi < lo:
            raise ValueError(f"critical_path_breakdown: end_s(={hi}) must be >= start_s(={lo})")
        return _empty()

    # Clip to the interval; drop what lies outside or has no length left.
    s = np.clip(starts, lo, hi)
    e = np.clip(ends, lo, hi)
    live = e > s
    s, e, codes = s[live], e[live], codes[live]
    if len(codes):  # the categories present, renumbered
        present, codes = np.unique(codes, return_inverse=True)
        names = [names[k] for k in present.tolist()]
    else:
        names = []
    order = sorted(range(len(names)), key=lambda k: _rank_key(names[k]))

    # Elementary intervals [t[i], t[i+1]) between consecutive distinct boundaries.
    t = np.unique(np.concatenate([s, e, [lo, hi]]))
    left, dt = t[:-1], np.diff(t)
    winner = np.full(len(left), -1, dtype=np.int64)
    first, last = np.searchsorted(t, s), np.searchsorted(t, e)

    def active(k: int) -> np.ndarray:
        """Number of events of category k active on each elementary interval."""
        return active_counts(first, last, codes == k, len(left))

    i = 0
    while i < len(order):
        tier = _rank_key(names[order[i]])[0]
        group = [order[i]]
        i += 1
        while (i < len(order) and tier == PRIORITY.index("comm")
               and _rank_key(names[order[i]])[0] == tier):
            group.append(order[i])
            i += 1
        free = winner < 0
        if not free.any():
            break
        if len(group) == 1:
            n = active(group[0])
            winner[free & (n > 0)] = group[0]
            continue
        # Several comm classes: the most active events wins, ties by name (group is name-sorted).
        best_n = np.zeros(len(left), dtype=np.int64)
        best_k = np.full(len(left), -1, dtype=np.int64)
        for k in group:
            n = active(k)
            better = n > best_n
            best_n[better] = n[better]
            best_k[better] = k
        take = free & (best_k >= 0)
        winner[take] = best_k[take]

    # bincount with slot 0 for idle
    secs = np.bincount(winner + 1, weights=dt, minlength=len(names) + 1)
    total = hi - lo
    rows = [(names[k], float(secs[k + 1])) for k in order if secs[k + 1] > 0]
    if secs[0] > 0:
        rows.append((IDLE, float(secs[0])))
    if not rows:
        return _empty()
    seconds = np.array([r[1] for r in rows])
    order = np.lexsort((np.arange(len(rows)), -seconds))  # seconds descending, ties: priority
    # Floating round-off: the elementary intervals sum to the interval up to a few ulps.
    return Table({"category": [rows[i][0] for i in order.tolist()], "seconds": seconds[order],
                  "share": seconds[order] / total})


def bottleneck(breakdown: pd.DataFrame | Table) -> tuple[str, float]:
    """The category with the most critical-path time and its share.

    ``idle`` is the answer only when no other category has time; ties go to the higher-priority
    category. An empty breakdown gives ``("idle", 0.0)``.

    >>> import pandas as pd
    >>> bd = pd.DataFrame({"category": ["idle", "compute"], "seconds": [3.0, 1.0],
    ...                    "share": [0.75, 0.25]})
    >>> bottleneck(bd)
    ('compute', 0.25)
    """
    if breakdown is None or len(breakdown) == 0:
        return (IDLE, 0.0)
    t = Table.of(breakdown)
    rows = list(zip(t.strings("category"), t.numbers("seconds").tolist(),
                    t.numbers("share").tolist()))
    busy = [r for r in rows if r[0] != IDLE and r[1] > 0]
    if not busy:
        return (IDLE, float(sum(r[2] for r in rows if r[0] == IDLE)))
    best = min(busy, key=lambda r: (-r[1], _rank_key(r[0])))
    return (best[0], best[2])


_LABELS = {
    "compute": "compute (compute-bound)",
    "memory": "compute (memory-bound)",
    "overhead": "launch/dispatch overhead",
    "comm": "communication",
    "storage": "storage I/O",
    "host": "host/CPU work",
    "bubble": "pipeline bubble",
    IDLE: "idle",
}


def bottleneck_label(category: str) -> str:
    """Human text for a category: ``"comm:nvlink"`` -> ``"communication over nvlink"``.

    >>> bottleneck_label("memory")
    'compute (memory-bound)'
    """
    if category in _LABELS:
        return _LABELS[category]
    if category.startswith("comm:"):
        return f"communication over {category[len('comm:'):]}"
    return category
