"""Energy of a compute device from its catalog power figures (docs/analysis.md, "Energy").

The model is linear in busy time: a device draws its idle power for the whole wall time and,
while busy, its peak power:

    energy_j = idle_power_w * wall_s + (peak_power_w - idle_power_w) * busy_s

``peak_power_w`` is the board's TDP (datasheet) and ``idle_power_w`` an idle draw (the catalog
says which figures are estimates, hwsim/catalog/data/devices.yaml). Busy at TDP is an upper
bound: memory-bound kernels draw less than TDP. A plain function of numbers so that cost and
energy planning can call it without a simulation.
"""

from __future__ import annotations

from typing import Any

__all__ = ["device_energy_j"]


def device_energy_j(spec: Any, busy_s: float, wall_s: float) -> float:
    """Joules one device of *spec* (a :class:`~hwsim.catalog.DeviceSpec`, or anything with
    ``idle_power_w`` and ``peak_power_w``) uses over *wall_s* seconds of which it is busy
    *busy_s*. ValueError unless ``0 <= busy_s <= wall_s``.

    >>> from types import SimpleNamespace
    >>> device_energy_j(SimpleNamespace(idle_power_w=50.0, peak_power_w=400.0), 1.0, 4.0)
    550.0
    """
    busy_s, wall_s = float(busy_s), float(wall_s)
    if not 0.0 <= busy_s <= wall_s * (1 + 1e-12) + 1e-15:
        raise ValueError(f"device_energy_j: need 0 <= busy_s <= wall_s, got busy_s={busy_s}, "
                         f"wall_s={wall_s}")
    idle, peak = float(spec.idle_power_w), float(spec.peak_power_w)
    return idle * wall_s + (peak - idle) * min(busy_s, wall_s)
