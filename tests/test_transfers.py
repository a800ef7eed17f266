"""Bulk transfers between tiers and sites: closed forms alone, sharing when concurrent."""

from __future__ import annotations

import pytest

import hwsim
from hwsim.catalog import get_link, get_storage


def _scenario(transfers, storage=None, nodes=2, nic="eth-100g", wan=None):
    site = {"nodes": nodes, "node": {"cpu": "EPYC-7742", "nic": nic, "nics_per_node": 1,
                                     "local_storage": "nvme-gen4"},
            "fabric": {"topology": "single-switch"}, "storage": storage or []}
    cluster = site if wan is None else {
        "sites": [{"name": "a", **site}, {"name": "b", **site}], "wan": [{"a": "a", "b": "b", "link": wan}]}
    return {"name": "t", "cluster": cluster, "workload": {"kind": "transfer", "transfers": transfers}}


def test_hdd_array_read_is_iops_bound_for_1mib_requests():
    """12 disks read 1 MiB requests at min(bw, iops * 1 MiB) each; the 100G LAN is not the limit."""
    hdd = get_storage("hdd-7200")
    nvme = get_storage("nvme-gen4")
    size = 1e12
    r = hwsim.run(_scenario([{"name": "x", "src": "hdd", "dst": "n0.nvme", "size": size}],
                            storage=[{"name": "hdd", "tier": "hdd-7200", "count": 12}]))
    rate = 12 * min(hdd.read_bw_bytes_per_s, hdd.read_iops * 2**20)
    latency = hdd.latency_s + nvme.latency_s
    s = r.summary
    # path latency of the links is microseconds; the disk and drive latencies dominate it
    assert s["transfer_x_s"] == pytest.approx(size / rate + latency, rel=1e-4)
    assert s["transfer_x_limit"] == "storage"


def test_wan_transfer_takes_size_over_wan_bandwidth():
    wan = get_link("wan-10g")
    size = 1e12
    r = hwsim.run(_scenario([{"name": "x", "src": "a/n0.nvme", "dst": "b/n0.nvme", "size": size}],
                            wan="wan-10g"))
    bw = wan.bw_bytes_per_s * wan.efficiency
    assert r.summary["transfer_x_s"] == pytest.approx(size / bw, rel=1e-3)
    assert r.summary["transfer_x_limit"] == "comm:wan"
    assert r.summary["bottleneck"] == "comm:wan"


def test_concurrent_transfers_share_the_wan_equally():
    one = hwsim.run(_scenario([{"name": "x", "src": "a/n0.nvme", "dst": "b/n0.nvme", "size": 1e12}],
                              wan="wan-10g")).summary["transfer_x_s"]
    both = hwsim.run(_scenario(
        [{"name": "x", "src": "a/n0.nvme", "dst": "b/n0.nvme", "size": 1e12},
         {"name": "y", "src": "a/n1.nvme", "dst": "b/n1.nvme", "size": 1e12}], wan="wan-10g")).summary
    assert both["transfer_x_s"] == pytest.approx(2 * one, rel=1e-3)
    assert both["transfer_y_s"] == pytest.approx(2 * one, rel=1e-3)


def test_a_transfer_that_does_not_fit_is_a_result():
    cap = get_storage("nvme-gen4").capacity_bytes
    r = hwsim.run(_scenario([{"name": "big", "src": "n0.nvme", "dst": "n1.nvme", "size": 2 * cap}]))
    assert r.summary["transfers_failed"] == 1
    assert "does not fit" in r.summary["transfer_big_error"]


def test_faster_link_never_slows_a_transfer():
    times = [hwsim.run(_scenario([{"name": "x", "src": "n0.nvme", "dst": "n1.nvme", "size": 1e11}],
                                 nic=nic)).summary["transfer_x_s"]
             for nic in ("eth-25g", "eth-100g", "eth-400g")]
    assert times[0] > times[1] >= times[2]
