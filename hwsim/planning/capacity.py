"""Capacity questions (docs/planning.md, "Capacity questions"): the cheapest cluster that trains
a token budget within a deadline, the fewest devices that serve a request rate within p99
latency targets, their dollar cost and energy, and the Pareto front of time, cost and energy.

Every candidate is simulated, not extrapolated from a formula: the base scenario (a plain
mapping, as a scenario file reads) is rewritten for the candidate device type and count and
handed to a ``run(mapping) -> Result`` callable. Users call :func:`hwsim.cheapest_training`
and :func:`hwsim.fewest_serving` (a scenario file in); this layer knows no scenario format
beyond the field names of docs/scenarios.md.

Cost: ``devices x price_per_hour x hours`` with the catalog's ``price_per_hour`` (an on-demand
price per device-hour that includes the host's share) unless *prices* overrides it. Energy:
:func:`hwsim.analysis.energy.device_energy_j` (idle power for the whole wall time plus peak minus
idle while the compute stream is busy), with the busy share of one device (the first of the
cluster, rank 0's) measured by :func:`hwsim.analysis.resource_summary` over the last simulated
step (training: the steady state, extrapolated to the whole ``time_to_train_s``) or summed over
every device for the whole run (serving). Devices only: hosts, switches and cooling are not
counted.
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
from hwsim.topology import natural_key

if TYPE_CHECKING:
    from hwsim.analysis.result import Result

__all__ = ["cheapest_training", "fewest_serving", "pareto", "price_of", "SERVER_DEFAULTS",
           "TRAINING_COLUMNS", "SERVING_COLUMNS"]

Run = Callable[[dict], "Result"]
DAY_S = 86400.0

SERVER_DEFAULTS: dict[str, dict[str, Any]] = {
    # The node fields of each device type's standard 8-GPU server, used when a candidate device
    # differs from the base scenario's (a different GPU needs its own NVLink generation and
    # NICs). [DGX-A100] NVIDIA DGX A100 datasheet: NVLink 3 (600 GB/s per GPU), 8x 200 Gb/s
    # HDR InfiniBand, 2x AMD EPYC 7742. [DGX-H100] NVIDIA DGX H100 datasheet: NVLink 4
    # (900 GB/s per GPU), 8x 400 Gb/s NDR ConnectX-7, 2x Intel Xeon Platinum 8480C. [DGX-H200]
    # HGX H200: NVLink 4, NDR 400 Gb/s. [DGX-B200] DGX B200 datasheet: NVLink 5, 8x 400 Gb/s.
    # [DGX-2] V100-SXM3 servers (AWS p3dn: NVLink 2, 100 Gb/s; EDR InfiniBand used here).
    "V100-SXM2-32GB": {"intra_node": "nvlink2", "nic": "ib-edr-100", "cpu": "Xeon-8480"},
    "A100-SXM4-40GB": {"intra_node": "nvlink3", "nic": "ib-hdr-200", "cpu": "EPYC-7742"},
    "A100-SXM4-80GB": {"intra_node": "nvlink3", "nic": "ib-hdr-200", "cpu": "EPYC-7742"},
    "H100-SXM5-80GB": {"intra_node": "nvlink4", "nic": "ib-ndr-400", "cpu": "Xeon-8480"},
    "H200-SXM-141GB": {"intra_node": "nvlink4", "nic": "ib-ndr-400", "cpu": "Xeon-8480"},
    "B200": {"intra_node": "nvlink5", "nic": "ib-ndr-400", "cpu": "Xeon-8480"},
}

TRAINING_COLUMNS = ("device", "count", "nodes", "tp", "pp", "dp", "micro_batch", "fits",
                    "step_time_s", "time_to_train_s", "time_to_train_days", "price_per_hour",
                    "cost_usd", "busy_share", "energy_kwh", "feasible", "reason", "answer")
SERVING_COLUMNS = ("device", "devices", "replicas", "tp", "pp", "ttft_p99_s", "tpot_p99_s",
                   "requests_per_s", "price_per_hour", "cost_per_hour_usd",
                   "energy_per_request_j", "feasible", "reason", "tried")


def price_of(device: str, prices: Mapping[str, float] | None = None) -> float:
    """$ per device-hour of catalog *device*: ``prices[device]`` when given, else the
    catalog's ``price_per_hour``. ScenarioError (field ``prices``) when neither has one."""
    if prices and device in prices:
        p = prices[device]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (
                math.isfinite(p) and p >= 0):
            raise ScenarioError(f"price of {device} must be a number >= 0 ($ per device-hour), "
                                f"got {p!r}", field="prices")
        return float(p)
    spec = get_device(device)
    if spec.price_usd_per_hour is None:
        raise ScenarioError(
            f"the catalog has no price_per_hour for {device}; give one (CLI: --price "
            f"{device}=USD_PER_H; Python: prices={{'{device}': usd_per_hour}})", field="prices")
    return float(spec.price_usd_per_hour)


