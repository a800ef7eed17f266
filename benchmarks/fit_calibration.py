"""Fit hwsim's software-stack constants to the rows of that stack (and the ResNet-50 input pipeline).

Usage::

    python benchmarks/fit_calibration.py [--stack NAME ...] [--rows ID ...]
    python benchmarks/fit_calibration.py --input-pipeline

Each software-stack profile of ``hwsim/catalog/data/stacks.yaml`` has one fitted constant, its
``compute_factor`` (the fraction of the kernel model's time the framework reaches), fitted to the
rows its profile lists under ``fitted_to`` (at least two rows of ``benchmarks/
validation_cases.yaml``, all run by that stack; ``--rows`` to try others). The fit runs the rows
through the same :func:`validate_training.run_case` as the report, with the factor set in the
loaded stacks, and minimises the sum of squared log errors ``sum(log(predicted / published)^2)``
by Gauss-Newton on ``log(compute_factor)``: each iteration simulates the rows at the factor and 5 %
above it (:func:`validate_training.log_error_slopes`) and steps to the linearised minimum, until
the step is under 1e-4. It prints the factor, to be copied into stacks.yaml with the rows, and
the residual of every fitted row. The stacks' ``memory_factor`` is not fitted (stacks.yaml says
why); a stand-in profile (``stand_in_for``) is not fitted.

With ``--input-pipeline`` it fits instead the one constant of the ResNet-50 rows' input pipeline,
``resnet50.input_pipeline.decode_s_per_sample`` of the validation cases (host CPU time per image
on one hardware thread), to the rows ``resnet50.input_pipeline.fitted_to`` (the same squared log
errors, Nelder-Mead over its log), and prints it to be copied into the cases file.

Nothing else is fitted here; every figure of the hardware catalog is a datasheet value or a
measurement (the kernel model's one constant is fitted to a GEMM microbenchmark,
benchmarks/validate_kernels.py).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate_training as vt  # noqa: E402


def fit_stack(name: str, rows: Sequence[str], max_iter: int = 8, tol: float = 1e-4
              ) -> tuple[float, dict[str, float]]:
    """The compute factor of stack *name* minimising the squared log errors of *rows* (case ids),
    and their errors (predicted / published - 1) at it."""
    from hwsim.catalog.stacks import get_stack

    cases = [c for c in vt.load_cases() if c.id in set(rows)]
    missing = set(rows) - {c.id for c in cases}
    if missing or len(cases) < 2:
        raise SystemExit(f"stack {name}: rows {sorted(missing) or list(rows)} are not (two or more) "
                         "case ids of benchmarks/validation_cases.yaml")
    wrong = [c.id for c in cases if c.stack != name]
    if wrong:
        raise SystemExit(f"stack {name}: rows {wrong} are run by another stack")
    st = get_stack(name)
    phi, cap = vt.fitted_value(st), 1.0 if st.fitted_field == "compute_factor" else math.inf
    for _ in range(max_iter):
        with vt.stack_factors({name: phi}):
            e0, slope = vt.log_error_slopes(name, cases)
        x = vt.gauss_newton_step(e0, slope)
        phi = min(cap, phi * math.exp(x))
        if abs(x) < tol:
            break
    with vt.stack_factors({name: phi}):
        errs = {c.id: vt.run_case(c, max_gpus=10**6).error for c in cases}
    return phi, errs


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
    from hwsim.catalog.stacks import get_stack

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stack", nargs="+", help="stacks to fit (default: every fitted stack the "
                                              "cases file uses)")
    ap.add_argument("--rows", nargs="+", help="case ids to fit (default: the profile's fitted_to;"
                                              " one --stack only)")
    ap.add_argument("--input-pipeline", action="store_true",
                    help="fit the ResNet-50 input pipeline's CPU time per image instead")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    if args.input_pipeline:
        rows = args.rows or vt.load_spec()["resnet50"]["input_pipeline"]["fitted_to"]
        value, errs = fit_input(rows)
        print(f"{'decode_s_per_sample':36s} {value * 1e3:.4g} ms\n")
        for r, e in errs.items():
            print(f"{r:45s} error {100 * math.expm1(e):+6.2f} %")
        print(f"\n{time.perf_counter() - t:.0f} s", file=sys.stderr)
        return 0
    fitted = {n: r for n, r in vt.stack_rows().items() if r}
    names = args.stack or list(fitted)
    if args.rows and len(names) != 1:
        raise SystemExit("--rows needs exactly one --stack")
    for name in names:
        phi, errs = fit_stack(name, args.rows or fitted.get(name, []))
        print(f"{name}: {get_stack(name).fitted_field} {phi:.6g}")
        for r, e in errs.items():
            print(f"  {r:45s} error {100 * e:+6.2f} %")
    print(f"\n{time.perf_counter() - t:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
