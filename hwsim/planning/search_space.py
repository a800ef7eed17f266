"""The parallelism search's space (docs/planning.md, "Parallelism search", "The space"): the
fields a search may vary, their default values for a scenario, and the enumeration of their
combinations with the reason each invalid one cannot run. Pure bookkeeping: nothing here builds
a plan or simulates (:mod:`hwsim.planning.search_run` does)."""

from __future__ import annotations

import itertools
from typing import Any, Mapping

import pandas as pd

from hwsim.exceptions import ScenarioError
from hwsim.planning.estimate import per_server
from hwsim.workloads.memory import RECOMPUTE_POLICIES

__all__ = ["SEARCH_FIELDS", "LAYOUT", "LONG_SEQUENCE", "default_space", "enumerate_layouts",
           "load_base", "with_layout", "layout_text"]

SEARCH_FIELDS = ("tp", "pp", "cp", "ep", "micro_batch", "virtual_stages", "recompute", "zero",
                 "sequence_parallel", "torus_order")
"""The fields of ``workload.parallelism`` a search space may list (``dp`` follows from them)."""

LAYOUT = ("tp", "pp", "dp", "cp", "ep", "micro_batch", "virtual_stages", "recompute", "zero",
          "sequence_parallel", "torus_order")
"""The fields of a layout (a row of the search). ``torus_order`` is a string of torus axes,
fastest first (``"yxz"``: ``parallelism.torus_order: [y, x, z]``), None off a TPU torus."""

LONG_SEQUENCE = 16384
"""From this ``seq_len`` on, the default space also tries context parallelism."""


def load_base(base: Any):
    """The validated Scenario of *base* (path, mapping or Scenario); a ScenarioError unless it
    is one training workload."""
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


def _devices(s) -> tuple[Any, list[str]]:
    from hwsim.scenario.build import build_graph
    from hwsim.topology import compute_devices

    g = build_graph(s.cluster)
    return g, compute_devices(g, s.compute_device)


def default_space(base_scenario: Any) -> dict[str, tuple]:
    """The search space used when none is given: tp powers of two up to the devices per server,
    pp any divisor of the layers, micro-batch 1, 2, 4, 8, virtual stages 1-4, every recompute
    policy, ZeRO 0 and 1, sequence parallelism off and on (on only where tp > 1: without
    tensor parallelism it changes nothing, so such a layout is listed once, with
    ``sequence_parallel`` false); ep (divisors of the experts) only for a mixture-of-experts
    model, cp 1, 2, 4, 8 only from ``seq_len`` :data:`LONG_SEQUENCE` on; otherwise 1; on a
    TPU torus every order of its axes as ``torus_order`` (``"xyz"``, ``"xzy"``, ...), else the
    base's (none). Combinations are filtered by :func:`enumerate_layouts`."""
    s = load_base(base_scenario)
    return _default(s, _model_spec(s), *_devices(s))


def _torus_axes(g, devices: list[str]) -> str | None:
    """The axes of the torus *devices* sit on (``"xyz"``, ``"xy"``), None off a TPU torus."""
    from hwsim.topology.query import TORUS_AXES

    coords = g.nodes[devices[0]].get("coords") if devices else None
    return "".join(TORUS_AXES[:len(coords)]) if coords is not None else None


def _default(s, spec, g, devices: list[str]) -> dict[str, tuple]:
    gpn = per_server(g, devices)
    axes = _torus_axes(g, devices)
    base_order = getattr(getattr(s.workload, "parallelism", None), "torus_order", None)
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
        "sequence_parallel": (False, True),
        # on a TPU torus every order of its axes (which axis a tensor-parallel group spans);
        # elsewhere none (a base order off a torus is the builder's error to report)
        "torus_order": (tuple("".join(p) for p in itertools.permutations(axes))
                        if axes is not None else
                        ("".join(base_order) if base_order else None,)),
    }


def check_space(space: Mapping[str, Any]) -> dict[str, tuple]:
    """*space* with each field's values as a tuple (duplicates dropped); a ScenarioError
    (``space.<field>``) for an unknown field or a bad value."""
    out = {}
    for key, values in space.items():
        field = f"space.{key}"
        if key not in SEARCH_FIELDS:
            raise ScenarioError(f"unknown search field {key!r}; valid: {', '.join(SEARCH_FIELDS)}"
                                " (dp follows from the others)", field=field)
        vals = (values,) if isinstance(values, (str, int)) or values is None else tuple(values)
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
            elif key == "sequence_parallel":
                if not isinstance(v, bool):
                    raise ScenarioError(f"{v!r}; valid: false, true", field=field)
            elif key == "torus_order":  # None: the base's order (on a torus, the chips' names)
                v = "".join(v) if isinstance(v, (list, tuple)) else v
                if v is not None and (not isinstance(v, str) or not v or set(v) - set("xyz")
                                      or len(set(v)) != len(v)):
                    raise ScenarioError(f"{v!r}; valid: torus axes fastest first, each once, "
                                        "e.g. [y, x, z] or yxz", field=field)
            elif not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ScenarioError(f"{v!r} is not a positive integer; valid: e.g. [1, 2, 4]",
                                    field=field)
        if key == "torus_order":
            vals = (None,) if values is None else tuple(
                "".join(v) if isinstance(v, (list, tuple)) else v for v in vals)
        out[key] = tuple(dict.fromkeys(vals))
    return out


