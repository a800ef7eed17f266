"""A device under a board power cap (docs/analysis.md, "Power"): its compute clock and its spec.
Plain functions of a :class:`~hwsim.catalog.DeviceSpec`; no numpy, so ``hwsim validate`` stays
light."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

__all__ = ["CLOCK_POWER_EXPONENT", "clock_factor", "capped_spec"]

CLOCK_POWER_EXPONENT = 1.0
"""alpha in ``P_busy(f) - idle = (busy - idle) * (f / f0) ** alpha``: how a GPU's busy power
above idle grows with its compute clock f. Not fitted: 1 (power above idle proportional to the
clock) is the conservative end. Dynamic power is C V^2 f with the voltage rising with f, so
alpha > 1 on real boards and a cap costs less clock than this model says: the slowdown it
predicts is an upper bound. A published perf-versus-power-cap curve would refit it."""


def clock_factor(idle_w: float, busy_w: float, cap_w: float | None) -> float:
    """The compute clock under a board power cap *cap_w*, as a fraction of the uncapped one:
    1 when the cap is at or above the busy power, else
    ``((cap - idle) / (busy - idle)) ** (1 / CLOCK_POWER_EXPONENT)``. ValueError when the cap
    is at or below the idle power (the board could not run)."""
    if cap_w is None or cap_w >= busy_w:
        return 1.0
    if cap_w <= idle_w:
        raise ValueError(f"a power cap of {cap_w:g} W is at or below the board's idle power "
                         f"{idle_w:g} W")
    return float(((cap_w - idle_w) / (busy_w - idle_w)) ** (1.0 / CLOCK_POWER_EXPONENT))


def capped_spec(spec: Any, cap_w: float) -> Any:
    """*spec* (a :class:`~hwsim.catalog.DeviceSpec`) under a power cap: its dense peaks times
    :func:`clock_factor` (matrix and vector units run at the capped clock; HBM bandwidth is
    unchanged, so memory-bound ops are not slowed), its busy power and TDP at most the cap."""
    f = clock_factor(spec.idle_power_w, spec.busy_w, cap_w)
    return replace(spec, peak_flops_per_s={k: v * f for k, v in spec.peak_flops_per_s.items()},
                   busy_power_w=min(spec.busy_w, cap_w),
                   peak_power_w=min(spec.peak_power_w, cap_w))
