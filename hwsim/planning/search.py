"""Parallelism search for training: which layout (tp, pp, dp, cp, ep, micro-batch, virtual
stages, recompute, ZeRO) of a model on a cluster trains fastest, and why the runner-up loses.

Strategy (docs/planning.md, "Parallelism search"):

1. **Enumerate** the layouts of a search space (:func:`default_space`, or the caller's): tp
   powers of two dividing the devices per server, pp dividing the layers with ``tp x pp x cp``
   dividing the devices, ``dp = devices / (tp x pp x cp)``, micro-batches dividing
   ``global_batch / dp``, virtual stages with ``layers % (pp x v) == 0`` (and, as the
   interleaved schedule needs, micro-batches per step a multiple of pp), ep dividing dp and the
   experts (MoE only), cp dividing the sequence (long sequences only), tp dividing the heads.
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
4. **Simulate** the ``budget`` best-estimated memory-feasible layouts with :func:`hwsim.run`
   (all of them when they are fewer) and sort by simulated step time; the others stay in the
   frame as ``not_simulated`` with their estimate.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Mapping

import pandas as pd

from hwsim.analysis.parallelism import PARTS, summary_key
from hwsim.catalog import get_device
from hwsim.exceptions import ScenarioError
from hwsim.planning.estimate import estimate_step_time, per_server
from hwsim.workloads.memory import RECOMPUTE_POLICIES

__all__ = ["SEARCH_FIELDS", "LAYOUT", "STATUSES", "default_space", "enumerate_layouts", "search",
           "estimate_step_time", "explain", "compare", "layout_text"]

SEARCH_FIELDS = ("tp", "pp", "cp", "ep", "micro_batch", "virtual_stages", "recompute", "zero")
"""The fields of ``workload.parallelism`` a search space may list (``dp`` follows from them)."""

LAYOUT = ("tp", "pp", "dp", "cp", "ep", "micro_batch", "virtual_stages", "recompute", "zero")
STATUSES = ("simulated", "not_simulated", "pruned_memory", "invalid")
"""Row status, in the frame's sort order."""

RESULT_KEYS = ("step_time_s", "tokens_per_s", "samples_per_s", "model_tflops_per_gpu",
               "hardware_tflops_per_gpu", "mfu", "bottleneck")
BREAKDOWN_KEYS = tuple(summary_key(p) for p in PARTS)
LONG_SEQUENCE = 16384
"""From this ``seq_len`` on, the default space also tries context parallelism."""

_LABELS = {"compute": "compute", "exposed_comm_tp": "tensor-parallel communication",
           "exposed_comm_pp": "pipeline send/receive", "exposed_comm_dp":
           "data-parallel gradient communication", "exposed_comm_cp":
           "context-parallel communication", "exposed_comm_ep": "expert-parallel all-to-all",
           "exposed_comm_other": "other communication", "bubble": "pipeline bubble",
           "optimizer": "optimizer step", "data_loading": "data loading", "other": "other"}


# -- the scenario ----------------------------------------------------------------------------

def _load(base: Any):
    from hwsim.scenario import Scenario, load_scenario
    from hwsim.scenario.schema import TrainingWorkload

    s = base if isinstance(base, Scenario) else load_scenario(
        dict(base) if isinstance(base, Mapping) else base)
    if s.jobs is not None or not isinstance(s.workload, TrainingWorkload):
        kind = "jobs" if s.jobs is not None else getattr(s.workload, "kind", "?")
        raise ScenarioError(f"the parallelism search needs one training workload, got {kind}; "
                            "valid: a scenario with workload.kind: training", field="workload")
    return s


