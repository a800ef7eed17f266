"""Serving validation report: hwsim's predictions against published LLM-serving measurements.

Usage::

    python benchmarks/validate_serving.py [--only FAMILY] [--markdown]
                                          [--what-if FIELD=VALUE ...]

Every published row of ``benchmarks/serving_cases.yaml`` becomes one case: the two top-level
tables (TensorRT-LLM 0.9 on A100, copied from ``../shared/data/calibration.yaml``, key
``llm_inference_trtllm_v09_a100_fp16``, with its source: static-batch throughput and batch-1
time to first token) and every family under ``tables:`` (TensorRT-LLM 0.5-0.17 on A100, H100
and H200 in FP16 and FP8, static and in-flight batching; each with its source and the
assumptions that turn its rows into scenarios). :func:`load_cases` and :func:`table_cases` read
them into one :class:`Case` form (model, engine, GPU, precision, tp, batch or request count,
input and output length, metric); :func:`scenario_for` is the one function that turns any case
into an hwsim ``kind: inference`` scenario (a TTFT row is a batch of one with one output
token); nothing is special-cased per row. Families that give several metrics per row
(``metrics:``) or no request lengths are kept in the file and not run.

The table has: case, metric, published, predicted, error (predicted / published - 1), role and
the simulation's wall seconds; under it, the memory of each row (weights, the KV cache its batch
needs, the room for the KV cache per GPU) and the time split of the throughput rows (prefill =
TTFT, decode = time per output token). Role is ``fitted`` for rows listed under ``fitted:`` in
the cases file (none: no constant was fitted to these rows) and ``validated`` otherwise; the
summary line (mean absolute error, count within 25 %) covers the validated rows. A case that
fails (does not fit, invalid input, ...) stays in the table with its error text.

``--what-if FIELD=VALUE`` (repeatable) reruns the cases with a field of the GPU's catalog entry
replaced for this process only, e.g. ``launch_overhead_s=0``, ``compute_ramp_flops=0`` or
``framework_compute_factor=none``: a sensitivity analysis, not a validation (the catalog files
are not touched; the table's header says what was changed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the report helpers next to this file
import report_table  # noqa: E402

CASES_FILE = Path(__file__).resolve().parent / "serving_cases.yaml"
FAMILIES = ("throughput", "ttft")
WITHIN = 0.25

# metric name -> unit
METRICS: dict[str, str] = {
    "output_tokens_per_s_per_gpu": "tokens/s/GPU",
    "output_tokens_per_s": "tokens/s",
    "ttft_ms": "ms",
    "latency_s": "s",
}


MODEL_SETTINGS = ("precision", "kv_precision", "weight_precision")
"""Settings a family's ``models:`` entry may give for its model, over the family's ``common:``."""


@dataclass
class Case:
    """One published row: ``requests`` identical requests (``batch`` of them at a time under
    static batching) on ``tp`` GPUs of one server, run by ``engine``."""

    family: str
    id: str
    metric: str
    published: float
    source: str
    model: str                      # the source's model name (a key of the family's models)
    tp: int
    batch: int
    input_len: int
    output_len: int
    preset: str = ""
    engine: str = "trtllm"
    gpu: str = "A100-SXM4-80GB"
    intra_node: str = "nvlink3"
    precision: str = "fp16"
    kv_precision: str | None = None
    weight_precision: str | None = None
    batching: str = "static"        # static | inflight (all requests queued at once)
    requests: int = 0               # inflight: requests in the run
    scheduler: dict[str, Any] = dataclasses.field(default_factory=dict)
    per_gpu: bool = True            # the metric is per GPU (else the whole server's)
    replicas: int = 1               # identical replicas a whole-system metric covers (one run)


@dataclass
class Row(report_table.Row):
    """One line of the report, with the memory and phase times of its run."""

    # memory per GPU (GB): weights, KV cache the batch needs, room for the KV cache
    weights_gb: float | None = None
    kv_need_gb: float | None = None
    kv_room_gb: float | None = None
    ttft_s: float | None = None     # the batch's prefill (first token)
    tpot_s: float | None = None     # one decode iteration of the batch


def load_spec(path: Path = CASES_FILE) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f)


TABLE_METRICS = {"output_tokens_per_s_per_gpu": ("output_tokens_per_s_per_gpu", True),
                 "output_tokens_per_s": ("output_tokens_per_s", False),
                 "ttft_ms": ("ttft_ms", True), "latency_s": ("latency_s", False)}
"""Metrics a ``tables:`` family may give (multi-metric families, ``metrics:``, are not run)."""


def families(spec: dict[str, Any] | None = None) -> list[str]:
    """Every family name: the two top-level tables, then each runnable ``tables:`` family."""
    import mlperf_inference  # noqa: PLC0415 - it imports this module

    spec = spec or load_spec()
    return list(FAMILIES) + [n for n, f in (spec.get("tables") or {}).items()
                             if f.get("metric") in TABLE_METRICS] + mlperf_inference.families(spec)


def table_cases(name: str, f: dict[str, Any]) -> list[Case]:
    """The cases of one ``tables:`` family (one generic reading for every family)."""
    metric, per_gpu = TABLE_METRICS[f["metric"]]
    common = f.get("common") or {}
    out = []
    for row in f["rows"]:
        r = dict(zip(f["columns"], row))
        model = r["model"]
        # the family's common settings, then the model's own (a precision the source states
        # for that model), then the row's
        unknown = set(f["models"][model]) - {"preset", *MODEL_SETTINGS}
        if unknown:
            raise ValueError(f"{CASES_FILE}: tables.{name}.models.{model}: unknown key(s) "
                             f"{', '.join(sorted(unknown))}; valid: preset, "
                             f"{', '.join(MODEL_SETTINGS)}")
        own = {k: v for k, v in f["models"][model].items() if k in MODEL_SETTINGS}
        r = {**common, **own, **r}
        static = f["batching"] == "static"
        batch = int(r.get("batch", 1)) if static else int(r.get("max_batch") or 0)
        out_len = int(r.get("output_len", 1))
        sched = dict(f.get("scheduler") or {})
        if not static:
            if r.get("max_batch"):
                sched["max_batch_size"] = int(r["max_batch"])
            if r.get("max_num_tokens"):
                sched["max_batched_tokens"] = int(r["max_num_tokens"])
        tag = (f"b{batch}" if static else f"n{r['num_requests']}")
        gpu = r.get("gpu", f["system"]["gpu"])  # a row may name its GPU (a table of several)
        out.append(Case(
            family=name, id=f"{name} {gpu + ' ' if 'gpu' in r else ''}{model} tp{r['tp']} "
            f"{tag} in{r['input_len']} out{out_len}", metric=metric, published=float(r["value"]), source=f["source"],
            model=model, tp=int(r["tp"]), batch=batch, input_len=int(r["input_len"]),
            output_len=out_len, preset=f["models"][model]["preset"], engine=f["engine"],
            gpu=gpu, intra_node=f["system"]["intra_node"], precision=r["precision"], kv_precision=r.get("kv_precision"),
            weight_precision=r.get("weight_precision"),
            batching=f["batching"], requests=int(r.get("num_requests", batch)),
            scheduler=sched, per_gpu=per_gpu))
    return out


def load_cases(spec: dict[str, Any] | None = None, only: Iterable[str] | None = None) -> list[Case]:
    """Read the published tables into :class:`Case` objects (table reading only)."""
    spec = spec or load_spec()
    only = set(only or families(spec))
    cases: list[Case] = []
    base = {"engine": "trtllm", "gpu": spec["system"]["gpu"],
            "intra_node": spec["system"]["intra_node"], "precision": spec["precision"],
            "scheduler": {k: v for k, v in spec["scheduler"].items() if k != "policy"}}
    if "throughput" in only:
        for row in spec["throughput_rows"]:
            r = dict(zip(spec["throughput_columns"], row))
            cases.append(Case(
                "throughput", f"{r['model']} tp{r['tp']} b{r['batch']} in{r['input_len']} "
                f"out{r['output_len']}", "output_tokens_per_s_per_gpu",
                r["output_tokens_per_s_per_gpu"], spec["source"], r["model"], r["tp"],
                r["batch"], r["input_len"], r["output_len"], spec["preset_of"][r["model"]],
                requests=r["batch"], **base))
    if "ttft" in only:
        for row in spec["ttft_batch1_rows"]:
            r = dict(zip(spec["ttft_batch1_columns"], row))
            cases.append(Case(
                "ttft", f"{r['model']} tp{r['tp']} b1 in{r['input_len']} ttft", "ttft_ms",
                r["ttft_ms"], spec["source"], r["model"], r["tp"], 1, r["input_len"],
                spec["ttft_output_len"], spec["preset_of"][r["model"]], requests=1, **base))
    for name, f in (spec.get("tables") or {}).items():
        if name in only and f.get("metric") in TABLE_METRICS:
            cases += table_cases(name, f)
    import mlperf_inference  # noqa: PLC0415 - it imports this module

    return cases + mlperf_inference.load_cases(spec, only)


def scenario_for(case: Case, folder: str | Path, spec: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The hwsim scenario dict of any case (the single mapping used for every row).

    All requests arrive at t = 0: they are written as a request trace into *folder* (the
    scenario names it by absolute path). Static batching (gptSessionBenchmark): the batch is
    admitted whole and its contexts run in one pass (``max_batched_tokens`` = batch x input).
    In-flight (gptManagerBenchmark, trtllm-bench): continuous batching under the engine's
    defaults and the family's stated settings."""
    name = case.id.replace(" ", "_")
    trace = Path(folder) / f"{name}.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n"
                     + f"0,{case.input_len},{case.output_len}\n" * case.requests)
    node = {"gpu": case.gpu, "intra_node": case.intra_node, "gpus_per_node": case.tp}
    if case.batching == "static":
        sched = {"policy": "static", **case.scheduler, "max_batch_size": case.batch,
                 "max_batched_tokens": case.batch * case.input_len}
    else:
        sched = {"policy": "continuous", **case.scheduler}
    w = {"kind": "inference", "model": {"preset": case.preset}, "precision": case.precision,
         "engine": case.engine, "parallelism": {"tp": case.tp, "pp": 1, "replicas": 1},
         "scheduler": sched, "arrivals": {"process": "trace", "trace": str(trace.resolve())}}
    if case.kv_precision is not None:
        w["kv_precision"] = case.kv_precision
    if case.weight_precision is not None:
        w["weight_precision"] = case.weight_precision
    return {"name": name, "seed": 0, "description": case.source,
            "cluster": {"nodes": 1, "node": node}, "workload": w,
            "outputs": {"events": False, "utilization": False, "trace": False}}


