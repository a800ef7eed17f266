"""Two runs side by side, and the bottleneck breakdown as a documented frame (docs/analysis.md).
Pandas in, pandas out; nothing of SimPy."""

from __future__ import annotations

import math
from numbers import Number
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    import pandas as pd
    from hwsim.analysis.result import Result

__all__ = ["compare", "bottleneck", "COMPARE_COLUMNS", "BOTTLENECK_COLUMNS"]

COMPARE_COLUMNS = ("key", "a", "b", "delta", "ratio")
BOTTLENECK_COLUMNS = ("category", "seconds", "share")


def bottleneck(result: Result) -> pd.DataFrame:
    """The critical-path breakdown of *result* (rank 0's steady-state steps for training, the
    run for serving and transfers; :func:`hwsim.analysis.bottleneck.critical_path_breakdown`).

    Returns
    -------
    pandas.DataFrame
        ``category`` (``compute``, ``memory`` (memory-bound compute), ``overhead``,
        ``comm:<link class>``, ``storage``, ``host``, ``bubble``, ``idle``; ``memory_capacity``
        with zero seconds when the job does not fit), ``seconds``, ``share`` (sums to 1), by
        seconds descending; runs of several jobs add a leading ``job`` column. A copy: changing
        it does not change the result.
    """
    return result.bottleneck.copy()


def _number(v: Any) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(float(v))


def compare(a: Result, b: Result, *, keys: list[str] | None = None,
            bottleneck_shares: bool = True) -> pd.DataFrame:
    """Summary keys of runs *a* and *b* side by side.

    Parameters
    ----------
    a, b : Result
    keys : list of str, optional
        The summary keys to compare (default: every key of either run, in *a*'s order, then
        *b*'s new ones).
    bottleneck_shares : bool
        Also compare the bottleneck shares, as keys ``bottleneck.<category>`` (a category
        missing from one run counts 0 there).

    Returns
    -------
    pandas.DataFrame
        :data:`COMPARE_COLUMNS`: ``key``; ``a`` and ``b`` (the values, ``None`` where a run lacks
        the key; object dtype: text keys such as ``bottleneck`` keep their text); ``delta`` =
        b - a and ``ratio`` = b / a for numbers (NaN otherwise, and the ratio NaN where a is 0
        unless b is 0 too, when it is 1); booleans compare as numbers.
    """
    import pandas as pd

    sa, sb = dict(a.summary), dict(b.summary)
    if bottleneck_shares:
        for s, r in ((sa, a), (sb, b)):
            bd = r.bottleneck
            if bd is not None and len(bd) and "job" not in bd.columns:
                s.update({f"bottleneck.{c}": float(x) for c, x in zip(bd["category"],
                                                                      bd["share"])})
        cats = [k for k in dict.fromkeys([*sa, *sb]) if k.startswith("bottleneck.")]
        for k in cats:
            sa.setdefault(k, 0.0)
            sb.setdefault(k, 0.0)
    names = keys if keys is not None else list(dict.fromkeys([*sa, *sb]))
    rows = []
    for k in names:
        va, vb = sa.get(k), sb.get(k)
        xa = float(va) if isinstance(va, bool) or _number(va) else None
        xb = float(vb) if isinstance(vb, bool) or _number(vb) else None
        if xa is not None and xb is not None:
            delta = xb - xa
            ratio = xb / xa if xa != 0 else (1.0 if xb == 0 else math.nan)
        else:
            delta = ratio = math.nan
        rows.append((k, va, vb, delta, ratio))
    out = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    out["a"] = out["a"].astype(object)
    out["b"] = out["b"].astype(object)
    return out.astype({"delta": float, "ratio": float})
