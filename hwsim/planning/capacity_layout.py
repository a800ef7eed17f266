"""The training layout of one capacity candidate (a device type and count): the base scenario's
own layout when it runs on that many devices and fits in memory, else the layout of a small
search space that fits and has the least analytic step time (docs/planning.md, "Capacity
questions").

Nothing here is a new formula: a layout runs when the scenario builder's
:func:`~hwsim.scenario.build.training_plan` accepts it, fits when the plan's per-device memory
breakdown (:mod:`hwsim.workloads.memory`, the most loaded device, as the job allocates it) is
within the device's capacity by the test of the job's memory pools, and is ranked by
:func:`hwsim.planning.search.estimate_step_time` -- all exactly as the parallelism search
(:mod:`hwsim.planning.search`) prunes and ranks before simulating.

The search changes as little as it must, in two stages: first only the model-parallel split (tp,
a power of two dividing the devices per server; pp, a divisor of the layers) with the base's
ZeRO stage, recompute policy and micro-batch; only when no such layout fits, also the memory
savers (ZeRO 1 and 3 where above the base's, full recompute, micro-batch 1). cp, ep and virtual
stages stay the base's. Of the layouts that fit, the one with the least model parallelism (tp x
pp, so the most data parallelism) wins, as in common practice (shard across data-parallel ranks
first, split the model only as far as memory needs); among those, the least estimated step
time, then the fewest fields changed from the base, then the least memory. (The estimate alone
is not used across tp x pp: it ignores ZeRO-3's per-micro-batch parameter gathers, so it favours
wide tensor parallelism that the simulation then finds slower.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from hwsim.catalog import get_device
from hwsim.exceptions import ScenarioError

__all__ = ["Choice", "base_layout", "choose_layout", "SEARCHED"]

SEARCHED = ("tp", "pp", "dp", "micro_batch", "recompute", "zero")
"""The parallelism fields the search may change (dp follows from tp, pp and the count)."""

Load = Callable[[dict], Any]


@dataclass
class Choice:
    """The layout chosen for a candidate: ``parallelism`` (the base's ``workload.parallelism``
    with the searched fields set) or None when no layout runs and fits; ``layout``: ``"base"``
    or ``"searched"`` (or ``""`` when none); ``memory_gb``: per-device memory of the chosen
    layout by the memory model (for none: the least any runnable layout needs, or None);
    ``capacity_gb``; ``reason``: why none; ``tried``: layouts whose memory was computed."""

    parallelism: dict | None
    layout: str = ""
    memory_gb: float | None = None
    capacity_gb: float | None = None
    reason: str = ""
    tried: int = 0


def base_layout(wl: Mapping[str, Any], count: int) -> tuple[dict | None, str]:
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


def _with(scenario: Mapping[str, Any], par: Mapping[str, Any]) -> dict:
    return {**scenario, "workload": {**dict(scenario["workload"]), "parallelism": dict(par)}}


def _text(par: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {par.get(k)}" for k in SEARCHED)


def _space(base: Mapping[str, Any], stage: int) -> dict[str, tuple]:
    """Stage 1: only tp and pp vary (default space); stage 2: also ZeRO above the base's,
    full recompute and micro-batch 1."""
    zero = int(base.get("zero", 0) or 0)
    rc = base.get("recompute", "none") or "none"
    mb = int(base.get("micro_batch") or 1)
    order = base.get("torus_order")  # the base's (a TPU torus: its chips' name order if none)
    fixed = {"cp": (int(base.get("cp", 1)),), "ep": (int(base.get("ep", 1)),),
             "virtual_stages": (int(base.get("virtual_stages", 1)),),
             "torus_order": ("".join(order) if order else None,)}
    if stage == 1:
        return {**fixed, "zero": (zero,), "recompute": (rc,),
                "micro_batch": tuple(d for d in range(1, mb + 1) if mb % d == 0)}
    return {**fixed, "zero": tuple(sorted({zero} | {z for z in (1, 3) if z > zero})),
            "recompute": tuple(dict.fromkeys((rc, "full"))), "micro_batch": (1,)}


def choose_layout(load: Load, scenario: Mapping[str, Any], count: int, *,
                  search: bool = True) -> Choice:
    """The layout of training *scenario* (a mapping whose cluster has *count* devices of one
    type) to simulate: the base's (:func:`base_layout`) when it runs and fits, else (with
    *search*) the searched layout with the least estimated step time. *load* turns a mapping
    into a validated Scenario (reading its relative paths from the right folder)."""
    from hwsim.planning.search import enumerate_layouts, estimate_step_time, plan_memory
    from hwsim.scenario.budget import check_size
    from hwsim.scenario.build import build_graph, training_plan
    from hwsim.topology import compute_devices

    wl = scenario["workload"]
    base_par = dict(wl.get("parallelism") or {})
    s0 = load(dict(scenario))
    # the size budget before the graph is built (events are the run's to check, once the layout
    # is chosen): a count of millions is a row's BudgetError, not minutes and GBs
    check_size(s0)
    g = build_graph(s0.cluster)
    devices = compute_devices(g, s0.compute_device)
    capacity = min(get_device(g.nodes[d]["spec"]).memory_bytes for d in devices)
    cap_gb = capacity / 1e9

    def assess(par: Mapping[str, Any]) -> tuple[float, Any] | str:
        """(bytes needed per device, plan), or the builder's reason for refusing it."""
        try:
            plan = training_plan(load(_with(scenario, par)), g)
        except ScenarioError as err:
            return err.reason
        return sum(plan_memory(plan).values()), plan

    par, why = base_layout(wl, count)
    least: tuple[float, str] | None = None
    tried = 0
    if par is not None:
        got = assess(par)
        tried += 1
        if isinstance(got, str):
            why = got
        elif got[0] <= capacity * (1 + 1e-12):  # the test of hwsim.engine.pool.Pool.fits
            return Choice(par, "base", got[0] / 1e9, cap_gb, tried=tried)
        else:
            why = f"the base layout needs {got[0] / 1e9:.4g} GB per device of {cap_gb:.4g} GB"
            least = (got[0], _text(par))
    if not search:
        return Choice(None, "", least and least[0] / 1e9, cap_gb, why, tried)
    for stage in (1, 2):
        fits: list[tuple[float, int, float, dict]] = []
        for lay in enumerate_layouts(s0, _space(base_par, stage)):
            cand = {**base_par, **{k: lay[k] for k in SEARCHED}}
            got = assess(cand)
            tried += 1
            if isinstance(got, str):
                continue
            need, plan = got
            if least is None or need < least[0]:
                least = (need, _text(cand))
            if need <= capacity * (1 + 1e-12):
                changed = sum(cand.get(k) != base_par.get(k) for k in SEARCHED if k != "dp")
                fits.append((cand["tp"] * cand["pp"], estimate_step_time(plan, g), changed,
                             need, cand))
        if fits:
            *_, need, best = min(fits, key=lambda f: f[:4])
            return Choice(best, "searched", need / 1e9, cap_gb, tried=tried)
    if least is None:
        return Choice(None, "", None, cap_gb, f"no layout runs on {count} devices (the base "
                      f"layout: {why})", tried)
    return Choice(None, "", least[0] / 1e9, cap_gb,
                  f"does not fit in device memory with any of {tried} layouts: the least needs "
                  f"{least[0] / 1e9:.4g} GB per device of {cap_gb:.4g} GB ({least[1]})", tried)
