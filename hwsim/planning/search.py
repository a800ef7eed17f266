"""Parallelism search for training: which layout (tp, pp, dp, cp, ep, micro-batch, virtual
stages, recompute, ZeRO, sequence parallelism) of a model on a cluster trains fastest, and why
the runner-up loses.

Strategy (docs/planning.md, "Parallelism search"):

1. **Enumerate** the layouts of a search space (:func:`default_space`, or the caller's): tp
   powers of two dividing the devices per server, pp dividing the layers with ``tp x pp x cp``
   dividing the devices, ``dp = devices / (tp x pp x cp)``, micro-batches dividing
   ``global_batch / dp``, virtual stages with ``layers % (pp x v) == 0`` (and, as the
   interleaved schedule needs, micro-batches per step a multiple of pp), ep dividing dp and the
   experts (MoE only), cp dividing the sequence (long sequences only), tp dividing the heads,
   sequence parallelism off and on where tp > 1 (:mod:`hwsim.planning.search_space`).
   Combinations that fail are rows of status ``invalid`` with the reason.
2. **Validate and prune without simulating**: every layout goes through the scenario builder's
   :func:`~hwsim.scenario.build.training_plan` (an error there makes it ``invalid`` with the
   reason); the plan's per-stage memory breakdown (:mod:`hwsim.workloads.memory`) is compared
   with the device capacity exactly as the job's memory pools do, so a ``pruned_memory`` row is
   one the simulator would report ``fits: false`` for.
3. **Rank by an analytic estimate** of the step time
   (:func:`~hwsim.planning.estimate.estimate_step_time`): the most loaded stage's op times
   as the job's stack runs them, its blocking tensor/context/expert collectives at
   ring-algorithm volumes over the links the group spans, the 1F1B (or interleaved) bubble
   ``(pp - 1) / v`` micro-batch times, pipeline sends, the part of the bucketed gradient
   reduction the last backward does not hide (as the jobs overlap it), and the optimizer. It
   ignores congestion and latency, so it is an ordering heuristic, not a bound.
4. **Simulate** the ``budget`` best-estimated memory-feasible layouts (``"all"``: every one)
   as :func:`hwsim.run` runs them and sort by simulated step time; the others stay in the
   frame as ``not_simulated`` with their estimate. Planning and simulating reuse the cluster's
   graph, router and the model's ops across layouts, and with ``workers > 1`` run in worker
   processes, the costliest simulations first (:mod:`hwsim.planning.search_run`).
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from hwsim.analysis.parallelism import PARTS, summary_key
from hwsim.exceptions import ScenarioError
from hwsim.planning.estimate import estimate_step_time
from hwsim.planning.search_run import (BREAKDOWN_KEYS, RESULT_KEYS, Evaluator, assess_all,
                                       plan_memory, pool, simulate_all)
from hwsim.planning.search_space import (LAYOUT, LONG_SEQUENCE, SEARCH_FIELDS, default_space,
                                         enumerate_layouts, layout_text, load_base)

__all__ = ["SEARCH_FIELDS", "LAYOUT", "STATUSES", "default_space", "enumerate_layouts", "search",
           "estimate_step_time", "explain", "compare", "layout_text", "plan_memory",
           "RESULT_KEYS", "BREAKDOWN_KEYS", "LONG_SEQUENCE"]

STATUSES = ("simulated", "not_simulated", "pruned_memory", "invalid")
"""Row status, in the frame's sort order."""

ALL = "all"
"""``budget="all"``: simulate every memory-feasible layout."""

_LABELS = {"compute": "compute", "exposed_comm_tp": "tensor-parallel communication",
           "exposed_comm_pp": "pipeline send/receive", "exposed_comm_dp":
           "data-parallel gradient communication", "exposed_comm_cp":
           "context-parallel communication", "exposed_comm_ep": "expert-parallel all-to-all",
           "exposed_comm_other": "other communication", "bubble": "pipeline bubble",
           "optimizer": "optimizer step", "data_loading": "data loading", "other": "other"}


def _check_options(budget: Any, workers: Any, top: Any) -> None:
    for name, value in (("budget", budget), ("workers", workers), ("top", top)):
        if name == "budget" and value == ALL:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            also = ", or 'all' (every memory-feasible layout)" if name == "budget" else ""
            raise ScenarioError(f"{value!r}; valid: an integer >= 1{also}",
                                field=f"search.{name}")


