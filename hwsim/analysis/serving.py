"""Serving results from the per-request table: latency percentiles, throughput, SLO attainment,
goodput, and Little's law's two sides (DESIGN.md, "Results", inference keys).

Columns of the request table (``Result.requests``): ``id, replica, arrival_s, start_s,
first_token_s, end_s, prompt_tokens, output_tokens, preemptions, prefix_tokens`` (the first
prompt tokens it shares with other requests), ``cached_tokens`` (of its prompt, found in the
prefix cache at its first admission: not prefilled) and the derived ``queue_s``
(arrival to first admission), ``ttft_s`` (arrival to first output token), ``tpot_s`` (mean time
per output token after the first: ``(end - first_token) / (output_tokens - 1)``, NaN for one-token
outputs), ``e2e_s`` (arrival to last token).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["REQUEST_COLUMNS", "request_table", "serving_summary", "in_system_mean",
           "serving_bottleneck", "prefix_summary", "keep_up_ratio", "tail_queue_share", "SATURATED_BELOW"]

SATURATED_BELOW = 0.9
"""A run is saturated when :func:`keep_up_ratio` is below this: with a few hundred requests or
more the two counts it compares differ by a few per cent from Poisson noise alone (about
``sqrt(2 L) / (0.8 n)`` with L requests in the system on average and n requests), so a
shortfall of a tenth is a backlog that grew while the requests arrived."""

REQUEST_COLUMNS = ("id", "replica", "arrival_s", "start_s", "first_token_s", "end_s",
                   "prompt_tokens", "output_tokens", "preemptions", "queue_s", "ttft_s",
                   "tpot_s", "e2e_s", "prefix_tokens", "cached_tokens")
_GIVEN = REQUEST_COLUMNS[:9] + REQUEST_COLUMNS[-2:]


def request_table(rows: list[tuple]) -> pd.DataFrame:
    """The request table from ``(id, replica, arrival_s, start_s, first_token_s, end_s,
    prompt_tokens, output_tokens, preemptions, prefix_tokens, cached_tokens)`` rows, sorted by
    id, with the derived columns."""
    import pandas as pd

    # column by column: a frame from 10,000 tuples infers each cell's type, three times slower
    df = (pd.DataFrame({c: np.asarray(v) for c, v in zip(_GIVEN, zip(*rows))},
                       columns=list(_GIVEN)) if rows else
          pd.DataFrame(rows, columns=list(_GIVEN))).sort_values("id")
    df = df.reset_index(drop=True).astype({"id": "int64", "replica": "int64",
                                           "prompt_tokens": "int64", "output_tokens": "int64",
                                           "preemptions": "int64", "prefix_tokens": "int64",
                                           "cached_tokens": "int64"})
    df["queue_s"] = df["start_s"] - df["arrival_s"]
    df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
    steps = (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
    df["tpot_s"] = (df["end_s"] - df["first_token_s"]) / steps
    df["e2e_s"] = df["end_s"] - df["arrival_s"]
    return df[list(REQUEST_COLUMNS)]


def in_system_mean(series: list[tuple[float, int]], start_s: float, end_s: float) -> float:
    """Time-average of the number of requests in the system (arrived, not finished) over
    [start_s, end_s], from its ``(time, count)`` changes."""
    if end_s <= start_s or not series:
        return 0.0
    t = np.array([x[0] for x in series] + [end_s])
    n = np.array([x[1] for x in series] + [series[-1][1]], dtype=float)
    t = np.clip(t, start_s, end_s)
    return float(np.sum(n[:-1] * np.diff(t)) / (end_s - start_s))


def serving_summary(req: pd.DataFrame, *, end_s: float, slo_ttft_s: float | None = None,
                    slo_tpot_s: float | None = None) -> dict[str, Any]:
    """Summary keys of a serving run (percentiles over completed requests; rates over the
    window from the first arrival to the last completion)."""
    done = req[np.isfinite(req["end_s"])]
    first = float(req["arrival_s"].min()) if len(req) else 0.0
    span = max(end_s - first, 1e-12)
    s: dict[str, Any] = {"requests": int(len(req)), "requests_completed": int(len(done)),
                         "preemptions": int(req["preemptions"].sum())}
    for key in ("ttft", "tpot", "e2e", "queue"):
        col = done[f"{key}_s"].dropna()
        for q in (50, 90, 99):
            s[f"{key}_p{q}_s"] = float(np.percentile(col, q)) if len(col) else None
        s[f"{key}_mean_s"] = float(col.mean()) if len(col) else None
    out_tokens = float(done["output_tokens"].sum())
    s["output_tokens_per_s"] = out_tokens / span
    s["total_tokens_per_s"] = (out_tokens + float(done["prompt_tokens"].sum())) / span
    s["requests_per_s"] = len(done) / span
    if slo_ttft_s is not None or slo_tpot_s is not None:
        ok = np.ones(len(done), dtype=bool)
        if slo_ttft_s is not None:
            ok &= (done["ttft_s"] <= slo_ttft_s).to_numpy()
        if slo_tpot_s is not None:
            ok &= (done["tpot_s"].fillna(0.0) <= slo_tpot_s).to_numpy()
        s["slo_attainment"] = float(ok.mean()) if len(done) else None
        s["goodput_requests_per_s"] = float(ok.sum()) / span
    return s


def prefix_summary(req: pd.DataFrame, *, saved_tokens: int,
                   evicted_blocks: int) -> dict[str, Any]:
    """Summary keys of prefix caching (docs/model.md, "Prefix caching"): ``prefix_hit_rate``,
    the completed requests' prompt tokens found in the cache at their first admission over
    all their prompt tokens; ``prefill_tokens_saved``, the prefill tokens the cache spared
    (every admission: re-admissions after a recompute preemption hit their own blocks too);
    ``prefix_blocks_evicted``, the idle cached blocks evicted to make room. The effect on
    latency is in the TTFT keys."""
    done = req[np.isfinite(req["end_s"])]
    prompts = float(done["prompt_tokens"].sum())
    return {"prefix_hit_rate": float(done["cached_tokens"].sum()) / prompts if prompts else 0.0,
            "prefill_tokens_saved": int(saved_tokens),
            "prefix_blocks_evicted": int(evicted_blocks)}


def keep_up_ratio(req: pd.DataFrame) -> float | None:
    """Completions over arrivals within the window from the 10th to the 90th percentile of the
    arrival times: about 1 when the replicas keep up (every arrival leaves about one mean latency
    later), the service rate over the arrival rate when they do not. None with fewer than 10
    requests or an empty window (every request arrived at once)."""
    if len(req) < 10:
        return None
    arrival = req["arrival_s"].to_numpy(dtype=float)
    lo, hi = np.percentile(arrival, [10, 90])
    if hi <= lo:
        return None
    end = req["end_s"].to_numpy(dtype=float)
    arrived = int(((arrival >= lo) & (arrival <= hi)).sum())
    left = int(((end >= lo) & (end <= hi)).sum())
    return left / arrived


def tail_queue_share(done: pd.DataFrame, percentile: float = 99) -> float | None:
    """The share of queueing in the time to first token of the requests at or above its
    *percentile* (completed requests): what the tail of TTFT is made of."""
    if not len(done):
        return None
    ttft = done["ttft_s"].to_numpy(dtype=float)
    tail = ttft >= np.percentile(ttft, percentile)
    total = float(ttft[tail].sum())
    return float(done["queue_s"].to_numpy(dtype=float)[tail].sum()) / total if total > 0 else 0.0


def serving_bottleneck(req: pd.DataFrame, blocked: float,
                       breakdown: pd.DataFrame, *, slo_ttft_s: float | None = None
                       ) -> dict[str, Any]:
    """What the requests' time went to, and the largest part as ``bottleneck``.

    Each completed request's end-to-end time splits into queueing (arrival to admission),
    prefill (admission to first token) and decode (first token to last). Queueing is
    ``kv_capacity`` when the replicas spent most of the run with the head of their queue waiting
    for KV-cache blocks (*blocked*: the share of the iterations' time with ``kv_blocked``), else
    ``queueing``; prefill and decode are
    named by what bound their iterations: the critical-path category (*breakdown*, rank 0's
    device) of iterations with prefill tokens and of decode-only ones (``compute`` ->
    ``prefill_compute`` / ``decode_compute``, ``memory`` -> ``..._bandwidth``, ``comm:*`` ->
    ``network``, ``overhead`` -> ``..._overhead``; classic serving, one pass per request:
    ``service_...``). Keys: ``time_share_queueing``,
    ``time_share_prefill``, ``time_share_decode``, ``kv_blocked_share`` (of iteration time),
    ``bottleneck``, ``bottleneck_share``, ``bottleneck_label``; and of the summed time to first
    token alone, ``ttft_share_queueing`` (the part spent queueing) and ``ttft_bottleneck``:
    ``queueing`` (or ``kv_capacity``) when queueing is more than half of it, else the prefill's
    name.

    The main ``bottleneck`` is about the latency that matters: when the TTFT tail (the requests at
    or above TTFT p99) is more than half queueing (``ttft_p99_share_queueing``) and either the run
    is ``saturated`` (:func:`keep_up_ratio` below :data:`SATURATED_BELOW`) or TTFT p99 misses the
    SLO's *slo_ttft_s*, the bottleneck is ``queueing`` (or ``kv_capacity``), its share that of
    queueing in the TTFT tail and ``bottleneck_of`` ``ttft_p99``; otherwise it is the largest part
    of the summed end-to-end time (``bottleneck_of`` ``e2e``), as above."""
    done = req[np.isfinite(req["end_s"])]
    total = float(done["e2e_s"].sum())
    if total <= 0:
        return {}
    parts = {"queueing": float(done["queue_s"].sum()) / total,
             "prefill": float((done["ttft_s"] - done["queue_s"]).sum()) / total,
             "decode": float((done["e2e_s"] - done["ttft_s"]).sum()) / total}
    main = (breakdown.sort_values("share", ascending=False)["category"].iloc[0]
            if len(breakdown) else "compute")
    bound = {"compute": "compute", "memory": "bandwidth", "overhead": "overhead"}

    def name(phase: str) -> str:
        if main.startswith("comm"):
            return "network"
        return f"{phase}_{bound.get(main, 'compute')}"
    first = "service" if done["tpot_s"].isna().all() else "prefill"  # classic: one pass
    labels = {"queueing": ("kv_capacity", "queueing for KV-cache blocks") if blocked > 0.5
              else ("queueing", "queueing (requests wait for a free batch slot)"),
              "prefill": (name(first), f"{first} ({main}-bound iterations)"),
              "decode": (name("decode"), f"decode ({main}-bound iterations)")}
    top = max(parts, key=parts.get)
    out = {f"time_share_{k}": v for k, v in parts.items()}
    out.update(kv_blocked_share=blocked, bottleneck=labels[top][0],
               bottleneck_share=parts[top], bottleneck_label=labels[top][1])
    # Time to first token is queueing plus prefill: near saturation the queue dominates it even
    # while decode dominates the end-to-end time (the bottleneck above).
    ttft = float(done["ttft_s"].sum())
    queued = float(done["queue_s"].sum()) / ttft if ttft > 0 else 0.0
    out.update(ttft_share_queueing=queued,
               ttft_bottleneck=labels["queueing" if queued > 0.5 else "prefill"][0])
    # The issue this answers: a label of decode_bandwidth while TTFT p99 is seconds of queueing.
    keep = keep_up_ratio(req)
    saturated = keep is not None and keep < SATURATED_BELOW
    tail = tail_queue_share(done)
    p99 = float(np.percentile(done["ttft_s"], 99)) if len(done) else None
    missed = slo_ttft_s is not None and p99 is not None and p99 > slo_ttft_s
    out.update(keep_up_ratio=keep, saturated=saturated, ttft_p99_share_queueing=tail,
               bottleneck_of="e2e")
    if tail is not None and tail > 0.5 and (saturated or missed):
        out.update(bottleneck=labels["queueing"][0], bottleneck_share=tail,
                   bottleneck_label=labels["queueing"][1], bottleneck_of="ttft_p99")
    return out
