"""Issue 15's speed table, as a user runs it: each case is a fresh ``hwsim run FILE --out DIR``
process (interpreter start, imports, simulation, every output file written), timed from the
outside; the peak resident memory is the child's own (``wait4``).

    python benchmarks/bench_layouts.py [--repeat 3] [--only NAME ...] [--taskset 0]
        [--set workload.steady_state=false] [--inherit-env]

Bytecode (``_procenv.py``, shared with bench_cli.py and bench_serving.py): by default the
children use a private bytecode cache, warmed by one uncounted run, as an installed package has
its ``.pyc`` files; ``--inherit-env`` keeps this process's environment (with
``PYTHONDONTWRITEBYTECODE=1`` and no ``__pycache__``, every child compiles hwsim's sources).

Cases (scenario edits are applied to a copy in a temporary folder):

- ``h100-512``: GPT-3 175B on 512 H100, TP 4, PP 8 x 12 virtual stages, SP, FP8, global batch
  2048 of micro-batch 1 (128 micro-batches per pipeline), ``steps: 1``
  (benchmarks/scenarios/gpt3-175b-512xh100-mlperf.yaml);
- ``h100-512-gb128`` / ``h100-512-gb256``: the same at global batch 128 / 256 (8 / 16
  micro-batches);
- ``h100-512-default-steps``: the same without ``steps`` (the default: what a step-time question
  needs);
- ``a100-1024``: scenarios/gpt3-175b-1024xa100.yaml (GPT-3 175B on 1,024 A100, 192
  micro-batches per pipeline, ``steps: 1``).

``--set KEY=VALUE`` (repeatable) edits every case the same way (e.g. the steady state off, for
the "before" column). Prints a markdown table: median wall seconds, the fastest and slowest
run, the median peak RSS in MiB, and the step time each run reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procenv import bytecode_note, child_env, timed  # noqa: E402

H100 = ROOT / "benchmarks" / "scenarios" / "gpt3-175b-512xh100-mlperf.yaml"
A100 = ROOT / "scenarios" / "gpt3-175b-1024xa100.yaml"
CASES = {
    "h100-512": (H100, {}),
    "h100-512-gb128": (H100, {"workload.global_batch": 128}),
    "h100-512-gb256": (H100, {"workload.global_batch": 256}),
    "h100-512-default-steps": (H100, {"workload.steps": None}),
    "a100-1024": (A100, {}),
}


def _edit(doc: dict, path: str, value) -> None:
    node = doc
    *parents, last = path.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", action="append", choices=sorted(CASES))
    ap.add_argument("--taskset", metavar="CPU", help="pin each child to this CPU (taskset -c)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="edit every case's scenario (the value is YAML)")
    ap.add_argument("--inherit-env", action="store_true",
                    help="children get this environment as it is (no private bytecode cache)")
    args = ap.parse_args(argv)
    hwsim_cmd = [sys.executable, "-m", "hwsim.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, child_env(args.inherit_env) as env:
        warm = Path(tmp) / "warm"  # fills the bytecode cache; not counted
        timed(hwsim_cmd + ["run", str(ROOT / "scenarios" / "quickstart.yaml"), "--out",
                          str(warm)], env)
        for name in args.only or list(CASES):
            base, edits = CASES[name]
            doc = yaml.safe_load(base.read_text())
            for k, v in edits.items():
                _edit(doc, k, v)
            for item in args.set:
                k, _, v = item.partition("=")
                _edit(doc, k, yaml.safe_load(v))
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            walls, peaks, step = [], [], None
            for i in range(args.repeat):
                out = Path(tmp) / f"{name}-{i}"
                cmd = hwsim_cmd + ["run", str(path), "--out", str(out)]
                if args.taskset:
                    cmd = ["taskset", "-c", args.taskset] + cmd
                wall, peak = timed(cmd, env)
                walls.append(wall)
                peaks.append(peak)
                summary = json.loads((out / "summary.json").read_text())
                step = summary.get("step_time_s")
                sim = summary.get("micro_batches_simulated"), summary.get("micro_batches")
            rows.append((name, statistics.median(walls), min(walls), max(walls),
                         statistics.median(peaks), step, sim))
    print(f"whole process `hwsim run FILE --out DIR`, {args.repeat} runs each, bytecode: "
          f"{bytecode_note(args.inherit_env)}"
          + (f", edits {args.set}" if args.set else "")
          + (f", pinned to CPU {args.taskset}" if args.taskset else ""))
    print("| case | wall s (median) | min - max | peak MiB | step s | micro-batches simulated |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, med, lo, hi, peak, step, (ms, m) in rows:
        print(f"| {name} | {med:.2f} | {lo:.2f} - {hi:.2f} | {peak:.0f} | {step:.4g} | "
              f"{ms} of {m} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
