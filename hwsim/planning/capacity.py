"""Capacity questions (docs/planning.md, "Capacity questions"): the cheapest cluster that trains
a token budget within a deadline, the fewest devices that serve a request rate within p99
latency targets, their dollar cost and energy, and the Pareto front of time, cost and energy.

Every candidate is simulated, not extrapolated from a formula: the base scenario (a plain
mapping, as a scenario file reads) is rewritten for the candidate device type and count and
handed to a ``run(mapping) -> Result`` callable. Users call :func:`hwsim.cheapest_training`
and :func:`hwsim.fewest_serving` (a scenario file in); this layer knows no scenario format
beyond the field names of docs/scenarios.md.

Cost: ``devices x price_per_hour x hours`` with the catalog's ``price_per_hour`` (an on-demand
price per device-hour that includes the host's share) unless *prices* overrides it. Energy,
two ways. The devices' own (``energy_kwh``, ``energy_per_request_j``):
:func:`hwsim.analysis.energy.device_energy_j` (idle power for the whole wall time plus measured
busy power minus idle while the compute stream is busy), with the busy share of one device (the
first of the cluster, rank 0's) measured by :func:`hwsim.analysis.resource_summary` over the
last simulated step (training: the steady state, extrapolated to the whole
``time_to_train_s``) or summed over every device for the whole run (serving). The site's
(``power_mw``, ``energy_mwh``): the run's facility power ``power_avg_kw`` (every GPU, CPU, NIC
and switch port and storage device, times the scenario's ``power.pue``; docs/analysis.md,
"Power") and, for training, that power over ``time_to_train_s``.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from hwsim.analysis.energy import device_energy_j
from hwsim.analysis.plots import pareto_mask
from hwsim.analysis.utilization import resource_summary
from hwsim.catalog import get_device
from hwsim.exceptions import HwsimError, ScenarioError
from hwsim.planning.capacity_cluster import (SERVER_DEFAULTS, check_devices, cluster_for,
                                             node_of, number, positive, price_of)
from hwsim.planning.capacity_layout import choose_layout
from hwsim.topology import natural_key

if TYPE_CHECKING:
    from hwsim.analysis.result import Result

__all__ = ["cheapest_training", "fewest_serving", "pareto", "price_of", "training_answer",
           "serving_answer", "SERVER_DEFAULTS", "TRAINING_COLUMNS", "SERVING_COLUMNS"]

Run = Callable[[dict], "Result"]
DAY_S = 86400.0

TRAINING_COLUMNS = ("device", "count", "nodes", "tp", "pp", "dp", "zero", "recompute",
                    "micro_batch", "layout", "memory_per_device_gb", "fits", "step_time_s",
                    "time_to_train_s", "time_to_train_days", "price_per_hour", "cost_usd",
                    "busy_share", "energy_kwh", "power_mw", "energy_mwh", "feasible", "reason",
                    "answer")
SERVING_COLUMNS = ("device", "devices", "replicas", "tp", "pp", "layout", "ttft_p99_s",
                   "tpot_p99_s", "requests_per_s", "price_per_hour", "cost_per_hour_usd",
                   "energy_per_request_j", "power_mw", "feasible", "reason", "tried")


# ---------------------------------------------------------------------------------- training

def _busy_share(result: Result, device_type: str) -> float:
    """Compute-stream busy share of the first *device_type* device over the last step."""
    steps = result.steps
    start, end = (float(steps["start_s"].iloc[-1]), float(steps["end_s"].iloc[-1])) if len(
        steps) else (0.0, None)
    rs = resource_summary(result, start_s=start, end_s=end)
    rows = rs[(rs["kind"] == "device") & (rs["resource_class"] == device_type)]
    if rows.empty:
        return 0.0
    first = sorted(rows["resource"], key=natural_key)[0]
    return float(rows.loc[rows["resource"] == first, "busy_share"].iloc[0])


def _server_counts(max_nodes: int) -> list[int]:
    return [n for n in (2 ** k for k in range(0, 20)) if n <= max_nodes]


def _check_counts(counts: Any, gpn: int) -> list[int]:
    if isinstance(counts, (str, bytes)) or not hasattr(counts, "__iter__"):
        raise ScenarioError(f"expected a list of device counts, got {counts!r}; valid: e.g. "
                            f"[{gpn}, {2 * gpn}, {4 * gpn}]", field="counts")
    out = list(counts)
    if not out:
        raise ScenarioError(f"empty list of device counts; valid: e.g. [{gpn}, {2 * gpn}]",
                            field="counts")
    for c in out:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 or c % gpn:
            raise ScenarioError(f"{c!r} is not a positive multiple of gpus_per_node = {gpn}; "
                                f"valid: whole servers of {gpn} devices, e.g. {gpn}, "
                                f"{2 * gpn}, {8 * gpn}", field="counts")
    return sorted({int(c) for c in out})


def cheapest_training(run: Run, base: Mapping[str, Any], train_tokens: float, days: float, *,
                      devices: Sequence[str] | None = None, counts: Sequence[int] | None = None,
                      prices: Mapping[str, float] | None = None, max_nodes: int = 64,
                      node_overrides: Mapping[str, Mapping[str, Any]] | None = None,
                      search_layouts: bool = True, load: Callable[[dict], Any] | None = None,
                      max_power_mw: float | None = None) -> pd.DataFrame:
    """Simulate every (device type, count) candidate training *train_tokens* tokens, each with
    a layout that fits in memory, and mark the cheapest that finishes within *days* (and, with
    *max_power_mw*, draws no more than a site's power).

    Parameters
    ----------
    run : callable
        ``run(mapping) -> Result`` simulates a scenario mapping.
    base : mapping
        A training scenario in the builder form with one GPU node type; its parallelism (tp, pp,
        cp, zero, micro_batch ...), global batch, sequence length and ``steps`` are kept where
        they run and fit (see *search_layouts*).
    train_tokens, days : float
        The token budget and the deadline.
    devices : list of str, optional
        Catalog device ids (default: the base's device).
    counts : list of int, optional
        Device counts, each a multiple of the base's ``gpus_per_node`` (default: 1, 2, 4, ...
        servers up to *max_nodes*, plus the server count the first candidate that fits
        extrapolates linearly to the deadline, and one more).
    prices : mapping, optional
        $ per device-hour overriding the catalog's ``price_per_hour``.
    max_nodes : int
        The most servers tried when *counts* is not given.
    node_overrides : mapping, optional
        ``{device: {node field: value}}`` replacing the node fields chosen for that device
        (:data:`SERVER_DEFAULTS` when it differs from the base's).
    search_layouts : bool
        Where the base's layout does not run on a count or does not fit in memory, simulate a
        searched layout that fits instead (the least model parallelism, then the least
        estimated step time: :func:`hwsim.planning.capacity_layout.choose_layout`); False: the
        base's layout only.
    load : callable, optional
        ``load(mapping) -> Scenario`` for the memory model (default:
        :func:`hwsim.scenario.load_scenario`; :func:`hwsim.cheapest_training` passes one that
        reads relative paths from the scenario file's folder).
    max_power_mw : float, optional
        A site's power (MW, facility: the run's ``power_avg_kw`` with the scenario's PUE): a
        candidate drawing more is not feasible (its ``reason`` says how much it draws).

    Returns
    -------
    pandas.DataFrame
        :data:`TRAINING_COLUMNS`, one row per candidate, cheapest first: the layout simulated
        (``tp, pp, dp, zero, recompute, micro_batch``; ``layout`` ``base`` or ``searched``,
        empty when none runs and fits, then nothing is simulated);
        ``memory_per_device_gb`` (simulated, or the memory model's when not simulated);
        ``cost_usd = count x price_per_hour x time_to_train_s / 3600``; ``energy_kwh = count
        x device_energy_j(spec, busy_share x T, T) / 3.6e6`` with T = ``time_to_train_s`` and
        ``busy_share`` rank 0's compute-stream share of the last simulated step; ``power_mw``:
        the run's facility power (``power_avg_kw`` / 1000: the whole cluster, with PUE) and
        ``energy_mwh = power_mw x T / 3600``; ``feasible``:
        fits in memory, T <= *days* and ``power_mw`` <= *max_power_mw*; ``reason`` says why not; ``answer`` marks the cheapest
        feasible row (none when nothing is feasible). ``attrs["answer"]`` is one sentence:
        the answer, or why there is none (e.g. ``does not fit in device memory at any count up
        to 512 (H100-SXM5-80GB) ...``).

    Raises
    ------
    ScenarioError
        A base that is not a training scenario of the builder form, a bad budget or deadline,
        an unknown device, a count that is not a multiple of a server, or a device with no
        price (the message names ``--price ID=USD_PER_H``).
    """
    tokens = positive(train_tokens, "train_tokens")
    days = positive(days, "days")
    site_mw = None if max_power_mw is None else positive(max_power_mw, "max_power_mw")
    wl = base.get("workload") or {}
    if wl.get("kind") != "training" or not wl.get("global_batch"):
        raise ScenarioError("cheapest_training needs a training workload with global_batch "
                            "(workload: {kind: training, global_batch: ...})", field="workload")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ScenarioError(f"must be a positive integer, got {max_nodes!r}", field="max_nodes")
    node = node_of(base)
    gpn = int(node.get("gpus_per_node", 1))
    devs = check_devices(devices, node["gpu"])
    price = {d: price_of(d, prices) for d in devs}
    wanted = None if counts is None else _check_counts(counts, gpn)
    if load is None:
        from hwsim.scenario import load_scenario as load

    def simulate(dev: str, count: int) -> dict:
        row: dict[str, Any] = dict(device=dev, count=count, nodes=count // gpn,
                                   price_per_hour=price[dev], fits=False, feasible=False,
                                   layout="")
        scen = copy.deepcopy(dict(base))
        scen["cluster"] = cluster_for(base, dev, count // gpn, node_overrides)
        scen["workload"] = {**copy.deepcopy(dict(wl)), "train_tokens": tokens}
        scen["workload"].pop("train_samples", None)
        scen["workload"].pop("epochs", None)
        try:
            pick = choose_layout(load, scen, count, search=search_layouts)
        except HwsimError as exc:
            return {**row, "reason": str(exc).split("\n")[0]}
        row["memory_per_device_gb"] = pick.memory_gb
        if pick.parallelism is None:
            return {**row, "reason": pick.reason}
        par = pick.parallelism
        row.update(tp=int(par.get("tp", 1)), pp=int(par.get("pp", 1)), dp=int(par["dp"]),
                   zero=int(par.get("zero", 0) or 0), recompute=par.get("recompute", "none"),
                   micro_batch=int(par["micro_batch"]), layout=pick.layout)
        scen["workload"]["parallelism"] = par
        try:
            res = run(scen)
        except HwsimError as exc:
            return {**row, "reason": str(exc).split("\n")[0]}
        s = res.summary
        row["memory_per_device_gb"] = number(s.get("memory_per_device_gb", pick.memory_gb))
        t = number(s.get("time_to_train_s"))
        if not bool(s.get("fits", True)):
            return {**row, "reason": "does not fit in device memory (memory_per_device_gb "
                                     f"{row['memory_per_device_gb']:.4g})"}
        if not math.isfinite(t):
            return {**row, "fits": True, "reason": "the run gives no time_to_train_s"}
        busy = _busy_share(res, dev)
        energy = count * device_energy_j(get_device(dev), busy * t, t) / 3.6e6
        power_mw = number(s.get("power_avg_kw")) / 1e3
        why = ([f"takes {t / DAY_S:.1f} days > {days:g}"] if t > days * DAY_S else []) + (
            [f"draws {power_mw:.3g} MW > the site's {site_mw:g} MW"]
            if site_mw is not None and power_mw > site_mw else [])
        return {**row, "fits": True, "step_time_s": number(s.get("step_time_s")),
                "time_to_train_s": t, "time_to_train_days": t / DAY_S,
                "cost_usd": count * price[dev] * t / 3600.0, "busy_share": busy,
                "energy_kwh": energy, "power_mw": power_mw, "energy_mwh": power_mw * t / 3600.0,
                "feasible": not why, "reason": "; ".join(why)}

    rows = []
    for dev in devs:
        if wanted is not None:
            rows.extend(simulate(dev, c) for c in wanted)
            continue
        todo = [n * gpn for n in _server_counts(max_nodes)]
        extrapolated = False
        while todo:
            row = simulate(dev, todo.pop(0))
            rows.append(row)
            t = row.get("time_to_train_s", float("nan"))
            if not extrapolated and row["fits"] and math.isfinite(t):
                # linear scaling from the first candidate that fits to the deadline
                extrapolated = True
                est = math.ceil(row["nodes"] * t / (days * DAY_S))
                extra = {n * gpn for n in (est, est + 1) if row["nodes"] < n <= max_nodes}
                todo = sorted(set(todo) | extra)
    df = pd.DataFrame(rows).reindex(columns=list(TRAINING_COLUMNS))
    df["feasible"] = df["feasible"].astype(bool)
    df["fits"] = df["fits"].astype(bool)
    df["reason"] = df["reason"].fillna("")
    df["layout"] = df["layout"].fillna("")
    for col in ("tp", "pp", "dp", "zero", "micro_batch"):  # <NA> where no layout was simulated
        df[col] = df[col].astype("Int64")
    df = df.sort_values(["feasible", "cost_usd", "count"], ascending=[False, True, True],
                        na_position="last", kind="stable").reset_index(drop=True)
    df["answer"] = False
    if df["feasible"].any():
        df.loc[df.index[df["feasible"]][0], "answer"] = True
    df.attrs["answer"] = training_answer(df, tokens, days, site_mw)
    return df


def training_answer(df: pd.DataFrame, train_tokens: float, days: float,
                    max_power_mw: float | None = None) -> str:
    """One sentence answering a :func:`cheapest_training` frame: the answer row (count, device,
    servers, layout, days, cost, energy); or, with none, why: nothing fits in memory at any
    count tried (the largest named), or what fits misses the deadline (the fastest named)."""
    best = df[df["answer"]]
    if not best.empty:
        b = best.iloc[0]
        lay = (f"tp {int(b['tp'])}, pp {int(b['pp'])}, dp {int(b['dp'])}, zero "
               f"{int(b['zero'])}, micro_batch {int(b['micro_batch'])}, {b['layout']} layout")
        return (f"{int(b['count'])} x {b['device']} ({int(b['nodes'])} servers; {lay}): "
                f"{b['time_to_train_days']:.1f} days, ${b['cost_usd']:,.0f}, "
                f"{b['energy_kwh']:,.0f} kWh (devices), {b['power_mw']:.3g} MW and "
                f"{b['energy_mwh']:,.3g} MWh (site)")
    what = f"no candidate trains {train_tokens:.3g} tokens within {days:g} days"
    if df.empty:
        return what
    if not df["fits"].any():
        by_dev = df.groupby("device", sort=False)["count"].max()
        upto = "; ".join(f"{int(c)} ({d})" for d, c in by_dev.items())
        mem = df["memory_per_device_gb"].astype(float)
        hint = ""
        if mem.notna().any():
            r = df.loc[mem.idxmin()]
            hint = (f"; the least memory needed is {r['memory_per_device_gb']:.4g} GB per device"
                    f" at {int(r['count'])} x {r['device']}")
        return (f"{what}: does not fit in device memory at any count up to {upto}{hint}; try "
                "more servers (--max-nodes, or --counts with larger counts) or devices with "
                "more memory")
    fit = df[df["fits"] & df["time_to_train_s"].notna()]
    if fit.empty:
        return f"{what}: no candidate that fits gave a time to train (see the reasons)"
    if max_power_mw is not None:
        what += f" within the site's {max_power_mw:g} MW"
        timely = fit[fit["time_to_train_s"].astype(float) <= days * DAY_S]
        if not timely.empty:  # in time but over the site's power
            low = timely.loc[timely["power_mw"].astype(float).idxmin()]
            return (f"{what}: those that finish in time draw {low['power_mw']:.3g} MW and more "
                    f"(the least, {int(low['count'])} x {low['device']}); try a later deadline, "
                    "devices that draw less per token, or a lower PUE")
    f = fit.loc[fit["time_to_train_s"].astype(float).idxmin()]
    big = fit.loc[fit["count"].astype(int).idxmax()]
    hint = ("try more servers (--max-nodes, --counts) or a later deadline"
            if int(f["count"]) == int(big["count"]) else
            f"more devices were slower ({int(big['count'])} x {big['device']}: "
            f"{big['time_to_train_days']:.1f} days), so try a later deadline or a larger "
            "global batch")
    return (f"{what}: the fastest, {int(f['count'])} x {f['device']}, takes "
            f"{f['time_to_train_days']:.1f} days; {hint}")


# ----------------------------------------------------------------------------------- serving

def fewest_serving(run: Run, base: Mapping[str, Any], rate_per_s: float, ttft_p99_s: float,
                   tpot_p99_s: float, *, devices: Sequence[str] | None = None,
                   prices: Mapping[str, float] | None = None, max_replicas: int = 64,
                   requests: int | None = None,
                   node_overrides: Mapping[str, Mapping[str, Any]] | None = None,
                   search_layouts: bool = True) -> pd.DataFrame:
    """For each device type, the fewest devices (replicas x tp x pp, the replica layout of the
    base) whose simulated p99 TTFT and p99 TPOT at *rate_per_s* meet both targets.

    A replica of the base's tp that does not fit in device memory (the run's ``fits``) is not
    replicated: with *search_layouts* its tp doubles, up to the devices per server, until one
    replica fits (``layout`` ``searched``); if none does, the row is infeasible with the
    reason.

    The replica count is searched by doubling from 1 until both targets are met, then by
    bisection between the last miss and the first hit; this assumes more replicas never
    worsen the p99s (true of a router spreading a fixed Poisson stream; not checked beyond
    the points simulated).

    Parameters
    ----------
    run : callable
        ``run(mapping) -> Result``.
    base : mapping
        An inference scenario in the builder form with one GPU node type, not disaggregated;
        its model, scheduler, arrivals (prompt and output tokens, count) and ``tp``/``pp`` are
        kept; the arrival rate and the SLO are replaced.
    rate_per_s, ttft_p99_s, tpot_p99_s : float
        The load and the two p99 targets (seconds).
    devices : list of str, optional
        Catalog device ids (default: the base's).
    prices : mapping, optional
        $ per device-hour overriding the catalog's.
    max_replicas : int
        The search gives up above this many replicas (the row is then infeasible).
    requests : int, optional
        Requests to simulate per run (default: the base's ``arrivals.requests``).
    node_overrides : mapping, optional
        As for :func:`cheapest_training`.
    search_layouts : bool
        Double tp where the base's replica does not fit (False: the base's tp only).

    Returns
    -------
    pandas.DataFrame
        :data:`SERVING_COLUMNS`, one row per device type, fewest devices first:
        ``cost_per_hour_usd = devices x price_per_hour``; ``energy_per_request_j``: the
        devices' energy over the run (resource_summary) over the requests completed;
        ``power_mw``: the run's facility power (``power_avg_kw`` / 1000: the whole cluster,
        with PUE);
        ``layout``: ``base`` or ``searched`` (tp doubled to fit), empty when no replica fits;
        ``tried``: the replica counts simulated at that tp, in order. ``attrs["answer"]``:
        :func:`serving_answer`.
    """
    rate = positive(rate_per_s, "rate_per_s")
    ttft = positive(ttft_p99_s, "ttft_p99_s")
    tpot = positive(tpot_p99_s, "tpot_p99_s")
    wl = base.get("workload") or {}
    if wl.get("kind") != "inference":
        raise ScenarioError("fewest_serving needs an inference workload (workload: {kind: "
                            "inference, ...})", field="workload")
    par = dict(wl.get("parallelism") or {})
    if par.get("prefill_replicas"):
        raise ScenarioError("disaggregated serving (prefill_replicas > 0) is not supported by "
                            "fewest_serving; give a colocated base", field="workload.parallelism")
    if par.get("attention_dp"):
        raise ScenarioError("attention_dp (a replica of tp x ep x pp devices) is not supported "
                            "by fewest_serving, which sizes replicas of tp x pp; give a base "
                            "without attention_dp", field="workload.parallelism.attention_dp")
    if isinstance(max_replicas, bool) or not isinstance(max_replicas, int) or max_replicas < 1:
        raise ScenarioError(f"must be a positive integer, got {max_replicas!r}",
                            field="max_replicas")
    node = node_of(base)
    gpn = int(node.get("gpus_per_node", 1))
    devs = check_devices(devices, node["gpu"])
    price = {d: price_of(d, prices) for d in devs}

    tp0, pp = int(par.get("tp", 1)), int(par.get("pp", 1))

    def trial(dev: str, tp: int, r: int, cache: dict) -> str:
        """Simulate *r* replicas of tp x pp on *dev*: "ok" (both targets met), "miss", "nofit"
        (a replica does not fit in memory) or "error"; the numbers go to cache[(tp, r)]."""
        if (tp, r) in cache:
            return cache[(tp, r)][0]
        scen = copy.deepcopy(dict(base))
        scen["cluster"] = cluster_for(base, dev, math.ceil(r * tp * pp / gpn), node_overrides)
        w = copy.deepcopy(dict(wl))
        w["parallelism"] = {**par, "tp": tp, "replicas": r}
        w["arrivals"] = {**dict(w.get("arrivals") or {}), "rate_per_s": rate}
        if requests is not None:
            w["arrivals"]["requests"] = int(requests)
        w["slo"] = {"ttft_s": ttft, "tpot_s": tpot}
        scen["workload"] = w
        try:
            res = run(scen)
        except HwsimError as exc:
            cache[(tp, r)] = ("error", {"reason": str(exc).split("\n")[0]})
            return "error"
        s = res.summary
        if not bool(s.get("fits", True)):
            why = s.get("bottleneck_label") or (
                f"{number(s.get('memory_per_device_gb')):.4g} GB needed per device")
            cache[(tp, r)] = ("nofit", {"reason": f"a replica of tp {tp}, pp {pp} does not "
                                                  f"fit in device memory ({why})"})
            return "nofit"
        t1, t2 = number(s.get("ttft_p99_s")), number(s.get("tpot_p99_s"))
        if not (math.isfinite(t1) and math.isfinite(t2)):
            cache[(tp, r)] = ("error", {"reason": "the run gives no ttft_p99_s or tpot_p99_s "
                                                  f"(requests completed: "
                                                  f"{s.get('requests_completed', 0)})"})
            return "error"
        rs = resource_summary(res)
        energy = float(rs.loc[(rs["kind"] == "device")
                              & (rs["resource_class"] == dev), "energy_j"].sum())
        done = max(int(s.get("requests_completed", 0)), 1)
        cache[(tp, r)] = ("ok" if t1 <= ttft and t2 <= tpot else "miss", dict(
            ttft_p99_s=t1, tpot_p99_s=t2, requests_per_s=s.get("requests_per_s"),
            energy_per_request_j=energy / done, power_mw=number(s.get("power_avg_kw")) / 1e3))
        return cache[(tp, r)][0]

    rows = []
    for dev in devs:
        cache: dict[tuple[int, int], tuple[str, dict]] = {}
        # a replica that does not fit in memory: double tp (within a server) until one does
        tp = tp0
        while trial(dev, tp, 1, cache) == "nofit" and search_layouts and 2 * tp * pp <= gpn:
            tp *= 2
        if cache[(tp, 1)][0] == "nofit":
            why = cache[(tp, 1)][1]["reason"]
            if tp != tp0:
                why += f"; tp {tp0} to {tp} tried (tp x pp up to the {gpn} devices per server)"
            rows.append(dict(device=dev, devices=tp * pp, replicas=1, tp=tp, pp=pp, layout="",
                             price_per_hour=price[dev], cost_per_hour_usd=tp * pp * price[dev],
                             feasible=False, tried=[1], reason=why))
            continue

        def ok(r: int, dev: str = dev, tp: int = tp, cache: dict = cache) -> bool:
            return trial(dev, tp, r, cache) == "ok"

        lo, hi = 0, 1  # lo: largest known miss, hi: candidate
        while hi <= max_replicas and not ok(hi):
            lo, hi = hi, hi * 2
        if hi > max_replicas:  # every power of two up to the limit missed: try the limit
            hi = max_replicas if lo < max_replicas and ok(max_replicas) else max_replicas + 1
        if hi <= max_replicas:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if ok(mid):
                    hi = mid
                else:
                    lo = mid
        found = hi <= max_replicas
        tried = [r for (t, r) in cache if t == tp]
        r = hi if found else max(tried)
        info = cache[(tp, r)][1]
        reason = "" if found else (info.get("reason") or
                                   f"p99 targets not met with {max_replicas} replicas "
                                   f"(ttft_p99_s {info.get('ttft_p99_s', float('nan')):.3g}, "
                                   f"tpot_p99_s {info.get('tpot_p99_s', float('nan')):.3g})")
        rows.append(dict(device=dev, devices=r * tp * pp, replicas=r, tp=tp, pp=pp,
                         layout="base" if tp == tp0 else "searched",
                         ttft_p99_s=info.get("ttft_p99_s"), tpot_p99_s=info.get("tpot_p99_s"),
                         requests_per_s=info.get("requests_per_s"), price_per_hour=price[dev],
                         cost_per_hour_usd=r * tp * pp * price[dev],
                         energy_per_request_j=info.get("energy_per_request_j"),
                         power_mw=info.get("power_mw"), feasible=found, reason=reason, tried=tried))
    df = pd.DataFrame(rows).reindex(columns=list(SERVING_COLUMNS))
    df["feasible"] = df["feasible"].astype(bool)
    df = df.sort_values(["feasible", "devices", "cost_per_hour_usd"],
                        ascending=[False, True, True], kind="stable").reset_index(drop=True)
    df.attrs["answer"] = serving_answer(df)
    df.attrs["fits"] = bool((df["layout"] != "").any())  # a replica fits on some device type
    return df


def serving_answer(df: pd.DataFrame) -> str:
    """One sentence answering a :func:`fewest_serving` frame: the feasible row cheapest per
    hour, or why none is (every row's reason, by device)."""
    ok = df[df["feasible"]]
    if ok.empty:
        why = "; ".join(f"{r['device']}: {r['reason']}" for _, r in df.iterrows())
        return "no device type meets both targets" + (f" ({why})" if why else "")
    b = ok.sort_values("cost_per_hour_usd", kind="stable").iloc[0]
    lay = f" of tp {int(b['tp'])}, searched layout" if b["layout"] == "searched" else ""
    return (f"{int(b['devices'])} x {b['device']} ({int(b['replicas'])} replicas{lay}): "
            f"${b['cost_per_hour_usd']:,.2f}/h, {b['energy_per_request_j']:,.0f} J per request")


# ------------------------------------------------------------------------------------ pareto

def pareto(df: pd.DataFrame, objectives: Mapping[str, str] | None = None, *,
           feasible_only: bool = True) -> pd.DataFrame:
    """*df* with a boolean ``pareto`` column: True on rows no other row beats in every
    objective (:func:`hwsim.analysis.plots.pareto_mask`; default objectives: minimum
    ``time_to_train_s``, ``cost_usd`` and ``energy_kwh``). With *feasible_only* (and a
    ``feasible`` column) only feasible rows compete and only they can be on the front; rows
    with a missing objective never are."""
    obj = dict(objectives or {"time_to_train_s": "min", "cost_usd": "min", "energy_kwh": "min"})
    missing = [c for c in obj if c not in df.columns]
    if missing:
        raise ScenarioError(f"no column {missing[0]!r}; valid: {', '.join(map(str, df.columns))}",
                            field="objectives")
    out = df.copy()
    pool = out[list(obj)].notna().all(axis=1)
    if feasible_only and "feasible" in out.columns:
        pool &= out["feasible"].astype(bool)
    out["pareto"] = False
    if pool.any():
        sub = out.loc[pool, list(obj)].astype(float).reset_index(drop=True)
        out.loc[pool, "pareto"] = np.asarray(pareto_mask(sub, obj), dtype=bool)
    return out
