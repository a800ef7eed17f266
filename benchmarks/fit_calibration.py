"""Fit hwsim's in-framework efficiency constants to the ``fitted:`` rows of the validation cases.

Usage::

    python benchmarks/fit_calibration.py [--rows ID ...] [--workers N]

The constants are catalog fields (``hwsim/catalog/data/devices.yaml``) of the GPUs the validation
rows run on, see :data:`PARAMETERS`: one ``framework_compute_factor`` for the V100, A100 and H100
(:data:`GENERATIONS`) and one ``framework_memory_factor`` shared by all of them. The fit runs the fitted rows
(``fitted:`` in ``benchmarks/validation_cases.yaml``, or ``--rows``) through the same
:func:`validate_training.run_case` as the report, with the constants set in the loaded catalog,
and minimises the sum of squared log errors ``sum(log(predicted / published)^2)`` by Nelder-Mead
over the logs of the constants (each kept in (0, 1]). It prints the constants, to be copied into
the catalog with their sources, and the residual of every fitted row.

With ``--input-pipeline`` it fits instead the one constant of the ResNet-50 rows' input pipeline,
``resnet50.input_pipeline.decode_s_per_sample`` of the validation cases (host CPU time per image
on one hardware thread), to the rows ``resnet50.input_pipeline.fitted_to`` (the same squared log
errors, Nelder-Mead over its log), and prints it to be copied into the cases file.

Nothing else is fitted here; every other figure of the catalog is a datasheet value or a
measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate_training as vt  # noqa: E402

GENERATIONS = {"GPU": ("V100-SXM2-32GB", "A100-SXM4-80GB", "H100-SXM5-80GB")}
"""One software factor for every GPU generation: since the kernel model
(:mod:`hwsim.catalog.kernels`) times each GEMM and attention kernel from its shape, what is left
is the framework's (eager dispatch, unfused kernels, sustained clocks), fitted to the rows of
every generation together (it was one factor per generation, the Hopper one fitted to one row)."""
PARAMETERS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{f"framework_compute_factor[{g}]": ("framework_compute_factor", ids)
       for g, ids in GENERATIONS.items()},
    "framework_memory_factor": ("framework_memory_factor",
                                tuple(i for ids in GENERATIONS.values() for i in ids)),
}
"""Fitted constant -> (catalog field, device ids whose entry it sets)."""


def set_constants(values: dict[str, float]) -> None:
    """Set the constants in this process's loaded catalog (the cached ``load_catalog()``)."""
    from hwsim.catalog import load_catalog

    devices = load_catalog().devices
    for name, value in values.items():
        field, ids = PARAMETERS[name]
        for i in ids:
            devices[i] = dataclasses.replace(devices[i], **{field: value})


def _run(args: tuple[str, dict[str, float]]) -> tuple[str, float | None, str]:
    case_id, values = args
    set_constants(values)
    case = next(c for c in vt.load_cases() if c.id == case_id)
    row = vt.run_case(case, max_gpus=10**6)
    return case_id, row.error, row.note


def log_errors(rows: Sequence[str], values: dict[str, float], pool: ProcessPoolExecutor
               ) -> dict[str, float]:
    """``log(predicted / published)`` of each row with the constants *values*."""
    out = {}
    for case_id, err, note in pool.map(_run, [(r, values) for r in rows]):
        if err is None:
            raise RuntimeError(f"{case_id}: {note}")
        out[case_id] = math.log1p(err)
    return out


