"""topology layer (see DESIGN.md): the networkx graph of devices, memories, storage, switches and
links, its builders and its routing. ``docs/topology.md`` documents the graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hwsim.topology.attributes import (
    EDGE_ATTRIBUTES, ENDPOINT_KINDS, FORWARDING_KINDS, NODE_ATTRIBUTES, NODE_KINDS, SWITCH_LEVELS,
    TIER_ATTRIBUTES, TRANSIT_LINK_CLASSES, check_connected, from_explicit, top_switches,
)
from hwsim.topology.builders import TOPOLOGIES, cluster, multi_site, single_node, tpu_pod
from hwsim.topology.degrade import degrade
from hwsim.topology.fabrics import bisection_bw
from hwsim.topology.query import (component_counts, compute_devices, natural_key, nodes_of_kind,
                                  server_index, server_peer, torus_ordered)

if TYPE_CHECKING:
    from hwsim.topology.routing import Router


def __getattr__(name: str) -> Any:
    """``Router`` on first use (PEP 562): routing needs numpy, building a graph does not
    (``hwsim validate``)."""
    if name == "Router":
        from hwsim.topology.routing import Router

        return Router
    raise AttributeError(f"module 'hwsim.topology' has no attribute {name!r}")


__all__ = [
    "single_node", "cluster", "tpu_pod", "multi_site", "from_explicit", "check_connected",
    "top_switches", "degrade", "bisection_bw", "Router", "natural_key", "nodes_of_kind",
    "compute_devices",
    "component_counts", "server_index", "server_peer", "torus_ordered", "TOPOLOGIES", "NODE_KINDS",
    "ENDPOINT_KINDS", "FORWARDING_KINDS",
    "TRANSIT_LINK_CLASSES", "SWITCH_LEVELS", "NODE_ATTRIBUTES", "EDGE_ATTRIBUTES",
    "TIER_ATTRIBUTES",
]
