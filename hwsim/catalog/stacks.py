"""Software-stack profiles: what the training software decides, as data (``data/stacks.yaml``).

The kernel model (:mod:`hwsim.catalog.kernels`) says how fast a GPU runs one GEMM or one fused
attention kernel; the device entry how fast it streams memory. What a framework reaches of that is
the software's, not the hardware's, and so is which attention kernel runs. A
:class:`StackProfile` holds those choices for one named stack (``workload.stack`` of a scenario):

- ``attention``: the fused attention kernel families it runs, in order of preference
  (:data:`~hwsim.catalog.kernels.ATTENTION_FAMILIES`: ``fa3``, ``fa2``); the first one the device's
  kernel model lists runs. None listed (``unfused``), or none that the device has (FlashAttention
  on a V100), means unfused attention: batched GEMMs around a separate softmax pass.
- ``compute_factor``: the fraction of the kernel model's rate the framework reaches on the
  useful work (an op's FLOPs at the kernel's ceiling; the tiles' padding and the kernel's fixed
  latency are the kernel model's own, not scaled: :meth:`DeviceSpec.roofline_s`), for ops at a
  matrix-unit precision (eager dispatch, unfused epilogues, clocks under sustained load);
  ``memory_factor``: the fraction of the measured STREAM bandwidth its memory-bound kernels reach.
  They fill the device's ``framework_compute_factor`` / ``framework_memory_factor``
  (:meth:`StackProfile.apply`); the device catalog carries none.

- ``fp8_recipe``: what ``precision: fp8`` means on this stack (an :class:`Fp8Recipe` of the
  file's ``fp8_recipes``, by name, or ``none``: the stack does not train in FP8, and a scenario
  asking it to is an error): which ops run in FP8, the amax history its cast kernels update and
  the bytes of FP8 weight copies it keeps; :func:`~hwsim.workloads.transformer_ops` builds the
  ops from it.
- ``fp4_recipe``: what ``precision: fp4`` means on this stack (an
  :class:`~hwsim.catalog.fp4.Fp4Recipe` of the file's ``fp4_recipes``, or ``none``: the stack
  does not train in FP4): NVFP4 linear-layer GEMMs, the layers kept in BF16, the quantisation
  passes and random Hadamard transforms (:mod:`hwsim.catalog.fp4`).

- ``main_grads``, ``cuda_context_bytes``, ``nccl_buffer_bytes``: the memory the stack keeps
  beside the model's states (:meth:`StackProfile.memory_overheads`): gradients in fp32
  (``fp32``), in fp32 when training in bf16 (``fp32-with-bf16``, Megatron-LM's rule) or at the
  training precision (``training``); the CUDA context with the libraries' kernels, per GPU; the
  NCCL buffers of one communicator, per GPU and per communicator the rank is in.

- ``tp_comm_overlap``: TP collectives pipelined with their GEMMs (sequence parallelism;
  :meth:`~hwsim.workloads.ops.OpBuilder.linear`); ``overlap_param_gather``: the distributed
  optimizer's (ZeRO-1/2) parameter all-gather overlaps the next step's forward, one chunk (one
  model chunk's first layer) exposed; ``comm_sms``: SMs a collective kernel holds while it runs,
  taken from overlapped compute (interference, :func:`~hwsim.catalog.kernels.interfered`);
  ``zero3_bucket_bytes``, ``zero3_prefetch``: ZeRO-3 / FSDP parameter gathers per bucket of
  blocks (0: one per block) and how many buckets are gathered ahead (0: none, each gather
  issued when its bucket is needed and waited for);
  ``zero3_collectives_per_block``: a block's gather and reduce-scatter issued as that many
  collectives one after another (DeepSpeed gathers per submodule: each pays its latency);
  ``zero3_list_collectives``: those collectives take a list of per-rank tensors, so each also
  copies the result out to (all-gather) or the inputs in from (reduce-scatter) one tensor per
  group member, one op per copy on the communication stream; ``zero3_sync_before_gather``: the
  host synchronises the device before each gather, so a gather also waits for the reduce-scatters
  still running; ``zero3_reuse_distance``: under full recompute, a submodule whose parameters are
  not used again within that many elements after its recomputed forward is gathered once more
  for its backward (DeepSpeed's ``stage3_max_reuse_distance``); ``zero3_rank_host_s``: host time
  per group member of a list collective (0: the device's per-op dispatch time). Left out, each
  means "not modelled" (false, 0, one block, 1, 1, false, false, 0, 0).

- ``grad_reduce``: data-parallel gradient reductions move the gradients at the training
  precision (``training``) or at the main gradients' (``main``: 4 bytes where ``main_grads``
  keeps them in fp32); ``zero1_grad_allreduce``: under ZeRO-1/2 the gradients are all-reduced
  (each rank then updates its shard) instead of reduce-scattered; ``grad_reduce_overlap``
  (default true): the reduction is issued per bucket during the last micro-batch's backward;
  false: once, after it.

- ``fitted_field``: the one constant the ``fitted_to`` rows determine, ``compute_factor``
  (default) or ``zero3_rank_host_s`` (then the compute factor may be a stand-in).

Every fitted constant names the rows it was fitted to (``fitted_to``: ids of
``benchmarks/validation_cases.yaml``, at least two, all of this stack; ``benchmarks/
fit_calibration.py`` fits them and ``benchmarks/validate_training.py`` reports the
leave-one-out error); a stand-in names the profile it stands in from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from hwsim.catalog.fp4 import Fp4Recipe, parse_fp4_recipe
from hwsim.catalog.kernels import ATTENTION_FAMILIES
from hwsim.catalog.loader import read_yaml_file
from hwsim.catalog.specs import DeviceSpec
from hwsim.exceptions import ScenarioError

__all__ = ["StackProfile", "Stacks", "Fp8Recipe", "load_stacks", "get_stack",
           "parse_stacks_file", "UNFUSED", "DEFAULT_FOR", "NO_FP8", "Fp4Recipe"]

UNFUSED = "unfused"
"""``attention:`` of a stack that runs no fused attention kernel."""

DEFAULT_FOR = ("transformer", "other")
"""Model kinds ``default:`` of the stacks file names a stack for."""

NO_FP8 = "none"
"""``fp8_recipe:`` of a stack that does not train in FP8."""

_FIELDS = ("description", "attention", "compute_factor", "memory_factor", "fitted_to",
           "stand_in_for", "sources", "fp8_recipe", "main_grads", "cuda_context_bytes",
           "nccl_buffer_bytes", "tp_comm_overlap", "overlap_param_gather", "comm_sms",
           "zero3_bucket_bytes", "zero3_prefetch", "zero3_collectives_per_block",
           "zero3_list_collectives", "zero3_sync_before_gather", "zero3_reuse_distance",
           "zero3_rank_host_s", "grad_reduce", "zero1_grad_allreduce", "grad_reduce_overlap",
           "fitted_field", "fp4_recipe")
MAIN_GRADS = ("training", "fp32", "fp32-with-bf16")
"""``main_grads:`` values: gradients at the training precision, always fp32 (below 4-byte
training), or fp32 when training in bf16 (and fp8, whose weights are bf16) only."""
GRAD_REDUCE = ("training", "main")
"""``grad_reduce:`` values: data-parallel gradient reductions move gradients at the training
precision, or at the main gradients' (``main_grads``)."""
FITTABLE = ("compute_factor", "zero3_rank_host_s")
"""``fitted_field:`` values: the one constant a profile's ``fitted_to`` rows determine."""
_RECIPE_FIELDS = ("description", "attention", "weight_copy_bytes", "amax_history", "sources")


