"""Quantities: one parser from human units to SI base units. Imports nothing from hwsim.

Inside hwsim every quantity is a float in SI base units (seconds, bytes, FLOP, bytes/s, FLOP/s,
watts, US dollars) and names carry the unit (``latency_s``, ``bw_bytes_per_s``). Human units
(``"80 GB"``, ``"2.039 TB/s"``, ``"200 Gb/s"``, ``"312 TFLOP/s"``, ``"1.5 us"``) are converted once,
where data enters (catalog load, scenario validation), by :func:`parse_quantity`.

Decimal prefixes are powers of 1000 (``GB`` = 1e9 bytes); binary prefixes are powers of 1024
(``GiB`` = 2**30 bytes). A lower-case ``b`` means bits (``Gb/s`` = 1e9 bits/s = 1.25e8 bytes/s).
"""

from __future__ import annotations

import difflib
import re
from typing import Final

__all__ = [
    "Seconds", "Bytes", "Flops", "BytesPerSecond", "FlopsPerSecond",
    "DIMENSIONS", "parse_quantity", "format_quantity", "UnitError",
]

Seconds = float
Bytes = float
Flops = float
BytesPerSecond = float
FlopsPerSecond = float


class UnitError(ValueError):
    """A quantity string that cannot be read in the dimension asked for."""


_DEC = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BIN = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}


def _prefixed(base: dict[str, float], scale: float = 1.0, binary: bool = False) -> dict[str, float]:
    out: dict[str, float] = {}
    for unit, factor in base.items():
        for p, f in _DEC.items():
            out[p + unit] = f * factor * scale
        if binary:
            for p, f in _BIN.items():
                out[p + unit] = f * factor * scale
    return out


_BYTES = {**_prefixed({"B": 1.0}, binary=True), **_prefixed({"b": 0.125}, binary=True),
          **_prefixed({"bit": 0.125}), **_prefixed({"byte": 1.0}), **_prefixed({"bytes": 1.0})}
_BYTES_PER_S = {**{u + "/s": f for u, f in _BYTES.items()}, **_prefixed({"bps": 0.125})}
_FLOPS = {**_prefixed({"FLOP": 1.0}), **_prefixed({"FLOPs": 1.0}), **_prefixed({"flop": 1.0})}
_FLOPS_PER_S = {**{u + "/s": f for u, f in _FLOPS.items()}, **_prefixed({"FLOPS": 1.0})}
_TIME = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0,
         "h": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0,
         "days": 86400.0}
_POWER = _prefixed({"W": 1.0})
_RATE = {"/s": 1.0, "1/s": 1.0, "Hz": 1.0, **_prefixed({"IOPS": 1.0}), "/h": 1 / 3600.0,
         "/min": 1 / 60.0, "/d": 1 / 86400.0}
_USD = {"$": 1.0, "USD": 1.0, "usd": 1.0}
_USD_PER_H = {"$/h": 1.0, "$/hour": 1.0, "USD/h": 1.0, "usd/h": 1.0, "$/hr": 1.0}

DIMENSIONS: Final[dict[str, dict[str, float]]] = {
    "bytes": _BYTES,
    "bytes_per_s": _BYTES_PER_S,
    "flops": _FLOPS,
    "flops_per_s": _FLOPS_PER_S,
    "time": _TIME,
    "power": _POWER,
    "rate": _RATE,
    "usd": _USD,
    "usd_per_h": _USD_PER_H,
    "dimensionless": {"": 1.0, "%": 0.01},
}
"""Known dimensions and, for each, the accepted unit symbols with their factor to SI."""

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_QTY = re.compile(rf"^\s*(?P<pre>\$)?\s*(?P<num>{_NUM})\s*(?P<unit>[^\s\d].*?)?\s*$")


