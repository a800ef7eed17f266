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

__all__ = ["run", "sweep", "load_scenario", "Scenario", "Result", "load_catalog", "get_device", "get_link",
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


def sweep(spec: str | Path | Mapping[str, Any], out: str | Path | None = None, *,
          workers: int | None = None, scheduler: str | None = None,
          on_point: Any = None, flush_s: float = 1.0) -> Any:
    """Run a sweep (a sweep file, or the same content as a dict; docs/sweeps.md) and return a
    pandas DataFrame with one row per point: inputs, ``feasible``, ``reason``, outputs.

    With *out*, results go to ``out/results.parquet`` as points finish and a rerun resumes;
    *workers* local processes (default: one per CPU) or the Dask scheduler *scheduler*
    (``tcp://HOST:PORT``, default ``$HWSIM_SCHEDULER``) run the points; *on_point* is called
    with each finished row; finished rows are written at most *flush_s* seconds apart. See :func:`hwsim.planning.execute.sweep`.
    """
    from hwsim.planning.execute import sweep as _sweep

    return _sweep(dict(spec) if isinstance(spec, Mapping) else spec, out, workers=workers,
                  scheduler=scheduler, on_point=on_point, flush_s=flush_s)
