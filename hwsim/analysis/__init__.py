"""analysis layer (see DESIGN.md): a run's frames in, DataFrames out (docs/analysis.md).

- :func:`utilization`: busy fraction of any resource over time, in bins of any width;
- :func:`resource_summary`: one row per resource: busy time, bytes, FLOPs, energy;
- :func:`critical_path`: the chain of events that set the end of a step or a request;
- :func:`bottleneck`: the critical-path breakdown by category;
- :func:`compare`: two runs' summary keys side by side;
- :func:`device_energy_j`: the energy model, a plain function.
"""

import hwsim.analysis.bottleneck as _bottleneck_module  # noqa: F401  (before the function)
from hwsim.analysis.critical_path import critical_path
from hwsim.analysis.energy import device_energy_j
from hwsim.analysis.utilization import resource_summary, utilization
from hwsim.analysis.compare import bottleneck, compare  # last: the package attribute
                                                        # ``bottleneck`` is this function; the
                                                        # module stays importable by its path

__all__ = ["utilization", "resource_summary", "critical_path", "bottleneck", "compare",
           "device_energy_j"]
