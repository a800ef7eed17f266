"""Writing results: atomic file and directory writers; ``trace.json`` comes from
:mod:`hwsim.analysis.trace`.

Nothing here runs a simulation; :meth:`hwsim.analysis.result.Result.save` and the CLI call
:func:`write_result`. Every writer goes through a temporary name and a rename, so an interrupted
run never leaves a half-written file or result directory that looks whole (DESIGN.md "Results").
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwsim.analysis.trace import TraceEvents, chrome_trace, write_trace
from hwsim.columnar import Table
from hwsim.exceptions import HwsimError

if TYPE_CHECKING:
    from hwsim.analysis.result import Result

__all__ = ["write_result", "Staging", "atomic_write_text", "atomic_write_bytes", "chrome_trace",
           "write_trace", "to_json", "RESULT_FILES", "MARKER", "LOCK", "SPILL", "check_out_dir",
           "read_marker", "write_marker", "pid_alive"]

MARKER = ".hwsim.json"
"""The file hwsim writes into every folder it owns (a run's result directory, a sweep's folder):
``{"kind": "run"}`` or ``{"kind": "sweep", ...}``. Only a folder holding it is ever replaced."""
LOCK = ".hwsim.lock"
"""The lock file a sweep holds in its folder while it runs (it counts as hwsim's, like the
marker: a sweep killed before marking its folder leaves it)."""
RESULT_FILES = ("summary.json", "events.parquet", "utilization.parquet", "memory.parquet",
                "bottleneck.csv", "scenario.json", "trace.json", MARKER)
"""The files :func:`write_result` writes into a result directory."""
SPILL = ".events.spill"
"""The file a run streams its events to while it runs (in the staging folder, removed once
events.parquet is written)."""
_OWN_FILES = frozenset(RESULT_FILES) | {"requests.parquet", "iterations.parquet",
                                        "failures.parquet", "report.html", SPILL}
"""Every file hwsim may write into a run's folder (its results, optional tables, the report)."""


def _only_own_files(folder: Path) -> bool:
    """Whether *folder* holds nothing but files hwsim writes into a run's folder."""
    return all(p.name in _OWN_FILES and p.is_file() for p in folder.iterdir())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write *data* to *path* through a temporary file in the same folder and :func:`os.replace`.

    Readers see the old file or the new one, never a partial one. The file gets the mode any
    new file gets (0666 less the umask), like the files of a run. Returns the path.
    """
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write *text* to *path* atomically (see :func:`atomic_write_bytes`). Returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def _plain(value: Any) -> Any:
    """Plain JSON data: NumPy scalars to Python, NaN and infinities to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    pd = sys.modules.get("pandas")  # pandas' missing values, if pandas made any
    if pd is not None and (value is pd.NA or value is pd.NaT):
        return None
    return value


def to_json(data: Any) -> str:
    """Serialise *data* as strict JSON: sorted keys, indent 2, NaN and infinities as null."""
    return json.dumps(_plain(data), sort_keys=True, indent=2, allow_nan=False, default=str) + "\n"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker (:data:`MARKER`) of *folder* as a mapping, or None when it has none."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(folder: Path, info: dict[str, Any]) -> None:
    """Mark *folder* as written by hwsim (*info*: ``{"kind": "run"}`` or a sweep's identity)."""
    atomic_write_text(folder / MARKER, json.dumps(info, sort_keys=True) + "\n")


def check_out_dir(out: str | Path, kind: str, identity: dict[str, Any] | None = None) -> Path:
    """Check, before anything runs, that *out* can take hwsim's results; return the real folder
    (a symbolic link's target: the link is kept and written through).

    *out* may be missing, an empty folder, or a folder hwsim wrote (:data:`MARKER`) for the same
    *kind* (``run`` or ``sweep``) and, for a sweep, the same *identity*. Its parent must be
    writable.

    Raises
    ------
    HwsimError
        One paragraph saying what *out* is and what to give instead.
    """
    given = str(out)
    target = Path(os.path.realpath(Path(out).expanduser()))
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise HwsimError(f"--out {given!r} is the current folder or holds it; hwsim writes the "
                         "--out folder as a whole, so give a folder inside it (e.g. --out "
                         "result)")
    if target.exists() and not target.is_dir():
        raise HwsimError(f"--out {given!r} is a file, not an hwsim result folder; give a new "
                         "folder for the results")
    if target.is_dir():
        marker = read_marker(target)
        try:
            empty = all(p.name == LOCK for p in target.iterdir())
            # a run's folder written before the marker existed: nothing but hwsim's own files
            empty = empty or (kind == "run" and (target / "summary.json").is_file()
                              and _only_own_files(target))
        except OSError as err:
            raise HwsimError(f"--out {given!r}: cannot list the folder ({err.strerror})") from None
        if marker is None and not empty:
            raise HwsimError(f"refusing to replace --out {given!r}: the folder is not empty and "
                             f"hwsim did not write it (no {MARKER}); hwsim only replaces its "
                             "own folders, so give a new or empty folder")
        if marker is not None and marker.get("kind") != kind:
            what = {"run": "a run's result", "sweep": "a sweep's results"}.get(
                str(marker.get("kind")), f"hwsim's {marker.get('kind')!r} output")
            raise HwsimError(f"refusing to write {'a run' if kind == 'run' else 'a sweep'} into "
                             f"--out {given!r}: it holds {what}; give another folder")
        if marker is not None and identity is not None and \
                any(marker.get(k) != v for k, v in identity.items()):
            raise HwsimError(f"refusing to write into --out {given!r}: it holds the results of "
                             f"another sweep (name {marker.get('name')!r}, base "
                             f"{marker.get('base')!r}); a folder resumes only the sweep with "
                             "the same name and base, so give another folder")
    _check_writable(target.parent, given)
    return target


