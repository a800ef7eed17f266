"""Kernel model against public kernel microbenchmarks: predicted vs measured GEMM and attention
TFLOP/s and memory-bound bandwidth (the table of docs/model.md, "Kernel model").

Usage::

    python benchmarks/validate_kernels.py          # the table
    python benchmarks/validate_kernels.py --fit    # refit gemm_latency, with leave-one-out errors

The measured rows are copied from the shared calibration data (data/calibration.yaml of the project's published measurements) with their sources (below).
Roles: ``fitted`` rows determined a constant (gemm_latency), ``ceiling`` rows are the measured
large-GEMM ceiling a device entry states (compute_efficiency, memory_efficiency: measured, so the
model reproduces them by construction), ``validated`` rows were used for nothing. The fitted rows'
leave-one-out error (each predicted with gemm_latency refitted on the other rows) is printed too.
"""

from __future__ import annotations

import argparse
import math
import sys

from hwsim.catalog import get_device

GEMM_SWEEP = {
    "device": "A100-SXM4-80GB", "dtype": "fp16",
    "source": "calibration.yaml gemm_by_size_a100_fp16: github.com/Azure/AI-benchmarking-guide "
              "Azure_Results/ND_A100_v4_results.md (cuBLASLt, m=n=k)",
    "tflops": {1024: 119.4, 2048: 221.8, 4096: 228.0, 8192: 253.7, 16384: 256.5},
}
"""The per-size GEMM sweep gemm_latency is fitted to."""

GEMM_ROWS = [
    # (device, dtype, m=n=k or None for the best shape, measured TFLOP/s, role, source)
    ("H200-SXM-141GB", "bf16", 8192, 788.0, "ceiling",
     "calibration.yaml h200_measured_in_pytorch bf16_matmul_tflops (8192^3, one H200 SXM)"),
    ("A100-SXM4-80GB", "bf16", None, 271.2, "ceiling",
     "calibration.yaml gemm_achievable bf16_tflops A100-SXM (best shape of a brute-force search)"),
    ("H100-SXM5-80GB", "bf16", None, 794.5, "ceiling",
     "calibration.yaml gemm_achievable bf16_tflops H100-SXM"),
]

ATTENTION_ROWS = [
    # (device, dtype, measured TFLOP/s, role, source): the papers' best figure, long sequences
    ("A100-SXM4-80GB", "bf16", 0.73 * 312, "ceiling",
     "Dao 2023 (FlashAttention-2, arXiv 2307.08691) abstract: up to 73 % of 312 TFLOP/s"),
    ("H100-SXM5-80GB", "bf16", 740.0, "ceiling",
     "Shah et al. 2024 (FlashAttention-3, arXiv 2407.08608) abstract: FP16 up to 740 TFLOP/s"),
    ("H100-SXM5-80GB", "fp8", 1200.0, "ceiling",
     "Shah et al. 2024 abstract: FP8 close to 1.2 PFLOP/s"),
]

STREAM_ROWS = [
    # (device, measured TB/s, role, source)
    ("A100-SXM4-80GB", 1.61, "ceiling", "calibration.yaml hbm_stream_tb_per_s A100 BabelStream copy"),
    ("H100-SXM5-80GB", 2.90, "ceiling", "calibration.yaml hbm_stream_tb_per_s H100 BabelStream copy"),
    ("H200-SXM-141GB", 4.01, "ceiling", "calibration.yaml hbm_stream_tb_per_s H200 BabelStream copy"),
    ("H200-SXM-141GB", 4.3, "validated",
     "calibration.yaml h200_measured_in_pytorch copy_tb_per_s_read_plus_write (device-to-device "
     "copy in PyTorch)"),
]


def gemm_tflops(device: str, dtype: str, n: int, latency_s: float | None = None) -> float:
    """Predicted TFLOP/s of one n^3 GEMM alone on *device* (the kernel model, no framework)."""
    d = get_device(device)
    k = d.kernels
    lat = k.latency_s if latency_s is None else latency_s
    t_c = k.gemm_compute_s(n, n, n, d.peak(dtype) * d.compute_efficiency) + lat
    elem = 1 if dtype in ("fp8", "int8") else 2
    t_m = k.gemm_memory_bytes(n, n, n, elem) / (d.mem_bw_bytes_per_s * d.memory_efficiency)
    return 2.0 * n ** 3 / max(t_c, t_m + lat) / 1e12


def attention_tflops(device: str, dtype: str, seq: int, head_dim: int = 128,
                     tokens: int = 16384, hidden: int = 2048) -> float:
    """Predicted forward TFLOP/s of one flash attention kernel (FlashAttention-2 paper's benchmark
    setting: batch x seq = 16k tokens, hidden 2048, so 2048/head_dim heads)."""
    d = get_device(device)
    bh = tokens // seq * (hidden // head_dim)
    flops = 4.0 * bh * seq * seq * head_dim
    t = d.kernels.compute_s(("attention", bh, seq, seq, head_dim), flops, d.peak(dtype),
                            d.compute_efficiency, dtype)
    return flops / t / 1e12


