"""Power a topology must provision (docs/analysis.md, "Power"): each server's draw with every
component busy, and the check of a rack power limit. Reads the catalog's power figures (and a
power-capped run's specs in ``G.graph["device_specs"]``); no numpy, so ``hwsim validate`` stays
light."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hwsim.catalog import get_device, get_link, get_storage
from hwsim.exceptions import ScenarioError

__all__ = ["device_spec", "server_busy_power_w", "check_rack_limit"]


def device_spec(graph, spec_id: str) -> Any:
    """The spec a run on *graph* uses for catalog id *spec_id*: a calibrated or power-capped one
    (``graph.graph["device_specs"]``), else the catalog's."""
    return graph.graph.get("device_specs", {}).get(spec_id) or get_device(spec_id)


def server_busy_power_w(graph) -> dict[Any, float]:
    """Per server (``(site, server)``), its power with every component busy: compute devices at
    their busy power (capped where the graph carries capped specs), NIC ports, local storage at
    its active (else idle) power. What a rack must provision for."""
    out: dict[Any, float] = defaultdict(float)
    memo: dict[tuple[str, str], float] = {}

    def watts(kind: str, spec: str) -> float:
        if (kind, spec) not in memo:
            if kind == "nic":
                try:
                    w = float(get_link(spec).power_w or 0.0)
                except ScenarioError:  # not a catalog link
                    w = 0.0
            elif kind == "storage":
                s = get_storage(spec)
                w = float((s.active_power_w if s.active_power_w is not None
                           else s.idle_power_w) or 0.0)
            else:
                w = float(device_spec(graph, spec).busy_w)
            memo[(kind, spec)] = w
        return memo[(kind, spec)]
    for _, d in graph.nodes(data=True):
        kind = d.get("kind")
        if d.get("server") is None or not d.get("spec") or kind not in (
                "gpu", "tpu", "cpu", "nic", "storage"):
            continue
        count = int(d.get("count", 1)) if kind == "storage" else 1
        out[(d.get("site"), d.get("server"))] += watts(kind, str(d["spec"])) * count
    return dict(out)


def check_rack_limit(graph, rack_limit_kw: float | None, servers_per_rack: int | None) -> float:
    """The busiest rack's power (kW) with every component busy: the servers in rack order,
    *servers_per_rack* to a rack. ScenarioError naming ``power.rack_limit_kw`` and the numbers
    when it exceeds *rack_limit_kw*. 0 when no rack size is given."""
    if not servers_per_rack:
        return 0.0
    per = server_busy_power_w(graph)
    keys = sorted(per, key=lambda k: (str(k[0]), k[1]))
    racks = [sum(per[k] for k in keys[i:i + servers_per_rack])
             for i in range(0, len(keys), servers_per_rack)]
    worst = max(racks, default=0.0) / 1e3
    if rack_limit_kw is not None and worst > rack_limit_kw * (1 + 1e-9):
        i = racks.index(max(racks))
        server_kw = per[keys[i * servers_per_rack]] / 1e3
        raise ScenarioError(
            f"rack {i} draws {worst:.2f} kW with every component busy ({servers_per_rack} "
            f"servers of {server_kw:.2f} kW each), over the rack limit of {rack_limit_kw:g} kW; "
            f"valid: fewer servers per rack (at most {int(rack_limit_kw // server_kw)} at "
            f"{server_kw:.2f} kW), a higher limit, or a GPU power cap "
            f"(power.gpu_power_cap_w)", field="power.rack_limit_kw")
    return worst