def _check_writable(folder: Path, given: str) -> None:
    """Raise HwsimError unless a file can be created in *folder* (or its nearest existing
    ancestor, when it is still to be made)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".hwsim-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise HwsimError(f"--out {given!r}: cannot write in {str(folder)!r} ({err.strerror}); "
                         "give a folder you can write to (checked before simulating)") from None


def pid_alive(pid: int) -> bool:
    """Whether a process *pid* exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _clean_stale(out: Path) -> None:
    """Remove what runs killed while writing *out* left beside it: ``.<name>.tmp-<pid>`` (and the
    older ``<name>.tmp-<pid>``) folders of processes that no longer exist; a ``.<name>.old-<pid>``
    (the previous result, moved aside) is put back when *out* is missing, else removed."""
    pattern = re.compile(rf"^\.?{re.escape(out.name)}\.(tmp|old)-(\d+)$")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink() or pid_alive(int(m.group(2))):
            continue
        if not _only_own_files(entry):
            continue  # not only hwsim's files: leave it
        if m.group(1) == "old" and not out.exists():
            os.replace(entry, out)
        else:
            shutil.rmtree(entry, ignore_errors=True)


class Staging:
    """A result directory being written: the checks of :func:`check_out_dir` (before anything
    runs), what killed runs left cleaned, and the folder ``.<out_dir>.tmp-<pid>`` beside
    *out_dir* made, into which a run may stream its events (:attr:`spill`) while it runs.
    :meth:`commit` writes the result's files there and renames the folder into place; :meth:`abort`
    (or leaving a ``with`` block by an exception) removes it. Nothing appears under *out_dir*
    before the rename."""

    def __init__(self, out_dir: str | Path) -> None:
        self.given = Path(out_dir)
        self.out = check_out_dir(out_dir, "run")
        self._made = [p for p in (self.out.parent, *self.out.parent.parents) if not p.exists()]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(self.out)
        self.folder = self.out.with_name(f".{self.out.name}.tmp-{os.getpid()}")
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir()
        self.spill = self.folder / SPILL

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        for folder in self._made:  # the parents made for it, when still empty
            try:
                folder.rmdir()
            except OSError:
                break

    def commit(self, result: Result) -> Path:
        """Write *result*'s files and rename the folder to *out_dir* (an existing result there
        is replaced). Returns *out_dir*."""
        try:
            write_marker(self.folder, {"kind": "run"})
            events = _write_files(result, self.folder)
            self.spill.unlink(missing_ok=True)
        except BaseException:
            self.abort()
            raise
        out = self.out
        if out.exists():
            backup = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, backup)
            os.replace(self.folder, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(self.folder, out)
        if events and result.event_batches is not None:  # the events now live in their file
            path = out / "events.parquet"
            if callable(object.__getattribute__(result, "events")):
                object.__setattr__(result, "events", lambda: _read_parquet(path))
            object.__setattr__(result, "event_batches", None)
        return self.given


def write_result(result: Result, out_dir: str | Path) -> Path:
    """Write the files of a result directory (:data:`RESULT_FILES`) atomically.

    ``events.parquet``, ``utilization.parquet`` and ``trace.json`` are left out when the
    scenario's ``outputs`` (``result.config["outputs"]``) switch them off; ``events.parquet`` and
    ``trace.json`` also when the run kept no events (``result.record == "summary"``).

    The files are written into ``.<out_dir>.tmp-<pid>`` next to *out_dir*, which is then renamed
    into place; what a killed run left there is cleaned first. An existing *out_dir* is replaced
    only when it is empty or hwsim wrote it (it holds :data:`MARKER`); a symbolic link is kept
    and its target replaced. The events are streamed (``result.event_batches``): the parquet
    file in row groups, the trace from the same batches.

    Parameters
    ----------
    result : Result
        The run's summary and frames.
    out_dir : str or Path
        The result directory; its parent folders are created.

    Returns
    -------
    Path
        *out_dir*.

    Raises
    ------
    HwsimError
        If *out_dir* is a file, a folder hwsim did not write, or cannot be written
        (:func:`check_out_dir`).
    """
    with Staging(out_dir) as stage:
        return stage.commit(result)


class _EventsFile:
    """events.parquet written one row group per batch (the first batch's schema for all)."""

    def __init__(self, path: Path) -> None:
        self.path, self.writer, self.schema = path, None, None

    def write(self, frame: Table) -> None:
        import pyarrow.parquet as pq

        table = frame.to_arrow()
        if self.schema is not None and table.schema != self.schema:
            table = table.cast(self.schema)
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema, **_encoding(self.schema))
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _write_files(result: Result, folder: Path) -> bool:
    """Write the result's files into *folder*; returns whether events.parquet was written.

    Three threads share the work: this one merges the events and builds trace.json; one
    encodes and compresses events.parquet a batch at a time (pyarrow, without the GIL; at most
    three batches wait); one builds the utilization frame (numpy) and writes the other parquet
    files, once the first batch has settled the recorder (from then on it is only read)."""
    from concurrent.futures import ThreadPoolExecutor

    wanted = (result.config or {}).get("outputs") or {}  # the scenario's outputs: switches
    kept = result.record != "summary"
    want_events, want_trace = kept and wanted.get("events", True), kept and wanted.get("trace",
                                                                                        True)
    (folder / "summary.json").write_text(to_json(result.summary), encoding="utf-8")
    trace = TraceEvents() if want_trace else None
    with ThreadPoolExecutor(1, thread_name_prefix="hwsim-events") as writer, \
            ThreadPoolExecutor(1, thread_name_prefix="hwsim-frames") as framer:
        pending: list = []
        batches = iter(())
        if want_events or want_trace:
            batches = iter(result.event_batches() if result.event_batches is not None
                           else [result.table("events")])
            first = next(batches, None)
            if first is not None:
                batches = chain([first], batches)
        frames = framer.submit(_write_frames, result, wanted, folder)
        out = _EventsFile(folder / "events.parquet") if want_events else None
        try:
            for frame in batches:
                if out is not None:
                    pending.append(writer.submit(out.write, frame))
                    if len(pending) > 3:  # the oldest is written (raising what it raised)
                        pending.pop(0).result()
                if trace is not None:
                    trace.add(frame)
        finally:
            if out is not None:
                pending.append(writer.submit(out.close))
        _write_csv(result.table("bottleneck"), folder / "bottleneck.csv")
        (folder / "scenario.json").write_text(to_json(result.config), encoding="utf-8")
        frames.result()
        if trace is not None:
            write_trace(folder / "trace.json", trace, result.table("utilization"),
                        result.table("memory"))
        for task in pending:
            task.result()
    if (want_events or want_trace) and result.release is not None:
        result.release()
    return want_events