def _model_spec(s) -> Any:
    from hwsim.workloads import resolve_model

    fields = s.workload.model.model_dump(exclude_none=True)
    fields.pop("flash_attention", None)
    try:
        return resolve_model(fields)
    except ValueError as err:
        raise ScenarioError(str(err), field="workload.model") from None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_space(base_scenario: Any) -> dict[str, tuple]:
    """The search space used when none is given: tp powers of two up to the devices per server,
    pp any divisor of the layers, micro-batch 1, 2, 4, 8, virtual stages 1-4, every recompute
    policy, ZeRO 0 and 1; ep (divisors of the experts) only for a mixture-of-experts model, cp
    1, 2, 4, 8 only from ``seq_len`` :data:`LONG_SEQUENCE` on; otherwise 1. Combinations are
    filtered by :func:`enumerate_layouts`."""
    from hwsim.scenario.build import build_graph
    from hwsim.topology import compute_devices

    s = _load(base_scenario)
    spec = _model_spec(s)
    g = build_graph(s.cluster)
    devices = compute_devices(g, s.compute_device)
    gpn = per_server(g, devices)
    layers = getattr(spec, "layers", 1)
    experts = getattr(spec, "experts", 1)
    seq = s.workload.seq_len or 1
    return {
        "tp": tuple(t for t in (1, 2, 4, 8, 16, 32, 64) if t <= gpn and gpn % t == 0),
        "pp": tuple(_divisors(layers)),
        "cp": (1, 2, 4, 8) if seq >= LONG_SEQUENCE else (1,),
        "ep": tuple(_divisors(experts)) if experts > 1 else (1,),
        "micro_batch": (1, 2, 4, 8),
        "virtual_stages": (1, 2, 3, 4),
        "recompute": RECOMPUTE_POLICIES,
        "zero": (0, 1),
    }


def _check_space(space: Mapping[str, Any]) -> dict[str, tuple]:
    out = {}
    for key, values in space.items():
        field = f"space.{key}"
        if key not in SEARCH_FIELDS:
            raise ScenarioError(f"unknown search field {key!r}; valid: {', '.join(SEARCH_FIELDS)}"
                                " (dp follows from the others)", field=field)
        vals = (values,) if isinstance(values, (str, int)) else tuple(values)
        if not vals:
            raise ScenarioError("empty list of values; valid: e.g. [1, 2, 4]", field=field)
        for v in vals:
            if key == "recompute":
                if v not in RECOMPUTE_POLICIES:
                    raise ScenarioError(f"{v!r}; valid: {', '.join(RECOMPUTE_POLICIES)}",
                                        field=field)
            elif key == "zero":
                if v not in (0, 1, 2, 3) or isinstance(v, bool):
                    raise ScenarioError(f"{v!r}; valid: 0, 1, 2, 3 (3 = FSDP)", field=field)
            elif not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ScenarioError(f"{v!r} is not a positive integer; valid: e.g. [1, 2, 4]",
                                    field=field)
        out[key] = tuple(dict.fromkeys(vals))
    return out


