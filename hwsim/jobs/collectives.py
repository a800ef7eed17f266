"""Collectives built from flows on the real graph, as NCCL runs them (docs/collectives.md).

A collective is a list of phases (:class:`~hwsim.jobs.nccl.Phase`): flows started together,
``steps`` times in a row, each step then paying its pipeline overhead (hop latencies and, with
the Simple protocol, one slice per hop: :func:`~hwsim.jobs.nccl.overhead`). Flows share links
max-min fair with everything else on the graph, so a congested fabric slows a collective.

- **ring** (all-reduce ``2(n-1)`` steps; all-gather, reduce-scatter ``n-1``): each step every rank
  sends ``S/(R n)`` to its successor on each of ``R`` rings: one inside a server, one per NIC rail
  across servers (NCCL's channels spread over all NICs, NVIDIA/nccl#530). A step costs the ring's
  *mean* hop, not its worst: in NCCL's pipelined ring a chunk crosses the hops in turn, only
  ``2(nodes-1)`` of its ``2(n-1)`` on the network (tuning.cc ``nInterSteps``). Alone on uniform
  links of bandwidth B and hop latency alpha, Simple takes
  ``2(n-1) (S/(nB) + alpha + min(S/n, slice)/B)``.
- **tree**: NCCL's double binary tree, pipelined: per rail, a chain through each server's GPUs to
  its head, two complementary binary trees over the heads carrying ``S/2`` each; every flow at
  once (reduce up and broadcast down overlap), plus ``2 (chain + tree height)`` hop costs.
- **nvls** (NVLink SHARP, one NVSwitch): each GPU moves ``S (1 + 1/n)`` up to the switch and down
  from it (ld_reduce of every shard, multicast store of its own) at the NVLS efficiency, plus a
  fixed cost.
- **sharp** (SHARP on InfiniBand switches, NCCL's CollNet chain): per rail, a chain through each
  server's (or NVLink domain's) GPUs to its head, whose NIC sends ``S/R`` once up the switches'
  aggregation tree and receives the result once (:mod:`hwsim.jobs.sharp`); all flows at once.
- **hierarchical**: ring reduce-scatter inside each server, one ring per local rank across servers
  (every rail at once) on the ``S/g`` shards, ring all-gather inside each server.
- **torus** (all-reduce, all-gather, reduce-scatter on TPU chips that fill whole axes of their
  torus: :func:`~hwsim.topology.query.torus_rings`): XLA's per-axis collectives (Kumar et al.,
  "Scale MLPerf-0.6 models on Google TPU-v3 Pods", arXiv:1909.09756, section 3, the 2-D gradient
  summation; Jouppi et al., "TPU v4", ISCA 2023, for the 3-D torus): a reduce-scatter along one
  axis, then the next, every ring of the axis run in both directions at once with half the data
  each (``n - 1`` steps of ``D/(2n)`` to each neighbour), then the all-gathers in the reverse
  order. Axes of one size split the data in as many parts, taking the axes in rotated orders at
  once, so every ICI link carries traffic both ways in every phase (Google's "all-reduce
  bandwidth per pod" is every chip's ICI bandwidth: cloud.google.com/tpu/docs/v5e, v6e). No
  public per-collective TPU timing calibrates it: the ICI links' figures are the catalog's.
- **mesh** (all-reduce, all-gather, reduce-scatter where every pair of ranks has a direct link: an
  AMD Infinity Fabric platform, no switch): RCCL builds its channels' rings over different links
  of the fully connected mesh, so all ``n-1`` links of a GPU carry traffic at once (AMD ROCm blog
  "Understanding RCCL Bandwidth and xGMI Performance on AMD Instinct MI300X", 2025: the 8-GPU
  all-reduce bus bandwidth, ~319 GB/s, is the sum over a GPU's seven links, capped by the slowest;
  a single ring would use one link per GPU). Modelled by its traffic: ``n-1`` rings, one per
  link of each GPU, each carrying ``1/(n-1)`` of the data; every step each rank sends
  ``S/(n (n-1))`` to each peer, for the ring's ``2(n-1)`` (or ``n-1``) steps. Its bus bandwidth
  is ``n-1`` links' where a ring's is one link's; its step latency the ring's.
- **pairwise** all-to-all: every ordered pair at once, ``S/n`` each. **broadcast**: pipelined
  chains from the root along the rings. **sendrecv**: one flow.

``auto`` (:func:`choose`) estimates every eligible algorithm and protocol alone on the graph with
the same model and takes the fastest, as NCCL's tuner does (NVIDIA/nccl#457).
"""

