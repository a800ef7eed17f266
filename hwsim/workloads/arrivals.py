"""Request arrivals for LLM serving: open-loop arrival processes, prompt and output lengths from
distributions or traces. Pure functions: all randomness comes from the ``numpy.random.Generator``
passed in (one per run, seeded by the scenario), so the same seed gives the same requests.

Order of draws in :func:`open_loop`: the inter-arrival gaps, then the prompt lengths, then the
output lengths (one vectorised draw each), so changing the output distribution leaves the
arrival times and prompts of a seed unchanged. :func:`shared_prefixes` draws after all of
these, so adding shared prefixes leaves a seed's arrival times and own token counts unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["Request", "token_sampler", "open_loop", "from_trace", "shared_prefixes",
           "PROCESSES", "DISTRIBUTIONS", "POPULARITY"]

PROCESSES = ("poisson", "gamma", "constant")
"""Arrival processes of :func:`open_loop`."""

DISTRIBUTIONS = {"uniform": ("low", "high"), "normal": ("mean", "std"),
                 "lognormal": ("median", "sigma"), "choice": ("values",)}
"""Token-length distributions of :func:`token_sampler` and their fields."""

POPULARITY = ("uniform", "zipf")
"""How :func:`shared_prefixes` picks a request's prefix group."""


@dataclass(frozen=True)
class Request:
    """One request: ``id`` (0, 1, ... in arrival order), ``arrival_s``, ``prompt_tokens`` and
    ``output_tokens`` (tokens to generate, >= 1). ``prefix_id`` >= 0 names a shared prefix:
    the first ``prefix_tokens`` tokens of the prompt are the same as those of every other
    request with that id (up to the shorter of the two); -1 (and ``prefix_tokens`` 0): no
    prefix shared with anyone."""

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_id: int = -1
    prefix_tokens: int = 0


def _is_int(v: object) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def token_sampler(spec: int | Mapping[str, Any],
                  rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    """A sampler of token counts: ``f(n)`` returns an int64 array of *n* counts, all >= 1.

    *spec*: a positive int (every request has that many tokens), or a mapping with ``dist``:

    - ``{"dist": "uniform", "low": a, "high": b}``: integers ``a .. b`` inclusive, ``1 <= a <= b``;
    - ``{"dist": "normal", "mean": m, "std": s}``: rounded to the nearest integer, clipped to >= 1;
    - ``{"dist": "lognormal", "median": m, "sigma": s}``: ``exp(N(ln m, s^2))`` rounded, >= 1
      (``sigma`` is the standard deviation of the log);
    - ``{"dist": "choice", "values": [...]}``: drawn uniformly with replacement from the values
      (e.g. the lengths of a trace), positive integers.

    Draws come from *rng*; ValueError names the bad field and what is valid."""
    if _is_int(spec):
        if spec < 1:
            raise ValueError(f"token count {spec!r} must be a positive integer")
        const = int(spec)
        return lambda n: np.full(_count(n), const, dtype=np.int64)
    if not isinstance(spec, Mapping):
        raise ValueError(f"token spec {spec!r} must be a positive integer or a mapping with "
                         f"'dist' ({', '.join(DISTRIBUTIONS)})")
    dist = spec.get("dist")
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"unknown dist {dist!r}; valid: {', '.join(DISTRIBUTIONS)}")
    fields = DISTRIBUTIONS[dist]
    extra = sorted(set(spec) - set(fields) - {"dist"})
    if extra:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, extra))} for dist {dist!r}; "
                         f"valid: {', '.join(fields)}")
    missing = [key for key in fields if key not in spec]
    if missing:
        raise ValueError(f"dist {dist!r} needs {', '.join(fields)}; missing "
                         f"{', '.join(missing)}")

    if dist == "uniform":
        low, high = spec["low"], spec["high"]
        if not (_is_int(low) and _is_int(high) and 1 <= low <= high):
            raise ValueError(f"uniform: low={low!r}, high={high!r} must be integers with "
                             f"1 <= low <= high")
        return lambda n: rng.integers(int(low), int(high), size=_count(n), endpoint=True,
                                      dtype=np.int64)
    if dist == "normal":
        mean, std = spec["mean"], spec["std"]
        if not (_is_real(mean) and mean > 0):
            raise ValueError(f"normal: mean={mean!r} must be a number > 0")
        if not (_is_real(std) and std >= 0):
            raise ValueError(f"normal: std={std!r} must be a number >= 0")
        return lambda n: _round(rng.normal(float(mean), float(std), size=_count(n)))
    if dist == "lognormal":
        median, sigma = spec["median"], spec["sigma"]
        if not (_is_real(median) and median > 0):
            raise ValueError(f"lognormal: median={median!r} must be a number > 0")
        if not (_is_real(sigma) and sigma >= 0):
            raise ValueError(f"lognormal: sigma={sigma!r} must be a number >= 0")
        mu = math.log(median)
        return lambda n: _round(rng.lognormal(mu, float(sigma), size=_count(n)))
    values = spec["values"]
    if (isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__")
            or len(values) == 0):
        raise ValueError(f"choice: values={values!r} must be a non-empty list of positive "
                         f"integers")
    bad = [i for i, v in enumerate(values) if not (_is_int(v) and v >= 1)]
    if bad:
        raise ValueError(f"choice: values[{bad[0]}]={values[bad[0]]!r} must be a positive "
                         f"integer")
    arr = np.asarray(values, dtype=np.int64)
    return lambda n: rng.choice(arr, size=_count(n), replace=True)