def metric_of(case: Case, requests: Any) -> float:
    """The case's metric from the run's request table (``Result.requests``)."""
    if case.metric == "ttft_ms":
        return float(requests["ttft_s"].iloc[0]) * 1e3
    span = float(requests["end_s"].max() - requests["arrival_s"].min())
    if case.metric == "latency_s":  # the whole batch's generate call (vLLM benchmark_latency)
        return span
    rate = float(requests["output_tokens"].sum()) / span
    return rate / case.tp if case.per_gpu else rate * case.replicas


def _memory(row: Row, case: Case, scenario: dict[str, Any]) -> None:
    """Weights, the KV cache the batch needs and the room for it, per GPU (GB), as the
    engine sizes it (its defaults under the scenario's scheduler fields)."""
    from hwsim.catalog import get_device
    from hwsim.catalog.engines import get_engine
    from hwsim.workloads import resolve_model
    from hwsim.workloads.inference import serving_cost

    w = scenario["workload"]
    cost = serving_cost(resolve_model(dict(w["model"])), tp=case.tp, precision=w["precision"],
                        kv_precision=w.get("kv_precision"))
    dev = get_device(scenario["cluster"]["node"]["gpu"])
    eng = get_engine(w.get("engine"))
    sched = {**eng.defaults(dev.id, dev.memory_bytes, case.tp), **w["scheduler"]}
    bt = sched["block_tokens"]
    seqs = case.batch if case.batching == "static" else min(case.requests,
                                                            sched["max_batch_size"])
    blocks = seqs * math.ceil((case.input_len + case.output_len) / bt)
    row.weights_gb = cost.weight_bytes / 1e9
    row.kv_need_gb = blocks * bt * cost.kv_bytes_per_token / 1e9
    frac = sched["memory_fraction"]
    row.kv_room_gb = ((dev.memory_bytes * frac - cost.weight_bytes) if eng.kv_memory == "total"
                      else (dev.memory_bytes - cost.weight_bytes) * frac) / 1e9


