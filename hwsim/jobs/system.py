"""The hardware of one run as engine objects: a channel per link direction and per storage
channel, streams and a memory pool per device, routing over the graph.

Jobs talk to hardware only through :class:`System`: ``transfer`` moves bytes between two graph
nodes as a flow, ``device`` gives a device's streams, memory and spec.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import numpy as np
import simpy

from hwsim.catalog import get_device, get_storage
from hwsim.catalog.specs import DeviceSpec, StorageSpec
from hwsim.engine import FlowNetwork, Pool, Recorder, Stream
from hwsim.exceptions import ScenarioError
from hwsim.topology import Router

__all__ = ["System", "Device", "PageCache", "COMPUTE_KINDS", "Shared", "share_graph"]

COMPUTE_KINDS = ("gpu", "tpu", "cpu")

class Shared:
    """What every run on one shared graph reuses (:func:`share_graph`): its router, the routes
    between devices, and the per-graph memos of the collectives (:mod:`hwsim.jobs.nccl`,
    :mod:`hwsim.jobs.collectives`, keyed by :attr:`System.memo_key`)."""

    def __init__(self, graph: nx.Graph) -> None:
        self.router = Router(graph)
        self.routes: dict[tuple, tuple[list, dict, float, str]] = {}
        self.links: list[tuple] | None = None  # _links(graph), once


def _links(graph: nx.Graph) -> list[tuple[tuple[str, str], float, str, float]]:
    """``(channel, capacity, link class, latency)`` of each direction of each link of *graph*,
    in edge order (a run declares its channels in this order: it breaks the solver's ties)."""
    out = []
    for u, v, d in graph.edges(data=True):
        cap = d["bw_bytes_per_s"] * d.get("efficiency", 1.0)
        label, latency = d.get("link_class", ""), d.get("latency_s", 0.0)
        out += [((u, v), cap, label, latency), ((v, u), cap, label, latency)]
    return out


_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def share_graph(graph: nx.Graph) -> Shared:
    """Let every later :class:`System` on *graph* (this very object) reuse what depends on the
    graph alone instead of finding it again: its routes (one :class:`~hwsim.topology.Router`,
    the channels and latency of each route between two non-storage nodes) and the collectives'
    memos (algorithm choices, plans' hops, folding factors, ring orders). For a caller that
    runs many jobs on one graph and does not change it afterwards (the parallelism search).
    Each is what a run would compute from the graph, so results are the same. Forgotten with
    the graph."""
    shared = _SHARED.get(graph)
    if shared is None:
        shared = _SHARED[graph] = Shared(graph)
    return shared


@dataclass
class Device:
    """A compute device at run time: its spec, streams (compute, comm, copy, host: host work
such as an offloaded optimizer step; data-loader workers use the server's thread pool,
:meth:`System.cores`) and memory pool."""

    node: str
    spec: DeviceSpec
    compute: Stream
    comm: Stream
    copy: Stream
    host: Stream
    memory: Pool
    speed: float = 1.0

    def running(self, stack) -> Device:
        """This device as a job running software stack *stack* (a
        :class:`~hwsim.catalog.stacks.StackProfile`, or None: unchanged) sees it: the same
        streams, memory and speed, the spec with the stack's framework factors and attention
        kernel (:meth:`StackProfile.apply`)."""
        return self if stack is None else replace(self, spec=stack.apply(self.spec))

    def op(self, flops: float, nbytes: float, precision: str, *, name: str, job: str, rank: int,
           stream: Stream | None = None, shape: tuple = ()) -> simpy.Process:
        """Run one op on the compute stream: roofline time, never under the dispatch time
        (:meth:`DeviceSpec.op_time_s`); its category says which limit applied."""
        spec = self.spec
        return (stream or self.compute).run(
            spec.op_time_s(flops, nbytes, precision, speed=self.speed, shape=shape), name=name,
            job=job, rank=rank, nbytes=nbytes, flops=flops,
            category=spec.op_bound(flops, nbytes, precision, speed=self.speed, shape=shape))


class PageCache:
    """A server's page cache of one dataset of *dataset_bytes*, holding up to *capacity_bytes*
    (the server's host memory).

    Samples are drawn without repetition within an epoch and reshuffled between epochs, so a read
    in epoch *e* hits the cache with the probability that its sample is cached when the epoch
    starts: :meth:`hit_fraction` is the cached fraction at the first read of the epoch. Missed
    bytes are added (:meth:`add`) up to the capacity; with a dataset larger than memory the
    cache keeps ``capacity / dataset`` of it (LRU under uniform random access). Expected values,
    no randomness: one server that reads a dataset that fits reads it all from storage in the
    first epoch and from memory afterwards; S servers that each read a 1/S shard per epoch fill
    it over epochs (``1 - (1 - 1/S)^e`` after *e* epochs).
    """

    def __init__(self, capacity_bytes: float, dataset_bytes: float) -> None:
        self.capacity_bytes, self.dataset_bytes = capacity_bytes, dataset_bytes
        self.cached_bytes = 0.0
        self._at_start: dict[int, float] = {}

    def hit_fraction(self, epoch: int) -> float:
        start = self._at_start.setdefault(epoch, self.cached_bytes)
        return min(1.0, start / self.dataset_bytes) if self.dataset_bytes > 0 else 0.0

    def add(self, nbytes: float) -> None:
        self.cached_bytes = min(self.capacity_bytes, self.dataset_bytes, self.cached_bytes + nbytes)


_ANY_KEY = ("any ECMP key",)
"""The key of :meth:`System.route`'s cache entries whose route is the same for every key."""


class System:
    """Engine objects for a topology graph (see docs/topology.md for the attribute schema).

    Parameters
    ----------
    env : simpy.Environment
    graph : networkx.Graph
        Nodes with ``kind``/``spec``; edges with ``bw_bytes_per_s`` (per direction),
        ``efficiency``, ``latency_s``, ``link_class``.
    recorder : Recorder
    rng : numpy.random.Generator, optional
        The run's only source of randomness.
    """

    def __init__(self, env: simpy.Environment, graph: nx.Graph, recorder: Recorder,
                 rng: np.random.Generator | None = None) -> None:
        self.env = env
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.graph = graph
        self.recorder = recorder
        self.net = FlowNetwork(env, recorder)
        shared = _SHARED.get(graph)
        self.router = shared.router if shared is not None else Router(graph)
        self.memo_key: object = shared if shared is not None else self
        """The key of the memos that depend on the graph alone: this System, or the
        :class:`Shared` of its graph (:func:`share_graph`)."""
        # routes between non-storage nodes depend on the graph alone (a storage end may add a
        # channel to this run's network: _client_channel)
        self._shared_routes = shared.routes if shared is not None else None
        self._devices: dict[str, Device] = {}
        self._storage: dict[str, tuple[StorageSpec, Pool]] = {}
        self._cores: dict[tuple, Stream] = {}
        self._caches: dict[tuple, PageCache] = {}
        self._routes: dict[tuple, tuple[list, dict, float, str]] = {}
        self._claims: dict = {}
        self._alone: set = set()
        links = shared.links if shared is not None else None
        if links is None:
            links = _links(graph)
            if shared is not None:
                shared.links = links
        self.net.add_channels((c, cap, label) for c, cap, label, _ in links)
        self._edge_latency = {c: latency for c, _, _, latency in links}
        for n, d in graph.nodes(data=True):
            if d.get("kind") == "storage":
                spec = get_storage(d["spec"])
                count = d.get("count", 1)
                # the node's figures (the tier's times count; a what-if may have scaled them)
                self.net.add_channel((n, "read"), d.get("read_bw_bytes_per_s",
                                                        spec.read_bw_bytes_per_s * count),
                                     "storage")
                self.net.add_channel((n, "write"), d.get("write_bw_bytes_per_s",
                                                         spec.write_bw_bytes_per_s * count),
                                     "storage")
                pool = Pool(f"{n}/capacity", spec.capacity_bytes * count, recorder,
                            lambda: env.now)
                self._storage[n] = (spec, pool)

    # -- devices --------------------------------------------------------------------------------
    def stack(self, profile):
        """Software-stack *profile* (a :class:`~hwsim.catalog.stacks.StackProfile`) as this run
        has it: a calibrated run's own (``graph.graph["stack_profiles"]``,
        :mod:`hwsim.scenario.calibration`), else *profile*."""
        return self.graph.graph.get("stack_profiles", {}).get(profile.name, profile)

    def device(self, node: str, speed: float | None = None) -> Device:
        """The run-time device at graph *node* (created on first use); *speed* scales its op
        rate (default: the node's ``speed`` attribute, set on stragglers, else 1)."""
        dev = self._devices.get(node)
        if dev is None:
            d = self._node(node)
            if speed is None:
                speed = float(d.get("speed", 1.0))
            if d.get("kind") not in COMPUTE_KINDS:
                raise ScenarioError(f"node {node!r} is a {d.get('kind')}, not a compute device "
                                    f"({', '.join(COMPUTE_KINDS)})")
            # a calibrated run's own specs (hwsim.scenario.calibration), else the catalog's
            spec = self.graph.graph.get("device_specs", {}).get(d["spec"]) or get_device(d["spec"])
            env, rec = self.env, self.recorder
            dev = Device(node, spec, Stream(env, f"{node}/compute", rec),
                         Stream(env, f"{node}/comm", rec, kind="collective"),
                         Stream(env, f"{node}/copy", rec, kind="copy"),
                         Stream(env, f"{node}/host", rec, kind="host"),
                         Pool(f"{node}/memory", spec.memory_bytes, rec, lambda: env.now), speed)
            self._devices[node] = dev
        return dev

    def cores(self, cpu: str) -> Stream:
        """The pool of hardware threads of the server of CPU node *cpu*: one slot per thread of
        every socket of that server (``threads``, else ``cores``, of the CPU spec), shared by all
        its data-loader workers; a worker runs on one thread at a time."""
        d = self._node(cpu)
        key = (d.get("site"), d.get("server")) if d.get("server") is not None else (cpu,)
        pool = self._cores.get(key)
        if pool is None:
            sockets = [n for n, e in self.graph.nodes(data=True) if e.get("kind") == "cpu" and (
                (e.get("site"), e.get("server")) == key if len(key) == 2 else n == cpu)]
            slots = 0
            for n in sockets:
                spec = get_device(self.graph.nodes[n]["spec"])
                slots += spec.threads or spec.cores or 1
            # "n0.cpu0" -> "n0.cores" (the server's), an explicit graph's "host" -> "host/cores"
            name = (cpu.rsplit(".", 1)[0] + ".cores") if len(key) == 2 and "." in cpu else (
                f"{cpu}/cores")
            pool = self._cores[key] = Stream(self.env, name, self.recorder, kind="host",
                                             slots=max(1, slots))
        return pool

    def page_cache(self, host: str, dataset_bytes: float, key: object = None,
                   capacity: float | None = None) -> PageCache:
        """The page cache of host-memory node *host* for a dataset of *dataset_bytes* (*key*
        tells datasets apart); its capacity is the node's memory (spec capacity x count), or
        *capacity* when that is smaller (the memory the page cache may use)."""
        cache = self._caches.get((host, key))
        if cache is None:
            d = self._node(host)
            cap = get_storage(d["spec"]).capacity_bytes * d.get("count", 1) if d.get(
                "kind") == "memory" else 0.0
            if capacity is not None:
                cap = min(cap, capacity)
            cache = self._caches[(host, key)] = PageCache(cap, dataset_bytes)
        return cache

    def storage(self, node: str) -> tuple[StorageSpec, Pool]:
        """Spec and capacity pool of the storage node *node*."""
        try:
            return self._storage[node]
        except KeyError:
            raise ScenarioError(f"node {node!r} is not a storage tier; storage nodes: "
                                f"{', '.join(sorted(self._storage)) or 'none'}") from None

    def is_storage(self, node: str) -> bool:
        return node in self._storage

    def _node(self, node: str) -> dict[str, Any]:
        try:
            return self.graph.nodes[node]
        except KeyError:
            raise ScenarioError(f"unknown node {node!r} in the topology") from None

    # -- transfers ------------------------------------------------------------------------------
    def route(self, src: str, dst: str, key: int = 0, request_bytes: float | None = None
              ) -> tuple[list, dict, float, str]:
        """Channels, their coefficients, latency and bottleneck category of a transfer from
        *src* to *dst*.

        A storage source adds its read channel and a storage destination its write channel, each
        with the coefficient that makes small requests IOPS-bound; the category is
        ``"storage"`` when the tier is the narrowest part of the path, else
        ``"comm:<link class>"`` of the narrowest link. *request_bytes* is the I/O size at a
        storage end (default 1 MiB). Routes are cached: a job repeats the same transfers every
        step.
        """
        cache_key = (src, dst, key, request_bytes)
        hit = self._routes.get(cache_key)
        if hit is None:
            any_key = (src, dst, _ANY_KEY, request_bytes)  # a route the same for every key
            shared = self._shared_routes
            if shared is not None and src not in self._storage and dst not in self._storage:
                hit = shared.get(cache_key) or shared.get(any_key)
                if hit is None:
                    hit = shared[cache_key] = self._route(src, dst, key, request_bytes)
                    if self.router.key_free(src, dst):
                        shared[any_key] = hit
            else:
                hit = self._routes.get(any_key)
                if hit is None:
                    hit = self._route(src, dst, key, request_bytes)
                    if self.router.key_free(src, dst):
                        self._routes[any_key] = hit
            self._routes[cache_key] = hit
        return hit

    def _route(self, src: str, dst: str, key: int, request_bytes: float | None
               ) -> tuple[list, dict, float, str]:
        path = self.router.path(src, dst, key) if src != dst else [src]
        chans: list = []
        coefs: dict = {}
        latency = 0.0
        narrowest, category = float("inf"), "host"
        for hop in zip(path[:-1], path[1:]):
            chans.append(hop)
            latency += self._edge_latency[hop]
            cap = self.net.channels[hop].capacity
            if cap < narrowest:
                narrowest, category = cap, "comm:" + self.net.channels[hop].label
        req = request_bytes or 1 << 20
        for node, side in ((src, "read"), (dst, "write")):
            if node in self._storage:
                spec, _ = self._storage[node]
                cap = self.net.channels[(node, side)].capacity
                eff = spec.effective_read_bw(req) if side == "read" else spec.effective_write_bw(req)
                coef = (spec.read_bw_bytes_per_s if side == "read" else spec.write_bw_bytes_per_s) / eff
                chans.append((node, side))
                coefs[(node, side)] = coef
                latency += spec.latency_s
                if cap / coef <= narrowest:
                    narrowest, category = cap / coef, "storage"
                client = self._client_channel(node, dst if node == src else src)
                if client is not None:
                    chans.append(client)
                    if self.net.channels[client].capacity <= narrowest:
                        narrowest, category = self.net.channels[client].capacity, "storage"
        return chans, coefs, latency, category

    def _client_channel(self, storage: str, other: str) -> tuple | None:
        """The channel of a shared tier with a per-client limit (``client_bw`` in the catalog)
        that every transfer between it and the server holding *other* shares, in both
        directions (created on first use); None without a limit or a server."""
        spec, _ = self._storage[storage]
        d = self.graph.nodes[other]
        if spec.client_bw_bytes_per_s is None or d.get("server") is None:
            return None
        cid = (storage, "client", d.get("site"), d["server"])
        if cid not in self.net.channels:
            self.net.add_channel(cid, spec.client_bw_bytes_per_s, "storage")
        return cid

    # -- who uses which channel ------------------------------------------------------------------
    def claim(self, owner: object, channels) -> None:
        """Record that *owner* may move bytes over *channels*. Jobs claim what their
        communicators can use before the run; every flow claims its channels as it starts.
        Raises RuntimeError when a channel that :meth:`alone` has already granted to another
        owner is claimed: a closed-form timing taken on it would be wrong."""
        claims, alone = self._claims, self._alone
        for c in channels:
            who = claims.get(c)
            if who is None:
                claims[c] = {owner}
            elif owner not in who:
                if c in alone:
                    raise RuntimeError(f"internal error: {owner!r} claims channel {c!r}, which "
                                       f"was granted to {next(iter(who))!r} alone")
                who.add(owner)

    def alone(self, owner: object, channels) -> bool:
        """True when *owner* is the only claimant of every channel in *channels*; the channels
        are then reserved to it for the rest of the run (see :meth:`claim`)."""
        claims = self._claims
        if all(claims.get(c) == {owner} for c in channels):
            self._alone.update(channels)
            return True
        return False

    def transfer(self, src: str, dst: str, nbytes: float, *, key: int = 0,
                 request_bytes: float | None = None, name: str = "", job: str = "",
                 rank: int = -1, kind: str = "flow", category: str | None = None,
                 max_rate: float | None = None) -> simpy.Event:
        """Move *nbytes* from graph node *src* to *dst* as one flow; the event succeeds when the
        last byte has arrived. *request_bytes* is the I/O size at a storage end (default 1 MiB)."""
        chans, coefs, latency, cat = self.route(src, dst, key, request_bytes)
        self.claim(("flows", job), chans)
        return self.net.transfer(nbytes, chans, latency, coefficients=coefs, max_rate=max_rate,
                                 resource=f"{src}->{dst}", kind=kind, name=name, job=job,
                                 rank=rank, category=category or cat)
