"""hwsim: how long will this deep-learning job take on this hardware, what does it cost, and where is
the bottleneck? A discrete-event simulator over a networkx graph of devices, memories, storage and
links.

>>> import hwsim
>>> result = hwsim.run("scenarios/quickstart.yaml")          # doctest: +SKIP
>>> result.summary["time_to_train_s"], result.summary["bottleneck"]   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hwsim.exceptions import HwsimError, InfeasibleError, NoRouteError, ScenarioError

if TYPE_CHECKING:
    import pandas as pd

    from hwsim.analysis import (bottleneck, compare, critical_path, device_energy_j,
                                resource_summary, utilization)
    from hwsim.analysis.result import Result
    from hwsim.calibration import calibrate
    from hwsim.catalog import get_device, get_link, get_storage, load_catalog
    from hwsim.scenario import Scenario, load_scenario

_LAZY = {**dict.fromkeys(("bottleneck", "compare", "critical_path", "device_energy_j",
                          "resource_summary", "utilization"), "hwsim.analysis"),
         "Result": "hwsim.analysis.result", "calibrate": "hwsim.calibration",
         **dict.fromkeys(("get_device", "get_link", "get_storage", "load_catalog"),
                         "hwsim.catalog"),
         **dict.fromkeys(("Scenario", "load_scenario"), "hwsim.scenario")}
"""Public names imported on first use (PEP 562), so that ``import hwsim`` and ``hwsim --help``
do not load pandas, networkx and pydantic before they are needed."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hwsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = ["run", "calibrate", "sweep", "sensitivity", "search", "utilization", "resource_summary",
           "critical_path", "bottleneck", "compare", "device_energy_j", "load_scenario", "Scenario",
           "Result", "load_catalog", "get_device", "get_link", "get_storage", "HwsimError",
           "ScenarioError", "InfeasibleError", "NoRouteError", "__version__"]


def run(scenario: str | Path | Mapping[str, Any] | Scenario) -> Result:
    """Validate and simulate a scenario; return its :class:`Result` (summary and DataFrames).

    Parameters
    ----------
    scenario : path, mapping or Scenario
        A scenario file, the same content as a dict, or an already loaded :class:`Scenario`.

    Raises
    ------
    ScenarioError
        For invalid input; the message names the file, the field and the valid choices.

    Nothing is written; call ``result.save(dir)`` for the files of ``hwsim run --out``.
    """
    from hwsim.heap import frozen_heap
    from hwsim.scenario import Scenario, load_scenario
    from hwsim.scenario.build import run_scenario

    with frozen_heap():  # the modules and catalogs: out of the collector's passes meanwhile
        s = scenario if isinstance(scenario, Scenario) else load_scenario(
            dict(scenario) if isinstance(scenario, Mapping) else scenario)
        return run_scenario(s)


def sensitivity(scenario: str | Path | Mapping[str, Any] | Scenario, resource: str, factor: float,
                *, keys: list[str] | None = None) -> "pd.DataFrame":
    """Re-run *scenario* with one resource class or named resource scaled by *factor* (2.0:
    twice as fast) and report baseline vs changed headline keys (docs/analysis.md,
    "sensitivity"; :func:`hwsim.planning.sensitivity.sensitivity`).

    Parameters
    ----------
    scenario : path, mapping or Scenario
        As :func:`run` takes.
    resource : str
        ``compute``, ``gpu``, ``tpu``, ``cpu``, ``links``, a link class of the cluster
        (``nvlink``, ``pcie``, ``infiniband``, ``ethernet``, ...), ``storage``, a compute or
        storage node id (``n0.gpu0``, ``n0.nvme``) or a link ``a->b``.
    factor : float
        The multiplier, > 0.
    keys : list of str, optional
        Summary keys to report (default: the headline keys the baseline has).

    Returns
    -------
    pandas.DataFrame
        ``resource, factor, key, baseline, changed, delta, ratio``.

    Raises
    ------
    ScenarioError
        An invalid scenario, an unknown *resource* (the message names the valid ones) or a
        *factor* that is not a positive number.
    """
    from hwsim.planning.sensitivity import sensitivity as _sensitivity
    from hwsim.scenario import Scenario, load_scenario
    from hwsim.scenario.build import build_graph, run_scenario

    s = scenario if isinstance(scenario, Scenario) else load_scenario(
        dict(scenario) if isinstance(scenario, Mapping) else scenario)
    return _sensitivity(lambda adjust: run_scenario(s, adjust=adjust), resource, factor,
                        graph=build_graph(s.cluster), keys=keys)


def search(scenario: str | Path | Mapping[str, Any] | Scenario,
           space: Mapping[str, Any] | None = None, **options: Any):
    """Search the parallel layouts of a training scenario (tp, pp, dp, cp, ep, micro-batch,
    virtual stages, recompute, ZeRO, sequence parallelism): :func:`hwsim.planning.search.search`
    (``budget="all"`` simulates every layout that fits), whose frame
    :func:`hwsim.planning.search.explain` turns into text."""
    from hwsim.planning.search import search as _search

    return _search(scenario, space, **options)


