"""The trace and nccl-tests stages of :func:`hwsim.calibration.calibrate`."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from hwsim.calibration.core import Calibration, record
from hwsim.calibration.fit import least_squares, loo
from hwsim.calibration.kineto import fittable, model_time, read_trace
from hwsim.calibration.nccltests import bound_link, devices_for, predict_time, read_nccl_tests
from hwsim.catalog import get_device
from hwsim.catalog.loader import load_catalog, suggest_ids
from hwsim.exceptions import ScenarioError
from hwsim.scenario.calibration import Key, apply, current

__all__ = ["fit_traces", "fit_nccl", "trace_device", "trace_stack", "LATENCY_ROWS_BELOW"]

LATENCY_ROWS_BELOW = 64 * 1024
"""A link's latency is fitted only when the nccl-tests rows reach below this size (bytes):
above it the time hardly depends on the latency."""


def trace_device(traces: Sequence[Any], scen: Any, device: str | None) -> str:
    """The catalog id of the device the traces ran on: *device*, else the scenario's
    accelerator, else the trace's ``deviceProperties`` name if it names one catalog id."""
    if device is not None:
        return get_device(device).id
    if scen is not None:
        from hwsim.scenario.build import build_graph
        g = build_graph(scen.cluster)
        kind = scen.compute_device or "gpu"
        ids = sorted({d["spec"] for _, d in g.nodes(data=True) if d.get("kind") == kind})
        if len(ids) == 1:
            return ids[0]
    name = next((t.gpu_name for t in traces if t.gpu_name), None)
    hits = suggest_ids(name.replace("NVIDIA ", ""), load_catalog().devices) if name else []
    if len(hits) == 1:
        return hits[0]
    raise ScenarioError(f"which catalog device ran the trace? The trace says {name!r}; valid: "
                        "--device ID (e.g. H100-SXM5-80GB) or --scenario FILE with one kind of "
                        "accelerator", file=traces[0].file)


def _spec(ident: str, fixed: dict[Key, float], **more: float):
    fields = {k[2]: v for k, v in fixed.items() if k[0] == "device" and k[1] == ident}
    return replace(get_device(ident), **{**fields, **more})


def trace_stack(scen: Any) -> str | None:
    """The software stack the traced step ran: the scenario's training job's
    (:func:`hwsim.scenario.build.job_stack`), or None without a training scenario."""
    from hwsim.calibration.runs import MeasuredRun, stack_of

    w = getattr(scen, "workload", None)
    if scen is None or scen.jobs is not None or getattr(w, "kind", None) != "training":
        return None
    return stack_of(MeasuredRun("--scenario", scen, "step_time_s", 1.0))


def fit_traces(result: Calibration, fixed: dict[Key, float], files: Sequence[str | Path],
               scen: Any, device: str | None) -> None:
    """GEMM ceiling, memory efficiency and launch overhead of the traces' device
    (:mod:`hwsim.calibration.kineto`), each by the closed form there, with leave-one-out over the
    kernel names. The kernels ran inside the framework, so what the framework does to a kernel's
    speed is in their times: the stack the scenario's job runs gets ``compute_factor`` 1 with
    the GEMM ceiling and ``memory_factor`` 1 with the memory efficiency (a scenario without a
    training job names no stack: hardware constants only)."""
    traces = [read_trace(f) for f in files]
    ident = trace_device(traces, scen, device)
    stack = trace_stack(scen)
    profile = stack_profile(stack, fixed) if stack is not None else None
    dtype = getattr(getattr(scen, "workload", None), "precision", None) or "bf16"
    source = ", ".join(Path(t.file).name for t in traces)
    fitted = 0
    for cls, const, factor in (("gemm", "compute_efficiency", "compute_factor"),
                               ("memory", "memory_efficiency", "memory_factor")):
        kernels = [k for t in traces for k in fittable(t, cls)]
        if not kernels:
            continue
        at1, at_half = _spec(ident, fixed, **{const: 1.0}), _spec(ident, fixed, **{const: 0.5})
        now = _spec(ident, fixed)
        if profile is not None:
            now = profile.apply(now)
        groups: dict[str, list[float]] = {}
        for k in kernels:
            # the model's time is a / value + b: a from the times at 1 and 1/2, b the rest
            t1, t2 = model_time(at1, k, dtype), model_time(at_half, k, dtype)
            g = groups.setdefault(k.name, [0.0, 0.0, 0.0, 0.0])
            g[0] += k.dur_s
            g[1] += t2 - t1
            g[2] += 2.0 * t1 - t2
            g[3] += model_time(now, k, dtype)
        names = list(groups)
        meas, a, b = ([groups[n][i] for n in names] for i in range(3))

        def solve(rows: Sequence[int]) -> float:
            left = sum(meas[i] - b[i] for i in rows)
            if left <= 0:
                raise ScenarioError(
                    f"the traced {cls} kernels ({', '.join(names[i] for i in rows)}) are shorter "
                    "than the kernel model's fixed GEMM latency alone, so no ceiling fits them; "
                    "valid: a trace of the device --device names (or --scenario's accelerator)",
                    file=traces[0].file)
            return min(1.0, sum(a[i] for i in rows) / left)
        value = solve(range(len(names)))
        held = [math.nan] * len(names)
        if len(names) > 1:
            held = [a[i] / solve([j for j in range(len(names)) if j != i]) + b[i]
                    for i in range(len(names))]
        keys: list[Key] = [("device", ident, const)]
        values = {keys[0]: value}
        note = "hardware only (no training scenario names a stack)"
        if stack is not None:
            keys.append(("stack", stack, factor))
            values[keys[1]] = 1.0
            note = f"{stack}'s {factor} 1 (in-framework kernels)"
        record(result, fixed, keys, values, {}, source, rows=names,
               metric=[f"{cls}_kernel_s"] * len(names), measured=meas,
               before=[groups[n][3] for n in names], after=[a[i] / value + b[i]
                                                            for i in range(len(names))],
               held=held, fitted_to=f"{len(kernels)} {cls} kernels ({len(names)} names) of "
                                    f"{source}: total model time = total measured time; {note}")
        fitted += 1
    gap = [g for t in traces for g in t.launch_intervals_s]
    if gap:
        value = statistics.median(gap)
        key: Key = ("device", ident, "launch_overhead_s")
        cur = current(key, fixed)
        record(result, fixed, [key], {key: value}, {}, source, rows=["median launch interval"],
               metric=["launch_interval_s"], measured=[value], before=[cur], after=[value],
               held=[math.nan], fitted_to=f"median of {len(gap)} launch intervals of {source}")
        fitted += 1
    if not fitted:
        raise ScenarioError("the trace determines no constant: its GEMM kernels have no FLOPs "
                            "(no args.flops or Input Dims on their aten ops) and no memory-bound "
                            "kernel has input shapes; valid: a trace recorded with "
                            "record_shapes=True (and with_flops=True)", file=traces[0].file)


