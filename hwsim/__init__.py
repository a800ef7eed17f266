"""hwsim: how long will this deep-learning job take on this hardware, what does it cost, and where is
the bottleneck? A discrete-event simulator over a networkx graph of devices, memories, storage and
links.

>>> import hwsim
>>> result = hwsim.run("scenarios/quickstart.yaml")          # doctest: +SKIP
>>> result.summary["time_to_train_s"], result.summary["bottleneck"]   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from hwsim.analysis.result import Result
from hwsim.catalog import get_device, get_link, get_storage, load_catalog
from hwsim.exceptions import HwsimError, InfeasibleError, NoRouteError, ScenarioError
from hwsim.scenario import Scenario, load_scenario

__version__ = "0.1.0"

__all__ = ["run", "search", "load_scenario", "Scenario", "Result", "load_catalog", "get_device", "get_link",
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


def search(scenario: str | Path | Mapping[str, Any] | Scenario,
           space: Mapping[str, Any] | None = None, **options: Any):
    """Search the parallel layouts of a training scenario (tp, pp, dp, cp, ep, micro-batch,
    virtual stages, recompute, ZeRO): :func:`hwsim.planning.search.search`, whose frame
    :func:`hwsim.planning.search.explain` turns into text."""
    from hwsim.planning.search import search as _search

    return _search(scenario, space, **options)
