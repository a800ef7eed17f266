"""``hwsim calibrate``: fit model constants to the user's own measurements and write the
calibration file a scenario names (``calibration: FILE``; docs/calibration.md).

Three kinds of measurement, fitted in this order, each stage with the constants of the stages
before it in place:

1. Kineto traces (:mod:`hwsim.calibration.kineto`): the hardware constants of the device that
   the kernel model uses, ``compute_efficiency`` (its GEMM ceiling), ``memory_efficiency`` and
   ``launch_overhead_s``; the kernels ran inside the framework, so the software stack the
   scenario runs gets ``compute_factor`` and ``memory_factor`` 1 with them.
2. nccl-tests output (:mod:`hwsim.calibration.nccltests`), simulated on the scenario's cluster:
   the ``efficiency`` and ``latency_s`` of the link the collective is bound by.
3. Measured runs (:mod:`hwsim.calibration.runs`): by default the ``compute_factor`` of every
   software stack the runs' scenarios run (``workload.stack``, else the default for the model);
   any constants of :data:`hwsim.scenario.calibration.CONSTANTS` with ``fit``.

Every constant records its value, the catalog's, what it was fitted to, and the error of those
rows before and after (mean absolute relative error) with the leave-one-out error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from hwsim.calibration.fit import label, least_squares, loo, mape
from hwsim.exceptions import ScenarioError
from hwsim.scenario.calibration import (CONSTANTS, TARGETS, VERSION, Key, current,
                                       read_calibration)

__all__ = ["calibrate", "Calibration", "Fitted", "parse_fit"]


@dataclass
class Fitted:
    """One fitted constant."""

    key: Key
    value: float
    catalog: float
    fitted_to: str
    error_before: float
    error_after: float
    loo_error: float
    rows: int


@dataclass
class Calibration:
    """What :func:`calibrate` fitted: the constants and every measured row's figures (measured,
    before, after, leave-one-out)."""

    constants: list[Fitted] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def overrides(self) -> dict[Key, float]:
        return {f.key: f.value for f in self.constants}

    def to_dict(self) -> dict[str, Any]:
        """The calibration file's content (:mod:`hwsim.scenario.calibration`)."""
        out: dict[str, Any] = {"hwsim_calibration": VERSION}
        for f in self.constants:
            section = TARGETS[f.key[0]].section
            out.setdefault(section, {}).setdefault(f.key[1], {})[f.key[2]] = {
                "value": _r(f.value), "catalog": _r(f.catalog), "fitted_to": f.fitted_to,
                "error_before": _r(f.error_before, 4), "error_after": _r(f.error_after, 4),
                "loo_error": None if math.isnan(f.loo_error) else _r(f.loo_error, 4),
                "rows": f.rows}
        out = {"hwsim_calibration": VERSION, **{t.section: out[t.section] for t in
                                                TARGETS.values() if t.section in out}}
        out["report"] = [{k: (_r(v) if isinstance(v, float) else v) for k, v in r.items()}
                         for r in self.rows]
        return out

    def save(self, path: str | Path) -> Path:
        from hwsim.analysis.export import atomic_write_bytes

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_bytes(p, ("# written by `hwsim calibrate`; name it in a scenario as "
                                      f"`calibration: {p.name}` (docs/calibration.md)\n"
                                      + yaml.safe_dump(self.to_dict(), sort_keys=False,
                                                       width=100)).encode())

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The report ``hwsim calibrate`` prints, as records by title: each fitted constant
        (catalog and fitted value, error before and after, leave-one-out error: fractions) and,
        when there are rows, each measured row's error before, after and left out."""
        constants = [{"constant": label(f.key), "catalog": f.catalog, "fitted": f.value,
                      "error_before": f.error_before, "error_after": f.error_after,
                      "loo_error": None if math.isnan(f.loo_error) else f.loo_error,
                      "fitted_to": f.fitted_to} for f in self.constants]
        rows = [{"source": r["source"], "row": str(r["row"]), "metric": r["metric"],
                 "measured": r["measured"], "before": r["before"] / r["measured"] - 1,
                 "after": r["after"] / r["measured"] - 1,
                 "loo": None if r["loo"] is None else r["loo"] / r["measured"] - 1}
                for r in self.rows]
        return {"constants": constants, **({"rows": rows} if rows else {})}


