"""Models as ops: FLOPs, bytes moved, parameters, activation sizes. Pure functions, no SimPy."""

from __future__ import annotations

from hwsim.workloads.mlp import OPTIMIZER_STATE_BYTES, mlp_ops, optimizer_op_bytes
from hwsim.workloads.ops import DTYPE_BYTES, ModelOps, Op, dtype_bytes

__all__ = ["Op", "ModelOps", "DTYPE_BYTES", "dtype_bytes", "mlp_ops", "OPTIMIZER_STATE_BYTES",
           "optimizer_op_bytes"]
