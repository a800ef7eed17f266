"""The critical path of one training step or one served request: the chain of events that set
its end (docs/analysis.md, "critical_path").

Walk back from the end of the span: the path's last element is the rank's event that finished
last (no later than the current instant; ties: the higher bottleneck tier, then the longer); the
walk continues from that event's start. Time between an event's end and the instant the walk
came from is a **gap** (the rank waited on something it did not record). Events that overlap a
path event (communication hidden under compute) are not on the path. The rows tile the span:
their durations, gaps included, sum to it. Pandas in, pandas out; nothing of SimPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hwsim.analysis.bottleneck import category_tier

if TYPE_CHECKING:
    import pandas as pd
    from hwsim.analysis.result import Result

__all__ = ["critical_path", "walk_back", "CRITICAL_PATH_COLUMNS", "GAP"]

CRITICAL_PATH_COLUMNS = ("start_s", "end_s", "duration_s", "resource", "kind", "name",
                         "category")
GAP = "gap"
"""``kind`` and ``category`` of a gap row (``resource`` and ``name`` empty)."""


def walk_back(events: pd.DataFrame, start_s: float, end_s: float) -> pd.DataFrame:
    """The critical path of *events* (columns of ``Result.events``) over ``[start_s, end_s]``
    (see the module doc); :data:`CRITICAL_PATH_COLUMNS`, in time order. Events are clipped to
    the span; zero-length events are skipped."""
    import pandas as pd

    lo, hi = float(start_s), float(end_s)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ValueError(f"critical_path: need finite start_s <= end_s, got {lo}, {hi}")
    s = np.clip(events["start_s"].to_numpy(float), lo, hi)
    e = np.clip(events["end_s"].to_numpy(float), lo, hi)
    live = np.flatnonzero(e > s)
    tier = np.array([category_tier(c) for c in events["category"].astype(str).to_numpy()[live]],
                    dtype=np.int64) if len(live) else np.zeros(0, np.int64)
    # candidates by end (latest first), then tier (highest priority first), then length
    order = live[np.lexsort((-(e[live] - s[live]), tier, -e[live]))]
    ends = e[order]
    rows: list[tuple] = []
    t = hi
    tol = 1e-12 * max(1.0, abs(hi))
    k = 0  # order is by end descending: skip what ends after t
    while t > lo:
        while k < len(order) and ends[k] > t + tol:
            k += 1
        # among those ending at or before t, the first that starts before t
        while k < len(order) and s[order[k]] >= t:
            k += 1
        if k == len(order):
            rows.append((lo, t, None))
            break
        i = order[k]
        end_i = min(e[i], t)
        if end_i < t:
            rows.append((end_i, t, None))
        rows.append((s[i], end_i, i))
        t = s[i]
        k += 1
    rows.reverse()
    res, kind = events["resource"].astype(str).to_numpy(), events["kind"].astype(str).to_numpy()
    name, cat = events["name"].astype(str).to_numpy(), events["category"].astype(str).to_numpy()
    out = pd.DataFrame(
        [(a, b, b - a, "", GAP, "", GAP) if i is None else
         (a, b, b - a, res[i], kind[i], name[i], cat[i]) for a, b, i in rows],
        columns=list(CRITICAL_PATH_COLUMNS))
    return out.astype({"start_s": float, "end_s": float, "duration_s": float})


def critical_path(result: Result, *, step: int | None = None, request: Any = None,
                  rank: int = 0, job: str | None = None) -> pd.DataFrame:
    """The critical path of training step *step* of rank *rank*, or of served request
    *request* (an ``id`` of ``Result.requests``) on its replica's first device.

    Parameters
    ----------
    result : Result
    step : int
        A step of ``Result.steps`` (0 is the first simulated step; its span is from the previous
        step's end, or the job's start, to its end, the slowest rank's).
    request : int
        A request id (serving runs); its span is arrival to last token.
    rank : int
        Training: whose events (default 0). The events of other ranks' devices recorded under
        the same rank number (sub-group collectives) are left out.
    job : str, optional
        For a run of several jobs (``jobs:``): which one (default: the only or first).

    Returns
    -------
    pandas.DataFrame
        :data:`CRITICAL_PATH_COLUMNS`: ``start_s, end_s, duration_s, resource, kind, name,
        category``, in time order; each row starts where the previous ends, the first at the
        span's start and the last at its end, so ``duration_s`` sums to the span. A row of
        ``kind == category == "gap"`` is time the rank waited on nothing it recorded (a
        message in flight, a request in the queue).

    Raises
    ------
    ValueError
        Neither or both of *step* and *request*, an unknown step or request (the message names
        the valid range), or a run without steps (or requests).
    """
    if (step is None) == (request is None):
        raise ValueError("critical_path: give exactly one of step= (training) or request= "
                         "(serving)")
    ev = result.events
    if step is not None:
        steps = result.steps
        if steps is None or len(steps) == 0:
            raise ValueError("critical_path: this result has no training steps (step= is for "
                             "training runs; use request= for serving)")
        jobs = list(dict.fromkeys(steps["job"]))
        if job is not None:
            if job not in jobs:
                raise ValueError(f"critical_path: no training job {job!r}; valid: "
                                 f"{', '.join(map(str, jobs))}")
            jobs = [job]
        steps = steps[steps["job"] == jobs[0]]
        row = steps[steps["step"] == step]
        if len(row) == 0:
            valid = "0" if len(steps) == 1 else f"0 to {len(steps) - 1}"
            raise ValueError(f"critical_path: no step {step!r}; valid: {valid}")
        lo, hi = float(row["start_s"].iloc[0]), float(row["end_s"].iloc[0])
        mine = _rank_events(result, ev[ev["job"] == jobs[0]], rank)
        return walk_back(mine, lo, hi)
    req = result.requests
    if req is None or len(req) == 0:
        raise ValueError("critical_path: this result has no requests (request= is for serving "
                         "runs; use step= for training)")
    if job is not None and "job" in req.columns:
        req = req[req["job"] == job]
    row = req[req["id"] == request]
    if len(row) == 0:
        raise ValueError(f"critical_path: no request {request!r}; valid: ids "
                         f"{int(req['id'].min())} to {int(req['id'].max())}")
    r = row.iloc[0]
    lo, hi = float(r["arrival_s"]), float(r["end_s"])
    # the replica's events: those of the devices whose compute ran the request's iterations
    sub = ev if "job" not in row.columns else ev[ev["job"] == r["job"]]
    device = _replica_device(result, sub, int(r["replica"]), lo, hi)
    res = sub["resource"].astype(str)
    keep = res.str.rsplit("/", n=1).str[0].eq(device) | res.str.split("->", n=1).str[0].eq(
        device)
    return walk_back(sub[keep.to_numpy()], lo, hi)


def _rank_events(result: Result, ev: pd.DataFrame, rank: int) -> pd.DataFrame:
    """Rank *rank*'s events on its own device (or on no device: storage reads, host work)."""
    sub = ev[ev["rank"] == rank]
    res = sub["resource"].astype(str)
    flow = res.str.contains("->", regex=False)
    owner = res.str.split("->", n=1).str[0].where(flow, res.str.rsplit("/", n=1).str[0])
    devices = set(result.device_specs)
    on_device = owner.isin(devices)
    if not on_device.any():
        return sub
    # the rank's device: the owner of most of its compute-stream events
    comp = sub["kind"].astype(str).eq("compute") & on_device
    mine = owner[comp].mode().iloc[0] if comp.any() else owner[on_device].mode().iloc[0]
    return sub[(~on_device | owner.eq(mine)).to_numpy()]


def _replica_device(result: Result, ev: pd.DataFrame, replica: int, lo: float, hi: float) -> str:
    """The first device of *replica*: from ``Result.iterations`` and the compute events active
    during the request; the lowest-named device whose compute stream ran in every iteration of
    that replica in the span."""
    its = result.iterations
    if its is not None and len(its):
        its = its[(its["replica"] == replica) & (its["end_s"] > lo) & (its["start_s"] < hi)]
    comp = ev[ev["kind"].astype(str).eq("compute")]
    res = comp["resource"].astype(str)
    if its is not None and len(its):
        t0, t1 = float(its["start_s"].min()), float(its["end_s"].max())
        comp = comp[(comp["start_s"] >= t0 - 1e-12) & (comp["end_s"] <= t1 + 1e-12)]
        res = comp["resource"].astype(str)
        starts = set(np.round(its["start_s"].to_numpy(float), 12))
        hit = res[np.isin(np.round(comp["start_s"].to_numpy(float), 12), list(starts))]
        if len(hit):
            return sorted(hit.str.rsplit("/", n=1).str[0].unique())[0]
    if len(res):
        return sorted(res.str.rsplit("/", n=1).str[0].unique())[0]
    raise ValueError(f"critical_path: no compute events of replica {replica} in the request's "
                     f"span")