def search(base_scenario: Any, space: Mapping[str, Any] | None = None, *,
           top: int | None = None, budget: int | str = 32, workers: int = 1) -> pd.DataFrame:
    """Search the parallel layouts of a training scenario; return one row per candidate.

    Parameters
    ----------
    base_scenario : path, mapping or Scenario
        A training scenario; everything but ``workload.parallelism``'s searched fields is kept.
    space : mapping, optional
        Values to try per field of :data:`SEARCH_FIELDS` (e.g. ``{"tp": [4, 8], "zero": [0]}``);
        fields left out take :func:`default_space`'s values.
    top : int, optional
        Return only the first *top* rows (the best simulated first); None: every candidate.
    budget : int or "all"
        How many memory-feasible candidates to simulate, the best analytic estimates first;
        ``"all"``: every one of them.
    workers : int
        Processes planning and simulating in parallel (1: in this process). Each builds the
        cluster's graph once and keeps it for every layout it is given; simulations are handed
        out one at a time, the costliest first.

    Returns
    -------
    DataFrame
        Columns: the layout (:data:`LAYOUT`), ``status`` (:data:`STATUSES`), ``reason`` (why
        invalid or pruned, or not simulated where a run would be refused by the event
        budget), ``estimate_step_time_s``, ``memory_per_device_gb`` and
        ``memory_<label>_gb`` (from the memory model, before simulating), ``fits``, the
        simulated :data:`RESULT_KEYS` and step breakdown ``time_<part>_s``,
        ``micro_batches_simulated`` and ``simulation_s`` (CPU seconds of the layout's run).
        Sorted by status (:data:`STATUSES` order), then simulated step time, then estimate,
        then memory. ``attrs`` hold ``capacity_gb``, ``candidates``, ``budget``, ``counts``
        (rows per status) and ``seconds`` (wall seconds of the planning and of the
        simulations).

    Raises
    ------
    ScenarioError
        For a scenario that is not one training workload, or a bad space or argument.
    """
    import time

    _check_options(budget, workers, 1 if top is None else top)
    t0 = time.perf_counter()
    s = load_base(base_scenario)
    local = Evaluator(s)
    combos = enumerate_layouts(s, space, invalid=True, graph=(local.graph, local.devices))
    layouts = [c for c in combos if not c["reason"]]
    if not layouts:
        first = combos[0]
        raise ScenarioError(f"no layout of the search space can run ({len(combos)} tried; e.g. "
                            f"{layout_text(first)}: {first['reason']}); valid: a space with "
                            "tp x pp x cp dividing the devices, pp dividing the layers and "
                            "micro_batch dividing global_batch / dp", field="space")
    rows: list[dict[str, Any]] = [dict(c, status="invalid") for c in combos if c["reason"]]
    executor = pool(s, workers) if workers > 1 else None
    try:
        assessed = assess_all([{k: x[k] for k in LAYOUT} for x in layouts], local, executor)
        feasible = []
        for layout, got in zip(layouts, assessed):
            cost = got.pop("_cost", None)
            if cost is not None:  # fits, and a run of it is within the event budget
                feasible.append((got["estimate_step_time_s"], len(rows), cost))
            rows.append({**layout, "reason": "", **got})
        t1 = time.perf_counter()
        chosen = sorted(feasible, key=lambda x: (x[0], x[1]))
        if budget != ALL:
            chosen = chosen[:budget]
        results = simulate_all([{k: rows[i][k] for k in LAYOUT} for _, i, _ in chosen],
                               [c for _, _, c in chosen], local, executor)
    finally:
        if executor is not None:
            executor.shutdown()
    for (_, i, _), res in zip(chosen, results):
        rows[i].update(res, status="simulated" if res["fits"] else "pruned_memory")
    frame = _frame(rows, top)
    frame.attrs.update(capacity_gb=local.capacity / 1e9, candidates=len(combos), budget=budget,
                       counts={st: int(sum(r["status"] == st for r in rows)) for st in STATUSES},
                       seconds={"plan": t1 - t0, "simulate": time.perf_counter() - t1})
    return frame


