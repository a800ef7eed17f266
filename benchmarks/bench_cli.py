"""Start-up time of the command line, each command a whole process in a fresh interpreter.

Usage: python benchmarks/bench_cli.py [--runs N] [--scenario FILE] [--inherit-env]

Times ``python -c "import hwsim"``, ``hwsim --help`` and ``hwsim validate FILE`` (default
``scenarios/gpt3-175b-1024xa100.yaml``) from outside, start-up and imports included: N counted
runs each (default 9), after one warm-up run each that is not counted, the commands taken in
turn (A B C A B C ...) so a slow moment of a busy machine falls on all of them. Prints a
markdown table of the median wall and CPU (user + system) seconds and the spread of the wall
time (min - max), with the exact command of each row.

``hwsim`` is the console script next to this interpreter (``<venv>/bin/hwsim``), else
``python -m hwsim.cli``. Bytecode (``_procenv.py``, shared with bench_serving.py): by default
the runs use a fresh, private bytecode cache (``PYTHONPYCACHEPREFIX`` set to a temporary folder,
``PYTHONDONTWRITEBYTECODE`` unset) that the warm-up runs fill, as an installed package has its
``.pyc`` files; nothing is written into the checkout. ``--inherit-env`` runs the commands in
this process's environment as it is (with ``PYTHONDONTWRITEBYTECODE=1`` and no ``__pycache__``
in the checkout, every run compiles hwsim's sources again). To time another checkout, set
``PYTHONPATH`` to it: the commands inherit it.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file
from _procenv import bytecode_note, child_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = ROOT / "scenarios" / "gpt3-175b-1024xa100.yaml"


def hwsim_command() -> list[str]:
    """The ``hwsim`` console script of this interpreter's environment, else ``python -m``."""
    script = Path(sys.executable).with_name("hwsim")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hwsim.cli"]


def commands(scenario: Path) -> list[list[str]]:
    hwsim = hwsim_command()
    return [[sys.executable, "-c", "import hwsim"], hwsim + ["--help"],
            hwsim + ["validate", str(scenario)]]


def time_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system of the child) seconds of one run of *cmd*."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} exited {done.returncode}:\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9, help="counted runs per command (default 9)")
    ap.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO,
                    help="the scenario of `hwsim validate` (default: %(default)s)")
    ap.add_argument("--inherit-env", action="store_true",
                    help="run in this environment as it is (no private bytecode cache)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    with child_env(args.inherit_env) as env:
        cmds = commands(args.scenario.resolve())
        for cmd in cmds:  # warm-up: fills the bytecode cache and the OS's file cache
            time_once(cmd, env)
        runs: list[list[tuple[float, float]]] = [[] for _ in cmds]
        for _ in range(args.runs):
            for i, cmd in enumerate(cmds):
                runs[i].append(time_once(cmd, env))
    print(f"{args.runs} runs each, medians; python {sys.version.split()[0]}; bytecode: "
          f"{bytecode_note(args.inherit_env)}; PYTHONPATH={os.environ.get('PYTHONPATH', '(unset)')}\n")
    print("| command | wall s (median) | cpu s (median) | wall min - max |")
    print("|---|---:|---:|---|")
    for cmd, rows in zip(cmds, runs):
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        shown = shlex.join(cmd).replace(str(ROOT) + os.sep, "")
        print(f"| `{shown}` | {statistics.median(walls):.3f} | {statistics.median(cpus):.3f} | "
              f"{min(walls):.3f} - {max(walls):.3f} |")


if __name__ == "__main__":
    main()