def run_case(case: Case, fitted: Iterable[str] = (), spec: dict[str, Any] | None = None) -> Row:
    """Simulate one case; never raises (a failure is recorded in ``note``)."""
    import hwsim

    row = Row(case.id, case.family, case.metric, float(case.published),
              role="fitted" if case.id in set(fitted) else "validated")
    t = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="hwsim-serving-") as folder:
            scenario = scenario_for(case, folder, spec)
            _memory(row, case, scenario)
            result = hwsim.run(scenario)
        summary, requests = result.summary, result.requests
        if summary.get("fits") is False:
            row.note = "does not fit in device memory (fits: false)"
        elif case.batching == "static" and (
                abs(summary.get("batch_size_mean", 0) - case.batch) > 1e-6 * case.batch
                or summary.get("iterations") != case.output_len):
            # static batching admits what the KV cache holds: the batch ran split
            row.note = (f"does not fit as one batch (KV cache): it ran split, "
                        f"{summary.get('iterations')} iterations, mean batch "
                        f"{summary.get('batch_size_mean'):.4g} of {case.batch}")
        else:
            row.predicted = metric_of(case, requests)
            row.error = row.predicted / row.published - 1
            row.ttft_s = float(requests["ttft_s"].iloc[0])
            tpot = float(requests["tpot_s"].iloc[0])
            row.tpot_s = tpot if math.isfinite(tpot) else None
    except Exception as e:  # noqa: BLE001 - the report records every failure
        row.note = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    row.wall_s = time.perf_counter() - t
    return row


