"""hwsim: how long will this deep-learning job take on this hardware, what does it cost, and where is
the bottleneck? A discrete-event simulator over a networkx graph of devices, memories, storage and
links.

>>> import hwsim
>>> result = hwsim.run("scenarios/quickstart.yaml")          # doctest: +SKIP
>>> result.summary["time_to_train_s"], result.summary["bottleneck"]   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hwsim.analysis import (bottleneck, compare, critical_path, device_energy_j, resource_summary,
                            utilization)
from hwsim.analysis.result import Result
from hwsim.catalog import get_device, get_link, get_storage, load_catalog
from hwsim.exceptions import HwsimError, InfeasibleError, NoRouteError, ScenarioError
from hwsim.scenario import Scenario, load_scenario

if TYPE_CHECKING:
    import pandas as pd

__version__ = "0.1.0"

__all__ = ["run", "sensitivity", "search", "utilization", "resource_summary", "critical_path", "bottleneck",
           "compare", "device_energy_j", "load_scenario", "Scenario", "Result", "load_catalog", "get_device", "get_link",
           "get_storage", "HwsimError", "ScenarioError", "InfeasibleError", "NoRouteError",
           "__version__"]


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
    from hwsim.scenario.build import run_scenario

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
    from hwsim.scenario.build import build_graph, run_scenario

    s = scenario if isinstance(scenario, Scenario) else load_scenario(
        dict(scenario) if isinstance(scenario, Mapping) else scenario)
    return _sensitivity(lambda adjust: run_scenario(s, adjust=adjust), resource, factor,
                        graph=build_graph(s.cluster), keys=keys)


def search(scenario: str | Path | Mapping[str, Any] | Scenario,
           space: Mapping[str, Any] | None = None, **options: Any):
    """Search the parallel layouts of a training scenario (tp, pp, dp, cp, ep, micro-batch,
    virtual stages, recompute, ZeRO): :func:`hwsim.planning.search.search`, whose frame
    :func:`hwsim.planning.search.explain` turns into text."""
    from hwsim.planning.search import search as _search

    return _search(scenario, space, **options)
