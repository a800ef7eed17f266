"""Calibration files (``calibration: FILE`` in a scenario): fitted values of named model constants
that replace the catalog's for the run of that scenario only (docs/calibration.md).

A calibration file is YAML written by ``hwsim calibrate`` (or by hand)::

    hwsim_calibration: 1
    stacks:
      megatron-2020:
        compute_factor: {value: 0.70, catalog: 0.7306, fitted_to: "...",
                         error_before: 0.06, error_after: 0.02, loo_error: 0.03}
    devices:
      A100-SXM4-80GB:
        compute_efficiency: 0.85
    links:
      nvlink3:
        efficiency: 0.80            # a bare number is a value too

:data:`CONSTANTS` is the table of constants a file may set, each a named entry with its target
(:data:`TARGETS`: a catalog device, a catalog link or a software-stack profile), the field it
replaces and its valid range; :func:`current` reads (the getter) a constant's value for a run,
:func:`apply` puts (the setter) a set of values into one run's topology graph. Nothing is global:
device constants go into the graph's ``device_specs`` mapping (catalog id -> a
``dataclasses.replace``-d :class:`~hwsim.catalog.specs.DeviceSpec`, which
:class:`hwsim.jobs.system.System` prefers to the catalog's), stack constants into its
``stack_profiles`` mapping (stack name -> a replaced
:class:`~hwsim.catalog.stacks.StackProfile`, which the run's plan takes for ``workload.stack``),
link constants into the attributes of that graph's edges of the link; the catalog itself is never
changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import yaml

from hwsim.catalog import get_device, get_link, load_catalog, load_stacks
from hwsim.catalog.loader import suggest_ids
from hwsim.exceptions import ScenarioError

if TYPE_CHECKING:  # the graph type only: loading a scenario imports no networkx
    import networkx as nx

__all__ = ["Constant", "CONSTANTS", "Target", "TARGETS", "Key", "current", "apply",
           "read_calibration", "parse_calibration", "label", "VERSION", "DEVICE_SPECS",
           "STACK_PROFILES"]

VERSION = 1
"""Value of ``hwsim_calibration:`` in the files this version writes and reads."""
DEVICE_SPECS = "device_specs"
"""Graph attribute (``graph.graph[...]``) with the run's replaced device specs by catalog id."""
STACK_PROFILES = "stack_profiles"
"""Graph attribute with the run's replaced software-stack profiles by stack name."""


@dataclass(frozen=True)
class Target:
    """What a constant belongs to: ``name`` (``device``, ``link``, ``stack``), the calibration
    file's ``section`` for it, ``entries()`` (id -> catalog entry) and ``where`` (where the
    valid ids are listed)."""

    name: str
    section: str
    entries: Callable[[], Mapping[str, Any]]
    where: str
    example: str

    def get(self, ident: str) -> Any:
        """The catalog entry *ident* (a device or link id, case-insensitive, or a stack name)."""
        if self.name == "device":
            return get_device(ident)
        if self.name == "link":
            return get_link(ident)
        return load_stacks().get(ident, where="stacks")

    def canonical(self, ident: str) -> str | None:
        """The id as the catalog spells it, or None when there is no such entry."""
        if self.name == "stack":
            return ident if ident in self.entries() else None
        try:
            return self.get(str(ident).strip()).id
        except ScenarioError:
            return None

    def unknown(self, ident: str) -> str:
        """The one-paragraph reason *ident* is not an entry of this target."""
        table = list(self.entries())
        if self.name == "stack":
            return (f"unknown software stack {ident!r}; valid: {', '.join(table)} (the profiles "
                    f"of {self.where})")
        close = suggest_ids(str(ident), self.entries())
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        return f"unknown {self.name} id {ident!r}; {hint}valid: a catalog {self.name} id ({self.where})"


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("stack", "stacks", lambda: load_stacks().profiles, "hwsim/catalog/data/stacks.yaml",
           "megatron-2020: {compute_factor: 0.7}"),
    Target("device", "devices", lambda: load_catalog().devices, "`hwsim catalog devices`",
           "A100-SXM4-80GB: {compute_efficiency: 0.85}"),
    Target("link", "links", lambda: load_catalog().links, "`hwsim catalog links`",
           "nvlink3: {efficiency: 0.8}"),
)}
"""What the constants of :data:`CONSTANTS` belong to, by name, in the file's section order."""


