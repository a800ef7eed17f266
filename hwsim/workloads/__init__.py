"""Models as ops: FLOPs, bytes moved, parameters, activation sizes. Pure functions, no SimPy."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hwsim.workloads.cnn import ResNetSpec, resnet_layers, resnet_ops
from hwsim.workloads.dlrm import DLRMSpec, dlrm_ops
from hwsim.workloads.hf_config import SUPPORTED_MODEL_TYPES, spec_from_hf_config
from hwsim.workloads.memory import (
    RECOMPUTE_POLICIES,
    SCHEDULES,
    inflight_microbatches,
    layer_activation_bytes,
    state_bytes,
    storage_bytes,
    training_memory,
)
from hwsim.workloads.mlp import mlp_ops
from hwsim.workloads.ops import (
    COMM_KINDS,
    OPTIMIZER_STATE_BYTES,
    DTYPE_BYTES,
    Block,
    ModelOps,
    Op,
    OpBuilder,
    dtype_bytes,
    model_from_blocks,
    optimizer_op_bytes,
    pipeline_stages,
)
from hwsim.workloads.presets import (
    PRESET_NAMES,
    PRESETS,
    MLPSpec,
    ModelSpec,
    get_preset,
    model_ops,
    param_count,
    resolve_model,
    spec_from_fields,
)
from hwsim.workloads.transformer import TransformerSpec, transformer_ops

if TYPE_CHECKING:
    from hwsim.workloads.arrivals import (DISTRIBUTIONS, PROCESSES, Request, from_trace,
                                          open_loop, token_sampler)
    from hwsim.workloads.inference import (ServingCost, experts_touched, inference_flops,
                                           iteration_ops, serving_cost, stage_layers)

_LAZY = {**dict.fromkeys(("DISTRIBUTIONS", "PROCESSES", "Request", "from_trace", "open_loop",
                          "token_sampler"), "hwsim.workloads.arrivals"),
         **dict.fromkeys(("ServingCost", "experts_touched", "inference_flops", "iteration_ops",
                          "serving_cost", "stage_layers"), "hwsim.workloads.inference")}
"""Names imported on first use (PEP 562): arrivals and the serving costs need numpy, a training
model's ops do not (``hwsim validate`` of a training scenario runs without numpy)."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hwsim.workloads' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Op", "ModelOps", "DTYPE_BYTES", "dtype_bytes", "mlp_ops", "OPTIMIZER_STATE_BYTES",
           "optimizer_op_bytes", "Block", "OpBuilder", "COMM_KINDS", "model_from_blocks",
           "pipeline_stages", "TransformerSpec", "transformer_ops", "ResNetSpec",
           "resnet_layers", "resnet_ops", "DLRMSpec", "dlrm_ops", "SUPPORTED_MODEL_TYPES",
           "spec_from_hf_config", "MLPSpec", "ModelSpec", "PRESETS", "PRESET_NAMES",
           "get_preset", "spec_from_fields", "resolve_model", "model_ops", "param_count",
           "RECOMPUTE_POLICIES", "SCHEDULES", "storage_bytes", "state_bytes",
           "layer_activation_bytes", "inflight_microbatches", "training_memory",
           "ServingCost", "serving_cost", "iteration_ops", "inference_flops", "stage_layers",
           "experts_touched", "Request", "token_sampler", "open_loop", "from_trace",
           "PROCESSES", "DISTRIBUTIONS"]