def _node(base: Mapping[str, Any]) -> dict:
    cluster = base.get("cluster") or {}
    node = cluster.get("node")
    if not isinstance(node, Mapping) or not node.get("gpu"):
        raise ScenarioError("capacity questions need the builder form with one GPU node type "
                            "(cluster: {nodes: N, node: {gpu: ID, gpus_per_node: G, ...}}); "
                            "groups, sites, explicit graphs and TPUs are not supported",
                            field="cluster")
    return dict(node)


def _cluster_for(base: Mapping[str, Any], device: str, nodes: int,
                 node_overrides: Mapping[str, Mapping[str, Any]] | None) -> dict:
    """The base cluster rewritten for *nodes* servers of *device* (same gpus_per_node)."""
    node = _node(base)
    if device != node["gpu"]:
        for key in ("intra_node", "nic", "cpu"):
            node.pop(key, None)
        node.update(SERVER_DEFAULTS.get(device, {}))
        if "nic" in node:
            node.setdefault("nics_per_node", node["gpus_per_node"])
    elif nodes > 1 and not node.get("nic") and device in SERVER_DEFAULTS:
        node["nic"] = SERVER_DEFAULTS[device]["nic"]
        node["nics_per_node"] = node["gpus_per_node"]
    node["gpu"] = device
    node.update((node_overrides or {}).get(device, {}))
    cluster = copy.deepcopy(dict(base["cluster"]))
    cluster["nodes"] = int(nodes)
    cluster["node"] = node
    if nodes > 1:
        cluster.setdefault("fabric", {"topology": "fat-tree"})
    return cluster


def _check_devices(devices: Sequence[str] | None, base_device: str) -> list[str]:
    devs = list(devices) if devices else [base_device]
    for d in devs:
        get_device(d)  # ScenarioError naming the known ids
    return devs