def _frame(rows: list[dict[str, Any]], top: int | None) -> pd.DataFrame:
    """The rows as the search's frame: columns in order, sorted, the first *top*."""
    frame = pd.DataFrame(rows)
    frame["dp"] = frame["dp"].astype("Int64")  # <NA> where tp x pp x cp does not divide
    for col in ("estimate_step_time_s", "memory_per_device_gb", "fits") + RESULT_KEYS \
            + BREAKDOWN_KEYS:
        if col not in frame:
            frame[col] = None
    frame["_order"] = frame["status"].map({st: i for i, st in enumerate(STATUSES)})
    frame = frame.sort_values(["_order", "step_time_s", "estimate_step_time_s",
                               "memory_per_device_gb"], na_position="last", kind="stable")
    frame = frame.drop(columns="_order").reset_index(drop=True)
    lead = list(LAYOUT) + ["status", "step_time_s", "model_tflops_per_gpu",
                           "hardware_tflops_per_gpu", "mfu", "tokens_per_s", "samples_per_s",
                           "memory_per_device_gb", "estimate_step_time_s", "fits", "bottleneck"]
    frame = frame[lead + list(BREAKDOWN_KEYS) + sorted(
        c for c in frame if c not in lead and c not in BREAKDOWN_KEYS and c != "reason")
        + ["reason"]]
    return frame.head(top) if top is not None else frame


# -- explaining -----------------------------------------------------------------------------

def _differences(best: Mapping[str, Any], other: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(part, other - best seconds) for every part that differs, largest increase first."""
    diffs = [(p, float(other[summary_key(p)] or 0.0) - float(best[summary_key(p)] or 0.0))
             for p in PARTS]
    tol = 1e-6 * float(best["step_time_s"])  # float noise of share x step time
    return sorted(((p, d) for p, d in diffs if abs(d) > tol), key=lambda x: -x[1])


def compare(best: Mapping[str, Any], other: Mapping[str, Any], name: str = "Runner-up") -> str:
    """Why *other* (a simulated row) is slower than *best*: its gap and the step-breakdown parts
    that grew most (two) and shrank most (one), e.g. ``Runner-up (tp 4, pp 32, ...) is 6.1%
    slower (+1.5 s per step): +1.9 s pipeline bubble, -0.4 s tensor-parallel communication; it
    differs in tp, pp. It loses on pipeline bubble.``"""
    gap = float(other["step_time_s"]) - float(best["step_time_s"])
    diffs = _differences(best, other)
    worse = [(p, d) for p, d in diffs if d > 0][:2]
    better = [(p, d) for p, d in reversed(diffs) if d < 0][:1]
    why = ", ".join(f"{d:+.3g} s {_LABELS[p]}" for p, d in worse + better)
    changed = [k for k in LAYOUT if other.get(k, False) != best.get(k, False)]
    text = (f"{name} ({layout_text(other)}) is {100 * gap / best['step_time_s']:.1f}% slower "
            f"({gap:+.3g} s per step): {why or 'the same breakdown'}"
            + (f"; it differs in {', '.join(changed)}." if changed else "."))
    return text + (f"\nIt loses on {_LABELS[worse[0][0]]}." if worse else "")


def explain(results: pd.DataFrame) -> str:
    """A few lines on a :func:`search` frame: the candidates by status, the best layout, the
    runner-up and why it loses (the step-breakdown parts with the largest increase, then the
    largest decrease, against the best)."""
    if "status" not in results or "step_time_s" not in results:
        raise ValueError("explain needs the frame of hwsim.planning.search.search")
    sim = results[results["status"] == "simulated"].sort_values("step_time_s", kind="stable")
    counts = results.attrs.get("counts") or results["status"].value_counts().to_dict()
    lines = [", ".join(f"{counts.get(st, 0)} {st.replace('_', ' ')}" for st in STATUSES)
             + f" (of {results.attrs.get('candidates', len(results))} candidates)."]
    if sim.empty:
        lines.append("No candidate was simulated: none fits in memory (see the pruned rows' "
                     "reasons).")
        return "\n".join(lines)
    best = sim.iloc[0]
    lines.append(f"Best: {layout_text(best)}: {best['step_time_s']:.4g} s per step, "
                 f"{best['model_tflops_per_gpu']:.4g} model TFLOP/s per device "
                 f"({best['hardware_tflops_per_gpu']:.4g} with recompute), MFU "
                 f"{100 * best['mfu']:.1f}%, {best['memory_per_device_gb']:.3g} GB per device;"
                 f" bottleneck {best['bottleneck']}.")
    if len(sim) < 2:
        lines.append("Only one candidate was simulated: no runner-up to compare.")
        return "\n".join(lines)
    lines.append(compare(best, sim.iloc[1], "Runner-up"))
    return "\n".join(lines)

