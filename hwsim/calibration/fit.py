"""Least squares over named constants, and leave-one-out cross-validation.

Every fit here minimises the sum of squared log errors ``sum(log(predicted / measured)^2)`` over
measured rows, by damped Gauss-Newton (Levenberg-Marquardt) on the logs of the constants, each
kept in its valid range (:data:`hwsim.scenario.calibration.CONSTANTS`). The Jacobian is taken by
forward differences, so any prediction (a simulated run, a simulated collective, a closed form)
can be fitted; predictions are memoised per row and values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from hwsim.exceptions import ScenarioError
from hwsim.scenario.calibration import CONSTANTS, Key, label

__all__ = ["Fit", "least_squares", "loo", "mape", "label"]

Predict = Callable[[int, Mapping[Key, float]], float]
"""``predict(row, values)``: the model's figure for measured row *row* with the constants
*values* (all fitted keys, plus whatever the caller fixes)."""


def mape(pred: Sequence[float], meas: Sequence[float]) -> float:
    """Mean absolute relative error ``mean(|pred / meas - 1|)``."""
    return float(np.mean([abs(p / m - 1) for p, m in zip(pred, meas)])) if meas else float("nan")


@dataclass
class Fit:
    """A fitted set of constants: ``values`` and the rows' ``predicted`` figures with them."""

    values: dict[Key, float]
    predicted: list[float]
    iterations: int


class _Memo:
    def __init__(self, predict: Predict, fixed: Mapping[Key, float]) -> None:
        self.predict, self.fixed, self.cache = predict, dict(fixed), {}

    def __call__(self, row: int, values: Mapping[Key, float]) -> float:
        k = (row, tuple(sorted((key, round(v, 12)) for key, v in values.items())))
        hit = self.cache.get(k)
        if hit is None:
            hit = self.cache[k] = float(self.predict(row, {**self.fixed, **values}))
            if not (hit > 0 and math.isfinite(hit)):
                raise ScenarioError(f"the model gives {hit!r} for measured row {row + 1}; a fit "
                                    "needs positive figures")
        return hit


def _bounds(key: Key) -> tuple[float, float]:
    c = CONSTANTS[key[2]]
    return math.log(max(c.lo, 1e-12)), math.log(c.hi)


def least_squares(keys: Sequence[Key], start: Mapping[Key, float], predict: Predict | _Memo,
                  measured: Sequence[float], rows: Sequence[int] | None = None,
                  fixed: Mapping[Key, float] | None = None, *, iterations: int = 12,
                  what: str = "the measured rows") -> Fit:
    """Fit *keys* (from *start*) to the *measured* figures of *rows* (default all), the other
    constants at *fixed*. A constant the rows do not move (zero derivative) is a
    :class:`ScenarioError` naming it: those measurements do not determine it."""
    f = predict if isinstance(predict, _Memo) else _Memo(predict, fixed or {})
    rows = list(range(len(measured))) if rows is None else list(rows)
    keys = list(keys)
    u = np.array([math.log(max(start[k], 1e-12)) for k in keys])
    lo, hi = np.array([_bounds(k)[0] for k in keys]), np.array([_bounds(k)[1] for k in keys])
    u = np.clip(u, lo, hi)

    def values(x: np.ndarray) -> dict[Key, float]:
        return {k: math.exp(v) for k, v in zip(keys, x)}

    def resid(x: np.ndarray) -> np.ndarray:
        v = values(x)
        return np.array([math.log(f(r, v) / measured[r]) for r in rows])

    r, lam, it = resid(u), 1e-3, 0
    for it in range(1, iterations + 1):
        h = 1e-3
        jac = np.empty((len(rows), len(keys)))
        for j in range(len(keys)):
            x = u.copy()
            x[j] = x[j] + h if x[j] + h <= hi[j] else x[j] - h
            jac[:, j] = (resid(x) - r) / (x[j] - u[j])
        dead = [label(k) for j, k in enumerate(keys) if not np.any(np.abs(jac[:, j]) > 1e-6)]
        if dead:
            raise ScenarioError(f"{what} do not determine {', '.join(dead)}: changing it does not "
                                "change any prediction; valid: fit constants these measurements "
                                "depend on (`hwsim calibrate --fit`), or add rows that exercise "
                                "it")
        a, g = jac.T @ jac, jac.T @ r
        cost = float(r @ r)
        while True:
            step = np.linalg.solve(a + lam * np.diag(np.diag(a) + 1e-12), -g)
            x = np.clip(u + step, lo, hi)
            rx = resid(x)
            if float(rx @ rx) <= cost or lam > 1e8:
                break
            lam *= 10
        if float(rx @ rx) <= cost:
            moved = float(np.max(np.abs(x - u)))
            u, r, lam = x, rx, max(lam / 10, 1e-6)
            if moved < 1e-4:  # 0.01 % of the constant
                break
        else:
            break
    v = values(u)
    return Fit(v, [f(i, v) for i in range(len(measured))], it)


def loo(keys: Sequence[Key], fitted: Fit, predict: Predict, measured: Sequence[float],
        fixed: Mapping[Key, float] | None = None, *, what: str = "the measured rows"
        ) -> list[float]:
    """Leave-one-out predictions: for each row, the constants refitted to the other rows (from
    the full fit) predict the left-out one. With a single row there is nothing to leave out:
    NaN."""
    n = len(measured)
    if n < 2:
        return [float("nan")] * n
    memo = _Memo(predict, fixed or {})
    out = []
    for i in range(n):
        rest = [j for j in range(n) if j != i]
        fit = least_squares(keys, fitted.values, memo, measured, rest, iterations=6, what=what)
        out.append(memo(i, fit.values))
    return out