def parse_quantity(value: object, dimension: str) -> float:
    """Return *value* in SI base units of *dimension*.

    Parameters
    ----------
    value : str | int | float
        A bare number (taken as already in SI base units), the same written as a string
        (``"1e13"``), or a string such as ``"80 GB"``, ``"2.039 TB/s"``, ``"200 Gb/s"``,
        ``"1.5 us"``, ``"$2.50/h"``.
    dimension : str
        One of :data:`DIMENSIONS`.

    Raises
    ------
    UnitError
        If the string cannot be read, or its unit belongs to another dimension. The message
        suggests the likely unit (``"10 GB"`` for a bandwidth: ``"10 GB/s"``) and lists common
        valid ones.

    Examples
    --------
    >>> parse_quantity("200 Gb/s", "bytes_per_s")
    25000000000.0
    >>> parse_quantity("1 GiB", "bytes")
    1073741824.0
    """
    if dimension not in DIMENSIONS:
        raise UnitError(f"unknown dimension {dimension!r}; valid: {sorted(DIMENSIONS)}")
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a quantity")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise UnitError(f"{value!r} is not a quantity (expected a number or a string like '80 GB')")
    m = _QTY.match(value)
    if not m:
        raise UnitError(f"cannot read {value!r} as a quantity (expected e.g. {_example(dimension)!r})")
    number = float(m.group("num"))
    unit = (m.group("unit") or "").replace(" ", "")
    if m.group("pre"):
        unit = "$" + unit if unit else "$"
    table = DIMENSIONS[dimension]
    if unit in table:
        return number * table[unit]
    if not unit:  # a plain number written as text (YAML 1.1 reads 1e13 as a string): SI units
        return number
    owner = next((d for d, units in DIMENSIONS.items() if unit in units), None)
    hints = " or ".join(f"'{m.group('num')} {u}'" for u in _did_you_mean(unit, table))
    raise UnitError(f"unit {unit!r} in {value!r} is not a unit of {dimension}"
                    + (f" ({unit} measures {owner})" if owner else "")
                    + (f"; did you mean {hints}? Valid" if hints else "; valid")
                    + f" units include: {_COMMON[dimension]}")


#: the units an error message suggests first, per dimension (every prefix works: DIMENSIONS)
_COMMON: Final[dict[str, str]] = {
    "bytes": "B, kB, MB, GB, TB, KiB, MiB, GiB, TiB, Gb (bits)",
    "bytes_per_s": "B/s, kB/s, MB/s, GB/s, TB/s, GiB/s, Gb/s (bits), Gbps",
    "flops": "FLOP, GFLOP, TFLOP, PFLOP", "flops_per_s": "GFLOP/s, TFLOP/s, PFLOP/s, TFLOPS",
    "time": "ns, us, ms, s, min, h, d", "power": "W, kW, MW",
    "rate": "/s, /min, /h, /d, Hz, IOPS, kIOPS", "usd": "$, USD", "usd_per_h": "$/h, USD/h",
    "dimensionless": "a plain number or %"}


def _did_you_mean(unit: str, table: dict[str, float]) -> list[str]:
    """The units of *table* that *unit* most likely meant: a size where a bandwidth is expected
    (``GB`` -> ``GB/s``), a bandwidth where a size is (``kB/s`` -> ``kB``), another case
    (``gb/s`` -> ``GB/s`` or ``Gb/s``), else the nearest spelling."""
    for guess in (unit + "/s", unit + "/h", unit.removesuffix("/s")):
        if guess != unit and guess in table:
            return [guess]
    same = [u for u in table if u.lower() == unit.lower()]
    return same[:2] or difflib.get_close_matches(unit, [u for u in table if u], n=1, cutoff=0.75)


def _example(dimension: str) -> str:
    return {"bytes": "80 GB", "bytes_per_s": "25 GB/s", "flops": "3.1 TFLOP",
            "flops_per_s": "312 TFLOP/s", "time": "1.5 us", "power": "400 W", "rate": "1000 IOPS",
            "usd": "$15000", "usd_per_h": "$2.5/h", "dimensionless": "0.9"}[dimension]


def format_quantity(value: float, unit: str, digits: int = 3) -> str:
    """Format an SI *value* with a decimal prefix: ``format_quantity(2.5e10, "B/s") == "25 GB/s"``."""
    if value == 0 or value != value:
        return f"{value:g} {unit}"
    for prefix, f in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= f:
            return f"{value / f:.{digits}g} {prefix}{unit}"
    if unit == "s" and abs(value) < 1:
        for prefix, f in (("m", 1e-3), ("u", 1e-6), ("n", 1e-9)):
            if abs(value) >= f:
                return f"{value / f:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"