from __future__ import annotations

import math
import weakref
from typing import Generator, Sequence

import simpy

from hwsim.jobs.nccl import (PARAMS, Flow, Params, Phase, Protocol, estimate, hops, layout,
                             memo_key, mesh, nvswitch, protocol_for, protocols, ring_order, rings)
from hwsim.jobs.phases import isolated_durations, run_phases
from hwsim.jobs.sharp import available, plan_sharp
from hwsim.jobs.system import System
from hwsim.topology.query import torus_rings

__all__ = ["ring_allreduce", "ring_order", "collective", "recipe",
           "run_phases", "choose", "plan", "fold_factors", "fold_hops", "isolated_durations",
           "allreduce", "allgather", "reduce_scatter", "alltoall", "broadcast", "sendrecv",
           "eligible", "ALGORITHMS"]

ALGORITHMS = {"allreduce": ("ring", "tree", "nvls", "hierarchical", "torus", "mesh", "sharp"),
              "allgather": ("ring", "torus", "mesh"), "reduce_scatter": ("ring", "torus", "mesh"),
              "alltoall": ("pairwise",), "broadcast": ("ring",), "sendrecv": ("p2p",)}
"""Algorithms per operation (``auto`` chooses among them)."""


def ring_allreduce(system: System, ring: Sequence[str], nbytes: float, *, job: str = "",
                   name: str = "allreduce", key: int = 0, ranks: Sequence[int] | None = None
                   ) -> Generator[simpy.Event, object, None]:
    """SimPy process body: the plain synchronous ring all-reduce of *nbytes* over *ring* (in ring
    order): ``2(n-1)`` steps of ``S/n`` per rank through ``System.transfer`` (path latency
    included), no protocol model: ``2(n-1)/n S/B + 2(n-1) alpha`` alone on uniform links.
    *ranks* gives the rank number recorded for each position (default 0..n-1)."""
    n = len(ring)
    if n < 2 or nbytes <= 0:
        return
    chunk = nbytes / n
    env = system.env
    rank_of = list(ranks) if ranks is not None else list(range(n))
    for step in range(2 * (n - 1)):
        flows = [system.transfer(ring[i], ring[(i + 1) % n], chunk, key=key + i, job=job,
                                 rank=rank_of[i], name=f"{name}.step{step}")
                 for i in range(n)]
        yield env.all_of(flows)


