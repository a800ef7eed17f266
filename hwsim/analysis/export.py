"""Writing results: atomic file and directory writers; ``trace.json`` comes from
:mod:`hwsim.analysis.trace`.

Nothing here runs a simulation; :meth:`hwsim.analysis.result.Result.save` and the CLI call
:func:`write_result`. Every writer goes through a temporary name and a rename, so an interrupted
run never leaves a half-written file or result directory that looks whole (DESIGN.md "Results").
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hwsim.analysis.trace import chrome_trace
from hwsim.exceptions import HwsimError

if TYPE_CHECKING:
    from hwsim.analysis.result import Result

__all__ = ["write_result", "atomic_write_text", "atomic_write_bytes", "chrome_trace", "to_json",
           "RESULT_FILES"]

RESULT_FILES = ("summary.json", "events.parquet", "utilization.parquet", "memory.parquet",
                "bottleneck.csv", "scenario.json", "trace.json")
"""The files :func:`write_result` writes into a result directory."""


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write *data* to *path* through a temporary file in the same folder and :func:`os.replace`.

    Readers see the old file or the new one, never a partial one. Returns the path.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def to_json(data: Any) -> str:
    """Serialise *data* as strict JSON: sorted keys, indent 2, NaN and infinities as null."""
    return json.dumps(_plain(data), sort_keys=True, indent=2, allow_nan=False, default=str) + "\n"


def _result_dir_replaceable(path: Path) -> bool:
    return path.is_dir() and (not any(path.iterdir()) or (path / "summary.json").is_file())


def write_result(result: Result, out_dir: str | Path) -> Path:
    """Write the files of a result directory (:data:`RESULT_FILES`) atomically.

    ``events.parquet``, ``utilization.parquet`` and ``trace.json`` are left out when the
    scenario's ``outputs`` (``result.config["outputs"]``) switch them off.

    The files are written into ``<out_dir>.tmp-<pid>`` next to *out_dir*, which is then renamed
    into place. An existing *out_dir* is replaced (renamed to a backup, the new one renamed in,
    the backup deleted) only when it is empty or holds a previous result (a ``summary.json``).

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
        If *out_dir* exists and is a file, or a folder that does not hold an hwsim result.
    """
    out = Path(out_dir)
    if out.exists() and not _result_dir_replaceable(out):
        raise HwsimError(f"refusing to replace {str(out)!r}: it exists and is not an hwsim result "
                         "directory (no summary.json); choose a new or empty --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_files(result, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        backup = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, backup)
        os.replace(tmp, out)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def _write_files(result: Result, folder: Path) -> None:
    wanted = (result.config or {}).get("outputs") or {}  # the scenario's outputs: switches
    (folder / "summary.json").write_text(to_json(result.summary), encoding="utf-8")
    for name in ("events", "utilization", "memory"):
        if wanted.get(name, True):
            frame: pd.DataFrame = getattr(result, name)
            frame.to_parquet(folder / f"{name}.parquet", index=False, engine="pyarrow")
    result.bottleneck.to_csv(folder / "bottleneck.csv", index=False)
    for name in ("requests", "iterations"):  # serving runs: per request, per iteration
        frame = getattr(result, name)
        if len(frame):
            frame.to_parquet(folder / f"{name}.parquet", index=False, engine="pyarrow")
    if len(result.failures.columns):  # whole runs with failures: one row per failure, maybe none
        result.failures.to_parquet(folder / "failures.parquet", index=False, engine="pyarrow")
    (folder / "scenario.json").write_text(to_json(result.config), encoding="utf-8")
    if wanted.get("trace", True):
        trace = chrome_trace(result.events, result.utilization, result.memory)
        (folder / "trace.json").write_text(  # compact separators: large runs
            json.dumps(trace, allow_nan=False, default=str, separators=(",", ":")),
            encoding="utf-8")
