"""Energy of a compute device from its catalog power figures (docs/analysis.md, "Energy").

The model is linear in busy time: a device draws its idle power for the whole wall time and,
while busy, its busy power:

    energy_j = idle_power_w * wall_s + (busy_w - idle_power_w) * busy_s

the integral of the power model of :mod:`hwsim.analysis.power` (``P = idle + (busy - idle) *
u``) over the window. ``busy_w`` is the spec's measured busy power (``DeviceSpec.busy_w``: the
catalog's ``busy_power``, which is the TDP where no measurement is published, an upper bound);
a spec without one (anything with only ``idle_power_w`` and ``peak_power_w``) uses its
``peak_power_w``. ``idle_power_w`` is an idle draw (the catalog says which figures are
estimates, hwsim/catalog/data/devices.yaml). A plain function of numbers so that cost and
energy planning can call it without a simulation.
"""

from __future__ import annotations

from typing import Any

__all__ = ["device_energy_j"]


def device_energy_j(spec: Any, busy_s: float, wall_s: float) -> float:
    """Joules one device of *spec* (a :class:`~hwsim.catalog.DeviceSpec`, or anything with
    ``idle_power_w`` and ``peak_power_w``, optionally ``busy_w``) uses over *wall_s* seconds of
    which it is busy *busy_s*. ValueError unless ``0 <= busy_s <= wall_s``.

    >>> from types import SimpleNamespace
    >>> device_energy_j(SimpleNamespace(idle_power_w=50.0, peak_power_w=400.0), 1.0, 4.0)
    550.0
    """
    busy_s, wall_s = float(busy_s), float(wall_s)
    if not 0.0 <= busy_s <= wall_s * (1 + 1e-12) + 1e-15:
        raise ValueError(f"device_energy_j: need 0 <= busy_s <= wall_s, got busy_s={busy_s}, "
                         f"wall_s={wall_s}")
    idle = float(spec.idle_power_w)
    busy = float(getattr(spec, "busy_w", None) or spec.peak_power_w)
    return idle * wall_s + (busy - idle) * min(busy_s, wall_s)