def plan(system: System, op: str, algorithm: str, devices: Sequence[str], nbytes: float,
         rank_of: dict[str, int], params: Params = PARAMS, root: int = 0) -> list[Phase]:
    """The phases of *op* with *algorithm* (not ``auto``) over *devices* (see the module doc)."""
    groups, rails = layout(system, devices)
    n = len(devices)

    def ring_flows(rs: list[list[str]], size: float, chain: bool = False) -> tuple[Flow, ...]:
        return tuple(Flow(r[i], r[(i + 1) % len(r)], size, rank_of[r[i]])
                     for r in rs for i in range(len(r) - chain))
    if algorithm == "ring" and op in ("allreduce", "allgather", "reduce_scatter"):
        rs = rings(groups, rails)
        return [Phase(ring_flows(rs, nbytes / (len(rs) * n)), 2 * (n - 1) if op == "allreduce"
                      else n - 1)]
    if algorithm == "torus" and op in ("allreduce", "allgather", "reduce_scatter"):
        tor = torus_rings(system.graph, devices)
        if tor is None:
            raise ValueError("torus needs chips filling whole axes of a TPU torus (the same "
                             "positions on every slice)")
        return _torus(op, *tor, nbytes, rank_of)
    if algorithm == "mesh" and op in ("allreduce", "allgather", "reduce_scatter"):
        if not mesh(system, devices):
            raise ValueError("mesh needs every pair of ranks joined by a direct link (an "
                             "Infinity Fabric platform: intra_node xgmi-*)")
        return [Phase(tuple(Flow(a, b, nbytes / (n * (n - 1)), rank_of[a]) for a in devices
                            for b in devices if a != b),
                      2 * (n - 1) if op == "allreduce" else n - 1)]
    if algorithm == "ring" and op == "broadcast":
        rs = [r[r.index(devices[root]):] + r[:r.index(devices[root])] for r in rings(groups, rails)]
        return [Phase(ring_flows(rs, nbytes / len(rs), chain=True), 1, n - 1)]
    if algorithm == "pairwise" and op == "alltoall":
        return [Phase(tuple(Flow(a, b, nbytes / n, rank_of[a]) for a in devices for b in devices
                            if a != b))]
    if algorithm == "p2p" and op == "sendrecv":
        return [Phase((Flow(devices[0], devices[1], nbytes, rank_of[devices[0]]),))]
    if op != "allreduce" or algorithm not in ALGORITHMS["allreduce"]:
        raise ValueError(f"unknown algorithm {algorithm!r} for {op}; valid: auto, "
                         f"{', '.join(ALGORITHMS.get(op, ()))}")
    if algorithm == "nvls":
        sw = nvswitch(system, devices)[0]
        if sw is None:
            raise ValueError("nvls needs all ranks on one NVSwitch")
        size = nbytes * (1 + 1 / n)
        return [Phase(tuple(f for d in devices for f in (Flow(d, sw, size, rank_of[d]),
                                                          Flow(sw, d, size, rank_of[d]))),
                      fixed_s=params.nvls_latency_s)]
    if algorithm == "tree":
        return [_tree(groups, rails, nbytes, rank_of)]
    if algorithm == "sharp":
        return plan_sharp(system, devices, nbytes, rank_of)
    g = len(groups[0])  # hierarchical
    if any(len(grp) != g for grp in groups):
        raise ValueError("hierarchical all-reduce needs the same number of ranks on every server")
    intra = ring_flows(groups, nbytes / g)
    inter = ring_flows([[grp[i] for grp in groups] for i in range(g)], nbytes / g / len(groups))
    return [Phase(intra, g - 1), Phase(inter, 2 * (len(groups) - 1)), Phase(intra, g - 1)]