@dataclass(frozen=True)
class Constant:
    """A model constant a calibration may set: ``target`` names a :data:`TARGETS` entry (a
    :class:`~hwsim.catalog.specs.DeviceSpec`, :class:`~hwsim.catalog.specs.LinkSpec` or
    :class:`~hwsim.catalog.stacks.StackProfile` field of this name); values lie in ``[lo, hi]``;
    ``unset`` is its value where the catalog has none."""

    name: str
    target: str
    lo: float
    hi: float
    doc: str
    unset: float | None = None


CONSTANTS: dict[str, Constant] = {c.name: c for c in (
    Constant("compute_factor", "stack", 1e-3, 2.0,
             "fraction of the kernel model's compute time the stack reaches at matrix-unit "
             "precisions"),
    Constant("memory_factor", "stack", 1e-3, 2.0,
             "fraction of the measured bandwidth the stack's memory-bound kernels reach"),
    Constant("compute_efficiency", "device", 1e-3, 1.0,
             "large-GEMM fraction of the dense peak (the kernel model's GEMM ceiling)"),
    Constant("memory_efficiency", "device", 1e-3, 1.0,
             "achievable fraction of the HBM (memory) bandwidth"),
    Constant("launch_overhead_s", "device", 0.0, 1e-2,
             "host time to dispatch one op (s)"),
    Constant("efficiency", "link", 1e-3, 1.0,
             "achievable fraction of the link's bandwidth in bulk transfers"),
    Constant("latency_s", "link", 0.0, 1e-2, "one-way latency of one hop of the link (s)"),
)}
"""Every constant a calibration file may set, by name. Add a constant here (a field of the
target's catalog entry) and ``hwsim calibrate`` can fit it and a calibration file set it."""

RETIRED = {"framework_compute_factor": "compute_factor",
           "framework_memory_factor": "memory_factor"}
"""Device constants of earlier calibration files that are now a software stack's."""

Key = tuple[str, str, str]
"""A constant of one catalog entry: ``(target, id, constant name)``, e.g.
``("stack", "megatron-2020", "compute_factor")`` or ``("link", "nvlink3", "efficiency")``."""


def label(key: Key) -> str:
    """The name of a constant on the command line and in reports: ``ID:constant`` for a device
    or link, ``stack:NAME:constant`` for a software stack."""
    return f"{'stack:' if key[0] == 'stack' else ''}{key[1]}:{key[2]}"


def current(key: Key, overrides: Mapping[Key, float] | None = None) -> float:
    """The value of *key* in a run with *overrides* (else the catalog's): the getter."""
    if overrides and key in overrides:
        return float(overrides[key])
    target, ident, name = key
    value = getattr(TARGETS[target].get(ident), name)
    return float(CONSTANTS[name].unset if value is None else value)


def apply(graph: nx.Graph, overrides: Mapping[Key, float]) -> nx.Graph:
    """Put *overrides* into *graph* (in place; returned), the setter: device constants as
    replaced specs in ``graph.graph["device_specs"]``, stack constants as replaced profiles in
    ``graph.graph["stack_profiles"]``, link constants on every edge of that link."""
    fields: dict[str, dict[str, dict[str, float]]] = {t: {} for t in TARGETS}
    for (target, ident, name), value in overrides.items():
        if name not in CONSTANTS or CONSTANTS[name].target != target:
            raise ValueError(f"{name!r} is not a {target} constant; valid: "
                             f"{', '.join(n for n, c in CONSTANTS.items() if c.target == target)}")
        entry = TARGETS[target].get(ident)
        fields[target].setdefault(entry.id if target != "stack" else entry.name, {})[name] = \
            float(value)
    for attr, target in ((DEVICE_SPECS, "device"), (STACK_PROFILES, "stack")):
        if not fields[target]:
            continue
        entries = dict(graph.graph.get(attr, {}))
        for ident, values in fields[target].items():
            entries[ident] = replace(entries.get(ident, TARGETS[target].get(ident)), **values)
        graph.graph[attr] = entries
    if fields["link"]:
        for _, _, d in graph.edges(data=True):
            values = fields["link"].get(d.get("link"))
            if values:
                d.update(values)
    return graph