def _parse_value(text: str) -> Any:
    if text.strip().lower() in ("none", "null"):
        return None
    return float(text)


def what_if(device: str, changes: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
    """Replace fields of catalog device *device* for the duration of the block (this process
    only; the catalog files are not touched), e.g. ``{"launch_overhead_s": 0.0}``."""
    from hwsim.catalog import load_catalog

    return _replaced(load_catalog().devices, device, changes, "device")


@contextlib.contextmanager
def _replaced(table: Any, key: str, changes: dict[str, Any], what: str) -> Iterator[None]:
    """Entry *key* of the loaded catalog *table* with *changes* to its dataclass fields for the
    duration of the block, restored after; ValueError naming the valid fields otherwise."""
    original = table[key]
    names = [f.name for f in dataclasses.fields(original)]
    unknown = [k for k in changes if k not in names]
    if unknown:
        raise ValueError(f"unknown {what} field(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(names)}")
    table[key] = dataclasses.replace(original, **changes)
    try:
        yield
    finally:
        table[key] = original


def report(only: Iterable[str] | None = None, spec: dict[str, Any] | None = None,
           cases: list[Case] | None = None, changes: dict[str, Any] | None = None) -> list[Row]:
    """Run the cases (both families, or ``only`` those) and return the report rows; *changes*
    are :func:`what_if` replacements of the GPU's catalog fields."""
    import mlperf_inference  # noqa: PLC0415 - it imports this module

    spec = spec or load_spec()
    apart = mlperf_inference.apart_rows(spec, only) if cases is None else []
    cases = cases if cases is not None else load_cases(spec, only)
    fitted = spec.get("fitted") or []
    with contextlib.ExitStack() as stack:
        for gpu in sorted({c.gpu for c in cases}):
            stack.enter_context(what_if(gpu, changes or {}))
        return [run_case(c, fitted, spec) for c in cases] + apart


FIT_FIELD = ("eager_op_floor_s", 1e-6, 50e-6, 1e-8)
"""The one constant fitted per engine not in :data:`FIT_GRIDS`, with its search range and
tolerance: TensorRT-LLM's kernel floor."""
FIT_GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "vllm-rocm": {"compute_factor": tuple(round(0.54 + 0.03 * i, 2) for i in range(7)),
                  "seq_overhead_s": tuple(1e-6 * (12 + 2 * i) for i in range(8))}}
"""Engines with two constants fitted together, on a grid (:func:`fit_grid`): vLLM on ROCm's
compute factor (the rate its kernels reach on the useful work, of the device's measured
ceiling) and host time per sequence of an iteration (``seq_overhead_s``)."""


def fit_field(engine: str) -> str:
    """The engine profile field :func:`fit_floor` fits for *engine* (one not in
    :data:`FIT_GRIDS`)."""
    return FIT_FIELD[0]


def engine_floor(engine: str, value: float) -> contextlib.AbstractContextManager[None]:
    """Run with serving engine *engine*'s fitted field (:func:`fit_field`: ``eager_op_floor``
    for the TensorRT-LLM profiles) set to *value* (this process only; restored after)."""
    from hwsim.catalog.engines import load_engines

    return _replaced(load_engines().profiles, engine, {fit_field(engine): value}, "engine")


def _log_sse(engine: str, floor_s: float, cases: list[Case], spec: dict[str, Any]) -> float:
    with engine_floor(engine, floor_s):
        rows = [run_case(c, (), spec) for c in cases]
    if any(r.predicted is None for r in rows):
        raise ValueError(f"a fitted row did not run: {[r.note for r in rows if r.note]}")
    return sum(math.log(r.predicted / r.published) ** 2 for r in rows)