@dataclass(frozen=True)
class Fp8Recipe:
    """An FP8 training recipe (``fp8_recipes`` of the stacks file): ``attention`` True runs the
    fused attention kernel in FP8 too (Transformer Engine's ``fp8_dpa``), else in bf16;
    ``weight_copy_bytes``: bytes of FP8 weight copies kept per weight element of an FP8 GEMM,
    beside the bf16 weights and fp32 master copies; ``amax_history``: the amax history length
    its scale update reads and writes per tensor. Which GEMMs run in FP8 and the cast kernels
    are the transformer model's (:func:`~hwsim.workloads.transformer_ops`)."""

    name: str
    description: str
    attention: bool
    weight_copy_bytes: float
    amax_history: int
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StackProfile:
    """One software stack (see the module docstring)."""

    name: str
    description: str
    attention: tuple[str, ...]
    compute_factor: float
    memory_factor: float
    fitted_to: tuple[str, ...] = ()
    stand_in_for: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    fp8_recipe: Fp8Recipe | None = None
    fp4_recipe: Fp4Recipe | None = None
    main_grads: str = "training"
    cuda_context_bytes: float = 0.0
    nccl_buffer_bytes: float = 0.0
    tp_comm_overlap: bool = False
    overlap_param_gather: bool = False
    comm_sms: int = 0
    zero3_bucket_bytes: float = 0.0
    zero3_prefetch: int = 1
    zero3_collectives_per_block: int = 1
    zero3_list_collectives: bool = False
    zero3_sync_before_gather: bool = False
    zero3_reuse_distance: float = 0.0
    zero3_rank_host_s: float = 0.0
    grad_reduce: str = "training"
    zero1_grad_allreduce: bool = False
    grad_reduce_overlap: bool = True
    fitted_field: str = "compute_factor"

    def memory_overheads(self, precision: str, device_kind: str, communicators: int
                         ) -> dict[str, float]:
        """The stack's memory terms of one rank training at *precision* on a *device_kind*
        device in *communicators* NCCL communicators, as keyword arguments of
        :func:`~hwsim.workloads.training_memory`: ``grad_bytes`` (4 where the stack keeps fp32
        main gradients, else None: the training precision's), ``context_bytes`` and
        ``comm_buffer_bytes`` (GPUs only: the CUDA context and NCCL are NVIDIA GPU software;
        a CPU or TPU run gets neither)."""
        low = precision in ("bf16", "fp16", "fp8", "fp4")
        fp32 = low and (self.main_grads == "fp32" or (
            self.main_grads == "fp32-with-bf16" and precision in ("bf16", "fp8", "fp4")))
        gpu = device_kind == "gpu"
        return {"grad_bytes": 4.0 if fp32 else None,
                "context_bytes": self.cuda_context_bytes if gpu else 0.0,
                "comm_buffer_bytes": self.nccl_buffer_bytes * max(communicators, 0)
                if gpu else 0.0}

    def attention_family(self, device: DeviceSpec) -> str | None:
        """The fused attention family this stack runs on *device*, or None (unfused)."""
        listed = device.kernels.attention if device.kernels is not None else {}
        return next((f for f in self.attention if f in listed), None)

    def fused_attention(self, device: DeviceSpec) -> bool:
        """Whether attention runs as one fused kernel on *device*. A device without a kernel
        model (TPU, CPU, non-NVIDIA parts) runs it fused whenever the stack runs a fused kernel
        at all (timed by the FLOP ramp, as before the kernel model)."""
        if device.kernels is None:
            return bool(self.attention)
        return self.attention_family(device) is not None

    def apply(self, device: DeviceSpec) -> DeviceSpec:
        """*device* as this stack runs it: its framework factors and attention kernel. CPUs are
        returned unchanged (their ops run at the measured CPU figures, no factor)."""
        if device.kind == "cpu":
            return device
        kernels = device.kernels
        if kernels is not None:
            kernels = kernels.with_attention(self.attention_family(device))
        return replace(device, framework_compute_factor=self.compute_factor,
                       framework_memory_factor=self.memory_factor, kernels=kernels)