def enumerate_layouts(base_scenario: Any, space: Mapping[str, Any] | None = None, *,
                      invalid: bool = False) -> list[dict[str, Any]]:
    """The layouts of *space* (:func:`default_space` fills the fields it leaves out) that can
    run at all: ``tp x pp x cp`` divides the devices, tp divides the attention heads (Megatron-LM
    splits heads over the tensor-parallel ranks), ``pp`` (times the virtual stages) divides the
    layers, ``ep`` divides ``dp`` and the experts, the micro-batch divides
    ``global_batch / dp``, an interleaved layout (``virtual_stages > 1``, needing ``pp > 1``) has
    a multiple of ``pp`` micro-batches per step, and ``cp`` divides ``seq_len``. Each is a dict
    of :data:`LAYOUT`. With *invalid*, every combination is returned, each with a ``reason``
    (empty for a valid one; ``dp`` is None where ``tp x pp x cp`` does not divide the devices).
    The scenario builder may still reject a layout: :func:`search` reports those as
    ``invalid`` too."""
    from hwsim.scenario.build import build_graph
    from hwsim.topology import compute_devices

    s = _load(base_scenario)
    full = default_space(s)
    full.update(_check_space(space or {}))
    spec = _model_spec(s)
    layers = getattr(spec, "layers", 1)
    heads = getattr(spec, "heads", None)
    experts = getattr(spec, "experts", 1)
    seq = s.workload.seq_len or 1
    batch = s.workload.global_batch
    n = len(compute_devices(build_graph(s.cluster), s.compute_device))
    out = []
    for tp, pp, cp, ep, mb, v, rc, zero in itertools.product(
            *(full[k] for k in SEARCH_FIELDS)):
        dp = n // (tp * pp * cp) if n % (tp * pp * cp) == 0 else None
        m = batch // (dp * mb) if dp and batch % (dp * mb) == 0 else None
        checks = (
            (dp is None, f"tp x pp x cp = {tp * pp * cp} does not divide the {n} devices"),
            (heads is not None and heads % tp, f"tp={tp} does not divide heads={heads}"),
            (layers % (pp * v), f"pp x virtual_stages = {pp * v} does not divide "
                                f"layers={layers}"),
            (seq % cp, f"cp={cp} does not divide seq_len={seq}"),
            (experts % ep, f"ep={ep} does not divide experts={experts}"),
            (dp is not None and dp % ep, f"ep={ep} does not divide dp={dp}"),
            (dp is not None and m is None, f"dp x micro_batch = {(dp or 0) * mb} does not "
                                           f"divide global_batch={batch}"),
            (v > 1 and pp == 1, "virtual_stages > 1 needs pp > 1"),
            (v > 1 and m is not None and pp > 1 and m % pp,
             f"the interleaved schedule needs micro-batches per step ({m}) to be a multiple "
             f"of pp={pp}"),
        )
        reason = next((why for bad, why in checks if bad), "")
        if reason and not invalid:
            continue
        row = dict(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, micro_batch=mb, virtual_stages=v,
                   recompute=rc, zero=zero)
        out.append(dict(row, reason=reason) if invalid else row)
    return out


def _with_layout(s, layout: Mapping[str, Any]) -> dict[str, Any]:
    """The scenario as a dict with ``workload.parallelism`` set to *layout* (its other
    parallelism fields, e.g. sequence_parallel, offload, kept)."""
    d = s.model_dump(mode="json", exclude_none=True)
    par = dict(d["workload"].get("parallelism") or {})
    par.update({k: layout[k] for k in LAYOUT})
    d["workload"]["parallelism"] = par
    return d


# -- memory and the analytic estimate -------------------------------------------------------

def plan_memory(plan) -> dict[str, float]:
    """The most loaded device's breakdown (bytes by label) of a training plan, as the job
    allocates it."""
    stages = getattr(plan, "stages", None)
    if stages is not None:
        return dict(max(plan.memory, key=lambda m: sum(m.values())))
    from hwsim.workloads import training_memory

    return dict(plan.memory) if plan.memory is not None else training_memory(
        plan.model, precision=plan.precision, optimizer=plan.optimizer, dp=len(plan.ranks))


# -- search ---------------------------------------------------------------------------------

def _simulate(scenario: dict[str, Any]) -> dict[str, Any]:
    from hwsim.scenario import load_scenario
    from hwsim.scenario.build import run_scenario

    s = run_scenario(load_scenario(scenario), record="summary").summary
    return {k: s.get(k) for k in ("fits", "memory_per_device_gb") + RESULT_KEYS
            + BREAKDOWN_KEYS}


