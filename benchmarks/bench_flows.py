"""Flow benchmark: flows and SimPy events per second of the fluid network model.

Acceptance (project brief): 100,000 flows, up to 2,000 concurrent, over a 1,024-GPU fat-tree, in
under 10 s on one core. Two workloads over one :class:`hwsim.engine.FlowNetwork` with a channel per
edge direction (capacity = ``bw_bytes_per_s * efficiency``):

- ``random``: point-to-point flows between random GPU pairs on different servers, lognormal sizes
  (median 8 MiB, 95 % between 1 MiB and 64 MiB), 2,000 closed-loop workers that each start a new
  flow when theirs ends (so at most 2,000 are concurrent);
- ``collective``: ring all-reduce steps over all GPUs, two rings at once (2,048 concurrent flows):
  every GPU sends a chunk to its ring successor once its previous send has ended and the previous
  chunk from its predecessor has arrived, as NCCL's ring does; steps repeat until the flow count.

Routing (paths to channel lists) is timed apart from the simulation. The topology is
``hwsim.topology.cluster`` when it is importable, else a plain-networkx k=16 fat-tree of the same
size (``--fallback`` forces it). Run ``python benchmarks/bench_flows.py --help``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Hashable, Sequence

import networkx as nx
import numpy as np
import simpy

from hwsim.engine import FlowNetwork, Recorder

MiB = 2**20

# -- topology -------------------------------------------------------------------------------------


def _fallback_fat_tree(nodes: int = 128, gpus_per_node: int = 8) -> nx.Graph:
    """A 3-level k-ary fat-tree (Al-Fares et al., SIGCOMM 2008) with k = 16: 16 pods of 8 leaf and
    8 spine switches, 64 core switches, k^3/4 = 1,024 NIC ports. Server *s* (8 GPUs, 8 NICs) hangs
    off leaf *s*; GPUs meet on an NVSwitch. Nominal per-direction figures: NVLink3 300 GB/s per
    A100 (NVIDIA A100 datasheet: 600 GB/s bidirectional), PCIe 4.0 x16 32 GB/s, HDR InfiniBand
    200 Gb/s = 25 GB/s. Same node and edge attributes as :mod:`hwsim.topology.attributes`."""
    k = 16
    half = k // 2
    if nodes * gpus_per_node != k**3 // 4 or gpus_per_node != half:
        raise ValueError("the fallback fat-tree is fixed at 128 servers x 8 GPUs")
    G = nx.Graph(name="fallback-fat-tree-k16")

    def link(a, b, cls, bw, lat, eff):
        G.add_edge(a, b, link_class=cls, bw_bytes_per_s=bw, latency_s=lat, efficiency=eff, count=1)

    for pod in range(k):
        for a in range(half):
            G.add_node(f"spine{pod}.{a}", kind="switch", level="spine", server=None)
            for c in range(half):
                core = f"core{a * half + c}"
                G.add_node(core, kind="switch", level="core", server=None)
                link(f"spine{pod}.{a}", core, "infiniband", 25e9, 130e-9, 0.95)
        for e in range(half):
            leaf = f"leaf{pod * half + e}"
            G.add_node(leaf, kind="switch", level="leaf", server=None)
            for a in range(half):
                link(leaf, f"spine{pod}.{a}", "infiniband", 25e9, 130e-9, 0.95)
    for s in range(nodes):
        nvsw = f"n{s}.nvswitch"
        G.add_node(nvsw, kind="nvswitch", server=s)
        for g in range(gpus_per_node):
            gpu, nic = f"n{s}.gpu{g}", f"n{s}.nic{g}"
            G.add_node(gpu, kind="gpu", server=s)
            G.add_node(nic, kind="nic", server=s)
            link(gpu, nvsw, "nvlink", 300e9, 1e-6, 0.9)
            link(gpu, nic, "pcie", 32e9, 1e-6, 0.85)
            link(nic, f"leaf{s}", "infiniband", 25e9, 600e-9, 0.95)
    return G


class _FallbackRouter:
    """ECMP over the fallback fat-tree: the key picks the spine and the core switch."""

    def __init__(self, G: nx.Graph) -> None:
        self.G = G

    def path(self, src: str, dst: str, key: int = 0) -> list[str]:
        s, g = src[1:].split(".gpu")
        d, h = dst[1:].split(".gpu")
        if s == d:
            return [src, f"n{s}.nvswitch", dst]
        ls, ld = int(s), int(d)
        key = hash(key) & 0xFFFFFFFF
        a, c = key % 8, (key // 8) % 8
        up = [src, f"n{s}.nic{g}", f"leaf{ls}"]
        down = [f"leaf{ld}", f"n{d}.nic{h}", dst]
        ps, pd_ = ls // 8, ld // 8
        if ls == ld:
            return up + down[1:]
        if ps == pd_:
            return up + [f"spine{ps}.{a}"] + down
        return up + [f"spine{ps}.{a}", f"core{a * 8 + c}", f"spine{pd_}.{a}"] + down


def build_topology(nodes: int, force_fallback: bool) -> tuple[nx.Graph, Any, str]:
    """(graph, router, description) for *nodes* servers of 8 A100s with 8 HDR NICs each."""
    if not force_fallback:
        try:
            from hwsim.topology import Router, cluster  # type: ignore[attr-defined]

            G = cluster(nodes=nodes, node=dict(gpu="A100-SXM4-80GB", gpus_per_node=8,
                                               intra_node="nvlink3", nic="ib-hdr-200",
                                               nics_per_node=8),
                        fabric=dict(topology="fat-tree"))
            return G, Router(G), f"hwsim.topology.cluster ({G.graph.get('name', 'fat-tree')})"
        except Exception as err:  # not landed yet, or broken: say so and fall back
            why = f"hwsim.topology unusable ({type(err).__name__}: {err})"
        print(f"note: {why}; using the plain-networkx fallback fat-tree", file=sys.stderr)
    G = _fallback_fat_tree(nodes)
    return G, _FallbackRouter(G), "fallback k=16 fat-tree (plain networkx)"


def gpus_by_server(G: nx.Graph) -> tuple[list[Hashable], np.ndarray]:
    """GPU node names (graph order) and the server index of each."""
    gpus = [n for n, d in G.nodes(data=True) if d.get("kind") == "gpu"]
    servers = np.array([G.nodes[n]["server"] for n in gpus])
    return gpus, servers


def make_network(G: nx.Graph, recorder: Recorder | None) -> tuple[simpy.Environment, FlowNetwork]:
    env = simpy.Environment()
    net = FlowNetwork(env, recorder)
    for u, v, d in G.edges(data=True):
        cap = d["bw_bytes_per_s"] * d.get("efficiency", 1.0)
        net.add_channel((u, v), cap, d["link_class"])
        net.add_channel((v, u), cap, d["link_class"])
    return env, net


def route(G: nx.Graph, router: Any, pairs: Sequence[tuple[Hashable, Hashable]],
          keys: Sequence[int]) -> list[tuple[list[tuple[Hashable, Hashable]], float]]:
    """Channel list and summed hop latency of each (src, dst) pair."""
    out = []
    lat_of: dict[tuple[Hashable, Hashable], float] = {}
    edges = G.edges
    for (src, dst), key in zip(pairs, keys):
        path = router.path(src, dst, key)
        hops = list(zip(path[:-1], path[1:]))
        lat = 0.0
        for h in hops:
            x = lat_of.get(h)
            if x is None:
                x = lat_of[h] = edges[h]["latency_s"]
            lat += x
        out.append((hops, lat))
    return out


# -- workloads -------------------------------------------------------------------------------------


def _sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Lognormal, median 8 MiB, sigma ln(8)/2: 95 % of flows between 1 MiB and 64 MiB."""
    return np.exp(rng.normal(np.log(8 * MiB), np.log(8) / 2, n)).round()