def enumerate_layouts(base_scenario: Any, space: Mapping[str, Any] | None = None, *,
                      invalid: bool = False, graph: tuple[Any, list[str]] | None = None
                      ) -> list[dict[str, Any]]:
    """The layouts of *space* (:func:`default_space` fills the fields it leaves out) that can
    run at all: ``tp x pp x cp`` divides the devices, tp divides the attention heads (Megatron-LM
    splits heads over the tensor-parallel ranks), ``pp`` (times the virtual stages) divides the
    layers, ``ep`` divides ``dp`` and the experts, the micro-batch divides
    ``global_batch / dp``, an interleaved layout (``virtual_stages > 1``, needing ``pp > 1``) has
    a multiple of ``pp`` micro-batches per step, and ``cp`` divides ``seq_len``. Each is a dict
    of :data:`LAYOUT`. Sequence parallelism splits the tensor-parallel group's activations, so
    with tp 1 it is no layout of its own: a tp 1 combination is listed once, with
    ``sequence_parallel`` false, whatever values the space gives. With *invalid*, every
    combination is returned, each with a ``reason`` (empty for a valid one; ``dp`` is None where
    ``tp x pp x cp`` does not divide the devices). The scenario builder may still reject a
    layout: :func:`~hwsim.planning.search.search` reports those as ``invalid`` too. *graph*:
    the cluster's ``(graph, compute devices)`` when the caller has built them."""
    s = load_base(base_scenario)
    spec = _model_spec(s)
    g, devices = graph if graph is not None else _devices(s)
    full = _default(s, spec, g, devices)
    full.update(check_space(space or {}))
    layers = getattr(spec, "layers", 1)
    heads = getattr(spec, "heads", None)
    experts = getattr(spec, "experts", 1)
    seq = s.workload.seq_len or 1
    batch = s.workload.global_batch
    n = len(devices)
    axes = _torus_axes(g, devices)
    out, seen = [], set()
    for tp, pp, cp, ep, mb, v, rc, zero, sp, order in itertools.product(
            *(full[k] for k in SEARCH_FIELDS)):
        sp = bool(sp) and tp > 1
        key = (tp, pp, cp, ep, mb, v, rc, zero, sp, order)
        if key in seen:  # tp 1 with sequence parallelism: the same layout as without
            continue
        seen.add(key)
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
            (order is not None and axes is None,
             f"torus_order {order} needs a TPU torus (cluster fabric topology: torus)"),
            (order is not None and axes is not None and sorted(order) != sorted(axes),
             f"torus_order {order} must name each axis of the {len(axes or '')}-D torus once "
             f"({axes})"),
        )
        reason = next((why for bad, why in checks if bad), "")
        if reason and not invalid:
            continue
        row = dict(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, micro_batch=mb, virtual_stages=v,
                   recompute=rc, zero=zero, sequence_parallel=sp, torus_order=order)
        out.append(dict(row, reason=reason) if invalid else row)
    return out


def with_layout(s, layout: Mapping[str, Any]) -> dict[str, Any]:
    """Scenario *s* as a dict with ``workload.parallelism`` set to *layout* (its other
    parallelism fields, e.g. offload, kept; ``sequence_parallel`` the base's where *layout*
    does not give it)."""
    d = s.model_dump(mode="json", exclude_none=True)
    par = dict(d["workload"].get("parallelism") or {})
    par.update({k: layout[k] for k in LAYOUT if k in layout and k != "torus_order"})
    order = layout.get("torus_order")
    if isinstance(order, str):  # "yxz" -> [y, x, z]; none: the base's
        par["torus_order"] = list(order)
    d["workload"]["parallelism"] = par
    return d


def layout_text(row: Mapping[str, Any]) -> str:
    """``tp 8, pp 16, dp 8, mb 1, v 1, recompute full, zero 0`` (cp and ep only when > 1,
    ``sp`` at the end with sequence parallelism)."""
    dp = row["dp"]
    parts = [f"tp {row['tp']}", f"pp {row['pp']}", f"dp {'-' if pd.isna(dp) else dp}"]
    parts += [f"{k} {row[k]}" for k in ("cp", "ep") if row[k] != 1]
    parts += [f"mb {row['micro_batch']}", f"v {row['virtual_stages']}",
              f"recompute {row['recompute']}", f"zero {row['zero']}"]
    sp = row.get("sequence_parallel", False)
    order = row.get("torus_order")
    return ", ".join(parts + (["sp"] if not pd.isna(sp) and bool(sp) else [])
                     + ([f"torus {order}"] if isinstance(order, str) else []))