def search(base_scenario: Any, space: Mapping[str, Any] | None = None, *,
           top: int | None = None, budget: int = 32, workers: int = 1) -> pd.DataFrame:
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
    budget : int
        How many memory-feasible candidates to simulate, the best analytic estimates first.
    workers : int
        Processes simulating in parallel (1: in this process).

    Returns
    -------
    DataFrame
        Columns: the layout (:data:`LAYOUT`), ``status`` (:data:`STATUSES`), ``reason`` (why
        invalid or pruned), ``estimate_step_time_s``, ``memory_per_device_gb`` and
        ``memory_<label>_gb`` (from the memory model, before simulating), ``fits``, the
        simulated :data:`RESULT_KEYS` and step breakdown ``time_<part>_s``. Sorted by status
        (:data:`STATUSES` order), then simulated step time, then estimate, then memory.
        ``attrs`` hold ``capacity_gb``, ``candidates`` and ``budget``.

    Raises
    ------
    ScenarioError
        For a scenario that is not one training workload, or a bad space or argument.
    """
    from hwsim.scenario import load_scenario
    from hwsim.scenario.build import build_graph, training_plan
    from hwsim.topology import compute_devices

    for name, value, least in (("budget", budget, 1), ("workers", workers, 1),
                               ("top", 1 if top is None else top, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ScenarioError(f"{value!r}; valid: an integer >= {least}",
                                field=f"search.{name}")
    s = _load(base_scenario)
    combos = enumerate_layouts(s, space, invalid=True)
    layouts = [c for c in combos if not c["reason"]]
    if not layouts:
        first = combos[0]
        raise ScenarioError(f"no layout of the search space can run ({len(combos)} tried; e.g. "
                            f"{layout_text(first)}: {first['reason']}); valid: a space with "
                            "tp x pp x cp dividing the devices, pp dividing the layers and "
                            "micro_batch dividing global_batch / dp", field="space")
    g = build_graph(s.cluster)
    devices = compute_devices(g, s.compute_device)
    capacity = min(get_device(g.nodes[d]["spec"]).memory_bytes for d in devices)
    rows: list[dict[str, Any]] = [dict(c, status="invalid") for c in combos if c["reason"]]
    feasible: list[tuple[float, int, dict[str, Any]]] = []
    for layout in layouts:
        row: dict[str, Any] = dict(layout, status="invalid")
        scenario = _with_layout(s, layout)
        try:
            plan = training_plan(load_scenario(scenario), g)
        except ScenarioError as err:
            row["reason"] = f"{err.field}: {err.reason}" if err.field else err.reason
            rows.append(row)
            continue
        memory = plan_memory(plan)
        need = sum(memory.values())
        row["memory_per_device_gb"] = need / 1e9
        row.update({f"memory_{k}_gb": b / 1e9 for k, b in memory.items()})
        if need > capacity * (1 + 1e-12):  # the test of hwsim.engine.pool.Pool.fits
            row.update(status="pruned_memory", fits=False,
                       reason=f"does not fit: {need / 1e9:.4g} GB needed of "
                              f"{capacity / 1e9:.4g} GB")
        else:
            row.update(status="not_simulated", fits=True,
                       estimate_step_time_s=estimate_step_time(plan, g))
            feasible.append((row["estimate_step_time_s"], len(rows), scenario))
        rows.append(row)
    chosen = sorted(feasible, key=lambda x: (x[0], x[1]))[:budget]
    scenarios = [sc for _, _, sc in chosen]
    if workers > 1 and len(scenarios) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_simulate, scenarios))
    else:
        results = [_simulate(sc) for sc in scenarios]
    for (_, i, _), res in zip(chosen, results):
        rows[i].update(res, status="simulated" if res["fits"] else "pruned_memory")
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
    if top is not None:
        frame = frame.head(top)
    frame.attrs.update(capacity_gb=capacity / 1e9, candidates=len(combos), budget=budget,
                       counts={st: int(sum(r["status"] == st for r in rows)) for st in STATUSES})
    return frame


# -- explaining -----------------------------------------------------------------------------

def layout_text(row: Mapping[str, Any]) -> str:
    """``tp 8, pp 16, dp 8, mb 1, v 1, recompute full, zero 0`` (cp and ep only when > 1)."""
    dp = row["dp"]
    parts = [f"tp {row['tp']}", f"pp {row['pp']}", f"dp {'-' if pd.isna(dp) else dp}"]
    parts += [f"{k} {row[k]}" for k in ("cp", "ep") if row[k] != 1]
    parts += [f"mb {row['micro_batch']}", f"v {row['virtual_stages']}",
              f"recompute {row['recompute']}", f"zero {row['zero']}"]
    return ", ".join(parts)


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
    changed = [k for k in LAYOUT if other[k] != best[k]]
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