def nelder_mead(f, x0: list[float], step: float = 0.1, tol: float = 1e-4,
                max_evals: int = 400) -> tuple[list[float], float]:
    """Minimise *f* from *x0* (standard coefficients 1, 2, 0.5, 0.5)."""
    n = len(x0)
    simplex = [list(x0)] + [[x + (step if j == i else 0.0) for j, x in enumerate(x0)]
                            for i in range(n)]
    vals = [f(x) for x in simplex]
    evals = n + 1
    while evals < max_evals:
        order = sorted(range(n + 1), key=vals.__getitem__)
        simplex, vals = [simplex[i] for i in order], [vals[i] for i in order]
        if vals[-1] - vals[0] < tol and max(abs(a - b) for p in simplex for a, b in
                                            zip(p, simplex[0])) < 1e-3:
            break
        centroid = [sum(p[j] for p in simplex[:-1]) / n for j in range(n)]
        worst = simplex[-1]
        refl = [c + (c - w) for c, w in zip(centroid, worst)]
        fr = f(refl)
        evals += 1
        if fr < vals[0]:
            exp = [c + 2 * (c - w) for c, w in zip(centroid, worst)]
            fe = f(exp)
            evals += 1
            simplex[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            simplex[-1], vals[-1] = refl, fr
        else:
            con = [c + 0.5 * (w - c) for c, w in zip(centroid, worst)]
            fc = f(con)
            evals += 1
            if fc < vals[-1]:
                simplex[-1], vals[-1] = con, fc
            else:
                best = simplex[0]
                simplex = [best] + [[b + 0.5 * (x - b) for b, x in zip(best, p)]
                                    for p in simplex[1:]]
                vals = [vals[0]] + [f(p) for p in simplex[1:]]
                evals += n
    i = min(range(n + 1), key=vals.__getitem__)
    return simplex[i], vals[i]


def fit(rows: Sequence[str], workers: int = 2) -> tuple[dict[str, float], dict[str, float]]:
    """The constants minimising the squared log errors of *rows*, and those errors."""
    names = list(PARAMETERS)
    cache: dict[tuple, float] = {}

    with ProcessPoolExecutor(workers) as pool:
        def cost(x: list[float]) -> float:
            key = tuple(round(v, 6) for v in x)
            if key not in cache:
                values = {n: min(1.0, math.exp(v)) for n, v in zip(names, x)}
                errs = log_errors(rows, values, pool)
                # outside (0, 1] the constant is clamped; the penalty keeps the search inside
                cache[key] = sum(e * e for e in errs.values()) + sum(max(0.0, v) ** 2
                                                                     for v in x)
            return cache[key]

        x, _ = nelder_mead(cost, [math.log(0.8)] * len(names))
        values = {n: min(1.0, math.exp(v)) for n, v in zip(names, x)}
        return values, log_errors(rows, values, pool)


def input_log_errors(rows: Sequence[str], decode_s: float) -> dict[str, float]:
    """``log(predicted / published)`` of the ResNet-50 *rows* at *decode_s* per image."""
    spec = vt.load_spec()
    spec["resnet50"]["input_pipeline"]["decode_s_per_sample"] = decode_s
    out = {}
    for case in vt.load_cases(spec, ["resnet50"]):
        if case.id in rows:
            row = vt.run_case(case, max_gpus=10**6)
            if row.error is None:
                raise RuntimeError(f"{case.id}: {row.note}")
            out[case.id] = math.log1p(row.error)
    return out


def fit_input(rows: Sequence[str]) -> tuple[float, dict[str, float]]:
    """The CPU time per image minimising the squared log errors of *rows*, and those errors."""
    # start on the input-bound side: where decoding outpaces the GPUs the cost is flat
    x, _ = nelder_mead(lambda v: sum(e * e for e in input_log_errors(rows, math.exp(v[0]))
                                     .values()), [math.log(20e-3)])
    return math.exp(x[0]), input_log_errors(rows, math.exp(x[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", help="case ids to fit (default: fitted: of the cases "
                                              "file)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--input-pipeline", action="store_true",
                    help="fit the ResNet-50 input pipeline's CPU time per image instead")
    args = ap.parse_args(argv)
    if args.input_pipeline:
        rows = args.rows or vt.load_spec()["resnet50"]["input_pipeline"]["fitted_to"]
        t = time.perf_counter()
        value, errs = fit_input(rows)
        print(f"{'decode_s_per_sample':36s} {value * 1e3:.4g} ms\n")
        for r, e in errs.items():
            print(f"{r:45s} error {100 * math.expm1(e):+6.2f} %")
        print(f"\n{time.perf_counter() - t:.0f} s", file=sys.stderr)
        return 0
    rows = args.rows or vt.load_spec().get("fitted") or []
    if len(rows) < len(PARAMETERS):
        raise SystemExit(f"{len(rows)} rows cannot fit {len(PARAMETERS)} constants")
    t = time.perf_counter()
    values, errs = fit(rows, args.workers)
    for name, v in values.items():
        print(f"{name:36s} {v:.4f}")
    print()
    for r, e in errs.items():
        print(f"{r:45s} error {100 * math.expm1(e):+6.2f} %")
    print(f"\nsum of squared log errors {sum(e * e for e in errs.values()):.3g}; "
          f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
