"""Routing benchmark: ``hwsim.topology.Router`` on large clusters (run on demand, not in CI).

Each case builds a cluster, builds a ``Router`` and routes one workload of GPU pairs on different
servers, in its own process so that peak RSS is per case:

- ``random``: 100,000 random GPU pairs (numpy seed 0), key = the pair's index;
- ``structured``: what a training job asks for: GPU ``i`` of server ``s`` to GPU ``i`` of server
  ``s + k`` (mod the servers) for k in +1, -1 (data-parallel ring neighbours), +N/8, -N/8
  (pipeline-stage pairs of 8 stages), +2 and +max(3, N/64) (other groups): 6 routes per GPU,
  every GPU a destination (98,304 routes and 16,384 destinations on 16,384 GPUs), key = the
  stride's index.

Clusters (``--cluster``): ``ft16k``: 2,048 servers of 8 H100-SXM5 (NVLink4, 8 NDR-400 NICs,
EPYC-7742), three-level fat-tree of 64-port switches; ``rail16k``: the same servers rail-optimized;
``ft1k``: 128 servers of 8 A100-SXM4 (NVLink3, 8 HDR-200 NICs), the two-level fat-tree of
``bench_flows.py``. ``python benchmarks/bench_routing.py --help``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

H100 = dict(gpu="H100-SXM5-80GB", gpus_per_node=8, cpu="EPYC-7742", intra_node="nvlink4",
            nics_per_node=8, nic="ib-ndr-400")
A100 = dict(gpu="A100-SXM4-80GB", gpus_per_node=8, intra_node="nvlink3", nic="ib-hdr-200",
            nics_per_node=8)
CLUSTERS = {
    "ft16k": dict(nodes=2048, node=H100, fabric=dict(topology="fat-tree")),
    "rail16k": dict(nodes=2048, node=H100, fabric=dict(topology="rail-optimized")),
    "ft1k": dict(nodes=128, node=A100, fabric=dict(topology="fat-tree")),
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pairs(workload: str, n_srv: int, per: int, n_routes: int, seed: int
          ) -> list[tuple[str, str, int]]:
    """(src, dst, key) triples of *workload* on *n_srv* servers of *per* GPUs."""
    if workload == "random":
        rng = np.random.default_rng(seed)
        src = rng.integers(0, n_srv * per, n_routes)
        dst = rng.integers(0, n_srv * per, n_routes)
        same = src // per == dst // per
        while same.any():
            dst[same] = rng.integers(0, n_srv * per, int(same.sum()))
            same = src // per == dst // per
        return [(f"n{a // per}.gpu{a % per}", f"n{b // per}.gpu{b % per}", i)
                for i, (a, b) in enumerate(zip(src.tolist(), dst.tolist()))]
    strides = (1, -1, n_srv // 8, -(n_srv // 8), 2, max(3, n_srv // 64))
    return [(f"n{s}.gpu{i}", f"n{(s + k) % n_srv}.gpu{i}", j)
            for j, k in enumerate(strides) for s in range(n_srv) for i in range(per)]


def run_one(cluster_name: str, workload: str, n_routes: int, seed: int) -> dict[str, Any]:
    from hwsim.topology import Router, cluster

    spec = CLUSTERS[cluster_name]
    t0 = time.perf_counter()
    G = cluster(**spec)
    build_s = time.perf_counter() - t0
    rss_graph = _rss_mib()
    work = pairs(workload, spec["nodes"], spec["node"]["gpus_per_node"], n_routes, seed)
    t0, c0 = time.perf_counter(), time.process_time()
    r = Router(G)
    init_s = time.perf_counter() - t0
    for src, dst, key in work:
        r.path(src, dst, key)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"cluster": cluster_name, "workload": workload, "nodes": G.number_of_nodes(),
            "routes": len(work), "destinations": len({d for _, d, _ in work}),
            "graph_build_s": round(build_s, 2), "router_init_s": round(init_s, 3),
            "routing_wall_s": round(wall, 2), "routing_cpu_s": round(cpu, 2),
            "rss_after_graph_mib": round(rss_graph), "peak_rss_mib": round(_rss_mib())}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cluster", choices=[*CLUSTERS, "all"], default="all")
    p.add_argument("--workload", choices=["random", "structured", "all"], default="all")
    p.add_argument("--routes", type=int, default=100_000, help="random: number of pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON line per case")
    args = p.parse_args(argv)
    if args.cluster == "all" or args.workload == "all":  # each case in its own process
        rc = 0
        for c in CLUSTERS if args.cluster == "all" else [args.cluster]:
            for w in ("random", "structured") if args.workload == "all" else [args.workload]:
                rc |= subprocess.call([sys.executable, __file__, "--cluster", c, "--workload", w,
                                       "--routes", str(args.routes), "--seed", str(args.seed),
                                       *(["--json"] if args.json else [])])
        return rc
    r = run_one(args.cluster, args.workload, args.routes, args.seed)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['cluster']:8} {r['workload']:10} {r['nodes']:,} nodes, {r['routes']:,} routes "
              f"to {r['destinations']:,} destinations: Router() {r['router_init_s']:.2f} s, "
              f"routing incl. Router() {r['routing_wall_s']:.2f} s wall "
              f"({r['routing_cpu_s']:.2f} s CPU); graph {r['graph_build_s']:.1f} s, RSS "
              f"{r['rss_after_graph_mib']} MiB after graph, peak {r['peak_rss_mib']} MiB",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
