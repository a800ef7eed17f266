"""Hostile and careless input (issue 12, items 9-11, 14-16, 18, 19): alias bombs, deep nesting,
huge numbers, pathological ranges and constraint expressions, --out folders that are not
hwsim's, concurrent sweeps on one folder, kill -9 and SIGTERM during runs and sweeps.

Every case runs the real ``hwsim`` entry point in a subprocess with a timeout and an address-space
limit, so a regression fails (MemoryError, timeout) instead of eating the machine; each must end
in seconds with a result or a one-line ``error:`` (exit 1), never a traceback.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MEM = 2560 * 2 ** 20  # address space of each hwsim process (numpy, pandas, pyarrow fit in ~1 GB)
QUICK = {
    "name": "mlp-dp",
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 2,
                                     "intra_node": "nvlink3"}},
    "workload": {"kind": "training", "model": {"preset": "mlp", "width": 256, "depth": 2},
                 "global_batch": 64, "steps": 2},
}
SLOW = {  # a point that simulates for several seconds
    **QUICK,
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8,
                                     "intra_node": "nvlink3"}},
    "workload": {"kind": "training", "model": {"preset": "mlp", "features": 8192, "width": 8192,
                                               "depth": 8, "outputs": 8192},
                 "precision": "bf16", "global_batch": 2048, "steps": 600},
}
BOMB = "".join(  # 9**9 (387 million) strings from 400 bytes once the aliases are expanded
    f"{x}: &{x} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for p, x in zip(["", *"abcdefgh"], "abcdefghi"))


def _limits(umask: int | None = None):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEM, MEM))
        if umask is not None:
            os.umask(umask)
    return apply


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                          os.environ.get("PYTHONPATH", "")]),
            "HWSIM_PROGRESS": "0"}


def hwsim(*args: object, cwd: Path, timeout: float = 60, umask: int | None = None
          ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=_env(),
                          preexec_fn=_limits(umask))


def popen(*args: object, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hwsim.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), preexec_fn=_limits())


def one_line_error(p: subprocess.CompletedProcess, *words: str) -> str:
    """*p* failed with exit 1 and one ``error:`` line (containing *words*), no traceback."""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 1, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr and len(lines) == 1 and lines[0].startswith("error: "), \
        p.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_file(folder: Path, name: str = "t", base: dict | None = None, values=(1, 2, 3),
               **extra: object) -> Path:
    spec = {"name": name, "base": base or QUICK,
            "axes": [{"path": "seed", "values": list(values)}], **extra}
    return write(folder / f"{name}.yaml", spec)


# --- YAML: alias bombs, recursion, nesting, keys, huge numbers --------------------------------

YAML_CASES = {
    "alias-bomb": (BOMB + "name: *i\n", "aliases"),
    "alias-bomb-in-field": (BOMB.replace("i: &i", "cluster: &i") + "name: x\n", "aliases"),
    "small-bomb-in-error": ("".join(BOMB.splitlines(True)[:5]) + "name: x\ncluster: {nodes: *e}\n"
                            "workload: *e\n", "integer (got [[[...]"),
    "recursive-alias": ("a: &a [1, *a]\nname: x\n", "recursive alias"),
    "deep-nesting": ("name: " + "[" * 600 + "]" * 600 + "\n", "nesting deeper than 100"),
    "deep-mapping": ("name: " + "{a: " * 600 + "1" + "}" * 600 + "\n", "nesting deeper"),
    "list-key": ("[a, b]: 1\nname: x\n", "a list cannot be a key"),
    "mapping-key": ("{a: 1}: 1\nname: x\n", "a dict cannot be a key"),
    "5000-digit-int": ("name: x\nseed: " + "9" * 5000 + "\n", "4,300 digits"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_hostile_yaml_is_refused_fast_in_one_line(tmp_path: Path, case: str) -> None:
    text, word = YAML_CASES[case]
    scenario = write(tmp_path / f"{case}.yaml", text)
    t0 = time.monotonic()
    one_line_error(hwsim("validate", scenario, cwd=tmp_path, timeout=60), scenario.name, word)
    # the same file as a sweep: the same limits (a small bomb: an unknown key, in one line)
    one_line_error(hwsim("sweep", scenario, "--out", "o", cwd=tmp_path, timeout=60),
                   word if "bomb-in-error" not in case else "unknown key")
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "o").exists()


def test_alias_bomb_as_a_sweep_base_is_refused(tmp_path: Path) -> None:
    base = write(tmp_path / "base.yaml", BOMB + "name: *i\n")
    spec = write(tmp_path / "s.yaml", {"base": str(base), "axes": [{"path": "seed",
                                                                      "values": [1]}]})
    one_line_error(hwsim("sweep", spec, "--out", "o", cwd=tmp_path), "aliases")


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (17 * 2 ** 20) + "\nname: x\n")
    one_line_error(hwsim("validate", big, cwd=tmp_path), "MiB")


# --- sweep files: huge numbers, pathological ranges, expressions ------------------------------

SWEEP_CASES = {
    "range-1e12": ({"axes": [{"path": "seed", "range": {"start": 1, "stop": 1e12, "step": 1}}]},
                   "1,000,000,000,000 values"),
    "range-int-huge": ({"axes": [{"path": "seed", "range": {"start": 1, "stop": 10 ** 200,
                                                            "step": 1}}]}, "over 1e30 values"),
    "range-num-1e11": ({"axes": [{"path": "seed", "range": {"start": 1, "stop": 2,
                                                            "num": 1e11}}]}, "num"),
    "range-inf": ({"axes": [{"path": "seed", "range": {"start": 1, "stop": float("inf"),
                                                       "step": 1}}]}, "finite"),
    "range-tiny-step": ({"axes": [{"path": "seed", "range": {"start": 1, "stop": 1e300,
                                                             "step": 1e-300}}]}, "values"),
    "range-int-1e400": ({"axes": [{"path": "seed", "range": {"start": 1, "stop": 10 ** 400,
                                                             "num": 2}}]}, "1e300"),
    "grid-product": ({"axes": [{"path": "seed", "range": {"start": 1, "stop": 2000, "step": 1}},
                               {"path": "workload.steps", "range": {"start": 1, "stop": 1000,
                                                                    "step": 1}}]},
                     "2,000,000 points"),
    "n-1e30": ({"mode": "random", "n": 10 ** 30}, "n"),
    "seed-negative": ({"mode": "random", "n": 2, "seed": -1}, "seed"),
    "seed-huge": ({"mode": "random", "n": 2, "seed": 10 ** 30}, "seed"),
    "pow-chain": ({"constraints": ["((10**64)**64)**64 > 1"]}, "beyond 2**1024"),
    "pow-tower": ({"constraints": ["2 ** 10 ** 10 > 1"]}, "beyond 2**1024"),
    "text-repeat": ({"constraints": ["'a' * 10**10 == 'a'"]}, "repeating"),
    "text-format": ({"constraints": ["'%.999999999f' % 1.0 == 'x'"]}, "formatting"),
    "long-chain": ({"constraints": ["+".join(["1"] * 2000) + " > 1"]}, "characters long"),
    "deep-unary": ({"constraints": ["-" * 900 + "1 < 0"]}, "deep"),
    "deep-nesting": ({"constraints": ["(1+" * 90 + "1" + ")" * 90 + " > 0"]}, "deep"),
}


@pytest.mark.parametrize("case", sorted(SWEEP_CASES))
def test_pathological_sweeps_are_refused_fast_in_one_line(tmp_path: Path, case: str) -> None:
    extra, word = SWEEP_CASES[case]
    spec = {"name": case, "base": QUICK, "axes": [{"path": "seed", "values": [1, 2]}], **extra}
    path = write(tmp_path / "s.yaml", spec)
    one_line_error(hwsim("sweep", path, "--out", "o", cwd=tmp_path, timeout=60), word)
    assert not (tmp_path / "o").exists()


def test_a_constraint_too_large_at_one_point_only_is_that_points_reason(tmp_path: Path) -> None:
    """Within the limits a constraint still runs; one beyond them only at seed 3 is its reason."""
    import pandas as pd

    spec = sweep_file(tmp_path, values=(1, 2, 3), constraints=["10 ** (150 * seed) > 0"])
    p = hwsim("sweep", spec, "--out", "o", "--workers", "1", cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    table = pd.read_parquet(tmp_path / "o" / "results.parquet").set_index("seed")
    assert table.loc[[1, 2], "feasible"].all()
    assert "beyond 2**1024" in table.loc[3, "reason"] and not table.loc[3, "feasible"]


# --- --out safety -------------------------------------------------------------------------------

def test_run_never_replaces_a_folder_hwsim_did_not_write(tmp_path: Path) -> None:
    """The issue's repro: a summary.json does not make a folder hwsim's; checked before the
    scenario is even read (an invalid scenario still gets the --out error)."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "summary.json").write_text("{}")
    (d / "notes.txt").write_text("precious")
    bad = write(tmp_path / "bad.yaml", "name: [\n")
    one_line_error(hwsim("run", bad, "--out", d, cwd=tmp_path), "refusing to replace", ".hwsim")
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "summary.json"]
    spec = sweep_file(tmp_path)
    one_line_error(hwsim("sweep", spec, "--out", d, cwd=tmp_path), "refusing to replace")
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt", "summary.json"]


