"""A training step split by parallelism: compute, exposed communication of each parallelism (tp,
pp, dp, cp, ep, unidentified), pipeline bubble, optimizer, data loading, other (docs/model.md
"Step breakdown by parallelism").

One function, :func:`classify`, maps an event (name, kind, category) to its part; the names it
reads are those the jobs record:

- ``bubble``: kind or category ``bubble`` (pipeline warm-up, waits, cool-down).
- ``data_loading``: ``read.step<N>`` (dataset tier to host memory), ``decode.step<N>`` (host
  decode) and ``h2d.step<N>`` (host-to-device copy) of :mod:`hwsim.jobs.training`.
- ``exposed_comm_<p>``: an event of category ``comm`` or ``comm:<link class>``; ``<p>`` is the
  parallelism its name carries (:func:`comm_parallelism`): a dot-separated segment that is ``tp``,
  ``cp``, ``ep``, ``mp`` (DLRM's model-parallel embedding exchange, which runs over the expert /
  model-parallel ranks, so ``ep``), ``pp``, ``dp`` or ``p2p`` (pipeline send/recv, so ``pp``), or
  starts with one of
  them and ``_`` (the op kinds ``tp_allreduce``, ``cp_allgather``, ``ep_alltoall`` ...), first
  segment first. Anything else is ``exposed_comm_other``, never dropped.
- ``optimizer``: a name in the job's optimizer ops (``ModelOps.optimizer``, passed in; also when
  they run on the host CPU under optimizer offload), and the offload transfers
  (``offload.<what>.step<N>``: gradients to the host, states to and from the drive, parameters
  back).
- ``compute``: the other device ops (categories ``compute``, ``memory``, ``overhead``), except
  host-side work of kind ``host`` (the framework's per-step loop, ``framework.step``), which is
  ``other`` like any unknown category.

The sweep (:func:`step_breakdown`) is the bottleneck sweep's (:mod:`hwsim.analysis.bottleneck`):
at each instant the time goes to the active event of the highest category tier, so per tier the
totals agree with :func:`~hwsim.analysis.bottleneck.critical_path_breakdown` over the same events;
inside a tier the parts rank as :data:`PRIORITY` says. Exposed communication is therefore what no
device op hides, and when several parallelisms are exposed at once the blocking ones win: TP, CP
and EP collectives sit inside a layer and hold the next op, pipeline sends hold the next stage,
data-parallel reductions mostly run behind the backward pass (ZeRO-3 gathers excepted). Uncovered time
is ``other``. Pandas in, pandas out (or a run's :class:`~hwsim.columnar.Table`, read without
pandas); nothing of SimPy.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from hwsim.analysis.bottleneck import active_counts, category_tier, intervals, select_rows
from hwsim.columnar import Table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PARTS", "COMM_PARTS", "PRIORITY", "category_parts", "classify", "classify_events",
           "comm_parallelism", "rank_events", "step_breakdown", "step_summary", "summary_key"]

PARTS = ("compute", "exposed_comm_tp", "exposed_comm_pp", "exposed_comm_dp", "exposed_comm_cp",
         "exposed_comm_ep", "exposed_comm_other", "bubble", "optimizer", "data_loading", "other")
"""The parts of a step, in summary order; every step second lands in exactly one."""
COMM_PARTS = tuple(p for p in PARTS if p.startswith("exposed_comm_"))
PRIORITY = ("compute", "optimizer", "exposed_comm_tp", "exposed_comm_cp", "exposed_comm_ep",
            "exposed_comm_pp", "exposed_comm_dp", "exposed_comm_other", "data_loading", "bubble",
            "other")
"""Order of the parts inside one category tier, highest first."""

_TOKENS = {"tp": "tp", "cp": "cp", "ep": "ep", "mp": "ep", "pp": "pp", "dp": "dp", "p2p": "pp"}
_DATA_LOADING = re.compile(r"(read|decode|h2d)\.step\d+(\.|$)")
_DEVICE_CATEGORIES = ("compute", "memory", "overhead")


def comm_parallelism(name: str) -> str | None:
    """The parallelism (``tp``, ``cp``, ``ep``, ``pp``, ``dp``) a communication event's name
    carries, or None (see the module doc).

    >>> [comm_parallelism(n) for n in ("layer3.out_proj.tp_allreduce.step2", "dp.fsdp_allgather",
    ...  "p2p.F.step0.mb1.c0", "cp.ring.step0", "dp.allreduce.step4.b0.phase0", "broadcast.x")]
    ['tp', 'dp', 'pp', 'cp', 'dp', None]
    """
    for seg in str(name).split("."):
        head = seg.split("_", 1)[0]  # "tp_allreduce" -> "tp"; "tp" -> "tp"
        if head in _TOKENS:
            return _TOKENS[head]
    return None


def classify(name: str, kind: str, category: str, optimizer_names: Iterable[str] = ()) -> str:
    """The part of :data:`PARTS` one event belongs to (see the module doc).

    >>> classify("layer0.qkv", "compute", "compute")
    'compute'
    >>> classify("layer0.adam", "compute", "memory", {"layer0.adam"})
    'optimizer'
    >>> classify("h2d.step3", "copy", "comm:pcie"), classify("mystery.send", "flow", "comm:ici")
    ('data_loading', 'exposed_comm_other')
    """
    name, kind, category = str(name), str(kind), str(category)
    if category == "bubble" or kind == "bubble":
        return "bubble"
    if _DATA_LOADING.match(name):
        return "data_loading"
    if name.startswith("offload."):  # optimizer offload's transfers (hwsim.jobs.parallel)
        return "optimizer"
    if category == "comm" or category.startswith("comm:"):
        return f"exposed_comm_{comm_parallelism(name) or 'other'}"
    opt = optimizer_names if isinstance(optimizer_names, (set, frozenset)) else set(
        optimizer_names)
    if name in opt:
        return "optimizer"
    if category in _DEVICE_CATEGORIES and kind != "host":
        return "compute"
    return "other"


@functools.lru_cache(maxsize=1 << 16)
def _sweep_key(name: str, kind: str, category: str, optimizer: bool) -> int:
    """:func:`step_breakdown`'s key of an event: its category's tier, then its part's rank in
    :data:`PRIORITY` (a pure function of its arguments, memoised: the same op names recur in
    every step and every run of a sweep)."""
    part = classify(name, kind, category, (name,) if optimizer else ())
    return category_tier(category) * len(PRIORITY) + PRIORITY.index(part)


def classify_events(events: pd.DataFrame | Table, optimizer_names: Iterable[str] = ()
                    ) -> np.ndarray:
    """:func:`classify` of every row of *events* (columns ``name``, ``kind``, ``category``), one
    call per distinct triple."""
    codes, uniq = _triples(Table.of(events))
    opt = frozenset(optimizer_names)
    return np.array([classify(n, k, c, opt) for n, k, c in uniq], dtype=object)[codes]


def _triples(events: Table) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    """Codes of the distinct (name, kind, category) triples of *events*, and the triples (a
    missing value as ``""``)."""
    cols = [events.text(c) for c in ("name", "kind", "category")]  # no string per row
    combined = np.zeros(len(events), dtype=np.int64)
    for codes, values in cols:  # one integer per triple: mixed radix over the column codes
        combined = combined * max(len(values), 1) + codes
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    triples = [tuple(values[codes[i]] for codes, values in cols) for i in first.tolist()]
    return inverse.reshape(-1), triples


def rank_events(events: pd.DataFrame | Table, *, job: Any, rank: int, device: str,
                devices: Sequence[str]) -> pd.DataFrame | Table:
    """The events of *rank* of *job* that happened on its own *device* or off every device (storage
    reads, host work): rows recorded with this rank number on another of the job's *devices* are
    dropped. (Collectives over a sub-group record each member's index in the group as its rank,
    so in a tensor x pipeline x data parallel job "rank 0" rows also come from the first member of
    every other group.) A stream's owner is its resource before the last ``/``, a flow's its
    source (before ``->``). A frame in, a frame out; a Table, a Table."""
    table = Table.of(events)
    keep = select_rows(table, "job", job) & select_rows(table, "rank", rank)
    others = set(devices) - {device}
    if keep.any() and others:
        # one owner per distinct resource (thousands of rows share a few hundred resources)
        codes, uniques = table.text("resource")
        owners = [r.split("->", 1)[0] if "->" in r else r.rsplit("/", 1)[0] for r in uniques]
        drop = np.fromiter((o in others for o in owners), dtype=bool, count=len(owners))
        keep &= ~drop[codes]
    return events[keep] if not isinstance(events, Table) else events.take(keep)


def step_breakdown(events: pd.DataFrame | Table, *, start_s: float, end_s: float,
                   optimizer_names: Iterable[str] = ()) -> pd.DataFrame:
    """Split the wall interval ``[start_s, end_s]`` of one rank's *events* into :data:`PARTS`.

    Returns a frame ``part, seconds, share`` with one row per part in :data:`PARTS` order (zeros
    included); seconds sum to ``end_s - start_s`` and shares to 1 (all zero for an empty
    interval). Raises ValueError for a missing column, a non-finite time, an event ending before it
    starts or ``end_s < start_s``.

    >>> import pandas as pd
    >>> ev = pd.DataFrame({"start_s": [0.0, 1.0, 3.0], "end_s": [2.0, 3.0, 3.5],
    ...     "name": ["layer0.qkv", "dp.allreduce.b0", "layer0.adam"],
    ...     "kind": ["compute", "collective", "compute"],
    ...     "category": ["compute", "comm:nvlink", "memory"]})
    >>> bd = step_breakdown(ev, start_s=0.0, end_s=4.0, optimizer_names=["layer0.adam"])
    >>> {p: s for p, s in zip(bd["part"], bd["seconds"]) if s}
    {'compute': 2.0, 'exposed_comm_dp': 1.0, 'optimizer': 0.5, 'other': 0.5}
    """
    return step_table(events, start_s=start_s, end_s=end_s,
                      optimizer_names=optimizer_names).to_pandas()


def step_table(events: pd.DataFrame | Table, *, start_s: float, end_s: float,
               optimizer_names: Iterable[str] = ()) -> Table:
    """:func:`step_breakdown` as a :class:`~hwsim.columnar.Table` (what a run's summary
    takes, without pandas)."""
    events = Table.of(events)
    missing = [c for c in ("start_s", "end_s", "name", "kind", "category")
               if c not in events.columns]
    if missing:
        raise ValueError(f"step_breakdown: events lack column(s) {missing}; expected the columns "
                         "of Result.events")
    lo, hi = float(start_s), float(end_s)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ValueError(f"step_breakdown: need finite start_s <= end_s, got {lo}, {hi}")
    starts, ends = intervals(events, "step_breakdown")
    secs = dict.fromkeys(PARTS, 0.0)
    s, e = np.clip(starts, lo, hi), np.clip(ends, lo, hi)
    live = e > s
    if hi > lo:
        # sweep key of an event: its category tier, then its part's rank in PRIORITY
        codes, uniq = _triples(events.take(live))
        opt = frozenset(optimizer_names)
        key = np.array([_sweep_key(n, k, c, n in opt) for n, k, c in uniq],
                       dtype=np.int64)[codes]
        s, e = s[live], e[live]
        t = np.unique(np.concatenate([s, e, [lo, hi]]))
        left, dt = t[:-1], np.diff(t)
        winner = np.full(len(left), -1, dtype=np.int64)
        first, last = np.searchsorted(t, s), np.searchsorted(t, e)
        for k in np.unique(key):  # ascending: highest priority first
            n = active_counts(first, last, key == k, len(left))
            winner[(winner < 0) & (n > 0)] = k
        for k in np.unique(winner):
            part = "other" if k < 0 else PRIORITY[int(k) % len(PRIORITY)]
            secs[part] += float(dt[winner == k].sum())
    total = hi - lo
    return Table({"part": list(PARTS), "seconds": np.array([secs[p] for p in PARTS]),
                  "share": np.array([secs[p] / total if total > 0 else 0.0 for p in PARTS])})


def category_parts(category: str) -> tuple[str, ...]:
    """The parts of :data:`PARTS` that hold the time a critical-path category
    (:func:`hwsim.analysis.bottleneck.critical_path_breakdown`) is charged, so a printout can
    relate the bottleneck to the step breakdown. The two split the same sweep along different
    lines: the breakdown by what an event does (a device op is ``compute``, or ``optimizer``
    when it updates the weights), the bottleneck by what bounds it (``compute``, ``memory``
    bandwidth or launch ``overhead``). So an ``overhead`` bottleneck is the time of the
    ``compute`` and ``optimizer`` parts, not a part of its own.

    Optimizer offload's transfers (``optimizer``, but charged to ``comm:*`` or ``storage``) are
    left out: the part is mostly the update's own compute.

    >>> category_parts("overhead"), category_parts("comm:nvlink"), category_parts("storage")
    (('compute', 'optimizer'), ('exposed_comm_tp', 'exposed_comm_pp', 'exposed_comm_dp', \
'exposed_comm_cp', 'exposed_comm_ep', 'exposed_comm_other', 'data_loading'), ('data_loading',))
    """
    category = str(category)
    if category in _DEVICE_CATEGORIES:
        return ("compute", "optimizer")
    if category == "comm" or category.startswith("comm:"):  # host-to-device copies too
        return (*COMM_PARTS, "data_loading")
    if category == "storage":
        return ("data_loading",)
    if category == "host":
        return ("data_loading", "other")
    if category == "bubble":
        return ("bubble",)
    return ("other",)


def summary_key(part: str) -> str:
    """The summary key of a part: ``time_<part>_s``."""
    return f"time_{part}_s"


def step_summary(breakdown: pd.DataFrame | Table | None, step_time_s: float | None
                 ) -> dict[str, Any]:
    """Summary keys of a :func:`step_breakdown`: ``time_<part>_s = share * step_time_s`` for every
    part (so they sum to the step time) and ``exposed_comm_share``; all None without a step."""
    if breakdown is None or step_time_s is None:
        return {**{summary_key(p): None for p in PARTS}, "exposed_comm_share": None}
    t = Table.of(breakdown)
    share = dict(zip(t.strings("part"), t.numbers("share").tolist()))
    out: dict[str, Any] = {summary_key(p): float(share.get(p, 0.0)) * step_time_s for p in PARTS}
    out["exposed_comm_share"] = float(sum(share.get(p, 0.0) for p in COMM_PARTS))
    return out
