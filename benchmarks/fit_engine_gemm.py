"""The serving engine's own GEMMs: large-GEMM ceilings of TensorRT-LLM (engine ``trtllm``) per device
and precision, fitted to its Linear layer as NVIDIA's aiconfigurator collector timed it
(``benchmarks/aic_gemm_trtllm.csv``, its source in the file's header), beside the device entries'
ceilings (cuBLASLt tables, best-shape searches or stand-ins).

Usage::

    python benchmarks/fit_engine_gemm.py            # the table
    python benchmarks/fit_engine_gemm.py --check    # exit 1 unless engines.yaml holds the fits

A row of the file is one ``Linear(k, n)`` forward on ``m`` bf16 rows. hwsim times it as the
engine would run it unfused: the activation's quantisation pass (nvfp4: read bf16, write NVFP4
values and scales; fp8, dynamic scaling: an amax pass and a cast pass) at the device's STREAM
bandwidth, then the GEMM by the device's roofline (:meth:`~hwsim.catalog.DeviceSpec.roofline_s`:
the FLOP ramp at the ceiling, or the kernel model) with the ceiling ``c`` at that precision.
``c`` is fitted per device and precision by golden-section search on the summed squared log
error over the rows (384 each: m 512-16384, n and k 4096-16384); its cross-validated error is a
5-fold split by weight shape (n, k), each fold predicted with ``c`` refitted on the others. In a
serving iteration hwsim does not time the quantisation (the engines fuse it into the op before),
so the fitted ``c`` is what the engine's GEMM alone reaches.

Every fit is adopted (``engines.yaml`` ``trtllm`` ``gemm_ceiling``). Where a device's own ceiling is
a measured large-GEMM figure the fits land near it (H100, H200: the kernel model's best-shape
search; GB200, GB300 FP8: cuBLASLt), which checks the method; TensorRT-LLM's NVFP4 GEMMs reach
well below the cuBLASLt FP4 figures, most on Blackwell Ultra.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from hwsim.catalog import get_device
from hwsim.catalog.engines import get_engine

DATA = Path(__file__).resolve().parent / "aic_gemm_trtllm.csv"
ENGINE = get_engine("trtllm")
"""The engine the rows measured (its framework factors are 1: the fit sees the kernels alone)."""
DTYPE = {"nvfp4": "fp4", "fp8": "fp8", "bfloat16": "bf16"}
ELEMENT_BYTES = {"fp4": 0.5625, "fp8": 1.0, "bf16": 2.0}
"""Bytes per weight and quantised activation element (NVFP4: 4 bits and one 8-bit scale per 16)."""
FOLDS = 5


def load_rows(path: Path = DATA) -> dict[tuple[str, str], list[tuple[int, int, int, float]]]:
    """``(device, precision) -> [(m, n, k, seconds)]`` of the data file."""
    import pandas as pd

    d = pd.read_csv(path, comment="#")
    out: dict = {}
    for (dev, dt), g in d.groupby(["hwsim_device", "gemm_dtype"], sort=True):
        out[(dev, DTYPE[dt])] = [(int(m), int(n), int(k), float(t) * 1e-3)
                                 for m, n, k, t in zip(g.m, g.n, g.k, g.latency)]
    return out


def linear_s(spec, prec: str, ceiling: float, m: int, n: int, k: int) -> float:
    """hwsim's time of one measured Linear: the input's quantisation passes, then the GEMM on
    *spec* as the engine runs it with *ceiling* at *prec* (:meth:`EngineProfile.device_spec`;
    module docstring)."""
    s = replace(ENGINE, gemm_ceiling={spec.id: {prec: ceiling}}).device_spec(spec)
    e = ELEMENT_BYTES[prec]
    t_c, t_m = s.roofline_s(2.0 * m * n * k, (m * k + n * k) * e + m * n * 2.0, prec,
                            ("gemm", m, n, k))
    bw = spec.mem_bw_bytes_per_s * spec.memory_efficiency
    quant = {"fp4": m * k * (2.0 + e), "fp8": m * k * 2.0 + m * k * (2.0 + e), "bf16": 0.0}[prec]
    return max(t_c, t_m) + quant / bw


def fit(spec, prec: str, rows, lo: float = 0.1, hi: float = 1.0) -> float:
    """The ceiling that minimises the summed squared log error of :func:`linear_s` over *rows*."""
    logs = [(m, n, k, math.log(t)) for m, n, k, t in rows]

    def loss(c: float) -> float:
        return sum((math.log(linear_s(spec, prec, c, m, n, k)) - lt) ** 2 for m, n, k, lt in logs)
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = loss(x1), loss(x2)
    while b - a > 1e-5:
        if f1 < f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = loss(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = loss(x2)
    return round((a + b) / 2, 4)


def errors(spec, prec: str, ceiling: float, rows) -> np.ndarray:
    return np.array([linear_s(spec, prec, ceiling, m, n, k) / t - 1 for m, n, k, t in rows])


def cross_validated(spec, prec: str, rows) -> np.ndarray:
    """Each row's error with the ceiling fitted on the other folds (folds: weight shapes (n, k),
    dealt in order of a seeded shuffle)."""
    shapes = sorted({(n, k) for _, n, k, _ in rows})
    order = np.random.default_rng(0).permutation(len(shapes))
    fold = {shapes[j]: i % FOLDS for i, j in enumerate(order)}
    out = []
    for f in range(FOLDS):
        train = [r for r in rows if fold[r[1:3]] != f]
        test = [r for r in rows if fold[r[1:3]] == f]
        out.extend(errors(spec, prec, fit(spec, prec, train), test))
    return np.array(out)


def table(rows_by: dict) -> list[dict]:
    """One result per (device, precision) of the file."""
    out = []
    for (dev, prec), rows in sorted(rows_by.items()):
        spec = get_device(dev)
        c = fit(spec, prec, rows)
        err = errors(spec, prec, c, rows)
        own = (spec.kernels.ceiling_of(("gemm",), spec.ceiling(prec), prec)
               if spec.kernels is not None else spec.ceiling(prec))
        ms = np.array([r[0] for r in rows])
        out.append(dict(device=dev, precision=prec, rows=len(rows), fitted=c, device_ceiling=own,
                        mape=float(np.mean(np.abs(err))), cv_mape=float(np.mean(np.abs(
                            cross_validated(spec, prec, rows)))),
                        device_bias=float(np.median(errors(spec, prec, own, rows))),
                        by_m={int(m): float(np.median(err[ms == m])) for m in sorted(set(ms))}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless engines.yaml trtllm gemm_ceiling holds the fits")
    args = ap.parse_args(argv)
    res = table(load_rows())
    print("| device | precision | rows | device ceiling | its median error | fitted ceiling | "
          "MAPE | 5-fold CV MAPE | median error by m (512 ... 16384) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in res:
        by = " ".join(f"{v * 100:+.0f}" for v in r["by_m"].values())
        print(f"| {r['device']} | {r['precision']} | {r['rows']} | {r['device_ceiling']:.4f} | "
              f"{r['device_bias'] * 100:+.1f} % | {r['fitted']:.4f} | {r['mape'] * 100:.1f} % | "
              f"{r['cv_mape'] * 100:.1f} % | {by} |")
    if args.check:
        engine = ENGINE.gemm_ceiling
        bad = [r for r in res if abs(
            engine.get(r["device"], {}).get(r["precision"], -1.0) - r["fitted"]) > 1e-4]
        for r in bad:
            print(f"engines.yaml trtllm gemm_ceiling {r['device']}.{r['precision']}: "
                  f"{engine.get(r['device'], {}).get(r['precision'])} against the fit "
                  f"{r['fitted']}", file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