def fit_floor(engine: str, cases: list[Case], spec: dict[str, Any] | None = None,
              lo: float | None = None, hi: float | None = None,
              tol: float | None = None) -> float:
    """The engine's fitted field (:func:`fit_field`) that minimises the summed squared log
    error of *cases* (golden-section search between *lo* and *hi*, by default the engine's
    range in :data:`FIT_FIELD`)."""
    spec = spec or load_spec()
    _, lo0, hi0, tol0 = FIT_FIELD
    lo, hi, tol = lo0 if lo is None else lo, hi0 if hi is None else hi, tol0 if tol is None else tol
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = _log_sse(engine, c, cases, spec), _log_sse(engine, d, cases, spec)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = _log_sse(engine, c, cases, spec)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = _log_sse(engine, d, cases, spec)
    return (a + b) / 2


def fit_grid(engine: str, cases: list[Case], spec: dict[str, Any] | None = None
             ) -> tuple[dict[str, float], dict[str, float | None]]:
    """The constants of *engine* in :data:`FIT_GRIDS` fitted together to *cases*: every row's
    log error at every point of the grid; the fit is the point of least summed squared log
    error, and each row's leave-one-out error its error at the point the other rows choose.
    Returns (field -> value, case id -> leave-one-out error)."""
    import itertools

    from hwsim.catalog.engines import load_engines

    spec = spec or load_spec()
    grid = FIT_GRIDS[engine]
    points = list(itertools.product(*grid.values()))
    errors = []  # per point, per row: log(predicted / published)
    for p in points:
        with _replaced(load_engines().profiles, engine, dict(zip(grid, p)), "engine"):
            rows = [run_case(c, (), spec) for c in cases]
        if any(r.predicted is None for r in rows):
            raise ValueError(f"a fitted row did not run: {[r.note for r in rows if r.note]}")
        errors.append([math.log(r.predicted / r.published) for r in rows])

    def best(skip: int | None = None) -> int:
        return min(range(len(points)), key=lambda i: sum(
            e * e for j, e in enumerate(errors[i]) if j != skip))
    loo = {c.id: math.exp(errors[best(j)][j]) - 1 for j, c in enumerate(cases)}
    return dict(zip(grid, points[best()])), loo


