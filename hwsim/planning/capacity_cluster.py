"""The candidate clusters of the capacity questions (docs/planning.md, "Capacity questions"):
the base scenario's cluster rewritten for another device type and server count, each device
type's standard server, and prices per device-hour. Plain mappings in and out, with the field
names of docs/scenarios.md."""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import numpy as np

from hwsim.catalog import get_device
from hwsim.exceptions import ScenarioError

__all__ = ["SERVER_DEFAULTS", "price_of", "cluster_for", "node_of", "check_devices",
           "positive", "number"]

SERVER_DEFAULTS: dict[str, dict[str, Any]] = {
    # The node fields of each device type's standard 8-GPU server, used when a candidate device
    # differs from the base scenario's (a different GPU needs its own NVLink generation and
    # NICs). [DGX-A100] NVIDIA DGX A100 datasheet: NVLink 3 (600 GB/s per GPU), 8x 200 Gb/s
    # HDR InfiniBand, 2x AMD EPYC 7742. [DGX-H100] NVIDIA DGX H100 datasheet: NVLink 4
    # (900 GB/s per GPU), 8x 400 Gb/s NDR ConnectX-7, 2x Intel Xeon Platinum 8480C. [DGX-H200]
    # HGX H200: NVLink 4, NDR 400 Gb/s. [DGX-B200] DGX B200 datasheet: NVLink 5, 8x 400 Gb/s.
    # [DGX-2] V100-SXM3 servers (AWS p3dn: NVLink 2, 100 Gb/s; EDR InfiniBand used here).
    # No host_link here: a candidate's is its device's catalog host_link (the PCIe generation
    # of its datasheet, hwsim.topology.builders.default_host_link), as for any node that sets
    # none; cluster_for drops the base's so that it does not carry over to another device.
    "V100-SXM2-32GB": {"intra_node": "nvlink2", "nic": "ib-edr-100", "cpu": "Xeon-8480"},
    "A100-SXM4-40GB": {"intra_node": "nvlink3", "nic": "ib-hdr-200", "cpu": "EPYC-7742"},
    "A100-SXM4-80GB": {"intra_node": "nvlink3", "nic": "ib-hdr-200", "cpu": "EPYC-7742"},
    "H100-SXM5-80GB": {"intra_node": "nvlink4", "nic": "ib-ndr-400", "cpu": "Xeon-8480"},
    "H200-SXM-141GB": {"intra_node": "nvlink4", "nic": "ib-ndr-400", "cpu": "Xeon-8480"},
    "B200": {"intra_node": "nvlink5", "nic": "ib-ndr-400", "cpu": "Xeon-8480"},
    # [MI300X-PLATFORM] AMD Instinct MI300X/MI325X/MI355X platform data sheets: 8 OAMs joined
    # pairwise by Infinity Fabric (no switch; links.yaml xgmi-*); the OEM servers built on them
    # (e.g. Supermicro AS-8125GS-TNMR2, 2x EPYC 9004) carry 8x 400 Gb/s RDMA NICs (RoCE).
    "MI300X": {"intra_node": "xgmi-mi300x", "nic": "roce-400", "cpu": "EPYC-9654"},
    "MI325X": {"intra_node": "xgmi-mi300x", "nic": "roce-400", "cpu": "EPYC-9654"},
    "MI355X": {"intra_node": "xgmi-mi355x", "nic": "roce-400", "cpu": "EPYC-9654"},
}


def price_of(device: str, prices: Mapping[str, float] | None = None) -> float:
    """$ per device-hour of catalog *device*: ``prices[device]`` when given, else the
    catalog's ``price_per_hour``. ScenarioError (field ``prices``) when neither has one."""
    if prices and device in prices:
        p = prices[device]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (
                math.isfinite(p) and p >= 0):
            raise ScenarioError(f"price of {device} must be a number >= 0 ($ per device-hour), "
                                f"got {p!r}", field="prices")
        return float(p)
    spec = get_device(device)
    if spec.price_usd_per_hour is None:
        raise ScenarioError(
            f"the catalog has no price_per_hour for {device}; give one (CLI: --price "
            f"{device}=USD_PER_H; Python: prices={{'{device}': usd_per_hour}})", field="prices")
    return float(spec.price_usd_per_hour)


def node_of(base: Mapping[str, Any]) -> dict:
    cluster = base.get("cluster") or {}
    node = cluster.get("node")
    if not isinstance(node, Mapping) or not node.get("gpu"):
        raise ScenarioError("capacity questions need the builder form with one GPU node type "
                            "(cluster: {nodes: N, node: {gpu: ID, gpus_per_node: G, ...}}); "
                            "groups, sites, explicit graphs and TPUs are not supported",
                            field="cluster")
    return dict(node)


def cluster_for(base: Mapping[str, Any], device: str, nodes: int,
                 node_overrides: Mapping[str, Mapping[str, Any]] | None) -> dict:
    """The base cluster rewritten for *nodes* servers of *device* (same gpus_per_node); for
    another device than the base's, its :data:`SERVER_DEFAULTS` and its own default host
    link (the base's ``intra_node``, ``nic``, ``cpu`` and ``host_link`` are dropped)."""
    node = node_of(base)
    if device != node["gpu"]:
        for key in ("intra_node", "nic", "cpu", "host_link"):
            node.pop(key, None)
        node.update(SERVER_DEFAULTS.get(device, {}))
        if "nic" in node:
            node.setdefault("nics_per_node", node["gpus_per_node"])
    elif nodes > 1 and not node.get("nic") and device in SERVER_DEFAULTS:
        node["nic"] = SERVER_DEFAULTS[device]["nic"]
        node["nics_per_node"] = node["gpus_per_node"]
    node["gpu"] = device
    node.update((node_overrides or {}).get(device, {}))
    cluster = copy.deepcopy(dict(base["cluster"]))
    cluster["nodes"] = int(nodes)
    cluster["node"] = node
    if nodes > 1:
        cluster.setdefault("fabric", {"topology": "fat-tree"})
    return cluster


def check_devices(devices: Sequence[str] | None, base_device: str) -> list[str]:
    devs = list(devices) if devices else [base_device]
    for d in devs:
        get_device(d)  # ScenarioError naming the known ids
    return devs


def positive(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise ScenarioError(f"must be a positive number, got {value!r}", field=field)
    return float(value)


def number(value: Any) -> float:
    """*value* as a float; NaN for None or anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return float("nan")
    return float(value)
