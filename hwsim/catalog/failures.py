"""Failure profiles (``hwsim/catalog/data/failures.yaml``): published interruption counts of large
training runs turned into failure rates per unit of the class each cause scales with.

A cause observed ``count`` times in ``duration`` on a cluster of ``setting[per]`` units has the
rate ``count / (duration x setting[per])`` per unit and second. Loaded once; every problem in the
file is a :class:`~hwsim.exceptions.ScenarioError` naming the profile and the field.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import yaml

from hwsim.exceptions import ScenarioError
from hwsim.units import UnitError, parse_quantity

__all__ = ["COMPONENTS", "SCALES", "FailureProfile", "ProfileCause", "failure_profile",
           "PROFILES"]

COMPONENTS = ("gpu", "node", "nic", "link", "switch", "storage", "software")
"""Component classes a failure is charged to."""
SCALES = ("gpu", "node")
"""Classes a profile's cause may scale with (``per``): the counts its source states."""
PROFILES = ("llama3", "bloom")
"""Profiles in the data file."""


@dataclass(frozen=True)
class ProfileCause:
    """One cause of a profile: *count* interruptions charged to *component*, scaling with *per*;
    *rate_per_unit_s* = count / (duration x units of *per* in the source's cluster)."""

    cause: str
    component: str
    per: str
    count: int
    rate_per_unit_s: float


@dataclass(frozen=True)
class FailureProfile:
    """A named profile: its source, the observed setting (``units`` of gpu and node,
    ``duration_s``) and its causes."""

    name: str
    source: str
    units: dict[str, float]
    duration_s: float
    causes: tuple[ProfileCause, ...]


def _parse(name: str, entry: dict) -> FailureProfile:
    def bad(field: str, why: str) -> ScenarioError:
        return ScenarioError(why, file="hwsim/catalog/data/failures.yaml", field=f"{name}.{field}")

    setting = entry.get("setting") or {}
    try:
        duration = parse_quantity(setting.get("duration"), "time")
    except UnitError as err:
        raise bad("setting.duration", str(err)) from None
    units = {k: float(setting[k if k != "gpu" else "gpus"]) for k in SCALES
             if setting.get(k if k != "gpu" else "gpus")}
    causes = []
    for cause, c in (entry.get("causes") or {}).items():
        if c.get("component") not in COMPONENTS:
            raise bad(f"causes.{cause}.component", f"{c.get('component')!r} is not one of "
                      f"{', '.join(COMPONENTS)}")
        if c.get("per") not in units:
            raise bad(f"causes.{cause}.per", f"{c.get('per')!r} is not a unit the setting "
                      f"counts ({', '.join(units)})")
        if not isinstance(c.get("count"), int) or c["count"] < 0:
            raise bad(f"causes.{cause}.count", "must be a whole number >= 0")
        causes.append(ProfileCause(cause, c["component"], c["per"], c["count"],
                                   c["count"] / (duration * units[c["per"]])))
    if not causes or not entry.get("source"):
        raise bad("causes", "a profile needs a source and at least one cause")
    return FailureProfile(name, entry["source"], units, duration, tuple(causes))


@functools.lru_cache(maxsize=None)
def failure_profile(name: str) -> FailureProfile:
    """The profile *name* (one of :data:`PROFILES`), parsed once."""
    text = resources.files("hwsim.catalog").joinpath("data", "failures.yaml").read_text()
    data = yaml.safe_load(text)
    if name not in data:
        raise ScenarioError(f"unknown failure profile {name!r}; valid: {', '.join(sorted(data))}",
                            field="workload.failures.profile")
    return _parse(name, data[name])
