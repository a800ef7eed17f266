"""Wall time and peak memory of LLM serving (issues 4 and 15), on one core.

Cases, Llama-2-70B fp16 on one 8x H100-SXM5-80GB server, both built from
``scenarios/llama2-70b-tp4x2-h100-serving.yaml`` with only the fields below changed:

- ``two``: 2 replicas of TP 4 (the whole server) behind a round-robin router, Poisson arrivals
  at 4 requests/s in total (2/s per replica), ``--requests`` requests (default 10,000).
- ``one``: 1 replica of TP 4 at 2 requests/s, the same request count: the case the Vidur
  peer runs (shared/peers/README.md), for the side-by-side figures.

Targets (the ``target`` column, for 10,000 requests): ``hwsim.run`` under 1 s in both cases
(issue 15; issue 4's was 10 s for ``two``); and on the peers' case (``--only one --requests
2000``) the whole process at least 10 times faster than Vidur's (issue 15: 9.6 s, so under
0.96 s).

Both use Vidur's workload: 1,024 prompt and 128 output tokens per request, a vLLM-style
scheduler (continuous batching, an iteration is all prefill or all decode, prefill first: no
chunked prefill), at most 128 sequences and 4,096 tokens per iteration, KV blocks of 16 tokens,
90 % of device memory for weights and KV cache.

Each run is a fresh Python process pinned to one CPU (``taskset -c 0`` where available),
``--repeat`` times, after one uncounted warm-up process (a few requests). Bytecode
(``_procenv.py``, shared with bench_cli.py): by default the children use a fresh, private
bytecode cache (``PYTHONPYCACHEPREFIX``, ``PYTHONDONTWRITEBYTECODE`` unset) that the warm-up
fills, as an installed package has its ``.pyc`` files; ``--inherit-env`` runs them in this
process's environment as it is (with ``PYTHONDONTWRITEBYTECODE=1``, every child compiles hwsim's
sources again, about 0.3 s of its process time). Reported per case: the median wall time of ``hwsim.run(scenario)``
(arrivals, simulation, request table, summary; imports excluded), the median time to build the
full events frame afterwards (built on first read), the median wall time of the whole child
process (``proc s``: interpreter start, imports, run, frames; comparable to the wall time of a
Vidur process, which the peers' driver measures), the median wall time of the command a user
runs on the case's scenario (``cli s``: ``hwsim run FILE --out DIR -q``, the whole process,
result folder written; ``--json`` adds its peak as ``cli_peak_mb``), the peak resident set of
the child (imports included, max over repeats), and the run's figures: TTFT and TPOT percentiles (TPOT per request:
(end - first token) / (output tokens - 1)), throughput, iterations, mean batch; with ``--tbt``
also the percentiles over every output token after the first of its gap since the request's
previous token (what Vidur reports as TBT, ``decode_token_execution_plus_preemption_time``),
from one more, untimed, run whose scheduler is wrapped to record them.

    python benchmarks/bench_serving.py                    # both cases, 10,000 requests, 3 repeats
    python benchmarks/bench_serving.py --only two --repeat 5
    python benchmarks/bench_serving.py --requests 2000 --json
    python benchmarks/bench_serving.py --tbt        # adds per-token TBT from one more run per case
    python benchmarks/bench_serving.py --only two --repeat 1 --profile /tmp/serving
    #   cProfile of hwsim.run in the child: top 25 by tottime on stderr, /tmp/serving.two.prof
    python benchmarks/bench_serving.py --only one --requests 2000 --repeat 5 --inherit-env
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from _procenv import bytecode_note, child_env, timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "scenarios" / "llama2-70b-tp4x2-h100-serving.yaml"
# case: (replicas, total arrival rate per s, target s for hwsim.run at 10,000 requests)
CASES = {
    "two": (2, 4.0, 1.0),
    "one": (1, 2.0, 1.0),
}
_CHILD = r"""
import json, resource, sys, time
import yaml
import hwsim
import hwsim.scenario.build, hwsim.simulation  # hwsim.run imports these lazily: not timed
import pandas  # so does a serving run (its request table): not timed either
path, prof, tbt = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
gaps = []
if tbt:  # per-token gaps (Vidur's TBT), recorded around the scheduler: slows the run
    from hwsim.jobs.serving import ServingJob
    _finish = ServingJob._finish_iteration

    def _finish_iteration(self, r, prefills, decodes, t0, now=None):
        _finish(self, r, prefills, decodes, t0, now)
        now = self.env.now if now is None else now
        for s in decodes:
            gaps.append(now - s._last_token_s)
            s._last_token_s = now
        for s, n in prefills:
            if s.decoding:
                s._last_token_s = now
    ServingJob._finish_iteration = _finish_iteration