_OPTIONAL = {f.name: f.default for f in fields(StackProfile) if f.name in (
    "tp_comm_overlap", "overlap_param_gather", "comm_sms", "zero3_bucket_bytes", "zero3_prefetch",
    "zero3_collectives_per_block", "zero3_list_collectives",
    "zero3_sync_before_gather", "zero3_reuse_distance", "zero3_rank_host_s", "grad_reduce",
    "zero1_grad_allreduce", "grad_reduce_overlap")}
"""Fields a profile may leave out, with the value that means "not modelled" (the profile's
defaults; a profile that gives one names its source)."""


@dataclass(frozen=True)
class Stacks:
    """The parsed stacks file: profiles by name and the default per model kind."""

    profiles: Mapping[str, StackProfile]
    default: Mapping[str, str]
    recipes: Mapping[str, Fp8Recipe] = field(default_factory=dict)
    fp4_recipes: Mapping[str, Fp4Recipe] = field(default_factory=dict)

    def fp8_stacks(self) -> list[str]:
        """Names of the stacks with an FP8 recipe."""
        return [n for n, p in self.profiles.items() if p.fp8_recipe is not None]

    def fp4_stacks(self) -> list[str]:
        """Names of the stacks with an FP4 (NVFP4) training recipe."""
        return [n for n, p in self.profiles.items() if p.fp4_recipe is not None]

    def get(self, name: str, where: str = "workload.stack") -> StackProfile:
        if name not in self.profiles:
            raise ScenarioError(f"unknown software stack {name!r}; valid: "
                                f"{', '.join(self.profiles)} (hwsim/catalog/data/stacks.yaml; "
                                f"default {self.default['transformer']} for transformers, "
                                f"{self.default['other']} for other models)", field=where)
        return self.profiles[name]

    def default_for(self, transformer: bool) -> StackProfile:
        return self.profiles[self.default["transformer" if transformer else "other"]]


