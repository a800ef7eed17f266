"""The sweep file's schema: :class:`SweepSpec` (a base scenario, axes over its field paths,
constraints, objectives, outputs), its :class:`Axis`, :class:`Range` and :class:`Objective`, and
the :class:`Point` s it expands to. Reading and expanding a sweep: :mod:`hwsim.planning.sweep`;
the format: docs/sweeps.md."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
from pydantic import Field, model_validator

from hwsim.scenario.loader import short_repr
from hwsim.scenario.schema_cluster import StrictModel, did_you_mean

__all__ = ["SweepSpec", "Axis", "Range", "Objective", "Point", "DEFAULT_OUTPUTS", "MAX_POINTS",
           "Number"]

DEFAULT_OUTPUTS = ("fits", "step_time_s", "samples_per_s", "tokens_per_s", "model_tflops_per_gpu",
                   "mfu", "memory_per_device_gb", "time_to_train_s", "ttft_p50_s", "ttft_p99_s",
                   "tpot_p50_s", "tpot_p99_s", "output_tokens_per_s", "requests_per_s",
                   "slo_attainment", "makespan_s", "bytes_moved", "bottleneck")
"""The headline summary keys a sweep keeps when ``outputs`` is not given (those that no point
has are dropped from the table)."""
MAX_POINTS = 1_000_000
"""The most points one sweep may expand to."""

Number = Union[int, float]


class Range(StrictModel):
    """Values from *start* to *stop* (both included when reached): every *step* (added, or with
    ``log`` multiplied), or *num* values evenly spaced (``log``: geometrically). Without *step*
    and *num* the range is continuous, for ``mode: random`` and ``lhs`` only; integer *start* and
    *stop* then draw integers."""

    start: Number
    stop: Number
    step: Number | None = Field(None, gt=0)
    num: int | None = Field(None, ge=1, le=MAX_POINTS)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> Range:
        for name in ("start", "stop", "step"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) if isinstance(v, float)
                                  else abs(v) > _MAX_MAGNITUDE):
                raise ValueError(f"{name}: give a finite number of magnitude at most 1e300 "
                                 f"(got {short_repr(v)})")
        if self.step is not None and self.num is not None:
            raise ValueError("give step or num, not both")
        if self.stop < self.start:
            raise ValueError(f"stop ({self.stop}) is below start ({self.start})")
        if self.log and self.start <= 0:
            raise ValueError(f"a log range needs start > 0 (got {self.start})")
        if self.log and self.step is not None and self.step <= 1:
            raise ValueError(f"a log range's step is a factor > 1 (got {self.step})")
        n = self.count()
        if n is not None and n > MAX_POINTS:
            raise ValueError(f"the range has {_amount(n)} values and a sweep has at most "
                             f"{MAX_POINTS:,} points; use a larger step, num, or mode: random "
                             "or lhs with n")
        return self

    def count(self) -> int | float | None:
        """How many values :meth:`values` gives, without making them (None for a continuous
        range; a count too large for a float is ``math.inf``)."""
        a, b, step = self.start, self.stop, self.step
        if self.num is not None:
            return self.num
        if step is None:
            return None
        try:
            if self.log:
                return math.floor((math.log(b) - math.log(a)) / math.log(step) + 1e-9) + 1
            if all(isinstance(v, int) for v in (a, b, step)):
                return (b - a) // step + 1
            return math.floor((b - a) / step + 1e-9) + 1
        except (OverflowError, ValueError):
            return math.inf

    @property
    def discrete(self) -> bool:
        return self.step is not None or self.num is not None

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (self.start, self.stop, self.step) if v is not None)

    def values(self) -> list[Number]:
        """The range's values (a discrete range only)."""
        a, b = self.start, self.stop
        if self.num is not None:
            raw = (np.geomspace(a, b, self.num) if self.log else np.linspace(a, b, self.num))
            raw = [float(v) for v in raw]
        elif self.log:
            n = int(math.floor(math.log(b / a) / math.log(self.step) + 1e-9)) + 1
            raw = [a * self.step ** i for i in range(n)]
        else:
            n = int(math.floor((b - a) / self.step + 1e-9)) + 1
            raw = [a + i * self.step for i in range(n)]
        return _numbers(raw, self.integer)

    def sample(self, u: np.ndarray) -> list[Number]:
        """Map uniform draws *u* in [0, 1) onto the continuous range."""
        a, b = float(self.start), float(self.stop)
        if self.integer:
            b += 1.0  # floor below: each integer in [start, stop] gets an equal share
        x = np.exp(np.log(a) + u * (np.log(b) - np.log(a))) if self.log else a + u * (b - a)
        if self.integer:
            return [min(int(math.floor(v)), int(self.stop)) for v in x]
        return _numbers(x, False)


