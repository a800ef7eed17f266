"""analysis layer (see DESIGN.md): a run's frames in, DataFrames out (docs/analysis.md).

- :func:`utilization`: busy fraction of any resource over time, in bins of any width;
- :func:`resource_summary`: one row per resource: busy time, bytes, FLOPs, energy;
- :func:`critical_path`: the chain of events that set the end of a step or a request;
- :func:`bottleneck`: the critical-path breakdown by category;
- :func:`compare`: two runs' summary keys side by side;
- :func:`device_energy_j`: the energy model, a plain function;
- :func:`device_power`: every compute device's power over time (docs/analysis.md, "Power").
"""

# Importing a submodule sets it as a package attribute: the module hwsim.analysis.bottleneck is
# imported first, so that the function bottleneck imported last is what the attribute holds
# (``from hwsim.analysis.bottleneck import ...`` still finds the module).
from hwsim.analysis import bottleneck as _sweep  # noqa: F401
from hwsim.analysis.critical_path import critical_path
from hwsim.analysis.energy import device_energy_j
from hwsim.analysis.power import device_power
from hwsim.analysis.utilization import resource_summary, utilization
from hwsim.analysis.compare import bottleneck, compare  # noqa: E402  (last, see above)

__all__ = ["utilization", "resource_summary", "critical_path", "bottleneck", "compare",
           "device_energy_j", "device_power"]