def parse_stacks_file(path: str | Path) -> Stacks:
    """Read a stacks file; every error names the file and the field."""
    path = str(path)

    def err(fld: str, reason: str) -> ScenarioError:
        return ScenarioError(reason, file=path, field=fld)
    try:
        raw = read_yaml_file(path, strict=False)
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read the stacks file: {exc}", file=path) from None
    if not isinstance(raw, dict) or not {"default", "stacks"} <= set(raw) <= {
            "default", "stacks", "fp8_recipes", "fp4_recipes"}:
        raise ScenarioError("expected a mapping with default, stacks and (optional) "
                            "fp8_recipes and fp4_recipes", file=path)
    rec_raw = raw.get("fp8_recipes") or {}
    if not isinstance(rec_raw, dict):
        raise err("fp8_recipes", "expected a mapping of recipe name to its recipe")
    recipes = {str(n): _recipe(str(n), r, err) for n, r in rec_raw.items()}
    fp4_raw = raw.get("fp4_recipes") or {}
    if not isinstance(fp4_raw, dict):
        raise err("fp4_recipes", "expected a mapping of recipe name to its recipe")
    fp4 = {str(n): parse_fp4_recipe(str(n), r, err, NO_FP8) for n, r in fp4_raw.items()}
    body = raw["stacks"]
    if not isinstance(body, dict) or not body:
        raise err("stacks", "expected a mapping of stack name to its profile")
    profiles = {str(n): _profile(str(n), p, err, recipes, fp4) for n, p in body.items()}
    for n, p in profiles.items():
        if p.stand_in_for is not None and p.stand_in_for not in profiles:
            raise err(f"stacks.{n}.stand_in_for", f"not a stack of this file; valid: "
                                                  f"{', '.join(profiles)}")
    default = raw["default"]
    if not isinstance(default, dict) or set(default) != set(DEFAULT_FOR):
        raise err("default", f"expected {{{': NAME, '.join(DEFAULT_FOR)}: NAME}}")
    for k, v in default.items():
        if v not in profiles:
            raise err(f"default.{k}", f"not a stack of this file; valid: {', '.join(profiles)}")
    return Stacks(profiles, dict(default), recipes, fp4)