def _write_frames(result: Result, wanted: dict, folder: Path) -> None:
    """utilization.parquet and memory.parquet (unless the scenario's outputs switch them off);
    requests and iterations (serving) and failures (runs with failures), when there are any."""
    names = [name for name in ("utilization", "memory") if wanted.get(name, True)]
    names += [name for name in ("requests", "iterations") if len(result.table(name))]
    if result.table("failures").columns:  # runs with failures: one row per failure, maybe none
        names.append("failures")
    for name in names:
        _write_parquet(result.table(name), folder / f"{name}.parquet")


def _write_parquet(frame: Table, path: Path) -> None:
    import pyarrow.parquet as pq

    table = frame.to_arrow()
    pq.write_table(table, path, **_encoding(table.schema))


def _read_parquet(path: Path) -> Any:
    import pandas as pd

    return pd.read_parquet(path)


def _write_csv(table: Table, path: Path) -> None:
    """*table* as CSV, as ``DataFrame.to_csv(path, index=False)`` writes it: a header, numbers
    as ``repr`` (a missing one empty), text quoted where it must be."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(table.columns)
    cols = []
    for c in table.columns:
        v = table[c]
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
            cols.append(["" if x != x else repr(x) for x in v.tolist()])
        else:
            cols.append(table.strings(c) if table.frame is None else
                        ["" if x is None or x != x else str(x) for x in v])
    out.writerows(zip(*cols))
    path.write_text(buf.getvalue(), encoding="utf-8")


def _encoding(schema: Any) -> dict[str, list[str]]:
    """How a result's parquet columns are encoded: text columns (categories, strings) with a
    dictionary and no statistics, numbers plain with min/max statistics (a reader filters row
    groups by time). pyarrow's default, a dictionary tried on every column and statistics of
    every one, takes twice as long on a run's events for the same file size."""
    import pyarrow as pa

    text = [f.name for f in schema
            if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)]
    return {"use_dictionary": text,
            "write_statistics": [f.name for f in schema if f.name not in text]}