__all__ += ["cheapest_training", "fewest_serving", "max_rate", "pareto"]  # capacity questions


def _as_mapping(scenario: str | Path | Mapping[str, Any]) -> tuple[dict, Any, Any]:
    """A scenario file or mapping as a plain dict (validated once), a ``run(mapping)`` and a
    ``load(mapping) -> Scenario`` that read its relative paths (``hf_config``,
    ``arrivals.trace``) from the file's folder."""
    from hwsim.scenario import load_scenario
    from hwsim.scenario.build import run_scenario
    from hwsim.scenario.loader import read_scenario_yaml

    if isinstance(scenario, Mapping):
        data, file, base = dict(scenario), None, None
    else:
        file, base = str(scenario), Path(scenario).parent
        data = read_scenario_yaml(Path(scenario), file)
    load_scenario(data, file=file, base_dir=base)  # the base must be valid before any candidate
    return (data, lambda d: run_scenario(load_scenario(d, file=file, base_dir=base)),
            lambda d: load_scenario(d, file=file, base_dir=base))


def cheapest_training(scenario: str | Path | Mapping[str, Any], train_tokens: float, days: float,
                      **kwargs: Any) -> "pd.DataFrame":
    """The cheapest (device type, count) that trains *train_tokens* tokens within *days*: one
    simulated row per candidate, the answer marked (docs/planning.md, "Capacity questions";
    keyword arguments and columns: :func:`hwsim.planning.capacity.cheapest_training`)."""
    from hwsim.planning.capacity import cheapest_training as _cheapest

    data, runner, loader = _as_mapping(scenario)
    return _cheapest(runner, data, train_tokens, days, **{"load": loader, **kwargs})


def fewest_serving(scenario: str | Path | Mapping[str, Any], rate_per_s: float, ttft_p99_s: float,
                   tpot_p99_s: float, **kwargs: Any) -> "pd.DataFrame":
    """For each device type, the fewest devices that serve *rate_per_s* within both p99 targets
    (docs/planning.md, "Capacity questions"; :func:`hwsim.planning.capacity.fewest_serving`)."""
    from hwsim.planning.capacity import fewest_serving as _fewest

    data, runner, _ = _as_mapping(scenario)
    return _fewest(runner, data, rate_per_s, ttft_p99_s, tpot_p99_s, **kwargs)


def max_rate(scenario: str | Path | Mapping[str, Any], *, ttft_s: float | None = None,
             tpot_s: float | None = None, percentile: float = 99, rel_tol: float = 0.02,
             **kwargs: Any) -> Any:
    """The highest open-loop arrival rate at which the *percentile* of TTFT and/or TPOT meet
    *ttft_s* / *tpot_s*, to within *rel_tol*, with the saturation throughput, the knee of the
    latency-vs-rate curve and the trials simulated (docs/planning.md, "The highest rate that
    meets an SLO"; :func:`hwsim.planning.saturation.max_rate`, which returns a
    :class:`~hwsim.planning.saturation.MaxRate`)."""
    from hwsim.planning.saturation import max_rate as _max_rate

    data, runner, _ = _as_mapping(scenario)
    return _max_rate(runner, data, ttft_s=ttft_s, tpot_s=tpot_s, percentile=percentile,
                     rel_tol=rel_tol, **kwargs)


def pareto(df: "pd.DataFrame", objectives: Mapping[str, str] | None = None,
           **kwargs: Any) -> "pd.DataFrame":
    """*df* with a ``pareto`` column marking its front (default: minimum time_to_train_s,
    cost_usd and energy_kwh; :func:`hwsim.planning.capacity.pareto`)."""
    from hwsim.planning.capacity import pareto as _pareto

    return _pareto(df, objectives, **kwargs)


def sweep(spec: str | Path | Mapping[str, Any], out: str | Path | None = None, *,
          workers: int | None = None, scheduler: str | None = None,
          on_point: Any = None, flush_s: float = 1.0) -> Any:
    """Run a sweep (a sweep file, or the same content as a dict; docs/sweeps.md) and return a
    pandas DataFrame with one row per point: inputs, ``feasible``, ``reason``, outputs.

    With *out*, results go to ``out/results.parquet`` as points finish and a rerun resumes;
    *workers* local processes (default: one per CPU) or the Dask scheduler *scheduler*
    (``tcp://HOST:PORT``, default ``$HWSIM_SCHEDULER``) run the points; *on_point* is called
    with each finished row; finished rows are written at most *flush_s* seconds apart. See
    :func:`hwsim.planning.execute.sweep`.
    """
    from hwsim.planning.execute import sweep as _sweep

    return _sweep(dict(spec) if isinstance(spec, Mapping) else spec, out, workers=workers,
                  scheduler=scheduler, on_point=on_point, flush_s=flush_s)