def _positive(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise ScenarioError(f"must be a positive number, got {value!r}", field=field)
    return float(value)


# ---------------------------------------------------------------------------------- training

def _layout(wl: Mapping[str, Any], count: int) -> tuple[dict | None, str]:
    """The base parallelism for *count* devices: tp, pp, cp kept, dp = count / (tp pp cp),
    global batch fixed, micro-batch the base's or the largest divisor of the per-replica
    batch below it. (None, reason) when no such layout exists."""
    par = dict(wl.get("parallelism") or {})
    tp, pp, cp = (int(par.get(k, 1)) for k in ("tp", "pp", "cp"))
    model_par = tp * pp * cp
    if count % model_par:
        return None, f"{count} devices are not a multiple of tp x pp x cp = {model_par}"
    dp = count // model_par
    gb = int(wl["global_batch"])
    if gb % dp:
        return None, f"global_batch {gb} is not divisible by dp = {dp}"
    per_replica = gb // dp
    mb = min(int(par.get("micro_batch") or per_replica), per_replica)
    while per_replica % mb:
        mb -= 1
    par.update(dp=dp, micro_batch=mb)
    return par, ""


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


def _auto_counts(gpn: int, max_nodes: int, probe_time_s: float | None, days: float) -> list[int]:
    nodes = {n for n in (2 ** k for k in range(0, 20)) if n <= max_nodes}
    if probe_time_s is not None and math.isfinite(probe_time_s):
        est = math.ceil(probe_time_s / (days * DAY_S))  # linear scaling from one server
        nodes |= {n for n in (est, est + 1) if 1 <= n <= max_nodes}
    return sorted(n * gpn for n in nodes)


def cheapest_training(run: Run, base: Mapping[str, Any], train_tokens: float, days: float, *,
                      devices: Sequence[str] | None = None, counts: Sequence[int] | None = None,
                      prices: Mapping[str, float] | None = None, max_nodes: int = 64,
                      node_overrides: Mapping[str, Mapping[str, Any]] | None = None
                      ) -> pd.DataFrame:
    """Simulate every (device type, count) candidate training *train_tokens* tokens and mark
    the cheapest that finishes within *days*.

    Parameters
    ----------
    run : callable
        ``run(mapping) -> Result`` simulates a scenario mapping.
    base : mapping
        A training scenario in the builder form with one GPU node type; its parallelism (tp, pp,
        cp, zero, micro_batch ...), global batch, sequence length and ``steps`` are kept.
    train_tokens, days : float
        The token budget and the deadline.
    devices : list of str, optional
        Catalog device ids (default: the base's device).
    counts : list of int, optional
        Device counts, each a multiple of the base's ``gpus_per_node`` (default: 1, 2, 4, ...
        servers up to *max_nodes*, plus the server count a one-server run extrapolates
        linearly to the deadline, and one more).
    prices : mapping, optional
        $ per device-hour overriding the catalog's ``price_per_hour``.
    node_overrides : mapping, optional
        ``{device: {node field: value}}`` replacing the node fields chosen for that device
        (:data:`SERVER_DEFAULTS` when it differs from the base's).

    Returns
    -------
    pandas.DataFrame
        :data:`TRAINING_COLUMNS`, one row per candidate, cheapest first: ``cost_usd = count x
        price_per_hour x time_to_train_s / 3600``; ``energy_kwh = count x
        device_energy_j(spec, busy_share x T, T) / 3.6e6`` with T = ``time_to_train_s`` and
        ``busy_share`` rank 0's compute-stream share of the last simulated step; ``feasible``:
        fits in memory and T <= *days*; ``reason`` says why not; ``answer`` marks the cheapest
        feasible row (none when nothing is feasible).

    Raises
    ------
    ScenarioError
        A base that is not a training scenario of the builder form, a bad budget or deadline,
        an unknown device, a count that is not a multiple of a server, or a device with no
        price (the message names ``--price ID=USD_PER_H``).
    """
    tokens = _positive(train_tokens, "train_tokens")
    days = _positive(days, "days")
    wl = base.get("workload") or {}
    if wl.get("kind") != "training" or not wl.get("global_batch"):
        raise ScenarioError("cheapest_training needs a training workload with global_batch "
                            "(workload: {kind: training, global_batch: ...})", field="workload")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ScenarioError(f"must be a positive integer, got {max_nodes!r}", field="max_nodes")
    node = _node(base)
    gpn = int(node.get("gpus_per_node", 1))
    devs = _check_devices(devices, node["gpu"])
    price = {d: price_of(d, prices) for d in devs}
    if counts is not None:
        for c in counts:
            if isinstance(c, bool) or not isinstance(c, int) or c < 1 or c % gpn:
                raise ScenarioError(f"{c!r} is not a positive multiple of gpus_per_node = {gpn}",
                                    field="counts")

    def simulate(dev: str, count: int) -> dict:
        row: dict[str, Any] = dict(device=dev, count=count, nodes=count // gpn,
                                   price_per_hour=price[dev], feasible=False)
        par, reason = _layout(wl, count)
        if par is None:
            return {**row, "fits": False, "reason": reason}
        row.update(tp=par.get("tp", 1), pp=par.get("pp", 1), dp=par["dp"],
                   micro_batch=par["micro_batch"])
        scen = copy.deepcopy(dict(base))
        scen["cluster"] = _cluster_for(base, dev, count // gpn, node_overrides)
        scen["workload"] = {**copy.deepcopy(dict(wl)), "parallelism": par,
                            "train_tokens": tokens}
        scen["workload"].pop("train_samples", None)
        scen["workload"].pop("epochs", None)
        try:
            res = run(scen)
        except HwsimError as exc:
            return {**row, "fits": False, "reason": str(exc).split("\n")[0]}
        s = res.summary
        fits = bool(s.get("fits", True))
        t = float(s.get("time_to_train_s", np.nan))
        busy = _busy_share(res, dev)
        energy = count * device_energy_j(get_device(dev), busy * t, t) / 3.6e6
        ok = fits and t <= days * DAY_S
        reason = "" if ok else ("does not fit in device memory (memory_per_device_gb "
                                f"{s.get('memory_per_device_gb', float('nan')):.1f})" if not fits
                                else f"takes {t / DAY_S:.1f} days > {days:g}")
        return {**row, "fits": fits, "step_time_s": s.get("step_time_s"), "time_to_train_s": t,
                "time_to_train_days": t / DAY_S, "cost_usd": count * price[dev] * t / 3600.0,
                "busy_share": busy, "energy_kwh": energy, "feasible": ok, "reason": reason}

    rows = []
    for dev in devs:
        if counts is not None:
            todo = sorted(set(counts))
        else:
            probe = simulate(dev, gpn)
            rows.append(probe)
            todo = [c for c in _auto_counts(gpn, max_nodes, probe.get("time_to_train_s")
                                            if probe.get("fits") else None, days) if c != gpn]
        rows.extend(simulate(dev, c) for c in todo)
    df = pd.DataFrame(rows).reindex(columns=list(TRAINING_COLUMNS))
    df["feasible"] = df["feasible"].astype(bool)
    df["fits"] = df["fits"].astype(bool)
    df["reason"] = df["reason"].fillna("")
    df = df.sort_values(["feasible", "cost_usd", "count"], ascending=[False, True, True],
                        na_position="last", kind="stable").reset_index(drop=True)
    df["answer"] = False
    if df["feasible"].any():
        df.loc[df.index[df["feasible"]][0], "answer"] = True
    return df


# ----------------------------------------------------------------------------------- serving

def fewest_serving(run: Run, base: Mapping[str, Any], rate_per_s: float, ttft_p99_s: float,
                   tpot_p99_s: float, *, devices: Sequence[str] | None = None,
                   prices: Mapping[str, float] | None = None, max_replicas: int = 64,
                   requests: int | None = None,
                   node_overrides: Mapping[str, Mapping[str, Any]] | None = None
                   ) -> pd.DataFrame:
    """For each device type, the fewest devices (replicas x tp x pp, the replica layout of the
    base) whose simulated p99 TTFT and p99 TPOT at *rate_per_s* meet both targets.

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

    Returns
    -------
    pandas.DataFrame
        :data:`SERVING_COLUMNS`, one row per device type, fewest devices first:
        ``cost_per_hour_usd = devices x price_per_hour``; ``energy_per_request_j``: the
        devices' energy over the run (resource_summary) over the requests completed;
        ``tried``: the replica counts simulated, in order.
    """
    rate = _positive(rate_per_s, "rate_per_s")
    ttft = _positive(ttft_p99_s, "ttft_p99_s")
    tpot = _positive(tpot_p99_s, "tpot_p99_s")
    wl = base.get("workload") or {}
    if wl.get("kind") != "inference":
        raise ScenarioError("fewest_serving needs an inference workload (workload: {kind: "
                            "inference, ...})", field="workload")
    par = dict(wl.get("parallelism") or {})
    if par.get("prefill_replicas"):
        raise ScenarioError("disaggregated serving (prefill_replicas > 0) is not supported by "
                            "fewest_serving; give a colocated base", field="workload.parallelism")
    if isinstance(max_replicas, bool) or not isinstance(max_replicas, int) or max_replicas < 1:
        raise ScenarioError(f"must be a positive integer, got {max_replicas!r}",
                            field="max_replicas")
    node = _node(base)
    gpn = int(node.get("gpus_per_node", 1))
    per_replica = int(par.get("tp", 1)) * int(par.get("pp", 1))
    devs = _check_devices(devices, node["gpu"])
    price = {d: price_of(d, prices) for d in devs}

    rows = []
    for dev in devs:
        cache: dict[int, tuple[bool, dict]] = {}

        def trial(r: int, dev: str = dev, cache: dict = cache) -> bool:
            if r not in cache:
                scen = copy.deepcopy(dict(base))
                n_dev = r * per_replica
                scen["cluster"] = _cluster_for(base, dev, math.ceil(n_dev / gpn), node_overrides)
                w = copy.deepcopy(dict(wl))
                w["parallelism"] = {**par, "replicas": r}
                w["arrivals"] = {**dict(w.get("arrivals") or {}), "rate_per_s": rate}
                if requests is not None:
                    w["arrivals"]["requests"] = int(requests)
                w["slo"] = {"ttft_s": ttft, "tpot_s": tpot}
                scen["workload"] = w
                try:
                    res = run(scen)
                except HwsimError as exc:
                    cache[r] = (False, {"reason": str(exc).split("\n")[0]})
                    return False
                s = res.summary
                rs = resource_summary(res)
                energy = float(rs.loc[(rs["kind"] == "device")
                                      & (rs["resource_class"] == dev), "energy_j"].sum())
                done = max(int(s.get("requests_completed", 0)), 1)
                ok = bool(s.get("fits", True)) and s["ttft_p99_s"] <= ttft \
                    and s["tpot_p99_s"] <= tpot
                cache[r] = (ok, dict(ttft_p99_s=s["ttft_p99_s"], tpot_p99_s=s["tpot_p99_s"],
                                     requests_per_s=s.get("requests_per_s"),
                                     energy_per_request_j=energy / done, fits=s.get("fits")))
            return cache[r][0]

        lo, hi = 0, 1  # lo: largest known miss, hi: candidate
        while hi <= max_replicas and not trial(hi):
            lo, hi = hi, hi * 2
        if hi > max_replicas:  # every power of two up to the limit missed: try the limit
            hi = max_replicas if lo < max_replicas and trial(max_replicas) else max_replicas + 1
        if hi <= max_replicas:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if trial(mid):
                    hi = mid
                else:
                    lo = mid
        found = hi <= max_replicas
        r = hi if found else max(cache)
        info = cache[r][1]
        reason = "" if found else (info.get("reason") or
                                   f"p99 targets not met with {max_replicas} replicas "
                                   f"(ttft_p99_s {info.get('ttft_p99_s', float('nan')):.3g}, "
                                   f"tpot_p99_s {info.get('tpot_p99_s', float('nan')):.3g})")
        rows.append(dict(device=dev, devices=r * per_replica, replicas=r,
                         tp=int(par.get("tp", 1)), pp=int(par.get("pp", 1)),
                         ttft_p99_s=info.get("ttft_p99_s"), tpot_p99_s=info.get("tpot_p99_s"),
                         requests_per_s=info.get("requests_per_s"), price_per_hour=price[dev],
                         cost_per_hour_usd=r * per_replica * price[dev],
                         energy_per_request_j=info.get("energy_per_request_j"),
                         feasible=found, reason=reason, tried=list(cache)))
    df = pd.DataFrame(rows).reindex(columns=list(SERVING_COLUMNS))
    return df.sort_values(["feasible", "devices", "cost_per_hour_usd"],
                          ascending=[False, True, True], kind="stable").reset_index(drop=True)


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
