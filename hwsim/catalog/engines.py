"""Serving-engine profiles: what an LLM serving engine decides, as data (``data/engines.yaml``).

The serving job's scheduler has knobs (token budget, block size, chunked prefill, batch cap,
memory fraction); each engine documents its own defaults, and runs its kernels its own way
(CUDA graphs or a C++ runtime, fused elementwise kernels, a custom all-reduce for small
tensor-parallel messages). An :class:`EngineProfile` holds those choices for one named engine
(``workload.engine`` of a scenario; the file's ``default`` otherwise). The file's header says
what each field means and lists the sources; every field of every profile names one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from hwsim.catalog.loader import load_catalog, read_yaml_file
from hwsim.catalog.specs import DTYPES, DeviceSpec
from hwsim.exceptions import ScenarioError
from hwsim.units import parse_quantity

__all__ = ["EngineProfile", "Engines", "load_engines", "get_engine", "SCHEDULER_FIELDS",
           "FP4_WEIGHTS"]

SCHEDULER_FIELDS = ("block_tokens", "max_batch_size", "max_batched_tokens", "chunked_prefill",
                    "memory_fraction", "no_evict")
"""Scheduler fields an engine gives defaults for (``workload.scheduler`` overrides them)."""

_FIELDS = ("description", "scheduler", "large_gpu", "prefill_with_decodes", "kv_memory",
           "decode_kv_per_query_head", "fp4_weights",
           "graph_tokens", "graph_op_floor", "eager_op_floor", "fused", "custom_allreduce_bytes",
           "custom_allreduce_links", "seq_overhead", "compute_factor", "memory_factor",
           "gemm_ceiling", "sources")
_OPTIONAL = ("large_gpu", "prefill_with_decodes", "decode_kv_per_query_head", "fp4_weights",
             "custom_allreduce_links", "seq_overhead", "gemm_ceiling")
CUSTOM_ALLREDUCE_LINKS = ("nvlink", "xgmi")
"""Link classes a one-kernel peer-to-peer all-reduce can run over (``custom_allreduce_links``;
default NVLink only)."""
FP4_WEIGHTS = ("fp4", "mxfp4")
"""4-bit float weight formats an engine may serve under ``precision: fp4`` (``fp4_weights``):
NVFP4 and OCP MXFP4 (:mod:`hwsim.workloads.quant`)."""
_NEED_SOURCE = ("scheduler", "kv_memory", "fused", "custom_allreduce_bytes", "compute_factor",
                "memory_factor")


@dataclass(frozen=True)
class EngineProfile:
    """One serving engine (see the module docstring and the data file's header)."""

    name: str
    description: str
    scheduler: Mapping[str, Any]
    kv_memory: str
    graph_tokens: int
    graph_op_floor_s: float
    eager_op_floor_s: float | None
    fused: tuple[str, ...]
    custom_allreduce_bytes: float
    compute_factor: float
    memory_factor: float
    prefill_with_decodes: bool = False
    decode_kv_per_query_head: bool = False
    large_gpu: Mapping[str, Any] = field(default_factory=dict)
    fp4_weights: tuple[str, ...] = ()
    custom_allreduce_links: tuple[str, ...] = ("nvlink",)
    seq_overhead_s: float = 0.0
    gemm_ceiling: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    def device_spec(self, spec: DeviceSpec) -> DeviceSpec:
        """*spec* as the engine runs it: its framework factors the engine's, and its large-GEMM
        ceilings the engine's own where ``gemm_ceiling`` lists the device (its kernel model's
        per-precision table too, if it has one)."""
        out = replace(spec, framework_compute_factor=self.compute_factor,
                      framework_memory_factor=self.memory_factor)
        own = self.gemm_ceiling.get(spec.id)
        if not own:
            return out
        kernels = out.kernels
        if kernels is not None:
            kernels = replace(kernels, gemm_ceiling={**kernels.gemm_ceiling, **own})
        return replace(out, gemm_ceiling={**(out.gemm_ceiling or {}), **own}, kernels=kernels)

    def custom_allreduce(self, category: str, nbytes: float) -> bool:
        """Whether a tensor-parallel all-reduce of *nbytes* over links of *category* (a
        collective group's, e.g. ``nvlink4`` or ``xgmi``) runs as the engine's one-kernel
        all-reduce."""
        return nbytes <= self.custom_allreduce_bytes and any(
            c in category for c in self.custom_allreduce_links)

    def defaults(self, device_id: str, memory_bytes: float, tp: int) -> dict[str, Any]:
        """The engine's scheduler defaults on *device_id* (of *memory_bytes*) at *tp*: its
        ``scheduler`` with the ``large_gpu`` overrides where they apply and ``memory_fraction``
        resolved for *tp*."""
        out = dict(self.scheduler)
        big = self.large_gpu
        if big and memory_bytes >= float(big["min_memory_gib"]) * 2**30 and not any(
                x.lower() in device_id.lower() for x in big.get("except", ())):
            out.update({k: v for k, v in big.items() if k in SCHEDULER_FIELDS})
        frac = out["memory_fraction"]
        if isinstance(frac, Mapping):
            keys = sorted(int(k) for k in frac)
            out["memory_fraction"] = float(frac[max([k for k in keys if k <= tp] or keys[:1])])
        return out

    def op_floor_s(self, tokens: int, device_floor: float) -> float:
        """Least time of one kernel of an iteration of *tokens* tokens: inside a CUDA graph when
        it is small enough, else as the engine launches kernels (``eager_op_floor``, or the
        device's *device_floor* for eager PyTorch)."""
        if tokens <= self.graph_tokens:
            return self.graph_op_floor_s
        return device_floor if self.eager_op_floor_s is None else self.eager_op_floor_s

    def fuses(self, op_name: str) -> bool:
        """Whether the engine runs the op *op_name* (``layer.X``) inside a neighbouring kernel."""
        return op_name.removeprefix("layer.") in self.fused


@dataclass(frozen=True)
class Engines:
    profiles: Mapping[str, EngineProfile]
    default: str

    def get(self, name: str | None) -> EngineProfile:
        """Profile *name* (None: the default); ScenarioError naming the valid ones."""
        name = self.default if name is None else name
        if name not in self.profiles:
            raise ScenarioError(f"unknown serving engine {name!r}; valid: "
                                f"{', '.join(self.profiles)}", field="workload.engine")
        return self.profiles[name]


def _err(path: Path, at: str, what: str) -> ScenarioError:
    return ScenarioError(f"{path}: {at}: {what}", field=at)


def _parse(path: Path, name: str, p: Any) -> EngineProfile:
    at = f"engines.{name}"
    if not isinstance(p, dict):
        raise _err(path, at, "expected a mapping of the engine's fields")
    unknown = sorted(set(p) - set(_FIELDS))
    missing = [k for k in _FIELDS if k not in p and k not in _OPTIONAL]
    if unknown or missing:
        raise _err(path, at, ("unknown field(s) " + ", ".join(unknown) + "; " if unknown else "")
                   + ("missing " + ", ".join(missing) + "; " if missing else "")
                   + "valid: " + ", ".join(_FIELDS))
    src = p["sources"] if isinstance(p["sources"], dict) else {}
    for k in _NEED_SOURCE + tuple(k for k in _OPTIONAL if k in p):
        if not isinstance(src.get(k), str) or not src[k].strip():
            raise _err(path, f"{at}.sources.{k}", "every choice and constant needs a source")
    sch = p["scheduler"]
    if not isinstance(sch, dict) or sorted(sch) != sorted(SCHEDULER_FIELDS):
        raise _err(path, f"{at}.scheduler", "expected exactly " + ", ".join(SCHEDULER_FIELDS))
    for k in ("block_tokens", "max_batch_size", "max_batched_tokens"):
        if isinstance(sch[k], bool) or not isinstance(sch[k], int) or sch[k] < 1:
            raise _err(path, f"{at}.scheduler.{k}", f"expected an integer >= 1, got {sch[k]!r}")
    fracs = sch["memory_fraction"].values() if isinstance(sch["memory_fraction"], dict) \
        else [sch["memory_fraction"]]
    if not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fracs):
        raise _err(path, f"{at}.scheduler.memory_fraction", "expected fractions in (0, 1], or "
                                                            "a mapping of tp to one")
    for k in ("chunked_prefill", "no_evict"):
        if not isinstance(sch[k], bool):
            raise _err(path, f"{at}.scheduler.{k}", f"expected true or false, got {sch[k]!r}")
    if p["kv_memory"] not in ("total", "free"):
        raise _err(path, f"{at}.kv_memory", f"expected total or free, got {p['kv_memory']!r}")
    for k in ("compute_factor", "memory_factor"):
        if not isinstance(p[k], (int, float)) or not 0 < p[k] <= 1:
            raise _err(path, f"{at}.{k}", f"expected a fraction in (0, 1], got {p[k]!r}")
    fp4 = p.get("fp4_weights") or []
    if not isinstance(fp4, list) or any(x not in FP4_WEIGHTS for x in fp4):
        raise _err(path, f"{at}.fp4_weights", f"expected a list of {', '.join(FP4_WEIGHTS)}, "
                                              f"got {fp4!r}")
    try:
        seq_overhead = parse_quantity(p.get("seq_overhead", 0.0), "time")
    except ValueError as err:
        raise _err(path, f"{at}.seq_overhead", str(err)) from None
    if not 0.0 <= seq_overhead < 1e-2:
        raise _err(path, f"{at}.seq_overhead", f"expected a time per sequence in [0, 10 ms), "
                                               f"got {p.get('seq_overhead')!r}")
    ceilings = _ceilings(path, f"{at}.gemm_ceiling", p.get("gemm_ceiling") or {})
    links = p.get("custom_allreduce_links", ["nvlink"])
    if not isinstance(links, list) or not links or any(x not in CUSTOM_ALLREDUCE_LINKS
                                                       for x in links):
        raise _err(path, f"{at}.custom_allreduce_links", "expected a list of "
                   f"{', '.join(CUSTOM_ALLREDUCE_LINKS)}, got {links!r}")
    try:
        floors = [parse_quantity(p["graph_op_floor"], "time"),
                  None if p["eager_op_floor"] is None else parse_quantity(p["eager_op_floor"],
                                                                          "time")]
    except ValueError as err:
        raise _err(path, f"{at}.graph_op_floor", str(err)) from None
    return EngineProfile(
        name=name, description=" ".join(str(p["description"]).split()),
        scheduler=dict(sch), kv_memory=p["kv_memory"], graph_tokens=int(p["graph_tokens"]),
        graph_op_floor_s=floors[0], eager_op_floor_s=floors[1],
        fused=tuple(str(x) for x in p["fused"]),
        custom_allreduce_bytes=float(p["custom_allreduce_bytes"]),
        compute_factor=float(p["compute_factor"]), memory_factor=float(p["memory_factor"]),
        prefill_with_decodes=bool(p.get("prefill_with_decodes", False)),
        decode_kv_per_query_head=bool(p.get("decode_kv_per_query_head", False)),
        large_gpu=dict(p.get("large_gpu") or {}), fp4_weights=tuple(fp4),
        custom_allreduce_links=tuple(links), seq_overhead_s=seq_overhead, gemm_ceiling=ceilings,
        sources={k: " ".join(str(v).split()) for k, v in src.items()})


