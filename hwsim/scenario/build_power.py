"""The scenario's ``power:`` section applied to a built topology graph: the PUE and cap for the
run's power summary, GPU specs under a power cap, the rack limit checked (docs/scenarios.md,
"Power")."""

from __future__ import annotations

from typing import Any

import networkx as nx

from hwsim.catalog import get_device
from hwsim.catalog.power import capped_spec
from hwsim.exceptions import ScenarioError
from hwsim.topology.power import check_rack_limit

__all__ = ["apply_power"]


def apply_power(g: nx.Graph, p: Any) -> nx.Graph:
    """Put the scenario's ``power:`` section (:class:`~hwsim.scenario.schema_power.Power`) into
    graph *g*: ``g.graph["power"]`` (PUE, cap, rack) for the run's power summary, every GPU's spec
    under ``gpu_power_cap_w`` (:func:`hwsim.catalog.power.capped_spec`, in
    ``g.graph["device_specs"]``), then the rack limit checked. ScenarioError naming the field
    for a cap outside (idle, TDP] or a rack over its limit."""
    g.graph["power"] = p.model_dump()
    cap = p.gpu_power_cap_w
    if cap is not None:
        specs = dict(g.graph.get("device_specs", {}))
        gpus = sorted({str(d["spec"]) for _, d in g.nodes(data=True)
                       if d.get("kind") == "gpu" and d.get("spec")})
        if not gpus:
            raise ScenarioError("the cluster has no GPUs to cap (a power cap applies to GPUs "
                                "only); remove gpu_power_cap_w", field="power.gpu_power_cap_w")
        for sid in gpus:
            base = specs.get(sid) or get_device(sid)
            if not base.idle_power_w < cap <= base.peak_power_w:
                raise ScenarioError(
                    f"{cap:g} W is outside the power range of {sid}: a cap must lie above its "
                    f"idle power ({base.idle_power_w:g} W) and at most its TDP "
                    f"({base.peak_power_w:g} W); e.g. gpu_power_cap_w: "
                    f"{round(0.8 * base.peak_power_w):g}", field="power.gpu_power_cap_w")
            specs[sid] = capped_spec(base, cap)
        g.graph["device_specs"] = specs
    check_rack_limit(g, p.rack_limit_kw, p.servers_per_rack)
    return g
