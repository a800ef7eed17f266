"""Time to train over epochs whose steps differ: the page cache's later epochs.

:func:`epoch_steps_time` sums the steps of epochs that get cheaper as more of the data set sits
in the servers' page caches, in closed form past the point where they stop getting cheaper;
:func:`epoch_phases` splits ``time_to_train_s`` into the first epoch (read from storage) and the
later ones (from the cache) for the summary and the headline. Pure functions of numbers and the
plan; :func:`hwsim.simulation._cached_epochs` runs the cached step they need.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from hwsim.jobs.parallel import ParallelPlan
    from hwsim.jobs.training import TrainingPlan

__all__ = ["EPOCH_LOOP_CAP", "epoch_steps_time", "epoch_phases"]

EPOCH_LOOP_CAP = 100_000
"""Epochs :func:`epoch_steps_time` walks one by one before it sums the rest in closed form."""


def epoch_steps_time(step: int, total: int, per_epoch: float, t: float, cached: float,
                      fits: float, servers: int) -> float:
    """Seconds of steps *step* .. *total* when a step of epoch *e* takes ``max(cached, t * (1 -
    min(fits, 1 - q^e)))`` = ``max(c0, t q^e)``, ``q = 1 - 1/servers``, ``c0 = max(cached, t
    (1 - fits))`` (:func:`hwsim.simulation._cached_epochs`). The epochs whose steps still get cheaper are walked
    one by one (at most :data:`EPOCH_LOOP_CAP`); the rest, at ``c0`` each (or, past the cap,
    the integral of ``max(c0, t q^x)`` over the remaining epochs), in closed form, so any
    sample count ends at once (1e24 samples once looped forever on float rounding)."""
    q = 1.0 - 1.0 / servers
    c0 = max(cached, t * (1.0 - fits))
    time, loops = 0.0, 0
    while step < total and loops < EPOCH_LOOP_CAP:
        e = int(step // per_epoch)
        cost = max(c0, t * q ** e)
        if cost <= c0:
            break
        n = min(total, math.floor((e + 1) * per_epoch) or step + 1) - step
        time += max(n, 1) * cost
        step += max(n, 1)
        loops += 1
    if step >= total:
        return time
    left = total - step
    x0 = step / per_epoch  # in epochs
    if 0.0 < q < 1.0 and t * q ** x0 > c0:  # past the cap, still getting cheaper: integrate
        x1 = min(x0 + left / per_epoch, math.log(c0 / t) / math.log(q) if c0 > 0 else math.inf)
        time += per_epoch * t * (q ** x1 - q ** x0) / math.log(q)
        left -= (x1 - x0) * per_epoch
    return time + max(0.0, left) * c0
def epoch_phases(job: TrainingPlan | ParallelPlan, s: dict, ends: Sequence[float]
                  ) -> dict[str, Any]:
    """The two phases of ``time_to_train_s`` of a job that reads its data set from storage with
    a page cache: ``first_epoch_steps`` and ``first_epoch_time_s`` (read from storage) and
    ``later_epochs_steps`` and ``later_epochs_step_time_s`` (their mean step, from the page
    cache as far as the data set fits it), so that ``first_epoch_time_s + later_epochs_steps *
    later_epochs_step_time_s == time_to_train_s``. The first epoch is the simulated steps'
    (*ends*, slowest rank) when they reach past it, else extrapolated at ``step_time_s`` (and the
    later epochs are :func:`hwsim.simulation._cached_epochs`'). Empty when there is no such phase change: no
    storage, no page cache, or a single epoch."""
    d, t, total = job.data, s.get("step_time_s"), int(s["total_steps"])
    if d is None or d.storage is None or not d.page_cache or not d.epoch_batches or not t:
        return {}
    first = min(total, max(1, math.floor(d.epoch_batches / job.micro_batches)))
    if first >= total:
        return {}
    if "cached_step_time_s" in s:  # extrapolated past the simulated steps
        first_time = min(float(s["time_to_train_s"]), s["first_step_s"] + (first - 1) * t)
    elif len(ends) > first:  # the simulated steps reach the later epochs
        first_time = float(ends[first - 1])
    else:
        return {}
    later = total - first
    return {"first_epoch_steps": first, "first_epoch_time_s": first_time,
            "later_epochs_steps": later,
            "later_epochs_step_time_s": (s["time_to_train_s"] - first_time) / later}