_MAX_MAGNITUDE = 1e300
"""The largest magnitude of a range's start, stop and step (kept within floats)."""


def _amount(n: int | float) -> str:
    return f"{n:,}" if isinstance(n, int) and n < 10 ** 30 else "over 1e30"


def _numbers(raw: Any, integer: bool) -> list[Number]:
    """Floats rounded to 12 significant digits (no 0.30000000000000004); whole values of an
    integer range as ints."""
    vals = [float(f"{float(v):.12g}") for v in raw]
    if integer and all(v.is_integer() for v in vals):
        return [int(v) for v in vals]
    return vals


class Axis(StrictModel):
    """One dimension of the sweep: a scenario field *path* and its ``values`` (a list) or
    ``range``. A mapping value is merged into the field, so one axis can set several fields
    together (``cluster.node: [{gpu: A100-SXM4-80GB, nic: ib-hdr-200}, ...]``)."""

    path: str = Field(min_length=1)
    values: list[Any] | None = Field(None, min_length=1)
    range: Range | None = None

    @model_validator(mode="after")
    def _one(self) -> Axis:
        if (self.values is None) == (self.range is None):
            raise ValueError("give values: [...] or range: {start, stop, step | num}"
                             + (", not both" if self.values is not None else ""))
        return self

    def count(self) -> int | float | None:
        """How many values the axis has (None for a continuous range), without making them."""
        return len(self.values) if self.values is not None else self.range.count()

    def choices(self) -> list[Any] | None:
        """The axis's discrete values, or None for a continuous range."""
        if self.values is not None:
            return self.values
        return self.range.values() if self.range.discrete else None


class Objective(StrictModel):
    """A summary key to minimize or maximize: ``{maximize: tokens_per_s}`` or
    ``{key: tokens_per_s, goal: maximize}``."""

    key: str = Field(min_length=1)
    goal: Literal["minimize", "maximize"]

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) == 1:
            (goal, key), = data.items()
            if goal in ("minimize", "maximize"):
                return {"key": key, "goal": goal}
            if goal not in ("key", "goal"):
                raise ValueError(f"{goal!r} is not a goal; give {{maximize: KEY}} or {{minimize: "
                                 f"KEY}}{did_you_mean(goal, ('maximize', 'minimize'))}")
        return data


class SweepSpec(StrictModel):
    """A sweep: the ``base`` scenario (a file path, relative to the sweep file, or an inline
    mapping), its ``axes``, how points are drawn (``mode``: ``grid``, or ``random`` / ``lhs``
    with ``n`` and ``seed``), ``constraints`` on the points' inputs, ``objectives`` and
    ``outputs`` (summary keys to keep; default :data:`DEFAULT_OUTPUTS`)."""

    name: str = "sweep"
    base: str | dict[str, Any]
    axes: list[Axis]
    mode: Literal["grid", "random", "lhs"] = "grid"
    n: int | None = Field(None, ge=1, le=MAX_POINTS)
    seed: int = Field(0, ge=0, lt=2 ** 64)
    constraints: list[str] = []
    objectives: list[Objective] = []
    outputs: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if not self.axes:
            raise ValueError("axes: give at least one axis, e.g. axes: [{path: cluster.nodes, "
                             "values: [16, 32, 64]}]")
        if self.mode == "grid":
            if self.n is not None:
                raise ValueError("n: a grid has one point per combination of the axes' values; "
                                 "n is for mode: random or lhs")
            for i, axis in enumerate(self.axes):
                if axis.count() is None:
                    raise ValueError(f"axes[{i}].range: a grid needs step or num (a continuous "
                                     "range is for mode: random or lhs)")
            total = math.prod(axis.count() for axis in self.axes)
            if total > MAX_POINTS:
                raise ValueError(f"axes: the grid has {_amount(total)} points and a sweep has "
                                 f"at most {MAX_POINTS:,}; use mode: random or lhs with n")
        elif self.n is None:
            raise ValueError(f"n: mode {self.mode} needs n, the number of points to draw")
        return self

    def output_keys(self) -> list[str]:
        """The summary keys each row keeps: ``outputs`` (or the defaults), plus the objectives'."""
        keys = list(self.outputs if self.outputs is not None else DEFAULT_OUTPUTS)
        return keys + [o.key for o in self.objectives if o.key not in keys]


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its *id* (a hash of *scenario*), its *inputs* (field path -> value,
    the axes' leaves), the complete *scenario* mapping, and *reason* (``"constraint: ..."``) when
    a constraint rejects it (it is then not run)."""

    id: str
    inputs: dict[str, Any]
    scenario: dict[str, Any]
    reason: str | None = None