def _recipe(name: str, r: Any, err) -> Fp8Recipe:
    at = f"fp8_recipes.{name}"
    if name == NO_FP8:
        raise err(at, f"{NO_FP8!r} is reserved for stacks without FP8")
    if not isinstance(r, dict) or set(r) - set(_RECIPE_FIELDS):
        raise err(at, f"expected a mapping with {', '.join(_RECIPE_FIELDS)}")
    if r.get("attention") not in ("bf16", "fp8"):
        raise err(f"{at}.attention", "expected bf16 (attention stays bf16) or fp8 (TE fp8_dpa)")
    wb, hist = r.get("weight_copy_bytes"), r.get("amax_history")
    if isinstance(wb, bool) or not isinstance(wb, (int, float)) or wb < 0:
        raise err(f"{at}.weight_copy_bytes", f"expected bytes >= 0 per weight, got {wb!r}")
    if isinstance(hist, bool) or not isinstance(hist, int) or hist < 1:
        raise err(f"{at}.amax_history", f"expected a positive integer, got {hist!r}")
    src = r.get("sources") or {}
    for k in ("attention", "weight_copy_bytes", "amax_history", "ops"):
        if not isinstance(src.get(k), str) or not src[k].strip():
            raise err(f"{at}.sources.{k}", "every choice and constant needs a source")
    return Fp8Recipe(name=name, description=" ".join(str(r.get("description", "")).split()),
                     attention=r["attention"] == "fp8", weight_copy_bytes=float(wb),
                     amax_history=hist, sources={k: " ".join(str(v).split())
                                                 for k, v in src.items()})


