"""NCCL's protocols and tuning as constants, and their calibration against nccl-tests figures.

The collectives of :mod:`hwsim.jobs.collectives` move bytes as flows on the graph; what NCCL adds
on top of the wire is held here:

- **Protocols** (NCCL ``src/graph/tuning.cc``): *Simple* moves data in large slices, a hop forwards
  a slice only once it has arrived, so every hop of the pipeline costs one slice time on top of
  its latency; *LL* (low latency) stores 4 bytes of data with a 4-byte flag per 8-byte line and
  polls the flags: no slice delay, a fraction of the bandwidth. NVLS reduces in the NVSwitch.
- **Constants** (:class:`Params`): fitted to the rows of ``calibration.yaml`` named in
  :data:`FITTED_TO` (``tests/test_nccl_calibration.py``: ``fit_constants`` refits them,
  ``nccl_report`` compares every row); every other row is validation.
- **Cost model** shared by the simulation and by ``auto``: :func:`hops`, :func:`overhead`,
  :func:`estimate`; the topology questions NCCL asks: :func:`layout`, :func:`nvswitch`,
  :func:`mesh` (RCCL on AMD's switchless Infinity Fabric platforms).

Link latencies and efficiencies come from the catalog (``links.yaml``) and are not refitted here:
the NVLink latency (1.5 us per hop) was derived from the A100 1 kB all-reduce and already holds
NCCL's per-step cost on NVLink, so no NVLink step latency is added; the NVLink and RDMA
efficiencies were derived from the ring all-reduce asymptotes (A100 8 GiB, 8xH200 ring, B200
4 nodes 16 GiB), so the Simple protocol's own efficiency is 1 (no double count).
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from hwsim.catalog import get_device
from hwsim.exceptions import HwsimError
from hwsim.jobs.system import System
from hwsim.topology import natural_key
from hwsim.topology.nvl import scale_up

__all__ = ["Protocol", "Params", "PARAMS", "FITTED_TO", "CATALOG_ROWS", "Flow", "Phase",
           "busbw_factor", "ring_order", "layout", "rings", "nvswitch", "mesh", "protocols",
           "protocol_for",
           "estimate", "overhead", "hops", "memo_key"]

MiB, GiB = 2**20, 2**30


@dataclass(frozen=True)
class Protocol:
    """How a collective moves data: ``efficiency`` (fraction of the link's calibrated bandwidth),
    ``slice_bytes`` (store-and-forward unit per hop, one GPU's share over all its channels),
    ``net_latency_s`` (software latency of a hop that crosses a NIC, on top of the path)."""

    name: str
    efficiency: float = 1.0
    slice_bytes: float = 0.0
    net_latency_s: float = 0.0


@dataclass(frozen=True)
class Params:
    """NCCL constants used by the collectives (the defaults are :data:`PARAMS`).

    Attributes
    ----------
    slice_bytes : float
        Simple protocol pipeline slice per GPU. Fitted (least squares on relative bus-bandwidth
        error) to the A100 8-GPU ring rows >= 16 MiB (:data:`FITTED_TO`). NCCL's Simple steps are
        512 KiB per channel (4 MiB buffer / 8 steps), a few MiB over a GPU's channels: same order.
    net_step_latency_s : float
        Software latency of a step that crosses the network (proxy thread, RDMA post and
        completion; any protocol), on top of the path latency. Fitted to the B200 4-node 16 MiB
        row; NCCL's own figure for a network ring step is 14 us with the wire (tuning.cc hwLat).
    nvls_efficiency : float
        NVLS bandwidth as a fraction of the NVLink4 links' calibrated bandwidth, each GPU moving
        ``S (1 + 1/n)`` up and down (multimem ld_reduce of every shard, multicast store of its
        own). Fitted to the 8xH200 NVLS 16 GiB row; NCCL's own ``nvlsEfficiency`` for Hopper is
        0.85 (``src/graph/tuning.cc``), close to the fit.
    nvls_latency_s : float
        Fixed cost of an NVLS all-reduce (pipeline fill through the switch, kernel). Fitted to
        the H100 NVLS 16 MiB row.
    ll_efficiency : float
        LL bandwidth as a fraction of Simple's: NCCL's tuning model (tuning.cc, 2.8) scales the
        ring bus bandwidth by 1/4 for LL all-reduce (the 8-byte line carries 4 data bytes, and
        flag polling halves it again). Not fitted.
    tree_max_bytes_per_rank : float
        ``auto`` considers the tree for a multi-node all-reduce only while ``S / n`` is at most
        this (16 KiB: S <= 512 KiB on 32 GPUs). A modelling choice, not a fit. NCCL uses trees
        for small multi-node messages, rings for large ones (NVIDIA/nccl#226); with 8 NICs a
        node a tree "struggles to get better performance than ring" (NVIDIA/nccl-tests#196);
        measured tree bus bandwidth is below ring's (NVIDIA/nccl#1368: 150 vs 190 GB/s on 5x8
        H100), a deficit the fluid tree here lacks; and the B200 4-node 1 MiB figure (378 us,
        32 KiB per rank) is as slow as the ring model (and as a forced ring at 1 MiB on 5x8 H100
        in nccl#1368, 355 us), where the tree model is 2.5x faster.
    rccl_slice_bytes : float
        The Simple protocol's pipeline slice per GPU in RCCL (AMD GPUs), in place of
        ``slice_bytes``: fitted to the 8x MI300X 128 MiB rccl-tests all-reduce row
        (:data:`FITTED_TO`); RCCL's Simple steps differ from NCCL's (its own buffer sizes and
        channel counts on the Infinity Fabric mesh), so NCCL's fit does not carry over.
    nvls_auto_links : tuple of str
        Intra-node links on which ``auto`` may pick NVLS: nvlink4 (Hopper; the H100 and H200 rows
        are NVLS). Not nvlink5: the only B200 figure stays at the ring bound (740.64 GB/s at
        4 GiB = 0.82 x 900) up to 4 GiB; ``algorithm="nvls"`` on nvlink5 uses
        ``nvls_efficiency * 0.74 / 0.85`` (NCCL's Blackwell / Hopper nvlsEfficiency), unvalidated.
    """

    slice_bytes: float = 4.75e6
    net_step_latency_s: float = 22.4e-6
    nvls_efficiency: float = 0.841
    nvls_latency_s: float = 64.1e-6
    ll_efficiency: float = 0.25
    tree_max_bytes_per_rank: float = 16 * 1024
    nvls_auto_links: tuple[str, ...] = ("nvlink4",)
    rccl_slice_bytes: float = 1.48e6

    def protocol(self, name: str, rccl: bool = False) -> Protocol:
        """The :class:`Protocol` ``"simple"``, ``"ll"`` or ``"wire"`` (the links alone: for
        devices that do not run NCCL, TPUs and CPUs, whose libraries are not calibrated here);
        *rccl*: as RCCL runs it on AMD GPUs (Simple's slice is ``rccl_slice_bytes``)."""
        if name == "simple":
            return Protocol("simple", 1.0, self.rccl_slice_bytes if rccl else self.slice_bytes,
                            self.net_step_latency_s)
        if name == "ll":
            return Protocol("ll", self.ll_efficiency, 0.0, self.net_step_latency_s)
        if name == "wire":
            return Protocol("wire")
        raise ValueError(f"unknown protocol {name!r}; valid: simple, ll, wire")

    def nvls(self, link: str | None) -> Protocol | None:
        """The NVLS protocol on the intra-node *link* id, or None where there is no NVLS."""
        eff = {"nvlink4": self.nvls_efficiency,
               "nvlink5": self.nvls_efficiency * 0.74 / 0.85}.get(link or "")
        return Protocol("nvls", eff) if eff else None


PARAMS = Params()

FITTED_TO = {
    "slice_bytes": [("A100 8x nvlink3", s) for s in (16 * MiB, 128 * MiB, GiB, 8 * GiB)],
    "net_step_latency_s": [("B200 4 nodes", 16 * MiB)],
    "nvls_efficiency": [("H200 8x nvls", 16 * GiB)],
    "nvls_latency_s": [("H100 8x nvls", 16 * MiB)],
    "rccl_slice_bytes": [("MI300X 8x xgmi", 128 * MiB)],
}
"""The calibration rows each constant of :class:`Params` was fitted to."""

CATALOG_ROWS = {("A100 8x nvlink3", 8 * GiB), ("H200 8x ring", 16 * GiB),
                ("B200 4 nodes", 16 * GiB), ("MI300X 8x xgmi", 1024)}
"""Rows the catalog's link efficiencies and latencies were derived from (links.yaml): not
validation either (the xgmi-mi300x latency is the MI300X 1 kB row's)."""


def busbw_factor(op: str, n: int) -> float:
    """nccl-tests bus bandwidth over algorithm bandwidth (``doc/PERFORMANCE.md``)."""
    return {"allreduce": 2 * (n - 1) / n, "allgather": (n - 1) / n, "reduce_scatter": (n - 1) / n,
            "alltoall": (n - 1) / n, "broadcast": 1.0}[op]




# -- the plan of a collective and its cost --------------------------------------------------------
class Flow(NamedTuple):
    """One flow of a phase: *nbytes* from *src* to *dst*, recorded for *rank* (a named tuple:
    a collective's plan makes thousands)."""

    src: str
    dst: str
    nbytes: float
    rank: int


@dataclass(frozen=True)
class Phase:
    """Flows started together, ``steps`` times in a row; each step then pays :func:`overhead`:
    ``depth`` pipeline hops of mean hop cost, or ``fixed_s`` (NVLS)."""

    flows: tuple[Flow, ...]
    steps: int = 1
    depth: float = 1.0
    fixed_s: float | None = None


def memo_key(system: System) -> object:
    """The key of this module's (and :mod:`hwsim.jobs.collectives`') memos for *system*: what
    they hold depends on its graph alone, so runs on a shared graph share them
    (:func:`hwsim.jobs.system.share_graph`); otherwise the System itself."""
    return getattr(system, "memo_key", system)


def ring_order(system: System, ranks: Sequence[str]) -> list[str]:
    """Ranks ordered by server, then name, so that a ring crosses the network only between
    servers (what NCCL's ring search finds on a fat-tree)."""
    keys = _ORDER_KEYS.setdefault(memo_key(system), {})

    def key(n: str) -> tuple:
        k = keys.get(n)
        if k is None:
            at = system.graph.nodes[n]
            server = at.get("server")
            k = keys[n] = (str(at.get("site", "")), server if server is not None else -1,
                           natural_key(n))
        return k
    return sorted(ranks, key=key)


_NICS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ORDER_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LAYOUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layout(system: System, devices: Sequence[str]) -> tuple[list[list[str]], int]:
    """Devices grouped by server, or by NVLink domain where servers share one (:func:`scale_up`;
    ring order), and the rails: parallel rings or trees across groups, ``min(GPUs, NICs)`` of
    the smallest group (1 inside one group). Memoised."""
    memo = _LAYOUTS.setdefault(memo_key(system), {})
    k = tuple(devices)
    hit = memo.get(k)
    if hit is None:
        hit = memo[k] = _layout(system, devices)
    return [list(grp) for grp in hit[0]], hit[1]


def _layout(system: System, devices: Sequence[str]) -> tuple[list[list[str]], int]:
    g = system.graph
    groups: dict[tuple, list[str]] = {}
    for d in ring_order(system, devices):
        at = g.nodes[d]
        groups.setdefault(scale_up(at) if at.get("server") is not None else (d,), []).append(d)
    if len(groups) == 1:
        return list(groups.values()), 1
    nics = _NICS.get(memo_key(system))
    if nics is None:
        nics = _NICS[memo_key(system)] = {}
        for _, at in g.nodes(data=True):
            if at.get("kind") == "nic":
                k = scale_up(at)
                nics[k] = nics.get(k, 0) + 1
    rails = min(min(len(v), nics.get(k, 0)) for k, v in groups.items())
    return list(groups.values()), max(rails, 1)


def rings(groups: list[list[str]], rails: int) -> list[list[str]]:
    """One ring inside a server; across servers one per rail, ring ``r`` entering every server
    at its GPU ``r g / rails`` and leaving from the one before, so each NIC carries one ring
    out and one in."""
    if len(groups) == 1:
        return [groups[0]]
    return [[d for grp in groups for d in grp[r * len(grp) // rails:] + grp[:r * len(grp) // rails]]
            for r in range(rails)]


def nvswitch(system: System, devices: Sequence[str]) -> tuple[str | None, str | None]:
    """The NVSwitch every device hangs off and the link id to it, or ``(None, None)``."""
    g, common = system.graph, None
    for d in devices:
        sws = {v for v in g.neighbors(d) if g.nodes[v].get("kind") == "nvswitch"}
        common = sws if common is None else common & sws
    if not common:
        return None, None
    sw = min(common)
    return sw, g.edges[devices[0], sw].get("link")


_MESHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def mesh(system: System, devices: Sequence[str]) -> bool:
    """Whether every pair of *devices* (three or more GPUs) is joined by a direct link: an AMD
    Infinity Fabric platform (``xgmi`` intra-node links), where RCCL runs its rings over all of
    a GPU's links at once (:func:`hwsim.jobs.collectives.plan`, algorithm ``mesh``). Memoised."""
    memo = _MESHES.setdefault(memo_key(system), {})
    k = frozenset(devices)
    hit = memo.get(k)
    if hit is None:
        g = system.graph
        devs = sorted(k)
        hit = memo[k] = len(devs) >= 3 and all(g.nodes[d].get("kind") == "gpu" for d in devs) \
            and all(g.has_edge(a, b) for i, a in enumerate(devs) for b in devs[i + 1:])
    return hit


def protocols(system: System, devices: Sequence[str], algorithm: str) -> tuple[str, ...]:
    """The protocols ``auto`` compares: NVLS its own; GPUs LL and Simple; other devices wire."""
    if algorithm == "nvls":
        return ("nvls",)
    gpus = all(system.graph.nodes[d].get("kind") == "gpu" for d in devices)
    return ("ll", "simple") if gpus else ("wire",)


def protocol_for(system: System, devices: Sequence[str], algorithm: str, protocol: str,
                 params: Params) -> Protocol:
    """The :class:`Protocol` of *protocol* (``simple``, ``ll``) or, for NVLS, of the link."""
    if algorithm == "nvls":
        nv = params.nvls(nvswitch(system, devices)[1])
        if nv is None:
            raise ValueError("nvls needs all ranks on one NVSwitch of an NVLS link (nvlink4, "
                             "nvlink5)")
        return nv
    return params.protocol(protocol, rccl=rccl(system, devices))


def rccl(system: System, devices: Sequence[str]) -> bool:
    """Whether *devices* run RCCL rather than NCCL: AMD GPUs (catalog name ``AMD ...``)."""
    spec = system.graph.nodes[devices[0]].get("spec") if devices else None
    return spec is not None and _amd(spec)


@functools.lru_cache(maxsize=None)
def _amd(spec: str) -> bool:
    try:
        return get_device(spec).name.startswith("AMD ") and get_device(spec).kind == "gpu"
    except HwsimError:
        return False


def hops(system: System, phase: Phase, key: int, proto: Protocol) -> list[tuple]:
    """Per flow of *phase*: ``(channels, coefficients, hop latency, slice fraction, category)``.
    The coefficients charge ``1 / efficiency`` of capacity per byte; the hop latency is the
    path's plus ``proto.net_latency_s`` if it crosses a NIC; the slice fraction is the part of
    the flow's duration one slice takes (a sender splits its slice over its flows)."""
    per_src: dict[str, int] = {}
    for f in phase.flows:
        per_src[f.src] = per_src.get(f.src, 0) + 1
    memo = _HOPS.setdefault(memo_key(system), {}).setdefault(proto, {})
    out = []
    for i, f in enumerate(phase.flows):
        k = (f.src, f.dst, key + i)
        h = memo.get(k)
        if h is None:
            chans, coefs, lat, cat = system.route(f.src, f.dst, key + i)
            nic = any(system.graph.nodes[u].get("kind") == "nic" for u, _ in chans)
            h = memo[k] = (chans, {c: coefs.get(c, 1.0) / proto.efficiency for c in chans},
                           lat + (proto.net_latency_s if nic else 0.0), cat)
        frac = min(1.0, proto.slice_bytes / (per_src[f.src] * f.nbytes)) if f.nbytes > 0 else 0.0
        out.append((h[0], h[1], h[2], frac, h[3]))
    return out


_HOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def overhead(phase: Phase, hop: list[tuple], durations: Sequence[float]) -> float:
    """Pipeline cost of one step after its flows: ``depth`` times the mean over the flows of
    ``hop latency + duration x slice fraction``, or ``phase.fixed_s``."""
    if phase.fixed_s is not None:
        return phase.fixed_s
    cost = sum(h[2] + d * h[3] for h, d in zip(hop, durations))
    return phase.depth * cost / max(len(hop), 1)


def estimate(system: System, phases: Sequence[Phase], proto: Protocol) -> float:
    """Time of *phases* alone on the graph: each flow at its bottleneck channel's capacity
    shared equally by the phase's flows on it (exact for the symmetric patterns built here)."""
    total, caps = 0.0, system.net.channels
    for phase in phases:
        hop = hops(system, phase, 0, proto)
        count: dict = {}
        for h in hop:
            for c in h[0]:
                count[c] = count.get(c, 0) + 1
        durs = [f.nbytes * max((h[1][c] * count[c] / caps[c].capacity for c in h[0]), default=0.0)
                for f, h in zip(phase.flows, hop)]
        total += phase.steps * (max(durs, default=0.0) + overhead(phase, hop, durs))
    return total
