"""Quantised serving formats: bytes per weight and per KV-cache value, and the dequantisation
work of weight-only formats.

Weights. ``fp16``/``bf16`` keep 2 bytes per element; ``fp8`` and ``int8`` one (one scale per
tensor or per output channel: negligible). ``int4`` is a weight-only group format as AWQ
(Lin et al., arXiv 2306.00978) and GPTQ (Frantar et al., arXiv 2210.17323) store it: 4-bit
integers packed two per byte, and per group of ``group`` input elements of one output channel an
fp16 scale and a 4-bit zero point, so ``0.5 + 2.5 / group`` bytes per element (0.5195 at the
usual group of 128).

Dequantisation. A weight-only format (weights narrower than the GEMM's inputs: int4 or int8
weights under fp16/bf16 GEMMs) is widened inside the GEMM kernel, ``w = s * (q - z)``: a
subtract and a multiply per weight element, on the CUDA cores, once per output tile row of
the GEMM (each block of ``tile_m`` rows of activations loads and widens the whole weight panel
it multiplies). :func:`dequant_flops` counts them; the serving job runs them at the device's
fp32 (non-tensor) rate, in series with the GEMM (the mainloop overlap of real kernels is not
modelled: an upper bound on their cost). Formats whose GEMM runs natively in the weights'
precision (fp8 weights under fp8 GEMMs: W8A8; int8 under int8) need none.

4-bit floats. ``fp4`` is NVIDIA's NVFP4: E2M1 values, two per byte, and one FP8 (E4M3) scale per
block of 16 elements, so ``0.5 + 1/16 = 0.5625`` bytes per element (the per-tensor FP32 scale is
negligible; NVIDIA Technical Blog, "Introducing NVFP4 for Efficient and Accurate Low-Precision
Inference", 2025). ``mxfp4`` is the OCP Microscaling format (OCP MX Specification v1.0, 2023): E2M1
values and one E8M0 scale per block of 32, ``0.5 + 1/32 = 0.53125`` bytes per element; AMD's CDNA 4
(MI355X) runs it. Both are native under ``fp4`` GEMMs (W4A4: the activations are quantised to
the same format on the fly); under wider GEMMs they are weight-only formats like int4.

KV cache. ``fp16``/``bf16`` 2 bytes per value, ``fp8``/``int8`` one (engines keep one scale per
tensor: negligible).
"""

from __future__ import annotations

import math

__all__ = ["WEIGHT_FORMATS", "KV_FORMATS", "weight_bytes", "kv_bytes", "weight_only",
           "dequant_flops", "DEFAULT_GROUP"]

WEIGHT_FORMATS = ("fp16", "bf16", "fp8", "int8", "int4", "fp4", "mxfp4")
"""Weight storage formats of a served model (``workload.weight_precision``)."""

KV_FORMATS = ("fp16", "bf16", "fp8", "int8")
"""KV-cache formats (``workload.kv_precision``)."""

DEFAULT_GROUP = 128
"""Input elements per scale of a group-quantised format (AWQ's and GPTQ's usual group size)."""

_BYTES = {"fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
          "fp4": 0.5 + 1.0 / 16, "mxfp4": 0.5 + 1.0 / 32}
_GEMM_NATIVE = {"fp8": ("fp8",), "int8": ("int8",), "fp4": ("fp4",), "mxfp4": ("fp4",)}


def weight_bytes(fmt: str, group: int = DEFAULT_GROUP) -> float:
    """Bytes per weight element stored in *fmt* (module docstring); ValueError if unknown."""
    if fmt not in _BYTES:
        raise ValueError(f"unknown weight precision {fmt!r}; valid: {', '.join(WEIGHT_FORMATS)}")
    if fmt == "int4":
        if not isinstance(group, int) or group < 1:
            raise ValueError(f"weight group size {group!r} must be an integer >= 1")
        return 0.5 + 2.5 / group
    return _BYTES[fmt]


def kv_bytes(fmt: str) -> float:
    """Bytes per KV-cache value stored in *fmt*; ValueError if unknown."""
    if fmt not in KV_FORMATS:
        raise ValueError(f"unknown kv precision {fmt!r}; valid: {', '.join(KV_FORMATS)}")
    return _BYTES[fmt]


def weight_only(fmt: str, gemm_precision: str) -> bool:
    """Whether weights stored in *fmt* are widened inside GEMMs run at *gemm_precision*."""
    if fmt in ("fp16", "bf16"):
        return False
    return gemm_precision not in _GEMM_NATIVE.get(fmt, ())


def dequant_flops(m: float, k: float, n: float, tile_m: int) -> float:
    """Operations to widen a ``k x n`` weight panel for an ``m``-row GEMM whose output tiles
    are ``tile_m`` rows high: two per element per row block (module docstring)."""
    if m <= 0:
        return 0.0
    return 2.0 * math.ceil(m / tile_m - 1e-9) * k * n