def _profile(name: str, p: Any, err, recipes: Mapping[str, Fp8Recipe],
             fp4_recipes: Mapping[str, Fp4Recipe]) -> StackProfile:
    at = f"stacks.{name}"
    if not isinstance(p, dict):
        raise err(at, f"expected a mapping with {', '.join(_FIELDS)}")
    for k in p:
        if k not in _FIELDS:
            raise err(f"{at}.{k}", f"unknown field; valid fields: {', '.join(_FIELDS)}")
    attn = p.get("attention")
    attn = [attn] if isinstance(attn, str) else attn
    if not isinstance(attn, list) or not attn or (
            attn != [UNFUSED] and not all(a in ATTENTION_FAMILIES for a in attn)):
        raise err(f"{at}.attention", f"expected {UNFUSED} or a list of fused kernel families in "
                                     f"order of preference from {', '.join(ATTENTION_FAMILIES)}")
    factors = {}
    for k in ("compute_factor", "memory_factor"):
        v = p.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise err(f"{at}.{k}", f"expected a fraction in (0, 1], got {v!r}")
        factors[k] = float(v)
    src = p.get("sources") or {}
    for k in ("attention", "compute_factor", "memory_factor"):
        if not isinstance(src.get(k), str) or not src[k].strip():
            raise err(f"{at}.sources.{k}", "every choice and constant needs a source (a "
                                           "document, or the rows it was fitted to)")
    fitted = p.get("fitted_to") or []
    stand_in = p.get("stand_in_for")
    fitted_field = p.get("fitted_field", "compute_factor")
    if fitted_field not in FITTABLE:
        raise err(f"{at}.fitted_field", f"expected one of {', '.join(FITTABLE)} (the constant "
                                        f"fitted_to determines), got {fitted_field!r}")
    own = fitted_field == "compute_factor"
    if not isinstance(fitted, list) or (stand_in is None and len(fitted) < 2) or (
            own and stand_in is not None and fitted) or (not own and len(fitted) < 2):
        raise err(f"{at}.fitted_to", f"a fitted {fitted_field} names at least two rows of "
                                     "benchmarks/validation_cases.yaml (never one); a stand-in "
                                     "compute_factor names none and gives stand_in_for instead")
    if not own and not p.get(fitted_field):
        raise err(f"{at}.{fitted_field}", "the fitted_field needs its fitted value in the profile")
    rec = p.get("fp8_recipe", NO_FP8)
    if rec != NO_FP8 and rec not in recipes:
        raise err(f"{at}.fp8_recipe", f"expected {NO_FP8} or a recipe of fp8_recipes: "
                                      f"{', '.join(recipes) or '(none defined)'}")
    rec4 = p.get("fp4_recipe", NO_FP8)
    if rec4 != NO_FP8 and rec4 not in fp4_recipes:
        raise err(f"{at}.fp4_recipe", f"expected {NO_FP8} or a recipe of fp4_recipes: "
                                      f"{', '.join(fp4_recipes) or '(none defined)'}")
    mg = p.get("main_grads")
    if mg not in MAIN_GRADS:
        raise err(f"{at}.main_grads", f"expected one of {', '.join(MAIN_GRADS)} (the precision "
                                      f"the stack keeps gradients in), got {mg!r}")
    for k in ("cuda_context_bytes", "nccl_buffer_bytes"):
        v = p.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise err(f"{at}.{k}", f"expected bytes >= 0 per GPU, got {v!r}")
        factors[k] = float(v)
    for k in ("main_grads", "cuda_context_bytes", "nccl_buffer_bytes") + tuple(
            k for k in _OPTIONAL if k in p):
        if not isinstance(src.get(k), str) or not src[k].strip():
            raise err(f"{at}.sources.{k}", "every choice and constant needs a source (a "
                                           "document, and how exact it is)")
    opt = dict(_OPTIONAL)
    for k in ("tp_comm_overlap", "overlap_param_gather", "zero3_list_collectives",
              "zero3_sync_before_gather", "zero1_grad_allreduce", "grad_reduce_overlap"):
        if k in p:
            if not isinstance(p[k], bool):
                raise err(f"{at}.{k}", f"expected true or false, got {p[k]!r}")
            opt[k] = p[k]
    for k, lo in (("comm_sms", 0), ("zero3_prefetch", 0), ("zero3_collectives_per_block", 1)):
        v = p.get(k, opt[k])
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise err(f"{at}.{k}", f"expected an integer >= {lo}, got {v!r}")
        opt[k] = v
    v = p.get("zero3_bucket_bytes", 0.0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise err(f"{at}.zero3_bucket_bytes", f"expected bytes >= 0 (0: one gather per "
                                              f"block), got {v!r}")
    opt["zero3_bucket_bytes"] = float(v)
    for k, what in (("zero3_reuse_distance", "parameter elements >= 0 (0: nothing re-gathered)"),
                    ("zero3_rank_host_s", "seconds >= 0 per group member (0: the device's "
                                          "per-op dispatch time)")):
        v = p.get(k, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise err(f"{at}.{k}", f"expected {what}, got {v!r}")
        opt[k] = float(v)
    gr = p.get("grad_reduce", "training")
    if gr not in GRAD_REDUCE:
        raise err(f"{at}.grad_reduce", f"expected one of {', '.join(GRAD_REDUCE)} (the precision "
                                       f"data-parallel gradient reductions move), got {gr!r}")
    opt["grad_reduce"] = gr
    return StackProfile(name=name, description=" ".join(str(p.get("description", "")).split()),
                        fp8_recipe=None if rec == NO_FP8 else recipes[rec], main_grads=mg,
                        fp4_recipe=None if rec4 == NO_FP8 else fp4_recipes[rec4],
                        attention=() if attn == [UNFUSED] else tuple(attn),
                        fitted_to=tuple(str(r) for r in fitted), stand_in_for=stand_in,
                        fitted_field=fitted_field,
                        sources={k: " ".join(str(v).split()) for k, v in src.items()},
                        **factors, **opt)


@functools.lru_cache(maxsize=1)
def load_stacks() -> Stacks:
    """The packaged stacks file (``data/stacks.yaml``), parsed once."""
    with resources.as_file(resources.files("hwsim.catalog").joinpath("data")) as folder:
        return parse_stacks_file(Path(folder) / "stacks.yaml")


def get_stack(name: str) -> StackProfile:
    """Shortcut for ``load_stacks().get(name)``."""
    return load_stacks().get(name)