def stack_profile(name: str, fixed: dict[Key, float]):
    """Stack *name* with the constants of *fixed* for it."""
    from hwsim.catalog import get_stack

    fields = {k[2]: v for k, v in fixed.items() if k[0] == "stack" and k[1] == name}
    return replace(get_stack(name), **fields)


def fit_nccl(result: Calibration, fixed: dict[Key, float], files: Sequence[str | Path], scen: Any,
             op: str | None, algorithm: str, cross_validate: bool) -> None:
    """Efficiency and latency of the link each nccl-tests file is bound by, fitted to its rows
    (all files bound by the same link together)."""
    from hwsim.scenario.build import build_graph

    graph = apply(build_graph(scen.cluster), fixed)
    by_link: dict[str, list] = {}
    for i, f in enumerate(files):
        table = read_nccl_tests(f, op)
        devices = devices_for(graph, table, str(f), f"nccl[{i}]")
        link = bound_link(graph, table, devices, {}, algorithm)
        by_link.setdefault(link, []).extend((table, devices, s, t) for s, t in zip(
            table.sizes, table.times_s))
    for link, rows in by_link.items():
        keys: list[Key] = [("link", link, "efficiency")]
        if min(r[2] for r in rows) <= LATENCY_ROWS_BELOW:
            keys.append(("link", link, "latency_s"))
        start = {k: current(k, fixed) for k in keys}
        measured = [r[3] for r in rows]

        def predict(i: int, values: dict[Key, float], rows: list = rows) -> float:
            table, devices, size, _ = rows[i]
            own = {k: v for k, v in values.items() if k[0] == "link"}
            return predict_time(graph, table, devices, size, own, algorithm)

        what = f"the nccl-tests rows bound by {link}"
        before = [predict(i, {}) for i in range(len(rows))]
        best = least_squares(keys, start, predict, measured, what=what)
        held = loo(keys, best, predict, measured, what=what) if cross_validate \
            else [math.nan] * len(rows)
        files_of = ", ".join(dict.fromkeys(Path(r[0].file).name for r in rows))
        record(result, fixed, keys, best.values, start, files_of,
               rows=[f"{r[0].op} {r[2]:.0f} B" for r in rows], metric=["time_s"] * len(rows),
               measured=measured, before=before, after=best.predicted, held=held,
               fitted_to=f"{len(rows)} nccl-tests rows ({rows[0][0].op}, {rows[0][0].ranks} "
                         f"ranks on {rows[0][0].nodes} node(s), sizes {min(r[2] for r in rows):.0f}"
                         f"-{max(r[2] for r in rows):.0f} B) of {files_of}")
        graph = apply(graph, best.values)