def _ceilings(path: Path, at: str, raw: Any) -> dict[str, dict[str, float]]:
    """``gemm_ceiling``: catalog device id -> precision -> fraction of its dense peak."""
    if not isinstance(raw, dict):
        raise _err(path, at, "expected a mapping of catalog device ids to {precision: fraction "
                             "of the dense peak}")
    devices = load_catalog().devices
    out: dict[str, dict[str, float]] = {}
    for dev, table in raw.items():
        if dev not in devices:
            raise _err(path, f"{at}.{dev}", "unknown device; valid: catalog device ids, e.g. "
                                            + ", ".join(sorted(devices)[:6]))
        if not isinstance(table, dict) or not table:
            raise _err(path, f"{at}.{dev}", "expected {precision: fraction of the dense peak}")
        for prec, v in table.items():
            if prec not in DTYPES:
                raise _err(path, f"{at}.{dev}.{prec}", f"unknown precision; valid: "
                                                       f"{', '.join(DTYPES)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise _err(path, f"{at}.{dev}.{prec}", f"expected a fraction in (0, 1], got "
                                                       f"{v!r}")
        out[dev] = {k: float(v) for k, v in table.items()}
    return out


def parse_engines_file(path: Path) -> Engines:
    """Parse an engines file (the format of ``data/engines.yaml``); ScenarioError on bad data."""
    raw = read_yaml_file(str(path), strict=False)  # libyaml where PyYAML has it
    if not isinstance(raw, dict) or not isinstance(raw.get("engines"), dict):
        raise _err(path, "engines", "expected a mapping `engines:` of profiles")
    profiles = {n: _parse(path, n, p) for n, p in raw["engines"].items()}
    if raw.get("default") not in profiles:
        raise _err(path, "default", f"expected one of {', '.join(profiles)}")
    return Engines(profiles=profiles, default=raw["default"])


@functools.lru_cache(maxsize=1)
def load_engines() -> Engines:
    """The packaged engines file, parsed once."""
    with resources.as_file(resources.files("hwsim.catalog").joinpath("data")) as folder:
        return parse_engines_file(Path(folder) / "engines.yaml")


def get_engine(name: str | None = None) -> EngineProfile:
    """Shortcut for ``load_engines().get(name)``."""
    return load_engines().get(name)
