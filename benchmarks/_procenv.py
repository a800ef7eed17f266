"""The environment of the benchmarks' child processes (bench_cli.py, bench_serving.py).

By default a child runs with a private bytecode cache: ``PYTHONPYCACHEPREFIX`` set to a fresh
temporary folder and ``PYTHONDONTWRITEBYTECODE`` unset, so that a first, uncounted run fills it
and the counted runs load hwsim's (and its dependencies') compiled ``.pyc`` files, as an
installed package has them; nothing is written into the checkout. With *inherit* the children
get this process's environment as it is: where it sets ``PYTHONDONTWRITEBYTECODE=1`` and the
checkout has no ``__pycache__``, every child compiles hwsim's sources again (a quarter of a
second and more of each process).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from typing import Iterator

__all__ = ["child_env", "bytecode_note", "timed"]


@contextlib.contextmanager
def child_env(inherit: bool = False) -> Iterator[dict[str, str]]:
    """A copy of ``os.environ`` for child processes; unless *inherit*, with a private bytecode
    cache (module docstring), removed when the block ends."""
    env = dict(os.environ)
    if inherit:
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="hwsim-bench-pyc-") as cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache
        yield env


def bytecode_note(inherit: bool) -> str:
    """How the children got their bytecode, for the report's header."""
    if inherit:
        return ("inherited environment (PYTHONDONTWRITEBYTECODE="
                f"{os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset')})")
    return "private cache, warmed"


def timed(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, float]:
    """Wall seconds and peak resident set (MiB, the child's own, from ``wait4``) of *cmd*;
    SystemExit with its stderr if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024
