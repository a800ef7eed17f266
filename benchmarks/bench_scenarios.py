"""Wall time and peak memory of every scenario in scenarios/, each in a fresh process.

Usage: python benchmarks/bench_scenarios.py [--repeat N]
Prints one line per scenario: median wall seconds of the simulation (hwsim.run, excluding
interpreter start-up and imports), peak RSS, simulated flows and events.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, resource, sys, time
import hwsim
t = time.perf_counter()
r = hwsim.run(sys.argv[1])
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "events": len(r.events), "flows": r.summary.get("flows")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'scenario':28} {'wall_s':>8} {'peak_MiB':>9} {'events':>8} {'flows':>8}")
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        runs = [json.loads(subprocess.run([sys.executable, "-c", _CHILD, str(path)], check=True,
                                          capture_output=True, text=True).stdout)
                for _ in range(args.repeat)]
        runs.sort(key=lambda d: d["wall_s"])
        med = runs[len(runs) // 2]
        print(f"{path.stem:28} {med['wall_s']:8.3f} {med['peak_rss_mib']:9.0f} {med['events']:8d} "
              f"{med['flows'] or 0:8d}")


if __name__ == "__main__":
    main()
