"""Load the hardware catalog (``hwsim/catalog/data/*.yaml``) into spec objects in SI units, once.

Human units are converted by :func:`hwsim.units.parse_quantity`; entries are validated strictly and every
problem is a :class:`~hwsim.exceptions.ScenarioError` naming the file, the entry and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from hwsim.catalog.kernels import ATTENTION_FAMILIES, KernelSpec
from hwsim.catalog.specs import (DEVICE_KINDS, DTYPES, LINK_CLASSES, STORAGE_KINDS, DeviceSpec,
                                 LinkSpec, StorageSpec)
from hwsim.exceptions import ScenarioError
from hwsim.units import UnitError, parse_quantity

__all__ = ["Catalog", "load_catalog", "parse_catalog_file", "get_device", "get_link", "get_storage",
           "catalog_rows", "fit_compute_ramp", "suggest_ids", "check_host_links",
           "parse_kernels_file", "SECTIONS", "FIELDS", "unmeasured", "STAND_IN_MARKERS"]

SECTIONS = ("devices", "links", "storage")
#: per section, YAML key -> how it is read (a parse_quantity dimension, "str", "int", "peak",
#: "efficiency", "bool" or "link": a link id of links.yaml; a trailing "?" marks it optional). Every value
#: not read as "str" needs a source.
FIELDS: dict[str, dict[str, str]] = {
    "devices": dict(kind="str", name="str", peak="peak", memory="bytes", mem_bw="bytes_per_s",
                    compute_efficiency="efficiency", compute_ramp="flops", memory_efficiency="efficiency",
                    launch_overhead="time", framework_compute_factor="efficiency?",
                    framework_memory_factor="efficiency?", idle_power="power", peak_power="power", busy_power="power?",
                    cores="int?",
                    threads="int?",
                    price="usd?", price_per_hour="usd_per_h?", price_date="str?", host_link="link?",
                    fp8_any_layout="bool?", gemm_ceiling="ceilings?"),
    "links": {"class": "str", "name": "str", "bw": "bytes_per_s", "latency": "time",
              "efficiency": "efficiency", "power": "power?"},
    "storage": dict(kind="str", name="str", read_bw="bytes_per_s", write_bw="bytes_per_s", read_iops="rate",
                    write_iops="rate", latency="time", capacity="bytes", client_bw="bytes_per_s?",
                    idle_power="power?", active_power="power?", price="usd?", price_per_hour="usd_per_h?", price_date="str?"),
}
# the spec field a YAML key fills is key + suffix of its dimension (mem_bw -> mem_bw_bytes_per_s) ...
_SUFFIX = {"bytes": "_bytes", "bytes_per_s": "_bytes_per_s", "flops": "_flops", "time": "_s", "power": "_w",
           "usd": "_usd", "peak": "_flops_per_s"}
_RENAME = {"class": "link_class", "price_per_hour": "price_usd_per_hour"}  # ... except these
_CHOICES = {"devices": ("kind", DEVICE_KINDS), "links": ("class", LINK_CLASSES), "storage": ("kind", STORAGE_KINDS)}
_SPECS = {"devices": DeviceSpec, "links": LinkSpec, "storage": StorageSpec}


class _NoDuplicateKeys:
    """Refuses duplicate keys (plain PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        construct = self.construct_object  # type: ignore[attr-defined]
        keys = [construct(k, deep=deep) for k, _ in node.value]
        if len(set(map(repr, keys))) < len(keys):
            raise yaml.constructor.ConstructorError(None, None, "duplicate key", node.start_mark)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class _StrictLoader(_NoDuplicateKeys, yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys."""


_FAST = ({True: type("_FastStrictLoader", (_NoDuplicateKeys, yaml.CSafeLoader), {}),
          False: yaml.CSafeLoader} if getattr(yaml, "__with_libyaml__", False) else {})
_SLOW = {True: _StrictLoader, False: yaml.SafeLoader}


def read_yaml_file(path: str, *, strict: bool = True) -> Any:
    """The YAML document of the file *path* (with *strict*, duplicate keys are errors). libyaml
    parses it where PyYAML has it (several times faster: every run and ``hwsim validate`` read
    the packaged catalog); a document it refuses is parsed again by the pure-Python parser,
    which raises the error, so the message and its marks are the same either way. OSError and
    yaml.YAMLError propagate."""
    with open(path, encoding="utf-8") as fh:
        if strict in _FAST:
            try:
                return yaml.load(fh, Loader=_FAST[strict])  # noqa: S506 - a SafeLoader
            except yaml.YAMLError:
                fh.seek(0)
        return yaml.load(fh, Loader=_SLOW[strict])  # noqa: S506 - a SafeLoader (subclass)


def _value(raw: Any, how: str, err: Callable[[str], ScenarioError]) -> Any:
    """Convert one YAML value read as *how*; *err(reason)* builds the error to raise."""
    if how in ("str", "link") and not (isinstance(raw, str) and raw.strip()):
        raise err(f"expected a non-empty string, got {raw!r}")
    if how == "int" and (isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0):
        raise err(f"expected a positive integer, got {raw!r}")
    if how == "bool" and not isinstance(raw, bool):
        raise err(f"expected true or false, got {raw!r}")
    if how in ("str", "int", "link", "bool"):
        return raw
    try:
        x = parse_quantity(raw, "dimensionless" if how == "efficiency" else how)
    except UnitError as exc:
        raise err(str(exc)) from None
    if not (math.isfinite(x) and x > 0.0 and (how != "efficiency" or x <= 1.0)):
        raise err(f"must be {'an efficiency in (0, 1]' if how == 'efficiency' else 'a positive finite quantity'}"
                  f", got {raw!r}")
    return x


def _entry(path: str, section: str, key: str, body: Any) -> Any:
    """Validate one catalog entry and build its spec object."""
    def err(field: str | None) -> Callable[[str], ScenarioError]:
        return lambda reason: ScenarioError(reason, file=path, field=f"{key}.{field}" if field else key)
    fields = FIELDS[section]
    if not isinstance(body, dict):
        raise err(None)(f"an entry must be a mapping of fields, got {type(body).__name__}")
    for k in body:
        if k not in fields and k != "sources":
            raise err(k)(f"unknown field; valid fields: {', '.join([*fields, 'sources'])}")
    sources = body.get("sources") or {}
    if not isinstance(sources, dict):
        raise err("sources")("expected a mapping of field name to source text")
    kwargs: dict[str, Any] = {"id": key}
    cited: dict[str, str] = {}
    for ykey, how in fields.items():
        how, optional, raw = how.rstrip("?"), how.endswith("?"), body.get(ykey)
        attr = _RENAME.get(ykey) or ykey + _SUFFIX.get(how, "")
        if raw is None:
            if not optional:
                raise err(ykey)("missing required field")
            continue
        if how == "ceilings":
            if not isinstance(raw, dict) or not raw or any(d not in DTYPES for d in raw):
                raise err(ykey)("expected a mapping of precision to the fraction of its dense "
                                "peak a large GEMM reaches, e.g. {fp8: 0.49}; precisions: "
                                + ", ".join(DTYPES))
            kwargs[attr] = {d: _value(v, "efficiency", err(f"{ykey}.{d}")) for d, v in raw.items()}
        elif how == "peak":
            if not isinstance(raw, dict) or not raw:
                raise err(ykey)("expected a mapping of precision to FLOP/s, e.g. {bf16: 312 TFLOP/s}")
            for d in raw:
                if d not in DTYPES:
                    raise err(f"{ykey}.{d}")(f"unknown precision; valid: {', '.join(DTYPES)}")
            kwargs[attr] = {d: _value(v, "flops_per_s", err(f"{ykey}.{d}")) for d, v in raw.items()}
        else:
            kwargs[attr] = _value(raw, how, err(ykey))
        if how != "str":
            text = sources.get(ykey)
            if not isinstance(text, str) or not text.strip():
                raise err(f"sources.{ykey}")("every number needs a source (datasheet, URL or calibration key)")
            cited[attr] = " ".join(text.split())
    for k in sources:
        if body.get(k) is None:
            raise err(f"sources.{k}")("source given for a field the entry does not set")
    choice_key, choices = _CHOICES[section]
    if body[choice_key] not in choices:
        raise err(choice_key)(f"{body[choice_key]!r} is not valid; valid: {', '.join(choices)}")
    if ("price_usd" in kwargs or "price_usd_per_hour" in kwargs) != ("price_date" in kwargs):
        raise err("price_date")("a price needs a price_date, and a price_date needs a price")
    return _SPECS[section](**kwargs, sources=cited)


def parse_catalog_file(path: str | Path, section: str) -> dict[str, Any]:
    """Parse and validate one catalog YAML file (a mapping of id to entry) of *section*.

    Returns
    -------
    dict
        Catalog id to DeviceSpec, LinkSpec or StorageSpec (for devices, links, storage), in file order.

    Raises
    ------
    ScenarioError
        Unreadable YAML, a duplicate id (ids are case-insensitive) or an invalid entry.
    """
    _check_section(section)
    path = str(path)
    try:
        data = read_yaml_file(path)
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read catalog file: {exc}", file=path) from None
    if not isinstance(data, dict) or not data:
        raise ScenarioError("a catalog file must be a non-empty mapping of id to entry", file=path)
    out: dict[str, Any] = {}
    for key, body in data.items():
        if not isinstance(key, str) or not key.strip():
            raise ScenarioError(f"catalog ids must be non-empty strings, got {key!r}", file=path)
        clash = next((k for k in out if k.lower() == key.lower()), None)
        if clash:
            raise ScenarioError(f"id clashes with {clash!r} (ids are case-insensitive)", file=path, field=key)
        out[key] = _entry(path, section, key, body)
    return out


def _check_section(section: str) -> None:
    if section not in SECTIONS:
        raise ScenarioError(f"unknown catalog section {section!r}; valid sections: {', '.join(SECTIONS)}")


def _lookup(table: Mapping[str, Any], wanted: object, what: str) -> Any:
    index = {k.lower(): k for k in table}
    if isinstance(wanted, str) and wanted.strip().lower() in index:
        return table[index[wanted.strip().lower()]]
    close = suggest_ids(str(wanted), table)
    if not close:
        raise ScenarioError(f"unknown {what} id {wanted!r}; valid {what} ids: "
                            f"{', '.join(sorted(table, key=str.lower))}")
    names = [repr(c) for c in close]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    section = {"device": "devices", "link": "links"}.get(what, what)
    raise ScenarioError(f"unknown {what} id {wanted!r}; did you mean {listed}? (every {what} id: "
                        f"`hwsim catalog {section}`)")


def _squash(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def suggest_ids(wanted: str, ids: Iterable[str], n: int = 4) -> list[str]:
    """Up to *n* of *ids* closest to *wanted*, best first: ids that contain it (``A100`` ->
    the three A100s) and the nearest misspellings (difflib), compared without case or
    punctuation."""
    key, ids = _squash(wanted), list(ids)
    if not key:
        return []
    same = [i for i in ids if _squash(i) == key]
    if same:
        return same[:n]
    ratio = {i: difflib.SequenceMatcher(None, key, _squash(i)).ratio() for i in ids}
    cut = max(0.6, max(ratio.values(), default=0.0) - 0.05)
    hits = [i for i in ids if key in _squash(i) or ratio[i] >= cut]
    return sorted(hits, key=lambda i: -ratio[i])[:n]


@dataclass(frozen=True)
class Catalog:
    """Catalog entries keyed by canonical id.

    ``device``, ``link`` and ``storage_tier`` look an id up case-insensitively; an unknown id raises
    ScenarioError listing the valid ids and the closest match.
    """

    devices: Mapping[str, DeviceSpec]
    links: Mapping[str, LinkSpec]
    storage: Mapping[str, StorageSpec]

    def device(self, id: str) -> DeviceSpec:  # noqa: A002 - the catalog's own word
        """Return the compute device *id* (GPU, TPU chip or CPU socket)."""
        return _lookup(self.devices, id, "device")

    def link(self, id: str) -> LinkSpec:  # noqa: A002
        """Return the link technology *id*."""
        return _lookup(self.links, id, "link")

    def storage_tier(self, id: str) -> StorageSpec:  # noqa: A002
        """Return the storage or memory tier *id*."""
        return _lookup(self.storage, id, "storage")


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """Parse the packaged catalog files once (cached) and return the :class:`Catalog`."""
    with resources.as_file(resources.files("hwsim.catalog").joinpath("data")) as folder:
        parsed = {s: parse_catalog_file(Path(folder) / f"{s}.yaml", s) for s in SECTIONS}
        check_host_links(parsed["devices"], parsed["links"], str(Path(folder) / "devices.yaml"))
        kernels = parse_kernels_file(Path(folder) / "kernels.yaml", parsed["devices"])
    parsed["devices"] = {i: (dataclasses.replace(d, kernels=kernels[i]) if i in kernels else d)
                         for i, d in parsed["devices"].items()}
    return Catalog(**parsed)


def check_host_links(devices: Mapping[str, DeviceSpec], links: Mapping[str, LinkSpec],
                     path: str) -> None:
    """Every device's ``host_link`` names a ``pcie`` link of *links*; ScenarioError naming
    *path*, the device and the field otherwise."""
    pcie = sorted(k for k, v in links.items() if v.link_class == "pcie")
    for d in devices.values():
        if d.host_link is not None and d.host_link not in pcie:
            raise ScenarioError(f"{d.host_link!r} is not a PCIe link of links.yaml; valid: "
                                f"{', '.join(pcie)}", file=path, field=f"{d.id}.host_link")


def parse_kernels_file(path: str | Path, devices: Mapping[str, DeviceSpec]) -> dict[str, KernelSpec]:
    """Read the kernel model file (``data/kernels.yaml``): shared ``gemm_tile`` and
    ``gemm_latency``, and per device id of *devices* its ``sms`` and optional ``attention``
    ceilings. Every figure needs a source; errors name the file and the field."""
    path = str(path)

    def err(fld: str, reason: str) -> ScenarioError:
        return ScenarioError(reason, file=path, field=fld)
    try:
        raw = read_yaml_file(path)
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read the kernel model file: {exc}", file=path) from None
    if not isinstance(raw, dict):
        raise ScenarioError("expected a mapping with gemm_tile, gemm_latency, sources, devices",
                            file=path)
    for k in raw:
        if k not in ("gemm_tile", "gemm_latency", "sources", "devices"):
            raise err(k, "unknown field; valid fields: gemm_tile, gemm_latency, sources, devices")
    top = raw.get("sources") or {}
    for k in ("gemm_tile", "gemm_latency"):
        if not isinstance(top.get(k), str) or not top[k].strip():
            raise err(f"sources.{k}", "every number needs a source (datasheet, URL or "
                                      "calibration key)")
    tile = raw.get("gemm_tile")
    if (not isinstance(tile, list) or len(tile) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in tile)):
        raise err("gemm_tile", f"expected [rows, cols] of positive integers, got {tile!r}")
    latency = _value(raw.get("gemm_latency"), "time",
                     lambda reason: err("gemm_latency", reason))
    out: dict[str, KernelSpec] = {}
    entries = raw.get("devices") or {}
    if not isinstance(entries, dict):
        raise err("devices", "expected a mapping of device id to {sms, attention, sources}")
    for key, body in entries.items():
        if key not in devices:
            near = suggest_ids(str(key), devices)
            raise err(f"devices.{key}", "not a device of devices.yaml"
                      + (f"; did you mean {', '.join(near)}?" if near else ""))
        if not isinstance(body, dict):
            raise err(f"devices.{key}", "expected a mapping with sms, attention, sources")
        for k in body:
            if k not in ("sms", "attention", "gemm_ceiling", "sources"):
                raise err(f"devices.{key}.{k}", "unknown field; valid fields: sms, attention, "
                                                "gemm_ceiling, sources")
        src = body.get("sources") or {}
        sms = _value(body.get("sms"), "int", lambda reason: err(f"devices.{key}.sms", reason))
        attn = body.get("attention") or {}
        if not isinstance(attn, dict):
            raise err(f"devices.{key}.attention", "expected {FAMILY: {PRECISION: fraction}}; "
                                                  f"families: {', '.join(ATTENTION_FAMILIES)}")
        families: dict[str, dict[str, float]] = {}
        for fam, ceil in attn.items():
            at = f"devices.{key}.attention.{fam}"
            if fam not in ATTENTION_FAMILIES:
                raise err(at, f"unknown attention family; valid: {', '.join(ATTENTION_FAMILIES)}")
            if not isinstance(ceil, dict):
                raise err(at, "expected {PRECISION: fraction of the dense peak}")
            families[fam] = {}
            for d, v in ceil.items():
                if d not in DTYPES:
                    raise err(f"{at}.{d}", f"unknown precision; valid: {', '.join(DTYPES)}")
                families[fam][d] = _value(v, "efficiency",
                                          lambda reason, a=f"{at}.{d}": err(a, reason))
        gc_raw = body.get("gemm_ceiling") or {}
        if not isinstance(gc_raw, dict) or any(d not in DTYPES for d in gc_raw):
            raise err(f"devices.{key}.gemm_ceiling", "expected {PRECISION: fraction of the dense "
                                                     f"peak}}; precisions: {', '.join(DTYPES)}")
        gemm_ceiling = {d: _value(v, "efficiency", lambda reason, a=f"devices.{key}.gemm_ceiling."
                                  f"{d}": err(a, reason)) for d, v in gc_raw.items()}
        for k in ("sms",) + (("attention",) if attn else ()) + (
                ("gemm_ceiling",) if gemm_ceiling else ()):
            if not isinstance(src.get(k), str) or not src[k].strip():
                raise err(f"devices.{key}.sources.{k}", "every number needs a source "
                                                        "(datasheet, URL or calibration key)")
        cited = {f"kernel_{k}": " ".join(str(v).split()) for k, v in {**top, **src}.items()}
        out[key] = KernelSpec(sms=sms, tile=(tile[0], tile[1]), latency_s=latency,
                              attention_kernel=next(iter(families), None), attention=families,
                              gemm_ceiling=gemm_ceiling, sources=cited)
    return out


def get_device(id: str) -> DeviceSpec:  # noqa: A002
    """Shortcut for ``load_catalog().device(id)``."""
    return load_catalog().device(id)


def get_link(id: str) -> LinkSpec:  # noqa: A002
    """Shortcut for ``load_catalog().link(id)``."""
    return load_catalog().link(id)


def get_storage(id: str) -> StorageSpec:  # noqa: A002
    """Shortcut for ``load_catalog().storage_tier(id)``."""
    return load_catalog().storage_tier(id)


STAND_IN_MARKERS = re.compile(r"\bstand-in\b|\bsibling\b|\bestimate\b|\bassum"
                              r"|\bno [^.;]*measurement|\bnot fitted\b|\buncalibrated\b",
                              re.IGNORECASE)
"""What a ``sources`` text says when its figure is not a measurement or a datasheet figure of the
part itself: a stand-in (another part's measurement), an estimate or an assumption. The catalog
files write figures without a public measurement that way (their header comments)."""


def unmeasured(sources: Mapping[str, str], section: str = "devices") -> str:
    """The fields (YAML keys of *section*) of an entry whose source says they have no public
    measurement or datasheet figure of the part itself (:data:`STAND_IN_MARKERS`: a stand-in,
    a sibling part's figure, an estimate, an assumption), comma-separated in field order ("" if
    none). ``hwsim catalog`` prints it as the ``unmeasured`` column."""
    key = {_RENAME.get(k) or k + _SUFFIX.get(how.rstrip("?"), ""): k
           for k, how in FIELDS[section].items()}
    return ", ".join(key.get(k, k) for k, text in sources.items() if STAND_IN_MARKERS.search(text))


def catalog_rows(section: str) -> list[dict[str, Any]]:
    """One flat dict per entry of *section* (devices | links | storage), in human-friendly SI
    columns; the last, ``unmeasured``, names the figures that are stand-ins or estimates
    (:func:`unmeasured`)."""
    _check_section(section)
    cat = load_catalog()
    if section == "links":
        return [{"id": k.id, "class": k.link_class, "name": k.name, "bw_gb_per_s_per_direction": k.bw_bytes_per_s / 1e9,
                 "effective_bw_gb_per_s": k.effective_bw_bytes_per_s / 1e9, "latency_us": k.latency_s * 1e6,
                 "efficiency": k.efficiency, "unmeasured": unmeasured(k.sources, "links")}
                for k in cat.links.values()]
    if section == "storage":
        return [{"id": s.id, "kind": s.kind, "name": s.name, "read_gb_per_s": s.read_bw_bytes_per_s / 1e9,
                 "write_gb_per_s": s.write_bw_bytes_per_s / 1e9, "read_iops": s.read_iops, "write_iops": s.write_iops,
                 "latency_ms": s.latency_s * 1e3, "capacity_tb": s.capacity_bytes / 1e12,
                 "client_gb_per_s": (None if s.client_bw_bytes_per_s is None
                                     else s.client_bw_bytes_per_s / 1e9), "price_usd": s.price_usd,
                 "price_usd_per_hour": s.price_usd_per_hour, "price_date": s.price_date,
                 "unmeasured": unmeasured(s.sources, "storage")} for s in cat.storage.values()]
    return [{"id": d.id, "kind": d.kind, "name": d.name,
             **{f"{p}_tflops": d.peak_flops_per_s[p] / 1e12 if p in d.peak_flops_per_s else None for p in DTYPES},
             "memory_gb": d.memory_bytes / 1e9, "mem_bw_tb_per_s": d.mem_bw_bytes_per_s / 1e12,
             "compute_efficiency": d.compute_efficiency, "memory_efficiency": d.memory_efficiency,
             "framework_compute_factor": d.framework_compute_factor,
             "framework_memory_factor": d.framework_memory_factor,
             "launch_overhead_us": d.launch_overhead_s * 1e6, "idle_w": d.idle_power_w, "tdp_w": d.peak_power_w,
             "busy_w": d.busy_w,
             "cores": d.cores, "threads": d.threads, "price_usd": d.price_usd, "price_usd_per_hour": d.price_usd_per_hour,
             "price_date": d.price_date, "host_link": d.host_link,
             "unmeasured": unmeasured(d.sources)} for d in cat.devices.values()]


def fit_compute_ramp(points: Mapping[float, float], plateau_flops_per_s: float) -> tuple[float, list[float]]:
    """Fit ``ramp`` in ``achieved(f) = plateau * f / (f + ramp)`` to measured GEMM rates.

    *points* maps an op's FLOPs to its achieved FLOP/s; the plateau is ``compute_efficiency * peak``.
    Least squares on relative error, golden-section search over ``log10(ramp)`` in [3, 18]. Returns the
    ramp (FLOPs) and the residuals ``(model - measured) / measured`` in the order of *points*.
    """
    pts = [(float(f), float(y)) for f, y in points.items()]
    cost = lambda lr: sum((plateau_flops_per_s * f / (f + 10.0 ** lr) / y - 1.0) ** 2 for f, y in pts)  # noqa: E731
    lo, hi, g = 3.0, 18.0, (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(200):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        lo, hi = (lo, b) if cost(a) < cost(b) else (a, hi)
    ramp = 10.0 ** ((lo + hi) / 2.0)
    return ramp, [plateau_flops_per_s * f / (f + ramp) / y - 1.0 for f, y in pts]
