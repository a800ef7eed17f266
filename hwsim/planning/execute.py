"""Running a sweep's points: in this process, on a local process pool, or on a Dask cluster.

:func:`sweep` runs every point of a :class:`~hwsim.planning.sweep.SweepSpec` and returns one row
per point: ``id``, the inputs (one column per field path the axes set), ``feasible``, ``reason``
(why not: ``does not fit: ...``, ``constraint: ...``, ``scenario: <field>: ...``, ``error: ...``),
the output summary keys, ``wall_s`` (seconds the point took), and per objective ``rank_<key>``
plus ``pareto``.

With *out*, finished rows are appended to ``out/parts/part-<k>.parquet`` as points finish (each
part written to a temporary name and renamed, so no part is ever half-written), at most *flush_s*
apart; an interrupted sweep (Ctrl-C, SIGTERM, an exception) writes what has finished before it
stops, and a killed one loses at most the last *flush_s* seconds. A rerun reads the parts and
skips every point whose id is there. At the end the parts are compacted into one and
``out/results.parquet`` (this sweep's rows, ranked) and ``out/sweep.json`` (the spec) are written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hwsim.analysis.export import LOCK
from hwsim.exceptions import HwsimError, ScenarioError
from hwsim.planning.sweep import SweepSpec, base_scenario, load_sweep, points

__all__ = ["sweep", "read_results", "run_point", "PointTask", "SCHEDULER_ENV", "check_sweep_out",
           "sweep_identity", "LOCK"]

CONNECT_TIMEOUT_S = 20
"""Seconds to wait for a Dask scheduler to answer."""
SCHEDULER_ENV = "HWSIM_SCHEDULER"
"""The environment variable that names a Dask scheduler (``tcp://HOST:PORT``) when no
*scheduler* is given."""


@dataclass(frozen=True)
class PointTask:
    """What a worker needs to run one point (plain data, pickled to the worker)."""

    id: str
    scenario: dict[str, Any]
    base_dir: str | None
    label: str
    outputs: tuple[str, ...]


WORKER_MODULES = ("hwsim.planning.execute", "hwsim.scenario.build", "hwsim.simulation")
"""What a local pool's fork server imports before it forks the workers."""

_REUSE: dict[str, Any] = {}
"""What the points run in this process share (:func:`hwsim.scenario.build.prepare`'s *reuse*:
one graph per cluster, its routes and plans); the results are the same without it."""


def run_point(task: PointTask) -> dict[str, Any]:
    """Simulate one point; return its ``feasible``, ``reason``, outputs and ``wall_s``.

    Never raises for a bad point: a :class:`ScenarioError` or any other exception becomes an
    infeasible row whose reason is the error's text; a job that does not fit is infeasible with
    the summary's ``does not fit: ...`` label (and keeps its outputs, e.g. the memory needed).
    """
    from hwsim.scenario.build import run_scenario
    from hwsim.scenario.loader import load_scenario

    try:  # one bar for the sweep, none per point (workers would draw over each other)
        from hwsim.progress import silenced  # type: ignore[import-not-found]
    except ImportError:
        silenced = contextlib.nullcontext
    t0 = time.perf_counter()
    summary: dict[str, Any] = {}
    reason = None
    try:
        scenario = load_scenario(task.scenario, file=task.label, base_dir=task.base_dir)
        with silenced():
            summary = run_scenario(scenario, record="summary",  # all a point keeps
                                   reuse=_REUSE).summary
        if summary.get("fits") is False:
            label = str(summary.get("bottleneck_label") or "")
            reason = label if label.startswith("does not fit") else f"does not fit: {label}"
    except ScenarioError as err:
        reason = f"scenario: {err.field + ': ' if err.field else ''}{err.reason}"
    except Exception as err:  # noqa: BLE001 - one bad point never stops a sweep
        reason = f"error: {type(err).__name__}: {' '.join(str(err).split())}"
    row: dict[str, Any] = {"feasible": reason is None, "reason": reason}
    row.update({k: _plain(summary.get(k)) for k in task.outputs})
    row["wall_s"] = time.perf_counter() - t0
    row["_missing"] = [k for k in task.outputs if k not in summary] if summary else None
    return row


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


# --- the store ------------------------------------------------------------------------------



def sweep_identity(spec: SweepSpec) -> dict[str, Any]:
    """What names a sweep in its folder's marker: its name and its base (the file's path, or a
    hash of an inline mapping). A sweep with the same name and base resumes (and may grow) the
    folder's rows; any other sweep is refused there."""
    base = spec.base if isinstance(spec.base, str) else "inline:" + hashlib.sha256(
        json.dumps(spec.base, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"kind": "sweep", "name": spec.name, "base": base}


def check_sweep_out(out: str | Path, spec: SweepSpec, *, locked: bool = False) -> Path:
    """Check, before anything runs, that *out* can take *spec*'s results: not locked by another
    sweep (unless this process holds the lock: *locked*), and missing, empty, or this sweep's
    folder (:func:`hwsim.analysis.export.check_out_dir`). Returns the real folder."""
    from hwsim.analysis.export import check_out_dir

    if not locked and (Path(out) / LOCK).is_file():  # a sweep starting there may not have
        os.close(_take_lock(Path(out) / LOCK, Path(out), mine=False))  # marked it yet
    return check_out_dir(out, "sweep", sweep_identity(spec))


class _Store:
    """Finished rows of a sweep directory: parquet parts, each written atomically.

    Reading (:func:`read_results`) takes the folder as it is; :meth:`open` (a sweep writing)
    checks the folder, takes its lock (:data:`LOCK`) and marks it, and :meth:`close` lets go."""

    def __init__(self, out: Path | None, flush_s: float) -> None:
        self.out = out
        self.flush_s = flush_s
        self.buffer: list[dict[str, Any]] = []
        self.last = time.monotonic()
        self.rows: dict[str, dict[str, Any]] = {}
        self.next = 0
        self._lock: int | None = None
        if out is not None and out.is_dir():
            self._load()

    def _load(self) -> None:
        self.rows, self.next = {}, 0
        for path in self.parts():
            for row in _read_rows(path):
                self.rows[row["id"]] = row
            self.next = max(self.next, int(path.stem.split("-")[1]) + 1)

    def open(self, spec: SweepSpec) -> None:
        """Make the folder this sweep's: checked, locked, marked; what a killed sweep left
        half-written is removed. Raises HwsimError when another sweep holds it."""
        from hwsim.analysis.export import read_marker, write_marker

        if self.out is None:
            return
        given = self.out
        self.out = check_sweep_out(given, spec)
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = _take_lock(self.out / LOCK, given)
        try:  # again, under the lock: another sweep may have marked the folder meanwhile
            if read_marker(self.out) is not None or any(
                    p.name != LOCK for p in self.out.iterdir()):
                check_sweep_out(self.out, spec, locked=True)
            else:
                write_marker(self.out, sweep_identity(spec))
            (self.out / "parts").mkdir(exist_ok=True)
            for folder in (self.out, self.out / "parts"):  # temporaries of a killed writer
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
            self._load()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let go of the folder's lock (the lock file stays: removing it would race)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def parts(self) -> list[Path]:
        return sorted((self.out / "parts").glob("part-*.parquet")) if self.out else []

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row["id"]] = row
        self.buffer.append(row)
        if time.monotonic() - self.last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if self.out is None or not self.buffer:
            return
        self._write(self.buffer)
        self.buffer = []

    def _write(self, rows: list[dict[str, Any]]) -> Path:
        from hwsim.analysis.export import atomic_write_bytes

        path = self.out / "parts" / f"part-{self.next:06d}.parquet"
        self.next += 1
        return atomic_write_bytes(path, _parquet_bytes(_table(rows)))

    def compact(self) -> None:
        """Replace the parts by one holding every row (a reader dedupes by id meanwhile)."""
        if self.out is None:
            return
        self.flush()
        old = self.parts()
        if len(old) <= 1:
            return
        self._write(list(self.rows.values()))
        for path in old:
            path.unlink(missing_ok=True)


def _take_lock(path: Path, given: Path, mine: bool = True) -> int:
    """Lock *path* for this process (``flock``: the kernel lets go when the process dies, so a
    killed sweep's lock is taken over) and, when *mine* (not a mere probe), write our pid into
    it; HwsimError if another process holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise HwsimError(f"--out {str(given)!r}: another sweep (process {holder}) is writing to "
                         "this folder; one sweep per folder at a time, so wait for it to finish "
                         "or give another --out") from None
    if mine:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _read_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # noqa: BLE001 - a foreign or damaged file: say which
        raise HwsimError(f"{path}: cannot read this sweep part ({type(err).__name__}: {err}); "
                         "move it away and rerun") from None


def _table(rows: list[dict[str, Any]], columns: Iterable[str] | None = None) -> Any:
    """An Arrow table of *rows* (missing keys null); a column whose values mix types that Arrow
    cannot unify (``[1, "auto"]``) is stored as text."""
    import pyarrow as pa

    cols = list(columns) if columns is not None else list(
        dict.fromkeys(k for r in rows for k in r if not k.startswith("_")))
    arrays = {}
    for c in cols:
        values = [r.get(c) for r in rows]
        try:
            arrays[c] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[c] = pa.array([v if v is None or isinstance(v, str) else json.dumps(v)
                                  for v in values])
    return pa.table(arrays) if arrays else pa.table({"id": pa.array([], pa.string())})


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def read_results(out: str | Path) -> pd.DataFrame:
    """Every finished row in a sweep folder (any spec that wrote there), one per id, as read from
    its parts: the state of an interrupted sweep. A finished sweep's ranked table is
    ``out/results.parquet``."""
    store = _Store(Path(out), math.inf) if Path(out, "parts").is_dir() else None
    rows = list(store.rows.values()) if store else []
    return _table(rows).to_pandas()


# --- running --------------------------------------------------------------------------------

def sweep(spec: SweepSpec | str | Path | dict[str, Any], out: str | Path | None = None, *,
          workers: int | None = None, scheduler: str | None = None,
          on_point: Callable[[dict[str, Any]], None] | None = None,
          flush_s: float = 1.0) -> pd.DataFrame:
    """Run a sweep and return its table, one row per point, in the points' order.

    Parameters
    ----------
    spec : SweepSpec, path or mapping
        The sweep (docs/sweeps.md).
    out : path, optional
        A folder for the results (``results.parquet``, ``parts/``, ``sweep.json``); finished
        points there are not run again. Without it nothing is written and nothing resumes.
    workers : int, optional
        Local worker processes (default ``os.cpu_count()``); 1 runs the points in this process.
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a Dask scheduler (default: the ``HWSIM_SCHEDULER`` environment
        variable); the points then run on its workers, which must import the same hwsim.
    on_point : callable, optional
        Called in this process with each finished row (a dict), e.g. to advance a progress bar.
    flush_s : float
        Write finished rows to a new part at most this many seconds apart (0: every point).

    Raises
    ------
    ScenarioError
        A bad sweep (before anything runs).
    HwsimError
        The Dask scheduler cannot be reached, or a local worker process died (what finished is
        saved; rerun to resume).
    """
    spec = load_sweep(spec)
    pts = points(spec)
    store = _Store(Path(out) if out is not None else None, flush_s)
    store.open(spec)
    try:
        with _sigterm_exits():
            return _sweep(spec, pts, store, workers, scheduler, on_point)
    finally:
        store.close()


@contextlib.contextmanager
def _sigterm_exits() -> Any:
    """While a sweep runs in the main thread, SIGTERM raises SystemExit(143) there (instead of
    ending the process on the spot), so the finished rows are written, the workers are stopped
    and the folder's lock is let go, as for Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sweep(spec: SweepSpec, pts: list[Any], store: _Store, workers: int | None,
           scheduler: str | None, on_point: Callable[[dict[str, Any]], None] | None
           ) -> pd.DataFrame:
    outputs = tuple(spec.output_keys())
    _, base_dir, label = base_scenario(spec)
    out = store.out
    done = {pid for pid, row in store.rows.items() if all(k in row for k in outputs)}
    inputs = {p.id: p.inputs for p in pts}
    missing: dict[str, int] = {k: 0 for k in outputs}
    ran = 0

    def finish(pid: str, result: dict[str, Any]) -> None:
        nonlocal ran
        row = {"id": pid, **inputs[pid], **result}
        miss = row.pop("_missing", None)
        if miss is not None:
            ran += 1
            for k in miss:
                missing[k] += 1
        store.add(row)
        if on_point is not None:
            on_point(row)

    tasks = []
    for p in pts:
        if p.id in done:
            continue
        if p.reason is not None:
            finish(p.id, {"feasible": False, "reason": p.reason, **{k: None for k in outputs},
                          "wall_s": 0.0})
            continue
        tasks.append(PointTask(p.id, p.scenario, base_dir, f"{label} (sweep point {p.id})",
                               outputs))
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    try:
        if scheduler:
            _run_dask(tasks, scheduler, finish)
        else:
            _run_local(tasks, workers or os.cpu_count() or 1, finish, out)
    finally:
        store.flush()
    store.compact()
    table = _results(spec, pts, store, outputs)
    if out is not None:
        from hwsim.analysis.export import atomic_write_bytes, atomic_write_text

        import pyarrow as pa

        atomic_write_bytes(out / "results.parquet",
                           _parquet_bytes(pa.Table.from_pandas(table, preserve_index=False)))
        atomic_write_text(out / "sweep.json", spec.model_dump_json(indent=2) + "\n")
    absent = [k for k, n in missing.items() if ran and n == ran and spec.outputs is not None]
    if absent:
        warnings.warn(f"outputs: {', '.join(absent)} in no point's summary (docs/scenarios.md "
                      "lists the summary keys)", stacklevel=3)
    return table