def workload_random(G, router, n_flows: int, concurrency: int, seed: int):
    """(setup, routing_s): *setup(env, net, stats)* starts the closed-loop workers."""
    rng = np.random.default_rng(seed)
    gpus, servers = gpus_by_server(G)
    src = rng.integers(0, len(gpus), n_flows)
    dst = rng.integers(0, len(gpus), n_flows)
    same = servers[src] == servers[dst]
    while same.any():  # redraw destinations on the source's own server
        dst[same] = rng.integers(0, len(gpus), int(same.sum()))
        same = servers[src] == servers[dst]
    sizes = _sizes(rng, n_flows)
    t0 = time.perf_counter()
    routes = route(G, router, [(gpus[a], gpus[b]) for a, b in zip(src, dst)], range(n_flows))
    routing_s = time.perf_counter() - t0

    def setup(env: simpy.Environment, net: FlowNetwork, stats: dict[str, Any]) -> None:
        nxt = iter(range(n_flows))
        live = [0]

        def worker():
            for i in nxt:
                hops, lat = routes[i]
                live[0] += 1
                if live[0] > stats["peak_concurrent"]:
                    stats["peak_concurrent"] = live[0]
                yield net.transfer(sizes[i], hops, lat)
                live[0] -= 1

        for _ in range(min(concurrency, n_flows)):
            env.process(worker())

    return setup, routing_s, float(sizes.sum())


