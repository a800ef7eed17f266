"""Serving results from the per-request table: latency percentiles, throughput, SLO attainment,
goodput, and Little's law's two sides (DESIGN.md, "Results", inference keys).

Columns of the request table (``Result.requests``): ``id, replica, arrival_s, start_s,
first_token_s, end_s, prompt_tokens, output_tokens, preemptions`` and the derived ``queue_s``
(arrival to first admission), ``ttft_s`` (arrival to first output token), ``tpot_s`` (mean time
per output token after the first: ``(end - first_token) / (output_tokens - 1)``, NaN for one-token
outputs), ``e2e_s`` (arrival to last token).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["REQUEST_COLUMNS", "request_table", "serving_summary", "in_system_mean"]

REQUEST_COLUMNS = ("id", "replica", "arrival_s", "start_s", "first_token_s", "end_s",
                   "prompt_tokens", "output_tokens", "preemptions", "queue_s", "ttft_s",
                   "tpot_s", "e2e_s")


def request_table(rows: list[tuple]) -> pd.DataFrame:
    """The request table from ``(id, replica, arrival_s, start_s, first_token_s, end_s,
    prompt_tokens, output_tokens, preemptions)`` rows, sorted by id, with the derived columns."""
    df = pd.DataFrame(rows, columns=list(REQUEST_COLUMNS[:9])).sort_values("id")
    df = df.reset_index(drop=True).astype({"id": "int64", "replica": "int64",
                                           "prompt_tokens": "int64", "output_tokens": "int64",
                                           "preemptions": "int64"})
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
