"""Saturation and SLOs (docs/planning.md, "The highest rate that meets an SLO"): the highest
open-loop arrival rate at which a continuous-batching LLM server meets given TTFT and TPOT
percentiles, the saturation throughput, and the knee of the latency-vs-rate curve.

Every point is a simulation of the base scenario (a plain mapping, as a scenario file reads)
with ``workload.arrivals.rate_per_s`` replaced and everything else kept, the seed included: the
arrival process draws its gaps as one seeded sequence scaled by ``1 / rate`` and the token
counts from the same draws, so every trial serves the same requests, only closer together or
further apart (common random numbers: the latency-vs-rate curve is smooth and the search
deterministic). Users call :func:`hwsim.max_rate` (a scenario file in).

The search, in order (each rate is simulated once; the trials table lists them):

1. the base's own rate (``base``);
2. a low-load rate (``low_load``): the base's rate or, if lower, the one at which Little's law
   puts :data:`LOW_LOAD_IN_SYSTEM` requests in the system on average given the base's mean
   end-to-end time (an upper bound of the low-load one); its latencies are the unloaded values.
   If it misses a target, no rate meets it (a lower rate only removes the rare overlap);
3. a burst (``saturation``): every request arrives within 1 % of one unloaded request's
   end-to-end time; the requests per second it completes while requests still wait (decode
   tokens per second over decode tokens per request: :func:`_saturation_throughput`) are the
   saturation throughput. Above it the queue grows for as long as requests arrive, whatever the
   percentiles of a finite run say, so a rate above it never meets the targets;
4. bisection (``search``), geometric, between the highest rate that meets and the lowest that
   does not, starting from the saturation throughput, until they are within ``1 + rel_tol``;
5. the knee: a trial at :data:`KNEE_REFERENCE_LOAD` of the saturation throughput
   (``knee_reference``), then bisection likewise (``knee``) for the lowest rate at which the
   knee metric's percentile (TTFT by default: queueing shows there) reaches ``knee_factor``
   (2) times its value there. Not the unloaded value: at the low-load rate the TTFT
   percentile is one prefill alone, and it doubles as soon as a request now and then waits
   for another's prefill, far below any queue; at a tenth of saturation those overlaps are
   in the reference already.

Bisection assumes that a rate which meets the targets has every lower rate meeting them too:
true of the expected percentiles of a queue, and of these trials up to sampling noise (the same
requests are served at every rate); it is not checked beyond the rates simulated.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import pandas as pd

from hwsim.exceptions import ScenarioError
from hwsim.planning.capacity_cluster import number, positive

if TYPE_CHECKING:
    from hwsim.analysis.result import Result

__all__ = ["max_rate", "MaxRate", "LOW_LOAD_IN_SYSTEM", "KNEE_REFERENCE_LOAD", "OPEN_LOOP"]

Run = Callable[[dict], "Result"]
LOW_LOAD_IN_SYSTEM = 0.01
"""Mean requests in the system at the low-load trial (Little's law): one request in a hundred
finds another being served."""
KNEE_REFERENCE_LOAD = 0.1
"""The knee's reference: the latency percentile at this fraction of the saturation throughput
(light load: requests overlap now and then, the queue is short)."""
OPEN_LOOP = ("poisson", "gamma", "constant")
KNEE_METRICS = ("ttft", "tpot", "e2e")


@dataclass(frozen=True)
class MaxRate:
    """What :func:`max_rate` found. ``rate_per_s`` is the highest rate simulated that meets
    every target (None when none does: ``reason`` says why); a rate ``1 + rel_tol`` times it
    was simulated and misses (``limited_by``: ``ttft``, ``tpot``, ``ttft+tpot``, or
    ``saturation`` when the targets hold up to the saturation throughput). ``trials`` has one
    row per simulated rate, by rate; ``answer`` is one sentence."""

    rate_per_s: float | None
    feasible: bool
    reason: str
    limited_by: str
    ttft_s: float | None
    tpot_s: float | None
    percentile: float
    rel_tol: float
    saturation_rate_per_s: float | None
    knee_rate_per_s: float | None
    knee_metric: str
    knee_factor: float
    low_load: dict[str, float | None]
    knee_reference: dict[str, float | None]
    trials: pd.DataFrame = field(repr=False)
    answer: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Every field but ``trials``, as plain values (``hwsim capacity serve --max-rate
        --format json`` prints it with the trials)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "trials"}


def _target(value: Any, name: str) -> float | None:
    return None if value is None else positive(value, name)


def _check(base: Mapping[str, Any]) -> tuple[dict, dict]:
    """The base's workload and arrivals, or the ScenarioError saying why it cannot be searched."""
    if base.get("workload") is None:
        raise ScenarioError("max_rate needs one serving workload (workload: {kind: inference, "
                            "...}), not the jobs: of a shared cluster", field="workload")
    wl = dict(base["workload"])
    if wl.get("kind") != "inference":
        raise ScenarioError(f"max_rate needs an inference workload, not kind {wl.get('kind')!r};"
                            " valid: workload: {kind: inference, ...} serving an LLM with "
                            "continuous batching", field="workload.kind")
    policy = dict(wl.get("scheduler") or {}).get("policy", "continuous")
    if policy != "continuous":
        raise ScenarioError(f"max_rate searches continuous-batching LLM serving, not policy "
                            f"{policy!r}; valid: continuous", field="workload.scheduler.policy")
    arr = dict(wl.get("arrivals") or {})
    process = arr.get("process", "poisson")
    if process not in OPEN_LOOP:
        why = ("the clients' think time and the service set the rate" if process == "closed"
               else "the trace's timestamps set the arrivals")
        raise ScenarioError(f"max_rate varies an open-loop arrival rate; process {process!r} "
                            f"has none ({why}); valid: {', '.join(OPEN_LOOP)}",
                            field="workload.arrivals.process")
    return wl, arr


def _rows_done(res: Result) -> pd.DataFrame:
    req = res.requests
    return req[np.isfinite(req["end_s"])] if req is not None and len(req) else pd.DataFrame(
        columns=["ttft_s", "tpot_s", "e2e_s", "end_s"])


def _pct(values: pd.Series, q: float) -> float:
    v = values.dropna().to_numpy(dtype=float)
    return float(np.percentile(v, q)) if len(v) else float("nan")


def _saturation_throughput(res: Result, done: pd.DataFrame) -> float:
    """Requests per second that a backlogged server completes: the decode tokens its iterations
    produce per second while requests wait (from the first iteration to the end of the last
    one with decode tokens that ends before the last admission) over the decode tokens per
    request (output tokens less the first, which the prefill gives). Counting tokens, not
    completions: requests admitted together with equal output lengths finish together, so
    completions come in clumps a whole batch apart while decode tokens come every iteration.
    Without such a window (every request admitted at once) or decode tokens: completions over
    the run. Never less than completions over the run: a burst's whole run (ramp-up and drain
    included) is a lower bound of what the server sustains, and the decode window alone
    under-counts a server whose large KV cache keeps admitting prompts for most of the burst
    (its iterations then carry mostly prefill)."""
    it, req = res.iterations, res.requests
    fallback = (len(done) / (float(done["end_s"].max()) - float(req["arrival_s"].min()))
                if len(done) and done["end_s"].max() > req["arrival_s"].min() else float("nan"))
    if it is None or not len(it) or not len(done):
        return fallback
    last_admission = float(req["start_s"].max())
    window = it[it["end_s"] <= last_admission]
    decoding = (window["tokens"] - window["prefill_tokens"]).to_numpy() > 0
    if decoding.any():  # whole rounds: not the prefill-only iterations of the last admissions
        window = window.iloc[:int(np.flatnonzero(decoding)[-1]) + 1]
    per_request = float((done["output_tokens"] - 1).mean())
    decoded = float((window["tokens"] - window["prefill_tokens"]).sum())
    span = float(window["end_s"].max() - it["start_s"].min()) if len(window) else 0.0
    if span <= 0 or decoded <= 0 or per_request <= 0:
        return fallback
    estimate = decoded / span / per_request
    return max(estimate, fallback) if math.isfinite(fallback) else estimate


def max_rate(run: Run, base: Mapping[str, Any], *, ttft_s: float | None = None,
             tpot_s: float | None = None, percentile: float = 99, rel_tol: float = 0.02,
             requests: int | None = None, knee_factor: float = 2.0, knee_metric: str = "ttft"
             ) -> MaxRate:
    """The highest arrival rate at which the *percentile* of TTFT and of TPOT (over the
    completed requests) are within *ttft_s* and *tpot_s*, to within *rel_tol*.

    Parameters
    ----------
    run : callable
        ``run(mapping) -> Result``.
    base : mapping
        A continuous-batching LLM serving scenario with an open-loop arrival process
        (``poisson``, ``gamma``, ``constant``); its ``rate_per_s`` is the first rate tried and
        everything but the rate (and the SLO, set to the targets) is kept.
    ttft_s, tpot_s : float, optional
        The targets (seconds); at least one.
    percentile : float
        In (0, 100]; 99 for p99.
    rel_tol : float
        In (0, 0.5]: the search stops when the lowest missing rate is within ``1 + rel_tol``
        of the highest meeting one.
    requests : int, optional
        Requests per trial (default: the base's ``arrivals.requests``).
    knee_factor, knee_metric
        The knee is the lowest rate at which the *knee_metric* (``ttft``, ``tpot`` or ``e2e``)
        percentile reaches *knee_factor* (> 1) times its value at
        :data:`KNEE_REFERENCE_LOAD` of the saturation throughput.

    Returns
    -------
    MaxRate
        The rate, the trials table (``role, rate_per_s, ttft_pP_s, tpot_pP_s, e2e_pP_s,
        requests_per_s, output_tokens_per_s, goodput_requests_per_s, slo_attainment,
        requests_in_system_mean, e2e_mean_s, keep_up_ratio, ttft_p99_share_queueing,
        bottleneck, meets, reason``), the knee and the saturation throughput. Targets that no
        rate meets (one below the unloaded latency) or a replica that does not fit in memory
        give ``rate_per_s`` None and the reason, not an error.

    Raises
    ------
    ScenarioError
        No target, a target, percentile, tolerance or knee factor out of range, or a base that
        is not continuous-batching LLM serving with an open-loop arrival rate.
    """
    ttft, tpot = _target(ttft_s, "ttft_s"), _target(tpot_s, "tpot_s")
    if ttft is None and tpot is None:
        raise ScenarioError("max_rate needs a target: ttft_s and/or tpot_s (seconds), e.g. "
                            "ttft_s=1.0, tpot_s=0.05", field="ttft_s")
    q = positive(percentile, "percentile")
    if q > 100:
        raise ScenarioError(f"must be in (0, 100], got {percentile!r}; valid: e.g. 50, 90, 99",
                            field="percentile")
    tol = positive(rel_tol, "rel_tol")
    if tol > 0.5:
        raise ScenarioError(f"must be in (0, 0.5], got {rel_tol!r}; valid: e.g. 0.02",
                            field="rel_tol")
    kf = positive(knee_factor, "knee_factor")
    if kf <= 1:
        raise ScenarioError(f"must be > 1, got {knee_factor!r}; valid: e.g. 2",
                            field="knee_factor")
    if knee_metric not in KNEE_METRICS:
        raise ScenarioError(f"unknown knee metric {knee_metric!r}; valid: "
                            f"{', '.join(KNEE_METRICS)}", field="knee_metric")
    if requests is not None and (isinstance(requests, bool) or not isinstance(
            requests, (int, np.integer)) or requests < 10):
        raise ScenarioError(f"must be a whole number >= 10, got {requests!r}", field="requests")
    wl, arr = _check(base)
    r0 = positive(arr.get("rate_per_s"), "workload.arrivals.rate_per_s")
    n = int(requests if requests is not None else arr.get("requests") or 0)
    tag = f"p{q:g}"
    cols = {m: f"{m}_{tag}_s" for m in ("ttft", "tpot", "e2e")}
    rows: dict[float, dict[str, Any]] = {}

    def trial(rate: float, role: str) -> dict[str, Any]:
        if rate in rows:
            return rows[rate]
        scen = copy.deepcopy(dict(base))
        w = copy.deepcopy(wl)
        w["arrivals"] = {**arr, "rate_per_s": float(rate)}
        if requests is not None:
            w["arrivals"]["requests"] = int(requests)
        w["slo"] = {k: v for k, v in (("ttft_s", ttft), ("tpot_s", tpot)) if v is not None}
        scen["workload"] = w
        res = run(scen)
        s = res.summary
        row: dict[str, Any] = {"order": len(rows), "role": role, "rate_per_s": float(rate)}
        if not bool(s.get("fits", True)):
            row.update(meets=False, fits=False, reason=f"does not fit in device memory "
                       f"({s.get('bottleneck_label') or s.get('memory_per_device_gb')})")
            rows[rate] = row
            return row
        done = _rows_done(res)
        row.update({cols[m]: _pct(done[f"{m}_s"], q) for m in cols})
        row.update({k: number(s.get(k)) for k in (
            "requests_per_s", "output_tokens_per_s", "goodput_requests_per_s",
            "slo_attainment", "requests_in_system_mean", "e2e_mean_s", "keep_up_ratio",
            "ttft_p99_share_queueing")})
        row.update(bottleneck=s.get("bottleneck"), fits=True,
                   completed=int(s.get("requests_completed", 0)),
                   all_done=int(s.get("requests_completed", 0)) == int(s.get("requests", 0)),
                   saturation=_saturation_throughput(res, done))
        rows[rate] = row
        return row

    def table(sat: float | None) -> pd.DataFrame:
        df = pd.DataFrame(list(rows.values())).sort_values("rate_per_s", kind="stable")
        keep = ["order", "role", "rate_per_s", *cols.values(), "requests_per_s",
                "output_tokens_per_s", "goodput_requests_per_s", "slo_attainment",
                "requests_in_system_mean", "e2e_mean_s", "keep_up_ratio",
                "ttft_p99_share_queueing", "bottleneck", "meets", "reason"]
        df = df.reindex(columns=keep).reset_index(drop=True)
        df["meets"] = df["meets"].astype(bool)
        df["reason"] = df["reason"].fillna("")
        df.attrs.update(percentile=q, saturation_rate_per_s=sat)
        return df

    def judge(row: dict[str, Any], sat: float) -> bool:
        if "meets" in row and not row.get("fits", True):
            return False
        why = []
        for m, target in (("ttft", ttft), ("tpot", tpot)):
            v = row[cols[m]]
            if target is not None and not (v <= target):  # NaN misses
                why.append(f"{m.upper()} {tag} {v:.4g} s > {target:g} s")
        if not row["all_done"]:
            why.append(f"only {row['completed']} requests completed")
        if row["rate_per_s"] > sat:
            why.append(f"above the saturation throughput {sat:.4g}/s")
        row.update(meets=not why, reason="; ".join(why))
        return not why

    def result(rate: float | None, reason: str, limited: str, sat: float | None,
               knee: float | None, low: dict, ref: dict | None = None) -> MaxRate:
        what = " and ".join(f"{m.upper()} {tag} <= {t:g} s" for m, t in
                            (("ttft", ttft), ("tpot", tpot)) if t is not None)
        if rate is None:
            answer = f"no rate meets {what}: {reason}"
        else:
            answer = (f"{rate:.4g} requests/s meet {what} (a rate {1 + tol:g}x higher misses: "
                      f"{limited}); saturation throughput {sat:.4g} requests/s")
            if knee is not None:
                answer += (f"; knee at {knee:.4g} requests/s ({knee_metric.upper()} {tag} "
                           f"{kf:g}x its value at {KNEE_REFERENCE_LOAD:g} of the saturation "
                           "throughput)")
        f = (lambda v: None if v is None or not math.isfinite(v) else float(v))
        return MaxRate(rate_per_s=f(rate), feasible=rate is not None, reason=reason,
                       limited_by=limited, ttft_s=ttft, tpot_s=tpot, percentile=q,
                       rel_tol=tol, saturation_rate_per_s=f(sat), knee_rate_per_s=f(knee),
                       knee_metric=knee_metric, knee_factor=kf,
                       low_load={k: f(v) for k, v in low.items()},
                       knee_reference={k: f(v) for k, v in (ref or {}).items()},
                       trials=table(sat), answer=answer)

    first = trial(r0, "base")
    if not first["fits"]:
        return result(None, first["reason"], "", None, None, {})
    w0 = first["e2e_mean_s"]
    ru = min(r0, LOW_LOAD_IN_SYSTEM / w0) if w0 > 0 else r0
    low = trial(ru, "low_load")
    low_load = {"rate_per_s": ru, **{cols[m]: low[cols[m]] for m in cols}}
    wu = low["e2e_mean_s"]
    burst = trial(max(100.0 * max(n, 1) / wu, 2.0 * r0, 2.0 * ru), "saturation")
    sat = burst["saturation"]
    for row in rows.values():
        judge(row, sat)
    if not low["meets"]:
        return result(None, f"at the low-load rate {ru:.4g}/s ({LOW_LOAD_IN_SYSTEM:g} requests "
                      f"in the system on average) {low['reason']}; a lower rate does not "
                      "lower the unloaded latency", "", sat, None, low_load)

    def bisect(ok: Callable[[dict], bool], role: str) -> tuple[float, float | None]:
        """(highest rate known ok, lowest rate above it known not ok, or None) after bisecting
        to within 1 + tol."""
        while True:
            good = [r for r, row in rows.items() if ok(row)]
            lo = max(good)
            bad = [r for r, row in rows.items() if r > lo and not ok(row)]
            hi = min(bad) if bad else None
            if hi is None or hi <= lo * (1 + tol):
                return lo, hi
            mid = math.sqrt(lo * hi)
            judge(trial(mid, role), sat)

    if math.isfinite(sat) and sat > ru and judge(trial(sat, "search"), sat):
        judge(trial(sat * (1 + tol), "search"), sat)  # above it every rate misses
    rate, hi = bisect(lambda row: row["meets"], "search")
    if hi is None:  # every rate tried meets; cannot happen above the saturation throughput
        limited = "saturation"
    else:
        misses = rows[hi]["reason"]
        limited = "+".join(m for m in ("ttft", "tpot") if f"{m.upper()} {tag}" in misses) or (
            "saturation" if "saturation" in misses else "incomplete")
    knee, ref = None, {}
    if math.isfinite(sat) and sat * KNEE_REFERENCE_LOAD > ru:
        light = trial(sat * KNEE_REFERENCE_LOAD, "knee_reference")
        judge(light, sat)
        ref = {"rate_per_s": light["rate_per_s"], cols[knee_metric]: light[cols[knee_metric]]}
        base_k = light[cols[knee_metric]]

        def steep(row: dict) -> bool:
            return row.get("fits", True) and not (row[cols[knee_metric]] < kf * base_k)
        if math.isfinite(base_k) and base_k > 0 and any(steep(r) for r in rows.values()):
            knee = bisect(lambda row: not steep(row), "knee")[1]
    return result(rate, "", limited, sat, knee, low_load, ref)