def _r(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")



def parse_fit(names: Iterable[str], ids: Mapping[str, Sequence[str]]) -> list[Key]:
    """Keys of ``--fit`` names: ``ID:constant`` (a device or link id, or ``stack:NAME``), or a
    device or stack constant's bare name for each of *ids* of its target (the devices and the
    stacks of the runs)."""
    keys: list[Key] = []
    for name in names:
        ident, _, const = name.rpartition(":")
        c = CONSTANTS.get(const)
        if c is None:
            raise ScenarioError(f"unknown constant {const!r}; valid: {', '.join(CONSTANTS)} "
                                "(ID:constant for one device or link, stack:NAME:constant for "
                                "one software stack)", field="fit")
        target = TARGETS[c.target]
        if not ident:
            if c.target == "link":
                raise ScenarioError(f"{const} is a link constant: name the link, e.g. "
                                    f"nvlink4:{const}", field="fit")
            keys += [(c.target, i, const) for i in ids.get(c.target, ())]
            continue
        prefix, _, rest = ident.partition(":")
        if rest:
            if prefix != c.target:
                raise ScenarioError(f"{const} is a {c.target} constant, not a {prefix}'s; valid: "
                                    f"{'stack:NAME' if c.target == 'stack' else 'ID'}:{const}",
                                    field="fit")
            ident = rest
        canonical = target.canonical(ident)
        if canonical is None:
            raise ScenarioError(target.unknown(ident), field="fit")
        keys.append((c.target, canonical, const))
    return list(dict.fromkeys(keys))


def calibrate(*, runs: str | Path | None = None, nccl: Sequence[str | Path] = (),
              traces: Sequence[str | Path] = (), scenario: str | Path | None = None,
              device: str | None = None, fit: Sequence[str] | None = None,
              nccl_op: str | None = None, algorithm: str = "auto",
              out: str | Path | None = None, cross_validate: bool = True) -> Calibration:
    """Fit model constants to measurements (see the module doc) and, with *out*, write the
    calibration file.

    Parameters
    ----------
    runs : a table of measured runs (CSV or YAML, :mod:`hwsim.calibration.runs`).
    nccl : nccl-tests output files, measured on *scenario*'s cluster.
    traces : Kineto trace JSON files of one training step on *device* (default: *scenario*'s
        accelerator).
    scenario : the scenario whose cluster the nccl-tests and traces were measured on.
    fit : constants the runs fit (``ID:constant``, ``stack:NAME:constant``, or a device or stack
        constant's name for each device or stack of the runs); default ``compute_factor`` (of
        each stack the runs run).
    nccl_op : the collective of nccl-tests files that do not say (``allreduce``, ...).
    algorithm : the collective algorithm nccl-tests ran (``auto``: NCCL's choice).
    """
    if runs is None and not nccl and not traces:
        raise ScenarioError("nothing to calibrate from; valid: --runs TABLE, --nccl FILE "
                            "(with --scenario), --trace FILE (with --scenario or --device)")
    scen = None
    if scenario is not None:
        from hwsim.scenario import load_scenario
        scen = load_scenario(scenario)
    elif nccl:
        raise ScenarioError("nccl-tests output is simulated on the cluster it was measured on; "
                            "valid: --scenario FILE whose cluster is that cluster", field="nccl")
    result = Calibration()
    fixed: dict[Key, float] = {}
    if scen is not None and scen.calibration is not None:
        fixed.update(read_calibration(scen.calibration))
    if traces:
        from hwsim.calibration.stages import fit_traces
        fit_traces(result, fixed, traces, scen, device)
    if nccl:
        from hwsim.calibration.stages import fit_nccl
        fit_nccl(result, fixed, nccl, scen, nccl_op, algorithm, cross_validate)
    if runs is not None:
        _fit_runs(result, fixed, runs, fit, cross_validate)
    if out is not None:
        result.save(out)
    return result


def _fit_runs(result: Calibration, fixed: dict[Key, float], path: str | Path,
              fit: Sequence[str] | None, cross_validate: bool) -> None:
    from hwsim.calibration.runs import devices_of, predict_run, read_runs, stack_of

    rows = read_runs(path)
    ids = {"device": sorted({d for r in rows for d in devices_of(r)}),
           "stack": list(dict.fromkeys(stack_of(r) for r in rows))}
    keys = parse_fit(fit or ["compute_factor"], ids)
    start = {k: current(k, fixed) for k in keys}
    measured = [r.measured for r in rows]
    what = f"the runs of {path}"

    def predict(i: int, values: dict[Key, float]) -> float:
        return predict_run(rows[i], values)

    before = [predict(i, fixed) for i in range(len(rows))]
    best = least_squares(keys, start, predict, measured, fixed=fixed, what=what)
    held = loo(keys, best, predict, measured, fixed, what=what) if cross_validate \
        else [math.nan] * len(rows)
    record(result, fixed, keys, best.values, start, str(path), rows=[r.name for r in rows],
           metric=[r.metric for r in rows], measured=measured, before=before,
           after=best.predicted, held=held,
           fitted_to=f"{len(rows)} measured runs of {Path(path).name} "
                     f"({', '.join(sorted({r.metric for r in rows}))}): "
                     + ", ".join(r.name for r in rows))


def record(result: Calibration, fixed: dict[Key, float], keys: Sequence[Key],
           values: dict[Key, float], start: dict[Key, float], source: str, *, rows: list,
           metric: list[str], measured: list[float], before: list[float], after: list[float],
           held: list[float], fitted_to: str) -> None:
    """Add one stage's fitted *keys* and rows to *result*, and its values to *fixed*."""
    loo_err = mape(held, measured) if not any(math.isnan(h) for h in held) else math.nan
    result.constants = [f for f in result.constants if f.key not in set(keys)]
    for k in keys:
        result.constants.append(Fitted(k, values[k], current(k), fitted_to, mape(before, measured),
                                       mape(after, measured), loo_err, len(measured)))
        fixed[k] = values[k]
    for i, m in enumerate(measured):
        result.rows.append({"source": source, "row": rows[i], "metric": metric[i],
                            "measured": m, "before": before[i], "after": after[i],
                            "loo": None if math.isnan(held[i]) else held[i]})