def fit_latency(points: dict[int, float]) -> float:
    """gemm_latency minimising sum(log(predicted/measured)^2) over *points* (golden section)."""
    dev, dt = GEMM_SWEEP["device"], GEMM_SWEEP["dtype"]

    def cost(lat: float) -> float:
        return sum(math.log(gemm_tflops(dev, dt, n, lat) / v) ** 2 for n, v in points.items())
    lo, hi = 0.0, 50e-6
    g = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if cost(a) <= cost(b):
            hi = b
        else:
            lo = a
    return (lo + hi) / 2


def leave_one_out() -> dict[int, float]:
    """Each sweep row's error predicted with gemm_latency fitted to the other rows."""
    pts = GEMM_SWEEP["tflops"]
    dev, dt = GEMM_SWEEP["device"], GEMM_SWEEP["dtype"]
    out = {}
    for n, v in pts.items():
        lat = fit_latency({m: w for m, w in pts.items() if m != n})
        out[n] = gemm_tflops(dev, dt, n, lat) / v - 1
    return out


def table() -> list[str]:
    """The markdown table of predicted vs measured kernel figures."""
    lines = ["| kernel | device | precision | shape | measured | predicted | error % | LOO error % "
             "| role |", "|---|---|---|---|---:|---:|---:|---:|---|"]
    dev, dt = GEMM_SWEEP["device"], GEMM_SWEEP["dtype"]
    loo = leave_one_out()
    for n, v in GEMM_SWEEP["tflops"].items():
        p = gemm_tflops(dev, dt, n)
        lines.append(f"| GEMM | {dev} | {dt} | {n}^3 | {v:.1f} TFLOP/s | {p:.1f} | "
                     f"{100 * (p / v - 1):+.1f} | {100 * loo[n]:+.1f} | fitted |")
    for d, dtype, n, v, role, _src in GEMM_ROWS:
        size = n or 16384
        p = gemm_tflops(d, dtype, size)
        shape = f"{n}^3" if n else "best (model: 16384^3)"
        lines.append(f"| GEMM | {d} | {dtype} | {shape} | {v:.1f} TFLOP/s | {p:.1f} | "
                     f"{100 * (p / v - 1):+.1f} | | {role} |")
    for d, dtype, v, role, _src in ATTENTION_ROWS:
        p = attention_tflops(d, dtype, 16384)
        lines.append(f"| flash attention fwd | {d} | {dtype} | s=16k, d=128 | {v:.0f} TFLOP/s | "
                     f"{p:.0f} | {100 * (p / v - 1):+.1f} | | {role} |")
    for d, v, role, _src in STREAM_ROWS:
        spec = get_device(d)
        p = spec.mem_bw_bytes_per_s * spec.memory_efficiency / 1e12
        lines.append(f"| memory-bound copy | {d} | - | 1 GB | {v:.2f} TB/s | {p:.2f} | "
                     f"{100 * (p / v - 1):+.1f} | | {role} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="refit gemm_latency and print it with "
                                                       "its residuals and leave-one-out errors")
    args = ap.parse_args(argv)
    if args.fit:
        lat = fit_latency(GEMM_SWEEP["tflops"])
        dev, dt = GEMM_SWEEP["device"], GEMM_SWEEP["dtype"]
        print(f"gemm_latency {lat * 1e6:.2f} us  (fitted to {GEMM_SWEEP['source']})")
        loo = leave_one_out()
        for n, v in GEMM_SWEEP["tflops"].items():
            p = gemm_tflops(dev, dt, n, lat)
            print(f"  {n:>6}^3  measured {v:6.1f}  predicted {p:6.1f}  residual "
                  f"{100 * (p / v - 1):+5.1f} %  leave-one-out {100 * loo[n]:+5.1f} %")
        print(f"  leave-one-out mean |error| {100 * sum(map(abs, loo.values())) / len(loo):.1f} %")
        return 0
    print("\n".join(table()))
    print("\nFlash attention forward TFLOP/s by sequence length (FlashAttention-2 paper's setting: "
          "16k tokens, hidden 2048, head dim 128); the papers' per-length figures are not in the "
          "project, so only the ceilings above are compared:")
    for d, dtype in (("A100-SXM4-80GB", "bf16"), ("H100-SXM5-80GB", "bf16"),
                     ("H100-SXM5-80GB", "fp8")):
        vals = ", ".join(f"{s}: {attention_tflops(d, dtype, s):.0f}"
                         for s in (512, 1024, 2048, 4096, 8192, 16384))
        print(f"  {d} {dtype}: {vals}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