def _count(n: object) -> int:
    if not _is_int(n) or n < 0:
        raise ValueError(f"sample count n={n!r} must be an integer >= 0")
    return int(n)


def _round(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.rint(x), 1).astype(np.int64)


def open_loop(process: str, *, rate_per_s: float, requests: int, prompt: int | Mapping[str, Any],
              output: int | Mapping[str, Any], rng: np.random.Generator, cv: float = 1.0,
              start_s: float = 0.0) -> list[Request]:
    """*requests* requests arriving open-loop (independently of how fast they are served).

    The first arrives at *start_s*, each next one a gap later: ``"poisson"`` exponential gaps of
    mean ``1/rate_per_s``; ``"gamma"`` gamma gaps of mean ``1/rate_per_s`` and coefficient of
    variation *cv* (shape ``1/cv^2``: ``cv = 1`` is Poisson, ``< 1`` more regular, ``> 1``
    burstier); ``"constant"`` gaps of exactly ``1/rate_per_s``. (The first request at *start_s*,
    as vLLM's ``benchmark_serving`` sends its first at once.) *prompt* and *output* are
    :func:`token_sampler` specs. *cv* is for ``"gamma"`` only: another value with another
    process is an error, not ignored."""
    if process not in PROCESSES:
        raise ValueError(f"unknown arrival process {process!r}; valid: {', '.join(PROCESSES)}")
    if not (_is_real(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"rate_per_s={rate_per_s!r} must be > 0 (requests per second)")
    if not (_is_int(requests) and requests >= 1):
        raise ValueError(f"requests={requests!r} must be an integer >= 1")
    if not (_is_real(start_s) and start_s >= 0):
        raise ValueError(f"start_s={start_s!r} must be a number >= 0")
    if not (_is_real(cv) and cv > 0):
        raise ValueError(f"cv={cv!r} must be a number > 0 (coefficient of variation of the "
                         f"gaps)")
    if process != "gamma" and cv != 1.0:
        raise ValueError(f"cv={cv!r} applies to process 'gamma' only; process {process!r} has "
                         f"cv 1 (poisson) or 0 (constant)")
    sample_prompt = token_sampler(prompt, rng)
    sample_output = token_sampler(output, rng)
    n, mean_gap = int(requests), 1.0 / float(rate_per_s)
    if process == "poisson":
        gaps = rng.exponential(mean_gap, size=n - 1)
    elif process == "gamma":
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, mean_gap / shape, size=n - 1)
    else:
        gaps = np.full(n - 1, mean_gap)
    times = float(start_s) + np.concatenate(([0.0], np.cumsum(gaps)))
    prompts, outputs = sample_prompt(n), sample_output(n)
    return [Request(i, float(times[i]), int(prompts[i]), int(outputs[i])) for i in range(n)]


