"""Ops: the unit of work of a model, as pure data (FLOPs, bytes moved, parameters).

FLOP convention (DESIGN.md): 2 FLOPs per multiply-add; ``model_flops`` counts forward and
backward matmul FLOPs (backward = 2x forward) without recompute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Op", "ModelOps", "DTYPE_BYTES", "dtype_bytes"]

DTYPE_BYTES = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}
"""Bytes per element of each precision (tf32 is stored as fp32)."""


def dtype_bytes(precision: str) -> int:
    try:
        return DTYPE_BYTES[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(DTYPE_BYTES)}") from None


@dataclass(frozen=True)
class Op:
    """One op: ``flops`` (2 per multiply-add) and ``bytes`` read plus written from device memory.
    ``matmul`` ops count toward model FLOPs; ``grad_bytes`` > 0 marks the op after which that
    many bytes of gradients are ready (backward ops)."""

    name: str
    flops: float
    bytes: float
    matmul: bool = False
    grad_bytes: float = 0.0


@dataclass(frozen=True)
class ModelOps:
    """A model's ops for one micro-batch on one device, and its sizes.

    ``forward``/``backward`` in execution order; ``optimizer`` the update ops; ``params`` the
    parameter count; ``activation_bytes`` the activations kept for backward;
    ``model_flops`` forward + backward matmul FLOPs of the micro-batch.
    """

    name: str
    forward: tuple[Op, ...]
    backward: tuple[Op, ...]
    optimizer: tuple[Op, ...]
    params: float
    activation_bytes: float
    model_flops: float
    samples: int
    tokens_per_sample: int = 1
    extra: dict = field(default_factory=dict)
