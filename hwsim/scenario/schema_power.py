"""Scenario schema, the ``power:`` section: the facility's PUE, a rack power limit and a GPU power
cap (docs/scenarios.md, "Power"; the model in docs/analysis.md, "Power"). Re-exported by
:mod:`hwsim.scenario.schema`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from hwsim.scenario.schema_cluster import PosInt, StrictModel, _quantity

__all__ = ["Power"]

Watts = Annotated[float, _quantity("power"), Field(gt=0)]
"""Watts, > 0: a number or a string such as ``"450 W"``."""


class Power(StrictModel):
    """``pue``: facility power over IT power (>= 1; default 1: the summary's facility figures
    are the IT figures). ``gpu_power_cap_w``: every GPU's board power limit (``nvidia-smi
    -pl``), a what-if: its busy power drops to the cap and its compute clock with it
    (:func:`hwsim.analysis.power.clock_factor`); between the GPU's idle power and its TDP.
    ``rack_limit_kw`` with ``servers_per_rack``: each rack's power budget; a layout whose rack
    would draw more with every component busy is refused."""

    pue: float = Field(1.0, ge=1.0, allow_inf_nan=False)
    gpu_power_cap_w: Watts | None = None
    rack_limit_kw: float | None = Field(None, gt=0, allow_inf_nan=False)
    servers_per_rack: PosInt | None = None

    @model_validator(mode="after")
    def _rack(self) -> Power:
        if self.rack_limit_kw is not None and self.servers_per_rack is None:
            raise ValueError("rack_limit_kw needs servers_per_rack: how many servers share one "
                             "rack's budget (e.g. rack_limit_kw: 40, servers_per_rack: 4)")
        return self
