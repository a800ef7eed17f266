"""Points per second of a 1,000-point sweep, on a local process pool and on a loopback Dask cluster.

Usage: python benchmarks/bench_sweep.py [--workers 2] [--sweep benchmarks/sweep_gpt3_clusters.yaml]
                                        [--skip-local] [--skip-dask]

Runs the sweep (GPT-3-class training on A100 / H100 clusters, issue 7) twice into fresh folders:
with ``--workers`` local processes, then through a ``dask scheduler`` and ``--workers`` ``dask
worker`` processes (one process, one thread each) started here on 127.0.0.1. Prints, per run, the
wall time (from the call to the table, worker start-up included), points per second, the points
simulated (not rejected by a constraint) and their mean simulation time, the share of the wall
time the workers spent simulating (the points' own times over workers over wall time: 100 % is
perfect scheduling; it depends little on how loaded the machine is) and the load average; then
checks that both tables agree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hwsim  # noqa: E402


@contextlib.contextmanager
def loopback_cluster(workers: int, folder: Path):
    """A ``dask scheduler`` and *workers* ``dask worker`` processes on 127.0.0.1; yields the
    scheduler's address."""
    from distributed import Client

    info = folder / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    common = ["--scheduler-file", str(info), "--no-dashboard"]
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                               "127.0.0.1", "--port", "0", *common], env=env, cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        while not (info.exists() and info.stat().st_size):
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                                    "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1",
                                    *common], env=env, cwd=folder, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for _ in range(workers)]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def _run(label: str, spec: Path, out: Path, n_workers: int, **kw) -> pd.DataFrame:
    t0 = time.perf_counter()
    table = hwsim.sweep(spec, out=out, **kw)
    wall = time.perf_counter() - t0
    ran = table[~table["reason"].fillna("").str.startswith("constraint:")]
    busy = ran["wall_s"].sum() / n_workers  # what perfect scheduling would take
    load = os.getloadavg()[0]
    print(f"{label}: {len(table):,} points in {wall:.1f} s = {len(table) / wall:.2f} points/s; "
          f"{len(ran):,} simulated ({len(ran) / wall:.2f}/s, mean {ran['wall_s'].mean():.3f} s "
          f"each), {int(table['feasible'].sum()):,} feasible, "
          f"{int(ran['reason'].fillna('').str.startswith('does not fit').sum()):,} do not fit; "
          f"the points' own time / workers / wall = {busy / wall:.0%}; load average {load:.1f}",
          flush=True)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sweep", type=Path, default=ROOT / "benchmarks" / "sweep_gpt3_clusters.yaml")
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--skip-dask", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        tables = {}
        if not args.skip_local:
            tables["local"] = _run(f"local pool, {args.workers} workers", args.sweep,
                                   tmp / "local", args.workers, workers=args.workers)
        if not args.skip_dask:
            t0 = time.perf_counter()
            with loopback_cluster(args.workers, tmp) as address:
                print(f"dask cluster up in {time.perf_counter() - t0:.1f} s at {address}",
                      flush=True)
                tables["dask"] = _run(f"loopback Dask, {args.workers} workers", args.sweep,
                                      tmp / "dask", args.workers, scheduler=address)
        if len(tables) == 2:
            a, b = (t.drop(columns="wall_s") for t in tables.values())
            pd.testing.assert_frame_equal(a, b)
            print("local and Dask tables agree")
        for t in tables.values():
            best = t[t["rank_tokens_per_s"] == 1].iloc[0]
            cols = [c for c in t.columns if c.startswith(("workload.", "cluster.nodes",
                                                          "cluster.node.gpu"))]
            print("fastest:", {c.split(".")[-1]: getattr(best[c], "item", lambda: best[c])()
                               for c in cols},
                  f"tokens/s {best['tokens_per_s']:,.0f}, MFU {best['mfu']:.3f}")
            break


if __name__ == "__main__":
    main()
