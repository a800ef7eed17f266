"""planning layer (see DESIGN.md): what-ifs that re-run a scenario. It sits below the scenario
layer, so a run is passed in (``hwsim.sensitivity`` takes a scenario file)."""

from hwsim.planning.capacity import cheapest_training, fewest_serving, pareto
from hwsim.planning.saturation import MaxRate, max_rate
from hwsim.planning.sensitivity import scale_resource, sensitivity

__all__ = ["sensitivity", "scale_resource", "cheapest_training", "fewest_serving", "pareto",
           "max_rate", "MaxRate"]