def fit_report(spec: dict[str, Any] | None = None,
               engines: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """For each engine with rows under ``fitted:`` (or only *engines*): the fitted value of its
    field (:func:`fit_field`), and each fitted row's leave-one-out error (the value refitted
    without it, then the row predicted)."""
    spec = spec or load_spec()
    fitted = set(spec.get("fitted") or [])
    cases = [c for c in load_cases(spec) if c.id in fitted]
    out = []
    for engine in sorted({c.engine for c in cases}):
        if engines is not None and engine not in set(engines):
            continue
        mine = [c for c in cases if c.engine == engine]
        if engine in FIT_GRIDS:
            values, loo = fit_grid(engine, mine, spec)
            out.append({"engine": engine, "values": values, "rows": [c.id for c in mine],
                        "loo": loo})
            continue
        floor = fit_floor(engine, mine, spec)
        loo = {}
        for c in mine:
            rest = [x for x in mine if x is not c]
            f = fit_floor(engine, rest, spec) if len(rest) >= 1 else floor
            with engine_floor(engine, f):
                r = run_case(c, (), spec)
            loo[c.id] = r.error
        out.append({"engine": engine, "field": fit_field(engine), "floor_s": floor,
                    "rows": [c.id for c in mine], "loo": loo})
    return out


def stats(rows: list[Row]) -> dict[str, Any]:
    """Mean absolute error and count within 25 % over the validated rows that ran."""
    out = report_table.stats(rows, WITHIN)
    out["within_25pct"] = out.pop("within")
    return out


def _fmt(x: float | None, metric: str = "") -> str:
    if x is None:
        return "-"
    if metric == "latency_s":
        return f"{x:,.3f}"
    return f"{x:,.1f}" if metric == "ttft_ms" or abs(x) < 100 else f"{x:,.0f}"


_table = report_table.table


def family_stats(rows: list[Row]) -> list[dict[str, Any]]:
    """Per family: rows, validated rows that ran, their mean absolute percentage error, how
    many are within 25 %, and the worst signed error."""
    out = []
    for fam in dict.fromkeys(r.family for r in rows):
        sub = [r for r in rows if r.family == fam]
        errs = [r.error for r in sub if r.role == "validated" and r.error is not None]
        out.append({"family": fam, "rows": len(sub), "run": len(errs),
                    "mape": sum(abs(e) for e in errs) / len(errs) if errs else None,
                    "within": sum(abs(e) <= WITHIN for e in errs),
                    "worst": max(errs, key=abs) if errs else None})
    return out


def format_table(rows: list[Row], markdown: bool = False,
                 changes: dict[str, Any] | None = None) -> str:
    lines: list[str] = []
    if changes:
        lines += [f"What-if (not a validation): A100-SXM4-80GB with "
                  f"{', '.join(f'{k}={v}' for k, v in changes.items())}", ""]
    body = []
    for r in rows:
        err = f"{100 * r.error:+.1f}" if r.error is not None else (r.note or "-")
        body.append([r.case, METRICS[r.metric], _fmt(r.published, r.metric), _fmt(r.predicted, r.metric), err,
                     r.role, f"{r.wall_s:.1f}"])
    lines += _table(["case", "metric", "published", "predicted", "error %", "role", "sim s"],
                    body, markdown, {0, 1, 5})
    lines += ["", report_table.summary_line(rows, WITHIN)]
    fams = family_stats(rows)
    if fams:
        lines.append("")
        lines += _table(["family", "engine rows", "validated run", "MAPE %", "within 25 %",
                         "worst %"],
                        [[f["family"], str(f["rows"]), str(f["run"]),
                          f"{100 * f['mape']:.1f}" if f["mape"] is not None else "-",
                          str(f["within"]),
                          f"{100 * f['worst']:+.1f}" if f["worst"] is not None else "-"]
                         for f in fams], markdown, {0})
    detail = []
    for r in rows:
        if r.weights_gb is None:
            continue
        fits = "yes" if r.kv_need_gb <= r.kv_room_gb else "no"
        detail.append([r.case, f"{r.weights_gb:.1f}", f"{r.kv_need_gb:.1f}",
                       f"{r.kv_room_gb:.1f}", fits,
                       f"{r.ttft_s * 1e3:,.1f}" if r.ttft_s is not None else "-",
                       f"{r.tpot_s * 1e3:,.2f}" if r.tpot_s is not None else "-"])
    if detail:
        lines.append("")
        lines += _table(["case", "weights GB/GPU", "KV needed GB/GPU", "KV room GB/GPU", "fits",
                         "prefill ms", "decode ms/iter"], detail, markdown, {0, 4})
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=families(), action="append",
                    help="run one family (repeatable); default all")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--what-if", action="append", default=[], metavar="FIELD=VALUE",
                    help="replace a field of the GPU's catalog entry for this run only "
                         "(sensitivity analysis), e.g. launch_overhead_s=0; repeatable")
    ap.add_argument("--fit", action="store_true",
                    help="fit each engine's constant (eager_op_floor; vllm-rocm: compute_factor "
                         "and seq_overhead together, on a grid) "
                         "to the rows under fitted: and print it with the leave-one-out error of "
                         "each fitted row")
    ap.add_argument("--fit-engine", action="append", metavar="ENGINE",
                    help="with --fit: only this engine's constant (repeatable)")
    args = ap.parse_args(argv)
    if args.fit:
        for f in fit_report(engines=args.fit_engine):
            values = f.get("values") or {f["field"]: f["floor_s"]}
            value = ", ".join(f"{k} {v * 1e6:.2f} us" if k.endswith("_s") else f"{k} {v:.4f}"
                              for k, v in values.items())
            print(f"{f['engine']}: {value}, fitted to "
                  f"{len(f['rows'])} rows; leave-one-out errors:")
            for case, err in f["loo"].items():
                print(f"  {case}: {100 * err:+.1f} %" if err is not None else f"  {case}: -")
        return 0
    changes: dict[str, Any] = {}
    for item in args.what_if:
        field, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--what-if {item!r}: expected FIELD=VALUE")
        try:
            changes[field.strip()] = _parse_value(value)
        except ValueError:
            ap.error(f"--what-if {item!r}: VALUE must be a number or none")
    t = time.perf_counter()
    try:
        rows = report(args.only, changes=changes)
    except ValueError as e:  # an unknown --what-if field
        ap.error(str(e))
    print(format_table(rows, args.markdown, changes))
    print(f"\nTotal wall time {time.perf_counter() - t:.1f} s.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