def _tree(groups: list[list[str]], rails: int, nbytes: float, rank_of: dict[str, int]) -> Phase:
    """NCCL's pipelined double binary tree (NVIDIA/nccl#545: a tree pair per NIC, converging to
    the NIC inside the server): chains to each server's head, two heap-ordered binary trees over
    the heads (the second on the reversed order, so one's leaves are the other's inner nodes)
    carrying half of the rail's data each, up (reduce) and down (broadcast) at once."""
    flows: list[Flow] = []
    m = len(groups)
    for r in range(rails):
        heads = []
        for grp in groups:
            chain = grp[r * len(grp) // rails:] + grp[:r * len(grp) // rails]
            heads.append(chain[0])
            for a, b in zip(chain, chain[1:]):
                flows += [Flow(b, a, nbytes / rails, rank_of[b]),
                          Flow(a, b, nbytes / rails, rank_of[a])]
        for order in (heads, heads[::-1]) if m > 1 else ():
            for i in range(1, m):
                c, p = order[i], order[(i - 1) // 2]
                flows += [Flow(c, p, nbytes / rails / 2, rank_of[c]),
                          Flow(p, c, nbytes / rails / 2, rank_of[p])]
    depth = 2 * (max(len(grp) for grp in groups) - 1 + (int(math.log2(m)) if m > 1 else 0))
    return Phase(tuple(flows), 1, max(depth, 1))


def eligible(system: System, devices: Sequence[str], op: str, nbytes: float,
             params: Params) -> list[str]:
    """The algorithms ``auto`` compares for *op*: all-reduce: ring; NVLS on one NVSwitch of a
    ``params.nvls_auto_links`` link; tree across servers while ``nbytes / n`` is at most
    ``params.tree_max_bytes_per_rank``; sharp across servers (or NVLink domains) whose switches
    reduce in the network (:func:`hwsim.jobs.sharp.available`); all-reduce, all-gather and
    reduce-scatter also torus on TPU chips filling whole torus axes
    (:func:`~hwsim.topology.query.torus_rings`), and ``mesh`` where every pair of GPU ranks has a
    direct link (:func:`~hwsim.jobs.nccl.mesh`). Other operations: their one algorithm."""
    if op == "sendrecv":
        return ["p2p"]
    coll = op in ("allreduce", "allgather", "reduce_scatter")
    torus = ["torus"] if coll and torus_rings(system.graph, devices) is not None else []
    meshed = ["mesh"] if coll and mesh(system, devices) else []
    if op != "allreduce":
        return {"alltoall": ["pairwise"]}.get(op, ["ring"] + torus + meshed)
    multi = len(layout(system, devices)[0]) > 1
    algs = ["ring"] + torus + meshed
    if not multi and nvswitch(system, devices)[1] in params.nvls_auto_links:
        algs.append("nvls")
    if multi and nbytes / len(devices) <= params.tree_max_bytes_per_rank:
        algs.append("tree")
    if multi and available(system, devices):
        algs.append("sharp")
    return algs


def _torus(op: str, axes: list[list[list[str]]], across: list[list[str]], nbytes: float,
           rank_of: dict[str, int]) -> list[Phase]:
    """XLA's collectives on TPU tori (module doc, **torus**): a reduce-scatter along each
    spanned axis in turn, every ring in both directions with half the data each (``n - 1``
    steps of ``D / (2n)`` to each neighbour, leaving ``D / n`` for the next axis), then the
    all-gathers in the reverse order; a reduce-scatter or an all-gather is its half. When the
    ``k`` spanned axes are of one size the data is cut in ``k`` parts that take the axes in
    rotated orders at once, so every phase keeps every axis's links busy. Chips on several
    slices (*across*: each position's chips, slice by slice) reduce their shards across the
    slices in between, on rings over the data-centre network (Multislice): an all-reduce of the
    ``D / N`` shard (``2 (S - 1)`` steps), the reduce-scatter's last and the all-gather's first
    phase (``S - 1``)."""
    k = len(axes)
    sizes = {len(ring_set[0]) for ring_set in axes}
    parts = k if len(sizes) == 1 else 1
    scatter, shard = [], float(nbytes)
    for i in range(k):
        flows: list[Flow] = []
        steps = 0
        for j in range(parts):  # part j reduces along axis (i + j) mod k in phase i
            order = axes[j:] + axes[:j]
            ring_set = order[i]
            n = len(ring_set[0])
            data = nbytes / parts / math.prod(len(a[0]) for a in order[:i])
            chunk = data / (2 * n)
            flows += [f for r in ring_set for m in range(n) for f in (
                Flow(r[m], r[(m + 1) % n], chunk, rank_of[r[m]]),
                Flow(r[m], r[m - 1], chunk, rank_of[r[m]]))]
            steps = n - 1
        scatter.append(Phase(tuple(flows), steps))
        shard /= len(axes[i][0])
    if not across:
        return {"reduce_scatter": scatter, "allgather": scatter[::-1],
                "allreduce": scatter + scatter[::-1]}[op]
    s = len(across[0])
    ring = tuple(Flow(r[m], r[(m + 1) % s], shard / s, rank_of[r[m]])
                 for r in across for m in range(s))
    if op == "reduce_scatter":
        return scatter + [Phase(ring, s - 1)]
    if op == "allgather":
        return [Phase(ring, s - 1)] + scatter[::-1]
    return scatter + [Phase(ring, 2 * (s - 1))] + scatter[::-1]


_CHOICES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def choose(system: System, devices: Sequence[str], op: str, nbytes: float, *,
           algorithm: str = "auto", protocol: str = "auto", params: Params | None = None
           ) -> tuple[str, str]:
    """The ``(algorithm, protocol)`` NCCL would use for *op*: of the eligible algorithms
    (:func:`eligible`) and protocols (:func:`~hwsim.jobs.nccl.protocols`), the one
    with the least :func:`~hwsim.jobs.nccl.estimate` (memoised per system and arguments). A
    given *algorithm* or *protocol* is kept."""
    p = params or PARAMS
    memo = _CHOICES.setdefault(memo_key(system), {})
    k = (op, tuple(devices), nbytes, algorithm, protocol, p)
    if k in memo:
        return memo[k]
    algs = eligible(system, devices, op, nbytes, p) if algorithm == "auto" else [algorithm]
    rank_of = {d: i for i, d in enumerate(devices)}
    best = None
    for alg in algs:
        phases = plan(system, op, alg, devices, nbytes, rank_of, p)
        for proto in protocols(system, devices, alg) if protocol == "auto" else (protocol,):
            t = estimate(system, phases, protocol_for(system, devices, alg, proto, p))
            if best is None or t < best[0]:
                best = (t, alg, proto)
    memo[k] = best[1], best[2]
    return memo[k]


def collective(system: System, op: str, devices: Sequence[str], nbytes: float, *,
               algorithm: str = "auto", protocol: str = "auto", job: str = "", name: str = "",
               key: int = 0, ranks: Sequence[int] | None = None, root: int = 0,
               params: Params | None = None, peers: Sequence[Sequence[str]] = ()
               ) -> Generator[simpy.Event, object, None]:
    """SimPy process body: *op* (``allreduce``, ``allgather``, ``reduce_scatter``, ``alltoall``,
    ``broadcast``, ``sendrecv``) of *nbytes* over *devices*.

    *nbytes* is the size nccl-tests reports: each rank's buffer (all-reduce, broadcast, the
    all-to-all send buffer, send/recv), the gathered output (all-gather), the input
    (reduce-scatter). *algorithm*: ``auto`` or one of :data:`ALGORITHMS`; *protocol*: ``auto``,
    ``simple``, ``ll`` or ``wire``. *ranks*: the rank number recorded per device (default:
    positions); *key* offsets the ECMP keys; *root*: the broadcast root's index in *devices*.
    *peers*: other groups running the same collective at the same time that are not simulated
    (symmetry folding): their traffic loads the links through :func:`fold_hops`.

    The ``steps`` identical steps of a phase move as one flow per (source, destination) of
    ``steps`` times the step's bytes, then pay ``steps`` pipeline overheads: the same time as
    step-by-step flows while the phase's rates stay put, with ``steps`` times fewer flows.
    """
    devices = list(devices)
    if len(devices) < 2 or nbytes <= 0:
        return
    yield from run_phases(system, recipe(system, op, devices, nbytes, algorithm=algorithm,
                                         protocol=protocol, key=key, ranks=ranks, root=root,
                                         params=params, peers=peers), job=job, name=name or op)


def recipe(system: System, op: str, devices: Sequence[str], nbytes: float, *,
           algorithm: str = "auto", protocol: str = "auto", key: int = 0,
           ranks: Sequence[int] | None = None, root: int = 0, params: Params | None = None,
           peers: Sequence[Sequence[str]] = (), sources: frozenset | None = None
           ) -> list[tuple[Phase, list[tuple]]]:
    """What :func:`collective` runs (same arguments): each phase with its flows' hops
    (:func:`~hwsim.jobs.nccl.hops`, folded over *peers*). With *sources* (the simulated
    devices of a folded group) only their flows run (:func:`kept`), standing for the group's.
    A communicator that repeats a collective keeps its recipe."""
    p = params or PARAMS
    if op not in ALGORITHMS:
        raise ValueError(f"unknown collective {op!r}; valid: {', '.join(ALGORITHMS)}")
    alg, proto = choose(system, devices, op, nbytes, algorithm=algorithm, protocol=protocol,
                        params=p) if "auto" in (algorithm, protocol) else (algorithm, protocol)
    rank_of = dict(zip(devices, ranks if ranks is not None else range(len(devices))))
    pr = protocol_for(system, devices, alg, proto, p)
    out = []
    for i, phase in enumerate(plan(system, op, alg, devices, nbytes, rank_of, p, root)):
        hop = hops(system, phase, key, pr)
        if peers or sources:
            idx = kept(phase, alg, sources, devices)
            phase = Phase(tuple(phase.flows[j] for j in idx), phase.steps, phase.depth,
                          phase.fixed_s)
            hop = fold_hops([hop[j] for j in idx], fold_factors(
                system, op, alg, devices, peers, p, root, key, pr, sources)[i])
        out.append((phase, hop))
    return out


_FOLDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


SYMMETRIC = ("ring", "pairwise", "nvls", "hierarchical", "p2p", "mesh")
"""Algorithms whose every rank sends the same flows, shifted: a folded group may run only the
flows of its simulated ranks (see :func:`kept`)."""


def kept(phase: Phase, alg: str, sources: frozenset | None, members: Sequence[str]
         ) -> list[int]:
    """Indices of the flows of *phase* a folded group runs: with *sources* (its simulated
    devices among *members*) and a symmetric algorithm, the flows they send, and those they
    receive from outside the group (an NVSwitch); else all. By symmetry the others are copies
    on other links, at the same rates."""
    if not sources or alg not in SYMMETRIC:
        return list(range(len(phase.flows)))
    inside = set(members)
    keep = [i for i, f in enumerate(phase.flows)
            if f.src in sources or (f.dst in sources and f.src not in inside)]
    return keep or list(range(len(phase.flows)))


def fold_factors(system: System, op: str, alg: str, devices: Sequence[str],
                 peers: Sequence[Sequence[str]], params: Params, root: int, key: int,
                 proto: Protocol, sources: frozenset | None = None) -> list[dict]:
    """Per phase of *op* over *devices*, the factor on each channel the simulated flows use
    (the flows :func:`kept` for *sources*, all without): (bytes all groups, *devices* and
    *peers*, move on it) / (bytes the simulated flows move on it), each byte weighted by its
    coefficient. Under symmetry every flow of every group runs at the simulated flows' rates,
    so flows whose coefficients are scaled by these factors load each shared link as all
    groups together do (DESIGN.md, scale by symmetry). Memoised: only proportions matter."""
    memo = _FOLDS.setdefault(memo_key(system), {})
    k = (op, alg, tuple(devices), tuple(map(tuple, peers)), params, root, key, proto, sources)
    if k in memo:
        return memo[k]

    def loads(grp: Sequence[str], reorder: bool = True,
              only: frozenset | None = None) -> list[dict]:
        order = ring_order(system, grp) if reorder and len(grp) > 2 else list(grp)
        rank_of = {d: i for i, d in enumerate(order)}
        out = []
        for ph in plan(system, op, alg, order, 1.0, rank_of, params, root):
            load: dict = {}
            hop = hops(system, ph, key, proto)
            for i in (kept(ph, alg, only, order) if only else range(len(ph.flows))):
                f, h = ph.flows[i], hop[i]
                for c in h[0]:
                    load[c] = load.get(c, 0.0) + f.nbytes * h[1][c]
            out.append(load)
        return out
    mine = loads(devices, reorder=False, only=sources)
    total = [dict(m) for m in mine]
    for grp, reorder, only in ([(devices, False, None)] if sources else []) + [
            (grp, True, None) for grp in peers]:
        for i, load in enumerate(loads(grp, reorder, only)):
            for c, v in load.items():
                if c in total[i]:
                    total[i][c] += v
    if sources:  # the simulated flows were counted twice: once as themselves, once in the group
        total = [{c: v - mine[i][c] for c, v in t.items()} for i, t in enumerate(total)]
    memo[k] = [{c: total[i][c] / m for c, m in mine[i].items()} for i in range(len(mine))]
    return memo[k]


def fold_hops(hop: list[tuple], factors: dict) -> list[tuple]:
    """*hop* (:func:`~hwsim.jobs.nccl.hops`) with each channel's coefficient times its factor
    (:func:`fold_factors`)."""
    return [(h[0], {c: h[1][c] * factors[c] for c in h[0]}, *h[2:]) for h in hop]


def allreduce(system: System, devices: Sequence[str], nbytes: float, **kw) -> Generator:
    """All-reduce of *nbytes* per rank (keywords: :func:`collective`)."""
    return collective(system, "allreduce", devices, nbytes, **kw)


def allgather(system: System, devices: Sequence[str], nbytes: float, **kw) -> Generator:
    """All-gather into *nbytes* per rank (keywords: :func:`collective`)."""
    return collective(system, "allgather", devices, nbytes, **kw)


def reduce_scatter(system: System, devices: Sequence[str], nbytes: float, **kw) -> Generator:
    """Reduce-scatter of *nbytes* per rank (keywords: :func:`collective`)."""
    return collective(system, "reduce_scatter", devices, nbytes, **kw)


def alltoall(system: System, devices: Sequence[str], nbytes: float, **kw) -> Generator:
    """All-to-all of *nbytes* per rank, ``nbytes/n`` to each (keywords: :func:`collective`)."""
    return collective(system, "alltoall", devices, nbytes, **kw)


def broadcast(system: System, devices: Sequence[str], nbytes: float, **kw) -> Generator:
    """Broadcast of *nbytes* from ``devices[root]`` (keywords: :func:`collective`)."""
    return collective(system, "broadcast", devices, nbytes, **kw)


def sendrecv(system: System, src: str, dst: str, nbytes: float, **kw) -> Generator:
    """NCCL send/recv of *nbytes* from *src* to *dst* (keywords: :func:`collective`)."""
    return collective(system, "sendrecv", [src, dst], nbytes, **kw)