sc = yaml.safe_load(open(path))  # the case's scenario (case_file)
if tbt:  # every iteration through the hook: fast-forward accounts a run of them at once
    sc["workload"].setdefault("scheduler", {})["fast_forward"] = False
if prof:
    import cProfile, pstats
    p = cProfile.Profile()
    t0 = time.perf_counter(); p.enable(); r = hwsim.run(sc); p.disable()
    t1 = time.perf_counter()
    p.dump_stats(prof)
    pstats.Stats(p, stream=sys.stderr).sort_stats("tottime").print_stats(25)
else:
    t0 = time.perf_counter(); r = hwsim.run(sc); t1 = time.perf_counter()
n_events = len(r.events)
t2 = time.perf_counter()
s = r.summary
out = {"run_s": t1 - t0, "frames_s": t2 - t1, "events": n_events,
       "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
for k in ("devices", "replicas", "requests", "requests_completed", "preemptions",
          "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s", "tpot_p90_s", "tpot_p99_s",
          "e2e_p50_s", "e2e_p99_s", "requests_per_s", "output_tokens_per_s", "iterations",
          "batch_size_mean", "kv_blocks_used_max", "kv_blocks_total", "simulated_time_s",
          "bottleneck"):
    out[k] = s.get(k)
if tbt:
    import numpy as np
    for q in (50, 90, 99):
        out[f"tbt_p{q}_s"] = float(np.percentile(gaps, q))
    out["tbt_tokens"] = len(gaps)
print(json.dumps(out))
"""


def case_file(folder: Path, replicas: int, rate: float, requests: int) -> Path:
    """The case's scenario (BASE with the peers' workload), written into *folder*."""
    sc = yaml.safe_load(BASE.read_text())
    sc["name"] = f"llama2-70b-tp4x{replicas}-h100-serving-bench"
    w = sc["workload"]
    w["parallelism"] = {"tp": 4, "pp": 1, "replicas": replicas}
    w["scheduler"] = {"policy": "continuous", "max_batch_size": 128, "max_batched_tokens": 4096,
                      "chunked_prefill": False, "block_tokens": 16, "memory_fraction": 0.9}
    w["arrivals"] = {"process": "poisson", "rate_per_s": rate, "requests": requests,
                     "prompt_tokens": 1024, "output_tokens": 128}
    w["router"] = "round_robin"
    path = folder / f"serving-{replicas}x-{rate:g}-{requests}.yaml"
    path.write_text(yaml.safe_dump(sc, sort_keys=False))
    return path


def _child(cmd: list[str], env: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return cmd, env


def measure(path: Path, profile: str = "", tbt: bool = False,
            env: dict[str, str] | None = None) -> dict:
    """One child process's figures for the scenario *path* (:func:`case_file`); *env*: its
    environment (default this one's)."""
    cmd, env = _child([sys.executable, "-c", _CHILD, str(path), profile, "1" if tbt else "0"],
                      env)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    process_s = time.perf_counter() - t0
    if profile:
        sys.stderr.write(out.stderr)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["process_s"] = process_s
    return r


def measure_cli(path: Path, out: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``hwsim run PATH --out OUT -q``, the whole process
    as a user runs it."""
    cmd, env = _child([sys.executable, "-m", "hwsim.cli", "run", str(path), "--out", str(out),
                       "-q"], env)
    return timed(cmd, env, cwd=str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(CASES), action="append")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", metavar="PREFIX", default="",
                    help="profile one run per case; writes PREFIX.<case>.prof")
    ap.add_argument("--tbt", action="store_true",
                    help="also record every token's gap since the previous one (Vidur's TBT); "
                         "one untimed run per case")
    ap.add_argument("--json", action="store_true", help="one JSON line per case")
    ap.add_argument("--inherit-env", action="store_true",
                    help="run the children in this environment as it is (no private bytecode "
                         "cache)")
    args = ap.parse_args(argv)
    keys = args.only or ["two", "one"]
    with child_env(args.inherit_env) as env, tempfile.TemporaryDirectory() as tmp:
        # warm-up: bytecode, the OS's file cache
        measure(case_file(Path(tmp), *CASES[keys[0]][:2], 20), env=env)
        _report(args, keys, env, Path(tmp))
    return 0


def _report(args: argparse.Namespace, keys: list[str], env: dict[str, str], tmp: Path) -> None:
    if not args.json:
        print(f"bytecode: {bytecode_note(args.inherit_env)}; python {sys.version.split()[0]}")
        print(f"{'case':<26} {'requests':>8} {'run s':>7} {'frames s':>8} {'proc s':>7} {'peak MiB':>8} "
              f"{'target':>7} {'cli s':>6} {'TTFT p50/p99 ms':>16} {'TPOT p50/p99 ms':>16} {'req/s':>6} "
              f"{'iters':>7} {'batch':>5}" + (f" {'TBT p50/p99 ms':>16}" if args.tbt else ""))
    for key in keys:
        replicas, rate, limit_s = CASES[key]
        limit_s = limit_s if args.requests == 10_000 else None  # the targets' request count
        repeat = 1 if args.profile else args.repeat
        path = case_file(tmp, replicas, rate, args.requests)
        runs = [measure(path, f"{args.profile}.{key}.prof" if args.profile else "", env=env)
                for _ in range(repeat)]
        r = dict(runs[0])
        if args.tbt:
            r.update({k: v for k, v in measure(path, tbt=True, env=env).items()
                      if k.startswith("tbt_")})
        cli = [measure_cli(path, tmp / f"out-{key}-{i}", env) for i in range(repeat)]
        r.update(case=key, rate_per_s=rate, repeats=repeat, bytecode="inherited"
                 if args.inherit_env else "private",
                 run_s=statistics.median(x["run_s"] for x in runs),
                 run_s_all=[round(x["run_s"], 3) for x in runs],
                 frames_s=statistics.median(x["frames_s"] for x in runs),
                 process_s=statistics.median(x["process_s"] for x in runs),
                 peak_mb=max(x["peak_mb"] for x in runs), target_s=limit_s,
                 cli_s=statistics.median(w for w, _ in cli), cli_peak_mb=max(m for _, m in cli))
        if args.json:
            print(json.dumps(r))
            continue
        name = f"{key}: TP4 x{replicas} @ {rate:g}/s"
        target = f"<{limit_s:g} s" if limit_s else "-"
        ttft = f"{r['ttft_p50_s'] * 1e3:.1f} / {r['ttft_p99_s'] * 1e3:.1f}"
        tpot = f"{r['tpot_p50_s'] * 1e3:.2f} / {r['tpot_p99_s'] * 1e3:.2f}"
        print(f"{name:<26} {r['requests']:>8} {r['run_s']:>7.2f} {r['frames_s']:>8.2f} {r['process_s']:>7.2f} "
              f"{r['peak_mb']:>8.0f} {target:>7} {r['cli_s']:>6.2f} {ttft:>16} {tpot:>16} "
              f"{r['requests_per_s']:>6.2f} {r['iterations']:>7} {r['batch_size_mean']:>5.1f}"
              + (f" {r['tbt_p50_s'] * 1e3:>7.2f} / {r['tbt_p99_s'] * 1e3:<6.2f}" if args.tbt else ""))


if __name__ == "__main__":
    raise SystemExit(main())
