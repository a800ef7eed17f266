"""FP4 training recipes: what ``precision: fp4`` means on a software stack (``fp4_recipes`` of
``data/stacks.yaml``; a stack names one with ``fp4_recipe``, or ``none``).

An :class:`Fp4Recipe` is NVIDIA's NVFP4 pre-training recipe as Transformer Engine runs it
(``NVFP4BlockScaling``; NVIDIA, "Pretraining Large Language Models with NVFP4", arXiv 2509.25149):

- the GEMMs of the transformer layers' linear layers (QKV, out-projection, FFN up/gate and down),
  forward (fprop), data gradient (dgrad) and weight gradient (wgrad), run in NVFP4: E2M1 values
  with one E4M3 scale per 16 elements and one FP32 scale per tensor (:data:`NVFP4_BYTES` per
  element); weights are scaled in 16 x 16 blocks (2D), activations and gradients in 1 x 16;
- ``bf16_first_layers`` / ``bf16_last_layers`` transformer layers keep their linear layers in BF16
  (the paper keeps a small share of them, mostly at the end of the network, in higher precision;
  a recipe that keeps none says so and why);
- attention (score and value products, softmax), norms, activations, the embedding and the output
  layer stay in BF16;
- each NVFP4 GEMM input is quantised by two memory-bound passes: an amax pass over the BF16
  tensor (the per-tensor FP32 scale needs the tensor's amax before any block is cast) and a cast
  pass that reads it once more and writes the row-wise and the column-wise NVFP4 copies (fprop and
  dgrad take one, wgrad the other); with ``hadamard_wgrad`` the column-wise copies of the wgrad
  inputs (X and dY) go through a random Hadamard transform of ``hadamard_size`` elements first,
  ``2 * hadamard_size`` FLOPs per element, inside the same passes; stochastic rounding of the
  gradients is done in the cast and costs no extra traffic;
- the weights are quantised the same way (amax, cast to both layouts) and the copies cached:
  ``weight_copy_bytes`` per weight element.

``tp_comm_overlap`` false: the stack's pipelined TP overlap is off under this recipe (Megatron-
Bridge's performance scripts turn it off for NVFP4). :func:`hwsim.workloads.transformer_ops`
builds the ops; no constant of the recipe is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["Fp4Recipe", "NVFP4_BYTES", "parse_fp4_recipe", "FP4_FIELDS", "fp4_training_error",
           "nvfp4_devices"]

NVFP4_BYTES = 0.5 + 1.0 / 16
"""Bytes per NVFP4 element: a 4-bit E2M1 value and a 1-byte E4M3 scale per 16 values (the FP32
per-tensor scale is negligible); as :mod:`hwsim.workloads.quant` counts ``fp4``."""

FP4_FIELDS = ("description", "bf16_first_layers", "bf16_last_layers", "hadamard_wgrad",
              "hadamard_size", "weight_copy_bytes", "tp_comm_overlap", "sources")
_SOURCED = ("ops", "bf16_layers", "hadamard_wgrad", "weight_copy_bytes", "tp_comm_overlap",
            "quantisation")


@dataclass(frozen=True)
class Fp4Recipe:
    """One NVFP4 training recipe (see the module docstring)."""

    name: str
    description: str
    bf16_first_layers: int
    bf16_last_layers: int
    hadamard_wgrad: bool
    hadamard_size: int
    weight_copy_bytes: float
    tp_comm_overlap: bool
    sources: Mapping[str, str] = field(default_factory=dict)
    attention: bool = False
    """Attention stays in BF16 under every NVFP4 recipe (the paper; TE has no FP4 attention)."""
    gemm_dtype: str = "fp4"

    def fp4_layer(self, index: int, layers: int) -> bool:
        """Whether transformer layer *index* (0-based, of *layers*) runs its linear layers in
        NVFP4 (False: one of the recipe's BF16 layers)."""
        return self.bf16_first_layers <= index < layers - self.bf16_last_layers


def parse_fp4_recipe(name: str, r: Any, err: Callable[[str, str], Exception],
                     reserved: str) -> Fp4Recipe:
    """One entry of ``fp4_recipes``; *err(field, reason)* builds the error to raise."""
    at = f"fp4_recipes.{name}"
    if name == reserved:
        raise err(at, f"{reserved!r} is reserved for stacks without FP4 training")
    if not isinstance(r, dict) or set(r) - set(FP4_FIELDS):
        raise err(at, f"expected a mapping with {', '.join(FP4_FIELDS)}")
    ints = {}
    for k, lo in (("bf16_first_layers", 0), ("bf16_last_layers", 0), ("hadamard_size", 2)):
        v = r.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise err(f"{at}.{k}", f"expected an integer >= {lo}, got {v!r}")
        ints[k] = v
    flags = {}
    for k in ("hadamard_wgrad", "tp_comm_overlap"):
        if not isinstance(r.get(k), bool):
            raise err(f"{at}.{k}", f"expected true or false, got {r.get(k)!r}")
        flags[k] = r[k]
    wb = r.get("weight_copy_bytes")
    if isinstance(wb, bool) or not isinstance(wb, (int, float)) or wb < 0:
        raise err(f"{at}.weight_copy_bytes", f"expected bytes >= 0 per weight, got {wb!r}")
    src = r.get("sources") or {}
    for k in _SOURCED:
        if not isinstance(src.get(k), str) or not src[k].strip():
            raise err(f"{at}.sources.{k}", "every choice and constant needs a source")
    return Fp4Recipe(name=name, description=" ".join(str(r.get("description", "")).split()),
                     weight_copy_bytes=float(wb), sources={k: " ".join(str(v).split())
                                                           for k, v in src.items()},
                     **ints, **flags)


def fp4_training_error(stack: Any, device: Any, fp4_stacks: list[str],
                       nvfp4_devices: list[str]) -> str | None:
    """Why ``precision: fp4`` training cannot run *stack* on *device* (one paragraph), or None.
    NVFP4 needs a stack with an FP4 recipe (*fp4_stacks*: those that have one) and FP4 tensor
    cores that take NVFP4 (*nvfp4_devices*: the NVIDIA devices that list an fp4 peak; AMD's
    CDNA 4 runs MXFP4, a different block format Transformer Engine's NVFP4 recipe does not use)."""
    if stack.fp4_recipe is None:
        return (f"precision: fp4 trains the linear layers' GEMMs in NVFP4, which needs a software "
                f"stack with an FP4 recipe, and stack {stack.name!r} has none (fp4_recipe: none "
                f"in hwsim/catalog/data/stacks.yaml); valid: workload.stack: "
                f"{', '.join(fp4_stacks) or '(no stack has one)'}, or precision: fp8 or bf16")
    if device.id not in nvfp4_devices:
        has = "fp4" in device.peak_flops_per_s
        why = ("its fp4 units run MXFP4, not the NVFP4 format the recipe quantises to" if has
               else "it has no FP4 tensor cores (devices.yaml lists no fp4 peak for it)")
        return (f"precision: fp4 (NVFP4 training, stack {stack.name!r}, recipe "
                f"{stack.fp4_recipe.name!r}) cannot run on device {device.id!r}: {why}; valid: "
                f"a GPU with NVFP4 tensor cores ({', '.join(nvfp4_devices)}), or precision: fp8 "
                f"or bf16 on this device")
    return None


def nvfp4_devices(devices: Mapping[str, Any]) -> list[str]:
    """Ids of the catalog *devices* (id -> DeviceSpec) with NVFP4 tensor cores: NVIDIA GPUs
    that list an fp4 peak (Blackwell and later)."""
    return [i for i, d in devices.items() if d.kind == "gpu" and "fp4" in d.peak_flops_per_s
            and d.name.startswith("NVIDIA")]
