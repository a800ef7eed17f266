"""scenario layer (see DESIGN.md): the YAML schema, its validation and loading."""

from __future__ import annotations

from hwsim.scenario.loader import load_scenario, scenario_to_dict
from hwsim.scenario.schema import (Cluster, Scenario, TrainingWorkload, TransferWorkload,
                                  Workload)

__all__ = ["load_scenario", "scenario_to_dict", "Scenario", "Cluster", "Workload",
           "TrainingWorkload", "TransferWorkload"]