# -- the file ---------------------------------------------------------------------------------
_TOP = ("hwsim_calibration", *(t.section for t in TARGETS.values()), "report", "notes")
_ENTRY = ("value", "catalog", "fitted_to", "error_before", "error_after", "loo_error", "rows",
          "note")


def read_calibration(path: str | Path, *, field: str = "calibration",
                     scenario: str | None = None) -> dict[Key, float]:
    """The constants of the calibration file *path*, validated. Errors name the calibration file,
    the field inside it and what would be valid; a missing file is reported against *scenario*'s
    *field*."""
    p = Path(path)
    if not p.is_file():
        raise ScenarioError(f"no such calibration file {str(p)!r} (a YAML file written by `hwsim "
                            "calibrate`; a relative path is read from the scenario's folder)",
                            file=scenario, field=field)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).replace("\n", " ")[:200]
        raise ScenarioError(f"not valid YAML ({first})", file=str(p)) from None
    return parse_calibration(data, file=str(p))


def parse_calibration(data: Any, file: str | None = None) -> dict[Key, float]:
    """The constants of a parsed calibration mapping (see the module doc), validated."""
    def err(msg: str, where: str | None = None) -> ScenarioError:
        return ScenarioError(msg, file=file, field=where)
    sections = ", ".join(f"{t.section}:" for t in TARGETS.values())
    if not isinstance(data, dict):
        raise err(f"a calibration file is a mapping with hwsim_calibration: 1 and {sections} "
                  "sections, as `hwsim calibrate` writes it")
    unknown = [k for k in data if k not in _TOP]
    if unknown:
        raise err(f"unknown key {unknown[0]!r}; valid keys: {', '.join(_TOP)}")
    version = data.get("hwsim_calibration", VERSION)
    if version != VERSION:
        raise err(f"version {version!r} is not understood; valid: {VERSION}", "hwsim_calibration")
    out: dict[Key, float] = {}
    for target in TARGETS.values():
        section = target.section
        body = data.get(section) or {}
        if not isinstance(body, dict):
            raise err(f"must map {target.name} ids to constants, e.g. {target.example}", section)
        valid = [n for n, c in CONSTANTS.items() if c.target == target.name]
        for ident, consts in body.items():
            where = f"{section}.{ident}"
            canonical = target.canonical(str(ident))
            if canonical is None:
                raise err(target.unknown(str(ident)), where)
            if not isinstance(consts, dict) or not consts:
                raise err(f"must map constant names to values; valid names: {', '.join(valid)}",
                          where)
            for name, entry in consts.items():
                out[(target.name, canonical, str(name))] = _value(
                    name, entry, target.name, valid, f"{where}.{name}", err)
    return out


def _value(name: Any, entry: Any, target: str, valid: list[str], where: str, err) -> float:
    if name not in valid:
        if name in RETIRED and target == "device":
            raise err(f"{name} is no longer a device constant: it is the software stack's "
                      f"{RETIRED[name]} (the device catalog carries no framework factors); valid "
                      f"device constants: {', '.join(valid)}; write it as stacks: {{STACK: "
                      f"{{{RETIRED[name]}: VALUE}}}} for the stack your runs use", where)
        close = suggest_ids(str(name), valid)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise err(f"unknown {target} constant {name!r}; {hint}valid: {', '.join(valid)}", where)
    if isinstance(entry, dict):
        extra = [k for k in entry if k not in _ENTRY]
        if extra:
            raise err(f"unknown key {extra[0]!r}; valid keys: {', '.join(_ENTRY)}", where)
        if "value" not in entry:
            raise err("missing value (e.g. value: 0.8)", where)
        entry = entry["value"]
    c = CONSTANTS[name]
    if isinstance(entry, bool) or not isinstance(entry, (int, float)) or not math.isfinite(entry) \
            or not c.lo <= entry <= c.hi:
        raise err(f"{entry!r} is not a valid {name} ({c.doc}); valid: a number in "
                  f"[{c.lo:g}, {c.hi:g}]", where)
    return float(entry)