def from_trace(arrival_s, prompt_tokens, output_tokens, prefix_id=None,
               prefix_tokens=None) -> list[Request]:
    """Requests from a trace's columns (equal-length sequences, one row per request): arrival
    times in seconds, non-negative and non-decreasing; token counts positive integers
    (integral floats, as a CSV reader may give, are accepted). Optionally, both or neither,
    ``prefix_id`` (an integer >= 0 naming a shared prefix; empty (NaN) or -1: none) and
    ``prefix_tokens`` (how many of the prompt's first tokens that prefix is: an integer from 0
    to the row's ``prompt_tokens``; 0 or empty without a prefix id). ValueError names the
    column and row of the first bad value."""
    if (prefix_id is None) != (prefix_tokens is None):
        raise ValueError("trace columns prefix_id and prefix_tokens go together: give both or "
                         "neither")
    cols = {}
    named = [("arrival_s", arrival_s), ("prompt_tokens", prompt_tokens),
             ("output_tokens", output_tokens)]
    if prefix_id is not None:
        named += [("prefix_id", prefix_id), ("prefix_tokens", prefix_tokens)]
    for name, col in named:
        try:
            arr = np.asarray(col, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"trace column {name} must hold numbers") from None
        if arr.ndim != 1:
            raise ValueError(f"trace column {name} must be one-dimensional, got shape "
                             f"{arr.shape}")
        cols[name] = arr
    lengths = {name: len(arr) for name, arr in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"trace columns differ in length: "
                         f"{', '.join(f'{k}={v}' for k, v in lengths.items())}")
    if not lengths["arrival_s"]:
        raise ValueError("trace has no requests (arrival_s is empty)")
    t = cols["arrival_s"]
    bad = np.flatnonzero(~np.isfinite(t) | (t < 0))
    if bad.size:
        raise ValueError(f"arrival_s[{bad[0]}]={t[bad[0]]:g} must be a finite time >= 0")
    bad = np.flatnonzero(np.diff(t) < 0)
    if bad.size:
        i = bad[0] + 1
        raise ValueError(f"arrival_s must be sorted (non-decreasing): arrival_s[{i}]={t[i]:g} "
                         f"< arrival_s[{i - 1}]={t[i - 1]:g}")
    for name in ("prompt_tokens", "output_tokens"):
        x = cols[name]
        bad = np.flatnonzero(~np.isfinite(x) | (x < 1) | (x != np.round(x)))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}]={x[bad[0]]:g} must be a positive integer")
    p, o = cols["prompt_tokens"].astype(np.int64), cols["output_tokens"].astype(np.int64)
    if prefix_id is None:
        return [Request(i, float(t[i]), int(p[i]), int(o[i])) for i in range(len(t))]
    ids, pt = _trace_prefixes(cols["prefix_id"], cols["prefix_tokens"], p)
    return [Request(i, float(t[i]), int(p[i]), int(o[i]), int(ids[i]), int(pt[i]))
            for i in range(len(t))]


