"""Calibration files (``calibration: FILE`` in a scenario): fitted values of named model constants
that replace the catalog's for the run of that scenario only (docs/calibration.md).

A calibration file is YAML written by ``hwsim calibrate`` (or by hand)::

    hwsim_calibration: 1
    devices:
      H100-SXM5-80GB:
        framework_compute_factor: {value: 0.55, catalog: 0.619, fitted_to: "...",
                                   error_before: 0.12, error_after: 0.01, loo_error: 0.02}
    links:
      nvlink4:
        efficiency: 0.80            # a bare number is a value too

:data:`CONSTANTS` is the table of constants a file may set: each names its target (a catalog
device or link), the field it replaces and its valid range; :func:`current` reads a constant's
value for a run, :func:`apply` puts a set of values into one run's topology graph. Nothing is
global: device constants go into the graph's ``device_specs`` mapping (catalog id -> a
``dataclasses.replace``-d :class:`~hwsim.catalog.specs.DeviceSpec`, which
:class:`hwsim.jobs.system.System` prefers to the catalog's), link constants into the attributes
of that graph's edges of the link, so the catalog itself is never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import networkx as nx
import yaml

from hwsim.catalog import get_device, get_link, load_catalog
from hwsim.catalog.loader import suggest_ids
from hwsim.exceptions import ScenarioError

__all__ = ["Constant", "CONSTANTS", "Key", "current", "apply", "read_calibration",
           "parse_calibration", "VERSION", "DEVICE_SPECS"]

VERSION = 1
"""Value of ``hwsim_calibration:`` in the files this version writes and reads."""
DEVICE_SPECS = "device_specs"
"""Graph attribute (``graph.graph[...]``) with the run's replaced device specs by catalog id."""


@dataclass(frozen=True)
class Constant:
    """A model constant a calibration may set: ``target`` is ``device`` (a
    :class:`~hwsim.catalog.specs.DeviceSpec` field) or ``link`` (a
    :class:`~hwsim.catalog.specs.LinkSpec` field, copied onto the graph's edges of that link);
    values lie in ``[lo, hi]``; ``unset`` is its value where the catalog has none."""

    name: str
    target: str
    lo: float
    hi: float
    doc: str
    unset: float | None = None


CONSTANTS: dict[str, Constant] = {c.name: c for c in (
    Constant("framework_compute_factor", "device", 1e-3, 2.0,
             "in-framework fraction of the GEMM efficiency at matrix-unit precisions", 1.0),
    Constant("framework_memory_factor", "device", 1e-3, 2.0,
             "in-framework fraction of the memory-bound ops' bandwidth", 1.0),
    Constant("compute_efficiency", "device", 1e-3, 1.0,
             "large-GEMM fraction of the dense peak"),
    Constant("memory_efficiency", "device", 1e-3, 1.0,
             "achievable fraction of the HBM (memory) bandwidth"),
    Constant("launch_overhead_s", "device", 0.0, 1e-2,
             "host time to dispatch one op (s)"),
    Constant("efficiency", "link", 1e-3, 1.0,
             "achievable fraction of the link's bandwidth in bulk transfers"),
    Constant("latency_s", "link", 0.0, 1e-2, "one-way latency of one hop of the link (s)"),
)}
"""Every constant a calibration file may set, by name. Add a constant here (and, for a device,
a field of DeviceSpec) and ``hwsim calibrate`` can fit it."""

Key = tuple[str, str, str]
"""A constant of one catalog entry: ``(target, catalog id, constant name)``, e.g.
``("device", "H100-SXM5-80GB", "framework_compute_factor")``."""


def current(key: Key, overrides: Mapping[Key, float] | None = None) -> float:
    """The value of *key* in a run with *overrides* (else the catalog's)."""
    if overrides and key in overrides:
        return float(overrides[key])
    target, ident, name = key
    spec = get_device(ident) if target == "device" else get_link(ident)
    value = getattr(spec, name)
    return float(CONSTANTS[name].unset if value is None else value)


def apply(graph: nx.Graph, overrides: Mapping[Key, float]) -> nx.Graph:
    """Put *overrides* into *graph* (in place; returned): device constants as replaced specs in
    ``graph.graph["device_specs"]``, link constants on every edge of that link."""
    devices: dict[str, dict[str, float]] = {}
    links: dict[str, dict[str, float]] = {}
    for (target, ident, name), value in overrides.items():
        if name not in CONSTANTS or CONSTANTS[name].target != target:
            raise ValueError(f"{name!r} is not a {target} constant; valid: "
                             f"{', '.join(n for n, c in CONSTANTS.items() if c.target == target)}")
        (devices if target == "device" else links).setdefault(ident, {})[name] = float(value)
    specs = dict(graph.graph.get(DEVICE_SPECS, {}))
    for ident, fields in devices.items():
        spec = specs.get(get_device(ident).id, get_device(ident))
        specs[spec.id] = replace(spec, **fields)
    if specs:
        graph.graph[DEVICE_SPECS] = specs
    if links:
        ids = {get_link(i).id: f for i, f in links.items()}
        for _, _, d in graph.edges(data=True):
            fields = ids.get(d.get("link"))
            if fields:
                d.update(fields)
    return graph


# -- the file ---------------------------------------------------------------------------------
_SECTIONS = {"devices": "device", "links": "link"}
_TOP = ("hwsim_calibration", "devices", "links", "report", "notes")
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
    if not isinstance(data, dict):
        raise err("a calibration file is a mapping with hwsim_calibration: 1 and devices: and/or "
                  "links: sections, as `hwsim calibrate` writes it")
    unknown = [k for k in data if k not in _TOP]
    if unknown:
        raise err(f"unknown key {unknown[0]!r}; valid keys: {', '.join(_TOP)}")
    version = data.get("hwsim_calibration", VERSION)
    if version != VERSION:
        raise err(f"version {version!r} is not understood; valid: {VERSION}", "hwsim_calibration")
    out: dict[Key, float] = {}
    catalog = load_catalog()
    for section, target in _SECTIONS.items():
        body = data.get(section) or {}
        if not isinstance(body, dict):
            raise err(f"must map catalog {target} ids to constants, e.g. "
                      f"{'H100-SXM5-80GB' if target == 'device' else 'nvlink4'}: "
                      f"{{{'framework_compute_factor' if target == 'device' else 'efficiency'}:"
                      " 0.8}", section)
        table = catalog.devices if target == "device" else catalog.links
        index = {k.lower(): k for k in table}
        valid = [n for n, c in CONSTANTS.items() if c.target == target]
        for ident, consts in body.items():
            where = f"{section}.{ident}"
            canonical = index.get(str(ident).strip().lower())
            if canonical is None:
                close = suggest_ids(str(ident), table)
                hint = (f"did you mean {', '.join(map(repr, close))}? " if close else "")
                raise err(f"unknown {target} id {ident!r}; {hint}valid: a catalog {target} id "
                          f"(`hwsim catalog {section}`)", where)
            if not isinstance(consts, dict) or not consts:
                raise err(f"must map constant names to values; valid names: {', '.join(valid)}",
                          where)
            for name, entry in consts.items():
                out[(target, canonical, str(name))] = _value(name, entry, target, valid,
                                                             f"{where}.{name}", err)
    return out


def _value(name: Any, entry: Any, target: str, valid: list[str], where: str, err) -> float:
    if name not in valid:
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
