"""Software-stack profiles: what the training software decides, as data (``data/stacks.yaml``).

The kernel model (:mod:`hwsim.catalog.kernels`) says how fast a GPU runs one GEMM or one fused
attention kernel; the device entry how fast it streams memory. What a framework reaches of that is
the software's, not the hardware's, and so is which attention kernel runs. A
:class:`StackProfile` holds those choices for one named stack (``workload.stack`` of a scenario):

- ``attention``: the fused attention kernel families it runs, in order of preference
  (:data:`~hwsim.catalog.kernels.ATTENTION_FAMILIES`: ``fa3``, ``fa2``); the first one the device's
  kernel model lists runs. None listed (``unfused``), or none that the device has (FlashAttention
  on a V100), means unfused attention: batched GEMMs around a separate softmax pass.
- ``compute_factor``: the fraction of the kernel model's compute time the framework reaches, for
  ops at a matrix-unit precision (eager dispatch, unfused epilogues, clocks under sustained load);
  ``memory_factor``: the fraction of the measured STREAM bandwidth its memory-bound kernels reach.
  They fill the device's ``framework_compute_factor`` / ``framework_memory_factor``
  (:meth:`StackProfile.apply`); the device catalog carries none.

Every fitted constant names the rows it was fitted to (``fitted_to``: ids of
``benchmarks/validation_cases.yaml``, at least two, all of this stack; ``benchmarks/
fit_calibration.py`` fits them and ``benchmarks/validate_training.py`` reports the
leave-one-out error); a stand-in names the profile it stands in from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from hwsim.catalog.kernels import ATTENTION_FAMILIES
from hwsim.catalog.specs import DeviceSpec
from hwsim.exceptions import ScenarioError

__all__ = ["StackProfile", "Stacks", "load_stacks", "get_stack", "parse_stacks_file",
           "UNFUSED", "DEFAULT_FOR"]

UNFUSED = "unfused"
"""``attention:`` of a stack that runs no fused attention kernel."""

DEFAULT_FOR = ("transformer", "other")
"""Model kinds ``default:`` of the stacks file names a stack for."""

_FIELDS = ("description", "attention", "compute_factor", "memory_factor", "fitted_to",
           "stand_in_for", "sources")


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


@dataclass(frozen=True)
class Stacks:
    """The parsed stacks file: profiles by name and the default per model kind."""

    profiles: Mapping[str, StackProfile]
    default: Mapping[str, str]

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
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read the stacks file: {exc}", file=path) from None
    if not isinstance(raw, dict) or set(raw) != {"default", "stacks"}:
        raise ScenarioError("expected a mapping with exactly default and stacks", file=path)
    body = raw["stacks"]
    if not isinstance(body, dict) or not body:
        raise err("stacks", "expected a mapping of stack name to its profile")
    profiles = {str(n): _profile(str(n), p, err) for n, p in body.items()}
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
    return Stacks(profiles, dict(default))


def _profile(name: str, p: Any, err) -> StackProfile:
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
    if not isinstance(fitted, list) or (stand_in is None and len(fitted) < 2) or (
            stand_in is not None and fitted):
        raise err(f"{at}.fitted_to", "a fitted compute_factor names at least two rows of "
                                     "benchmarks/validation_cases.yaml (never one); a stand-in "
                                     "names none and gives stand_in_for instead")
    return StackProfile(name=name, description=" ".join(str(p.get("description", "")).split()),
                        attention=() if attn == [UNFUSED] else tuple(attn),
                        fitted_to=tuple(str(r) for r in fitted), stand_in_for=stand_in,
                        sources={k: " ".join(str(v).split()) for k, v in src.items()},
                        **factors)


@functools.lru_cache(maxsize=1)
def load_stacks() -> Stacks:
    """The packaged stacks file (``data/stacks.yaml``), parsed once."""
    with resources.as_file(resources.files("hwsim.catalog").joinpath("data")) as folder:
        return parse_stacks_file(Path(folder) / "stacks.yaml")


def get_stack(name: str) -> StackProfile:
    """Shortcut for ``load_stacks().get(name)``."""
    return load_stacks().get(name)