def _trace_prefixes(ids: np.ndarray, tokens: np.ndarray,
                    prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    none = np.isnan(ids) | (ids == -1)
    bad = np.flatnonzero(~none & (~np.isfinite(ids) | (ids < 0) | (ids != np.round(ids))))
    if bad.size:
        raise ValueError(f"prefix_id[{bad[0]}]={ids[bad[0]]:g} must be an integer >= 0 (or "
                         f"empty or -1: no shared prefix)")
    tokens = np.where(np.isnan(tokens), 0.0, tokens)
    bad = np.flatnonzero(~np.isfinite(tokens) | (tokens < 0) | (tokens != np.round(tokens)))
    if bad.size:
        raise ValueError(f"prefix_tokens[{bad[0]}]={tokens[bad[0]]:g} must be an integer >= 0")
    bad = np.flatnonzero(none & (tokens > 0))
    if bad.size:
        raise ValueError(f"prefix_tokens[{bad[0]}]={tokens[bad[0]]:g} needs a prefix_id (row "
                         f"{bad[0]} has none)")
    bad = np.flatnonzero(tokens > prompts)
    if bad.size:
        i = bad[0]
        raise ValueError(f"prefix_tokens[{i}]={tokens[i]:g} is longer than the prompt "
                         f"(prompt_tokens[{i}]={prompts[i]}); valid: 0 <= prefix_tokens <= "
                         f"prompt_tokens")
    return np.where(none, -1, ids).astype(np.int64), tokens.astype(np.int64)


def shared_prefixes(requests: Sequence[Request], spec: Mapping[str, Any],
                    rng: np.random.Generator) -> list[Request]:
    """*requests* with shared prompt prefixes: a system prompt that every request starts with,
    or the prompts of many tenants, some more popular than others.

    *spec* has ``tokens`` (a :func:`token_sampler` spec: each group's prefix length, drawn
    once per group), and optionally ``groups`` (how many distinct prefixes, default 1),
    ``share`` (the probability that a request starts with a group's prefix, in [0, 1],
    default 1), ``popularity`` (``"uniform"``: every group equally likely, the default;
    ``"zipf"``: group *k* = 1, 2, ... with probability proportional to ``k**-zipf_s``) and
    ``zipf_s`` (> 0, default 1; ``"zipf"`` only). A request that takes group *g* gets
    ``prefix_id`` *g* and its prompt becomes the prefix followed by its own ``prompt_tokens``
    (``prefix_tokens`` = the group's length); the others are unchanged. Draws, after every
    other draw of the run: the groups' lengths, then whether each request takes a prefix,
    then each request's group (one vectorised draw each). ValueError names the bad field."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"prefix {spec!r} must be a mapping with tokens (and groups, share, "
                         f"popularity, zipf_s)")
    fields = ("tokens", "groups", "share", "popularity", "zipf_s")
    extra = sorted(set(spec) - set(fields))
    if extra:
        raise ValueError(f"unknown prefix field(s) {', '.join(map(repr, extra))}; valid: "
                         f"{', '.join(fields)}")
    if "tokens" not in spec:
        raise ValueError("prefix needs tokens: each group's prefix length (e.g. tokens: 1000)")
    groups, share = spec.get("groups", 1), spec.get("share", 1.0)
    popularity, s = spec.get("popularity", "uniform"), spec.get("zipf_s", 1.0)
    if not (_is_int(groups) and groups >= 1):
        raise ValueError(f"prefix groups={groups!r} must be an integer >= 1")
    if not (_is_real(share) and 0.0 <= share <= 1.0):
        raise ValueError(f"prefix share={share!r} must be a number in [0, 1] (the share of "
                         f"requests that start with a group's prefix)")
    if popularity not in POPULARITY:
        raise ValueError(f"unknown prefix popularity {popularity!r}; valid: "
                         f"{', '.join(POPULARITY)}")
    if not (_is_real(s) and s > 0):
        raise ValueError(f"prefix zipf_s={s!r} must be a number > 0")
    if popularity != "zipf" and s != 1.0:
        raise ValueError(f"prefix zipf_s={s!r} applies to popularity 'zipf' only, not "
                         f"{popularity!r}")
    try:
        sample = token_sampler(spec["tokens"], rng)
    except ValueError as err:
        raise ValueError(f"prefix tokens: {err}") from None
    n, g = len(requests), int(groups)
    lengths = sample(g)
    uses = rng.random(n) < float(share)
    weights = (np.arange(1, g + 1, dtype=float) ** -float(s) if popularity == "zipf"
               else np.ones(g))
    picks = rng.choice(g, size=n, p=weights / weights.sum())
    return [replace(q, prompt_tokens=q.prompt_tokens + int(lengths[k]), prefix_id=int(k),
                    prefix_tokens=int(lengths[k])) if use else q
            for q, use, k in zip(requests, uses, picks)]
