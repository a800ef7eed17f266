"""Kernel model of a GPU: the time of one GEMM or one fused attention kernel from its shape.

Hardware only, fitted only to public kernel microbenchmarks (``data/kernels.yaml`` names each
figure's source; ``benchmarks/validate_kernels.py`` prints predicted against measured):

- **GEMM** ``C[M,N] = A[M,K] B[K,N]`` (``batch`` of them): the output is cut into tiles of
  ``gemm_tile`` (tile quantisation: ``ceil(M/tm) * ceil(N/tn)`` tiles per GEMM), one tile per SM at
  a time (a side of the tile is capped by the matrix's own, rounded up to 16), so the tiles run in ``ceil(tiles / sms)`` waves (wave quantisation); each wave takes one
  tile's ``2 tm tn K`` FLOPs at the SM's share of the large-GEMM ceiling
  (``compute_efficiency x peak / sms``, a measured figure of the device entry). A small GEMM is
  bound by memory instead: A, B and C once through HBM at the measured STREAM bandwidth
  (roofline). Every GEMM pays ``gemm_latency`` more (prologue, pipeline fill, epilogue).
- **Attention** (one fused flash kernel over ``bh`` = batch x heads, ``s_q`` queries against
  ``s_kv`` keys): the work is tiled over (``bh``, blocks of 128 queries), as FlashAttention-2/3
  parallelise it, with the same wave quantisation, at the ceiling of the device's flash kernel at
  that precision (the papers' figures); a precision without one runs at the GEMM ceiling. A device
  lists its flash kernels by family (:data:`ATTENTION_FAMILIES`); which one runs is the software
  stack's choice (:mod:`hwsim.catalog.stacks`, :meth:`KernelSpec.with_attention`), by default the
  first listed.

Memory-bound ops (norms, activations, softmax, optimizer) need no kernel entry: their bytes at the
measured bandwidth, never under the device's ``launch_overhead_s``
(:meth:`hwsim.catalog.specs.DeviceSpec.op_time_s`).

Op shapes are tuples, as the workloads build them (:attr:`hwsim.workloads.ops.Op.shape`):
``("gemm", M, N, K)`` or ``("gemm", M, N, K, batch)``, and ``("attention", bh, s_q, s_kv, d)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

__all__ = ["KernelSpec", "ATTENTION_BLOCK", "ATTENTION_FAMILIES", "MMA_GRANULE", "SHAPE_KINDS",
           "check_shape", "interfered"]

ATTENTION_FAMILIES = ("fa3", "fa2")
"""Fused attention kernel families a device entry can list: FlashAttention-3 (Shah et al. 2024,
Hopper), FlashAttention-2 (Dao 2023). A stack that runs neither runs attention unfused (batched
GEMMs around a softmax pass: the workload's ``flash_attention=False`` ops)."""

ATTENTION_BLOCK = 128
"""Queries per thread block of a flash attention kernel (FlashAttention-2's forward block for head
dims 64-128, Dao 2023 Sec 3; FlashAttention-3 uses 128 as well)."""

SHAPE_KINDS = ("gemm", "attention")

MMA_GRANULE = 16
"""Rows and columns a Tensor Core GEMM is padded to at least (NVIDIA Matrix Multiplication
Background User's Guide Sec 2.2, "Tensor Core Requirements": dimensions multiples of 8 (fp16) or 16
bytes; 16 covers fp16/bf16/fp8 and is the m16n8k16 MMA instruction's row count)."""


def check_shape(shape: Sequence) -> None:
    """Raise ValueError unless *shape* is a kernel shape this module times."""
    ok = (len(shape) >= 1 and shape[0] in SHAPE_KINDS
          and len(shape) in ((4, 5) if shape[0] == "gemm" else (5,))
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0
                  for x in shape[1:]))
    if not ok:
        raise ValueError(f"kernel shape {tuple(shape)!r} is not ('gemm', M, N, K[, batch]) or "
                         f"('attention', bh, s_q, s_kv, head_dim) with positive sizes")