def test_a_result_folder_from_before_the_marker_is_replaced(tmp_path: Path) -> None:
    """A folder holding nothing but hwsim's result files (written before the marker existed)
    is a run's result: replaced, not refused; one extra file makes it the user's."""
    d = tmp_path / "old"
    d.mkdir()
    for name in ("summary.json", "events.parquet", "trace.json", "report.html"):
        (d / name).write_text("{}")
    p = hwsim("run", ROOT / "scenarios" / "quickstart.yaml", "--out", d, "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads((d / "summary.json").read_text())["fits"] is True
    assert (d / ".hwsim.json").is_file() and not (d / "report.html").exists()


def test_out_dot_unwritable_and_file_are_refused_before_simulating(tmp_path: Path) -> None:
    scenario = write(tmp_path / "bad.yaml", "name: [\n")  # the --out error comes first
    (tmp_path / "file").write_text("x")
    for out, word in ((".", "current folder"), (tmp_path, "current folder"),
                      ("file", "is a file"), ("file/sub", "cannot write")):
        one_line_error(hwsim("run", scenario, "--out", out, cwd=tmp_path), word)
    spec = sweep_file(tmp_path)
    for out, word in ((".", "current folder"), ("file/sub", "cannot write")):
        one_line_error(hwsim("sweep", spec, "--out", out, cwd=tmp_path), word)
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_parent_is_refused_before_simulating(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    one_line_error(hwsim("run", write(tmp_path / "bad.yaml", "name: [\n"), "--out", ro / "x",
                         cwd=tmp_path), "cannot write")


def test_run_out_replaces_its_own_result_through_a_link_and_cleans_killed_runs(
        tmp_path: Path) -> None:
    scenario = write(tmp_path / "q.yaml", QUICK)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid no process has now
    target = tmp_path / "target"
    assert hwsim("run", scenario, "--out", target, "-q", cwd=tmp_path).returncode == 0
    assert (target / ".hwsim.json").is_file()
    (tmp_path / "link").symlink_to(target)
    for name in (f".target.tmp-{dead.pid}", f"target.tmp-{dead.pid}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text("{}")
    keep = tmp_path / f"target.tmp-{dead.pid + 1}"  # not only hwsim's files: left alone
    keep.mkdir()
    (keep / "mine.txt").write_text("x")
    p = hwsim("run", scenario, "--out", "link", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link" / "summary.json").is_file()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["q.yaml", "target", "link", keep.name]), left


def test_a_run_killed_while_simulating_leaves_nothing_behind(tmp_path: Path) -> None:
    scenario = write(tmp_path / "slow.yaml", SLOW)
    proc = popen("run", scenario, "--out", "d", "-q", cwd=tmp_path)
    time.sleep(4)
    proc.kill()
    proc.wait(timeout=30)
    assert hwsim("run", write(tmp_path / "q.yaml", QUICK), "--out", "d", "-q",
                 cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "q.yaml", "slow.yaml"]


def test_sweep_and_run_files_get_the_same_mode_from_the_umask(tmp_path: Path) -> None:
    assert hwsim("run", write(tmp_path / "q.yaml", QUICK), "--out", "r", "-q", cwd=tmp_path,
                 umask=0o027).returncode == 0
    p = hwsim("sweep", sweep_file(tmp_path, values=(1,)), "--out", "s", cwd=tmp_path,
              umask=0o027)
    assert p.returncode == 0, p.stderr
    files = [f for d in ("r", "s") for f in (tmp_path / d).rglob("*") if f.is_file()]
    modes = {f.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(f.stat().st_mode))
             for f in files}
    assert set(modes.values()) == {"0o640"}, modes
    assert "s/results.parquet" in modes and "r/summary.json" in modes


# --- concurrent sweeps on one folder -------------------------------------------------------------

def test_the_same_sweep_twice_at_once_keeps_every_row(tmp_path: Path) -> None:
    """The issue's repro left parts/ empty; now the second waits its turn (or is refused while the
    first runs), and every row is there."""
    import pandas as pd

    spec = sweep_file(tmp_path, values=(1, 2, 3, 4))
    procs = [popen("sweep", spec, "--out", "o", "--workers", "1", cwd=tmp_path)
             for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert any(rc == 0 for rc, _ in results), results
    for rc, err in results:
        assert "Traceback" not in err
        if rc:
            assert rc == 1 and "another sweep (process" in err, err
    table = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert sorted(table["seed"]) == [1, 2, 3, 4] and table["feasible"].all()
    assert list((tmp_path / "o" / "parts").glob("part-*.parquet"))


def test_a_locked_folder_is_refused_and_a_dead_holders_lock_taken_over(tmp_path: Path) -> None:
    spec = sweep_file(tmp_path, values=(1,))
    out = tmp_path / "o"
    out.mkdir()
    (out / ".hwsim.json").write_text(json.dumps({"kind": "sweep", "name": "t",
                                                 "base": "inline:x"}))
    first = hwsim("sweep", spec, "--out", out, cwd=tmp_path)  # (a different base)
    one_line_error(first, "another sweep")
    (out / ".hwsim.json").unlink()
    with open(out / ".hwsim.lock", "w") as fh:  # a live holder
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        one_line_error(hwsim("sweep", spec, "--out", out, cwd=tmp_path),
                       f"another sweep (process {os.getpid()})")
    # the holder is gone (a killed sweep leaves its lock file with its pid): taken over
    p = hwsim("sweep", spec, "--out", out, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (out / ".hwsim.lock").read_text().strip() != str(os.getpid())


def test_a_different_sweep_into_another_sweeps_folder_is_refused(tmp_path: Path) -> None:
    import pandas as pd

    a = sweep_file(tmp_path, name="a", values=(1, 2))
    assert hwsim("sweep", a, "--out", "o", "--workers", "1", cwd=tmp_path).returncode == 0
    before = pd.read_parquet(tmp_path / "o" / "results.parquet")
    b = sweep_file(tmp_path, name="b", values=(3,))
    one_line_error(hwsim("sweep", b, "--out", "o", cwd=tmp_path), "another sweep", "'a'")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "o" / "results.parquet"), before)
    one_line_error(hwsim("run", write(tmp_path / "q.yaml", QUICK), "--out", "o",
                         cwd=tmp_path), "a sweep's results")
    grown = sweep_file(tmp_path, name="a", values=(1, 2, 3))  # the same sweep, grown: resumes
    p = hwsim("sweep", grown, "--out", "o", "--workers", "1", cwd=tmp_path)
    assert p.returncode == 0 and "(2 already done)" in p.stdout, p.stdout + p.stderr


# --- killing a sweep ---------------------------------------------------------------------------

def _children(parent: int) -> list[tuple[int, bytes]]:
    """The (pid, command line) of every child process of *parent*."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1]
                                            .split()[1]) == parent:
                out.append((int(entry.name), (entry / "cmdline").read_bytes()))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _workers(parent: int) -> list[int]:
    """The pool workers of process *parent*: spawned interpreters among its children, or the
    children of the fork server it started (forked: they keep the server's command line)."""
    pids = []
    for pid, cmdline in _children(parent):
        if b"spawn_main" in cmdline:
            pids.append(pid)
        elif b"forkserver" in cmdline:
            pids += [child for child, _ in _children(pid)]
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["kill", "term"])
def test_sweep_workers_die_with_their_parent(tmp_path: Path, how: str) -> None:
    spec = sweep_file(tmp_path, base=SLOW, values=(1, 2))
    proc = popen("sweep", spec, "--out", "o", "--workers", "2", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while len(_workers(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _workers(proc.pid)
    assert len(workers) == 2, proc.stderr.read() if proc.poll() is not None else "no workers"
    time.sleep(3)  # the workers are simulating their points
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
    rc = proc.wait(timeout=30)
    assert rc == (-9 if how == "kill" else 143), proc.stderr.read()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)]
    if how == "term":
        assert "Traceback" not in proc.stderr.read()
        assert (tmp_path / "o" / ".hwsim.json").is_file()


# --- reading damaged results --------------------------------------------------------------------

def test_report_on_a_truncated_parquet_is_one_line(tmp_path: Path) -> None:
    assert hwsim("run", write(tmp_path / "q.yaml", QUICK), "--out", "r", "-q",
                 cwd=tmp_path).returncode == 0
    events = tmp_path / "r" / "memory.parquet"
    events.write_bytes(events.read_bytes()[:300])
    one_line_error(hwsim("report", "r", cwd=tmp_path), "memory.parquet", "truncated")