def _run_local(tasks: list[PointTask], workers: int, finish: Callable[[str, dict], None],
               out: Any) -> None:
    if workers <= 1 or len(tasks) <= 1:
        try:
            for t in tasks:
                finish(t.id, run_point(t))
        finally:  # the graphs the points shared are not kept past the sweep in this process
            _REUSE.clear()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # a fresh interpreter per worker, the same on every platform and Python version: forked from
    # one server that has imported the simulator once (POSIX), else spawned
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(WORKER_MODULES))
    else:
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context,
                               initializer=_worker_init, initargs=(os.getpid(),))
    finished = False
    try:
        futures = {pool.submit(run_point, t): t for t in tasks}
        for fut in as_completed(futures):
            finish(futures[fut].id, fut.result())
        finished = True
    except BrokenProcessPool as err:
        where = f" in {out}" if out is not None else ""
        raise HwsimError(f"a worker process died ({err}); the points finished so far are "
                         f"saved{where}; rerun the same sweep to resume") from None
    finally:
        if not finished:  # interrupted (Ctrl-C, SIGTERM, an error): stop the running points
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                with contextlib.suppress(OSError, AttributeError):
                    proc.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def _worker_init(parent: int) -> None:
    """In each pool worker: die with the sweep process *parent*. Linux kills the worker when
    its parent process dies (``PR_SET_PDEATHSIG``): the sweep, or the fork server the sweep
    started, which ends with it; elsewhere, and as a backstop, a thread checks every second
    that both are still there (a killed parent's workers are handed to another process)."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    direct = os.getppid()  # the sweep, or its fork server

    def alive() -> bool:
        if os.getppid() != direct:
            return False
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # there, but another user's: the pid was reused
            return False
        return True

    if not alive():  # the parent died before the lines above
        os._exit(1)

    def watch() -> None:
        while alive():
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="hwsim-parent-watch", daemon=True).start()


def _run_dask(tasks: list[PointTask], address: str, finish: Callable[[str, dict], None]) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise HwsimError(f"a Dask scheduler ({address}) needs dask.distributed: pip install "
                         "'hwsim[dask]'") from None
    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as err:
        raise HwsimError(f"cannot reach the Dask scheduler at {address!r} ({err}); give its "
                         "tcp://HOST:PORT (dask scheduler prints it)") from None
    futures = []
    try:
        futures = [client.submit(run_point, t, key=f"hwsim-point-{t.id}", pure=False)
                   for t in tasks]
        for fut in as_completed(futures):
            pid = fut.key.removeprefix("hwsim-point-")
            if fut.status == "error":  # the worker itself failed (e.g. killed), not the point
                err = fut.exception()
                result = {"feasible": False, "wall_s": None,
                          "reason": f"error: {type(err).__name__}: {' '.join(str(err).split())}"}
            else:
                result = fut.result()
            fut.release()
            finish(pid, result)
    finally:
        for fut in futures:
            fut.cancel()
        client.close()


# --- the table ------------------------------------------------------------------------------

def _results(spec: SweepSpec, pts: list[Any], store: _Store, outputs: tuple[str, ...]
             ) -> pd.DataFrame:
    """This sweep's rows in the points' order, all output columns, ranks and the Pareto mark."""
    cols = ["id", *dict.fromkeys(k for p in pts for k in p.inputs), "feasible", "reason",
            *outputs, "wall_s"]
    rows = []
    for p in pts:
        row = dict(store.rows.get(p.id, {"id": p.id}))
        row.update(p.inputs)  # this sweep's names for them
        rows.append(row)
    table = _table(rows, cols).to_pandas()
    if spec.outputs is None:  # the defaults: drop the keys of other workload kinds
        empty = [k for k in outputs if k not in {o.key for o in spec.objectives}
                 and table[k].isna().all()]
        table = table.drop(columns=empty)
    _rank(table, spec)
    return table


def _rank(table: pd.DataFrame, spec: SweepSpec) -> None:
    """Add ``rank_<key>`` per objective (1 = best; feasible points only, ties share the best
    rank) and ``pareto``: feasible points that no other feasible point beats on every objective
    while being strictly better on one."""
    if not spec.objectives:
        return
    import numpy as np

    ok = table["feasible"].fillna(False).astype(bool).to_numpy()
    score = []
    for obj in spec.objectives:
        v = pd.to_numeric(table[obj.key], errors="coerce").where(ok)
        table[f"rank_{obj.key}"] = v.rank(method="min", ascending=obj.goal == "minimize"
                                          ).astype("Int64")
        score.append((v if obj.goal == "minimize" else -v).to_numpy(dtype=float))
    s = np.column_stack(score)
    valid = ok & ~np.isnan(s).any(axis=1)
    front = np.zeros(len(table), dtype=bool)
    cand = s[valid]
    for i in np.flatnonzero(valid):
        beaten = (np.all(cand <= s[i], axis=1) & np.any(cand < s[i], axis=1)).any()
        front[i] = not beaten
    table["pareto"] = front