def workload_collective(G, router, n_flows: int, chunk_bytes: float, rings: int = 2):
    """Ring all-reduce steps: ring r orders each server's GPUs rotated by r * gpus/rings, so the
    rings leave a server through different GPUs and NICs (as NCCL's channels do)."""
    gpus, servers = gpus_by_server(G)
    order_idx = np.lexsort((np.arange(len(gpus)), servers))  # by server, then graph order
    n_srv = len(np.unique(servers))
    per = len(gpus) // n_srv
    ring_orders = []
    for r in range(rings):
        rot = r * per // rings
        ring_orders.append([gpus[order_idx[s * per + (j + rot) % per]]
                            for s in range(n_srv) for j in range(per)])
    n = len(gpus)
    steps = -(-n_flows // (rings * n))
    pairs = [(ring[i], ring[(i + 1) % n]) for ring in ring_orders for i in range(n)]
    t0 = time.perf_counter()
    routes = route(G, router, pairs, range(len(pairs)))
    routing_s = time.perf_counter() - t0

    def setup(env: simpy.Environment, net: FlowNetwork, stats: dict[str, Any]) -> None:
        live = [0]
        inbox = [[simpy.Store(env) for _ in range(n)] for _ in range(rings)]

        def rank(r: int, i: int):
            hops, lat = routes[r * n + i]
            mine, succ = inbox[r][i], inbox[r][(i + 1) % n]
            for s in range(steps):
                if s:
                    yield mine.get()  # chunk s-1 from the predecessor has arrived
                live[0] += 1
                if live[0] > stats["peak_concurrent"]:
                    stats["peak_concurrent"] = live[0]
                yield net.transfer(chunk_bytes, hops, lat)
                live[0] -= 1
                succ.put(s)

        for r in range(rings):
            for i in range(n):
                env.process(rank(r, i))

    return setup, routing_s, float(chunk_bytes * steps * rings * n)


# -- running ---------------------------------------------------------------------------------------


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    G, router, topo = build_topology(args.nodes, args.fallback)
    build_s = time.perf_counter() - t0
    if name == "random":
        setup, routing_s, total_bytes = workload_random(G, router, args.flows, args.concurrency,
                                                        args.seed)
    else:
        setup, routing_s, total_bytes = workload_collective(G, router, args.flows,
                                                            args.chunk_mib * MiB)
    recorder = Recorder() if args.record else None
    env, net = make_network(G, recorder)
    stats: dict[str, Any] = {"peak_concurrent": 0}
    setup(env, net, stats)
    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    partial = _run(env, args.budget_s)
    if prof:
        prof.disable()
    sim_s = time.perf_counter() - t0
    events = next(env._eid) - len(env._queue)  # scheduled minus still queued = processed
    if not partial:
        expected = expected_flows(name, args, G)
        if net.flows_finished != expected or net.active_flows:
            raise AssertionError(f"{name}: {net.flows_finished} flows finished and "
                                 f"{net.active_flows} active; expected {expected} and 0")
    out = {
        "workload": name, "topology": topo, "gpus": len(gpus_by_server(G)[0]),
        "channels": len(net.channels), "flows": net.flows_finished,
        "bytes": total_bytes, "build_s": build_s, "routing_s": routing_s, "sim_s": sim_s,
        "flows_per_s": net.flows_finished / sim_s, "events": events,
        "events_per_s": events / sim_s, "recomputations": net.recomputations,
        "started_alone": getattr(net, "alone", 0),
        "peak_concurrent": stats["peak_concurrent"], "makespan_s": env.now,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "record": bool(args.record), "partial": partial,
        "projected_sim_s": sim_s * expected_flows(name, args, G) / max(net.flows_finished, 1),
    }
    if recorder is not None:
        out["recorded_events"] = len(recorder.events)
        out["recorded_levels"] = len(recorder.levels)
    if prof:
        prof.dump_stats(args.profile + f".{name}.prof")
        st = pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime")
        print(f"\n--- profile of the {name} simulation (tottime) ---", file=sys.stderr)
        st.print_stats(18)
    return out


def _run(env: simpy.Environment, budget_s: float) -> bool:
    """``env.run()`` with a wall-clock budget (0: none). Returns True if stopped by the budget."""
    if not budget_s:
        env.run()
        return False
    deadline = time.perf_counter() + budget_s
    step = env.step
    try:
        while True:
            for _ in range(256):
                step()
            if time.perf_counter() > deadline:
                return True
    except simpy.core.EmptySchedule:
        return False


def expected_flows(name: str, args: argparse.Namespace, G: nx.Graph) -> int:
    if name == "random":
        return args.flows
    n = len(gpus_by_server(G)[0])
    return -(-args.flows // (2 * n)) * 2 * n


def _print(r: dict[str, Any]) -> None:
    print(f"[{r['workload']}] {r['flows']:,} flows over {r['gpus']:,} GPUs, {r['channels']:,} "
          f"channels ({r['topology']}){', recording' if r['record'] else ''}")
    print(f"  topology build   {r['build_s']:8.2f} s")
    print(f"  routing          {r['routing_s']:8.2f} s")
    print(f"  simulation       {r['sim_s']:8.2f} s   {r['flows_per_s']:,.0f} flows/s   "
          f"{r['events']:,} SimPy events = {r['events_per_s']:,.0f} events/s")
    print(f"  recomputations   {r['recomputations']:,}   flows started alone (no solver) "
          f"{r['started_alone']:,}   peak concurrent flows {r['peak_concurrent']:,}")
    print(f"  simulated makespan {r['makespan_s']:.4f} s   peak RSS {r['peak_rss_mib']:.0f} MiB")
    if r["partial"]:
        print(f"  STOPPED by --budget-s after {r['flows']:,} flows (makespan so far); at this rate "
              f"all flows would take {r['projected_sim_s']:,.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=["random", "collective", "all"], default="all",
                   help="'all' runs each in its own process so peak RSS is per workload")
    p.add_argument("--flows", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=2_000, help="random: closed-loop workers")
    p.add_argument("--chunk-mib", type=float, default=1.0, help="collective: bytes per ring step")
    p.add_argument("--nodes", type=int, default=128, help="servers of 8 GPUs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=600.0,
                   help="stop the simulation after this many wall seconds and project the total "
                        "from the rate so far (0: no limit)")
    p.add_argument("--record", action="store_true", help="attach a Recorder (events and levels)")
    p.add_argument("--fallback", action="store_true",
                   help="use the plain-networkx fat-tree even if hwsim.topology exists")
    p.add_argument("--profile", metavar="PREFIX",
                   help="cProfile the simulation; write PREFIX.<workload>.prof, top 18 to stderr")
    p.add_argument("--json", action="store_true", help="print one JSON line per workload")
    args = p.parse_args(argv)
    if args.workload == "all":
        rest = list(argv if argv is not None else sys.argv[1:])
        rc = 0
        for w in ("random", "collective"):
            rc |= subprocess.call([sys.executable, __file__, *rest, "--workload", w])
        return rc
    r = run_one(args.workload, args)
    print(json.dumps(r)) if args.json else _print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