@dataclass(frozen=True)
class KernelSpec:
    """The kernel figures of one GPU (``data/kernels.yaml``): ``sms``; ``tile`` (rows, cols of
    one GEMM output tile); ``latency_s`` per GEMM; ``attention`` (family -> precision ->
    fraction of the dense peak) of the flash kernels that run on it, and ``attention_kernel``,
    the family in use (default: the first listed; :meth:`with_attention`)."""

    sms: int
    tile: tuple[int, int]
    latency_s: float
    attention_kernel: str | None = None
    attention: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    gemm_ceiling: Mapping[str, float] = field(default_factory=dict)

    @property
    def attention_ceiling(self) -> Mapping[str, float]:
        """Precision -> ceiling of the flash kernel in use (empty when none)."""
        return self.attention.get(self.attention_kernel, {}) if self.attention_kernel else {}

    def with_attention(self, family: str | None) -> KernelSpec:
        """This kernel model running flash kernel *family* (one of :attr:`attention`), or none
        (``None``: attention unfused)."""
        if family is not None and family not in self.attention:
            raise ValueError(f"attention family {family!r} is not listed for this device; "
                             f"valid: {', '.join(self.attention) or 'none'}")
        return replace(self, attention_kernel=family)

    def waves(self, tiles: float) -> int:
        """Waves of *tiles* thread blocks over the SMs, one block per SM at a time."""
        return max(1, math.ceil(tiles / self.sms - 1e-9))

    def gemm_tile(self, m: float, n: float) -> tuple[int, int]:
        """The output tile of an M x N GEMM: ``tile``, each side capped by the matrix's own side
        rounded up to :data:`MMA_GRANULE` (a skinny GEMM runs a skinny tile, as cuBLAS's
        heuristics pick one, rather than padding 16 rows to 128)."""
        tm, tn = self.tile
        g = MMA_GRANULE
        return (min(tm, g * math.ceil(m / g - 1e-9)), min(tn, g * math.ceil(n / g - 1e-9)))

    def gemm_tiles(self, m: float, n: float, batch: float = 1.0) -> int:
        tm, tn = self.gemm_tile(m, n)
        return int(math.ceil(batch - 1e-9)) * math.ceil(m / tm - 1e-9) * math.ceil(n / tn - 1e-9)

    def gemm_compute_s(self, m: float, n: float, k: float, rate: float,
                       batch: float = 1.0) -> float:
        """Compute time of the tiles of a GEMM at *rate* FLOP/s (the device's ceiling), wave and
        tile quantised, without the fixed latency."""
        tm, tn = self.gemm_tile(m, n)
        return self.waves(self.gemm_tiles(m, n, batch)) * 2.0 * tm * tn * k / (rate / self.sms)

    def attention_compute_s(self, flops: float, bh: float, s_q: float, rate: float) -> float:
        """Compute time of a fused attention kernel of *flops* FLOPs over *bh* heads x *s_q*
        queries: blocks of :data:`ATTENTION_BLOCK` queries, wave quantised, at *rate* FLOP/s."""
        blocks = math.ceil(s_q / ATTENTION_BLOCK - 1e-9)
        tiles = math.ceil(bh - 1e-9) * blocks
        per_tile = flops / (bh * s_q) * ATTENTION_BLOCK
        return self.waves(tiles) * per_tile / (rate / self.sms)

    def ceiling_of(self, shape: Sequence, gemm_ceiling: float, dtype: str) -> float:
        """The fraction of the dense peak a kernel of *shape* runs at: a GEMM its precision's
        measured large-GEMM ceiling (FP8 on Hopper) if it has one, else *gemm_ceiling*; an
        attention kernel its flash kernel's ceiling at *dtype*, else *gemm_ceiling*."""
        table = self.gemm_ceiling if shape[0] == "gemm" else self.attention_ceiling
        return table.get(dtype, gemm_ceiling)

    def compute_s(self, shape: Sequence, flops: float, peak: float, gemm_ceiling: float,
                  dtype: str) -> float:
        """Compute time of one kernel of *shape* (see the module docstring), including the fixed
        latency; *peak* the dense peak at *dtype*, *gemm_ceiling* the large-GEMM fraction of it."""
        rate = peak * self.ceiling_of(shape, gemm_ceiling, dtype)
        if shape[0] == "gemm":
            m, n, k = shape[1:4]
            batch = shape[4] if len(shape) > 4 else 1.0
            return self.gemm_compute_s(m, n, k, rate, batch) + self.latency_s
        return self.attention_compute_s(flops, shape[1], shape[2], rate) + self.latency_s

    def work_s(self, shape: Sequence, flops: float, peak: float, gemm_ceiling: float,
               dtype: str) -> float:
        """The useful part of :meth:`compute_s`: *flops* at the kernel's ceiling, without the
        tiles' padding, the waves' tail and the fixed latency."""
        return flops / (peak * self.ceiling_of(shape, gemm_ceiling, dtype))

    def gemm_memory_bytes(self, m: float, n: float, k: float, elem_bytes: float,
                          batch: float = 1.0) -> float:
        """Bytes a GEMM moves at least: A, B and C once."""
        return batch * (m * k + k * n + m * n) * elem_bytes


def interfered(device, comm_sms: int):
    """*device* (a :class:`~hwsim.catalog.specs.DeviceSpec`) while communication kernels hold
    *comm_sms* of its SMs: its kernel model runs GEMM tiles and attention blocks in waves over
    the remaining SMs, each SM at its own rate (so a GEMM of one full wave takes two, the tail
    effect). Memory-bound ops and devices without a kernel model are unchanged (HBM traffic of
    the collective is not modelled)."""
    k = device.kernels
    if k is None or comm_sms <= 0:
        return device
    sms = max(1, k.sms - comm_sms)
    return replace(device, kernels=replace(k, sms=sms),
                   peak_flops_per_s={p: v * sms / k.sms for p, v in device.peak_flops_per_s.items()})
