"""Writing results: atomic file and directory writers, and the Chrome trace-event format.

Nothing here runs a simulation; :meth:`hwsim.analysis.result.Result.save` and the CLI call
:func:`write_result`. Every writer goes through a temporary name and a rename, so an interrupted
run never leaves a half-written file or result directory that looks whole (DESIGN.md "Results").
"""

from __future__ import annotations

import heapq
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

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
        (folder / "trace.json").write_text(json.dumps(trace, allow_nan=False, default=str),
                                           encoding="utf-8")


def _us(seconds: Any) -> float | None:
    try:
        value = float(seconds) * 1e6
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class _Ids:
    """Numeric pid/tid for process and thread names, with their "M" metadata events."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.tids: dict[tuple[int, str], int] = {}
        self.meta: list[dict[str, Any]] = []

    def pid(self, name: str) -> int:
        if name not in self.pids:
            self.pids[name] = pid = len(self.pids) + 1
            self.meta.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "ts": 0,
                              "args": {"name": name}})
        return self.pids[name]

    def tid(self, pid: int, name: str) -> int:
        if (pid, name) not in self.tids:
            self.tids[(pid, name)] = tid = sum(1 for p, _ in self.tids if p == pid) + 1
            self.meta.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "ts": 0,
                              "args": {"name": name}})
        return self.tids[(pid, name)]


def _split(resource: str) -> tuple[str, str]:
    """Process and thread names of a resource: ``"n0.gpu0/compute"`` -> (``"n0.gpu0"``,
    ``"compute"``); a flow or link ``"n0.gpu0->n0.gpu1"`` goes under its source device; any other
    name is both."""
    resource = str(resource)
    head, _, tail = resource.partition("/")
    if tail:
        return head, tail
    src, arrow, _ = resource.partition("->")
    return (src, resource) if arrow and src else (resource, resource)


def _event_args(row: dict[str, Any]) -> dict[str, Any]:
    args = {}
    for key in ("bytes", "flops", "job", "rank", "category", "kind"):
        value = _plain(row.get(key))
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            args[key] = value
    return args


def _complete_events(events: pd.DataFrame, ids: _Ids) -> list[dict[str, Any]]:
    """'X' events. Overlapping activities of one resource go to numbered lanes (``compute #2``)
    because trace viewers only draw properly nested slices on one thread."""
    rows = [r for r in events.to_dict("records")
            if _us(r.get("start_s")) is not None and _us(r.get("end_s")) is not None]
    rows.sort(key=lambda r: (str(r.get("resource")), float(r["start_s"]), float(r["end_s"])))
    lanes: dict[str, tuple[list[tuple[float, int]], list[int]]] = {}
    out: list[dict[str, Any]] = []
    for row in rows:
        resource = str(row.get("resource"))
        ts = float(row["start_s"]) * 1e6
        end = max(float(row["end_s"]) * 1e6, ts)
        busy, free = lanes.setdefault(resource, ([], []))
        while busy and busy[0][0] <= ts:
            heapq.heappush(free, heapq.heappop(busy)[1])
        lane = heapq.heappop(free) if free else len(busy)
        heapq.heappush(busy, (end, lane))
        proc, stream = _split(resource)
        pid = ids.pid(proc)
        tid = ids.tid(pid, stream if lane == 0 else f"{stream} #{lane + 1}")
        kind = _plain(row.get("kind")) or "activity"
        out.append({"name": str(_plain(row.get("name")) or kind), "cat": str(kind), "ph": "X",
                    "ts": ts, "dur": end - ts, "pid": pid, "tid": tid, "args": _event_args(row)})
    return out


def _counters(frame: pd.DataFrame | None, value: str, label: str, ids: _Ids,
              step: str | None = None) -> list[dict[str, Any]]:
    """'C' events of column *value* per resource; a resource goes under the process of its device
    when the events have one, else under a process named *label*. With *step* (a bin-width column)
    each series drops to 0 at the end of its last bin."""
    if frame is None or frame.empty or not {"resource", "time_s", value} <= set(frame.columns):
        return []
    out: list[dict[str, Any]] = []
    for resource, group in frame.groupby("resource", sort=True):
        proc, _ = _split(str(resource))
        pid = ids.pids.get(proc) or ids.pid(label)
        name = f"{label} {resource}"
        last = None
        widths = group[step] if step and step in group else [0.0] * len(group)
        for t, v, w in zip(group["time_s"], group[value], widths, strict=True):
            ts, num = _us(t), _plain(v)
            if ts is None or not isinstance(num, (int, float)) or isinstance(num, bool):
                continue
            out.append({"name": name, "ph": "C", "ts": ts, "pid": pid, "tid": 0,
                        "args": {value: num}})
            last = (ts, _us(w))
        if step and last is not None and last[1]:
            out.append({"name": name, "ph": "C", "ts": last[0] + last[1], "pid": pid, "tid": 0,
                        "args": {value: 0.0}})
    return out


def chrome_trace(events: pd.DataFrame, utilization: pd.DataFrame | None = None,
                 memory: pd.DataFrame | None = None) -> dict[str, Any]:
    """Return the Chrome trace-event form of a run, for Perfetto and chrome://tracing.

    Parameters
    ----------
    events : pandas.DataFrame
        Columns of :data:`~hwsim.analysis.result.EVENT_COLUMNS`. Each row becomes a complete event
        (``ph: "X"``, ``ts``/``dur`` in microseconds) on the process of its device (the part of
        ``resource`` before ``/``, e.g. ``n0.gpu0``, or before ``->`` for a flow ``a->b``) and
        the thread of its stream (``compute``, or the flow's resource);
        ``bytes``, ``flops``, ``job``, ``rank``, ``category`` and ``kind`` go into ``args``.
    utilization : pandas.DataFrame, optional
        :data:`~hwsim.analysis.result.UTILIZATION_COLUMNS`; each resource becomes a counter
        (``ph: "C"``) of its busy fraction, stepping at bin starts.
    memory : pandas.DataFrame, optional
        :data:`~hwsim.analysis.result.MEMORY_COLUMNS`; each pool becomes a counter of
        ``used_bytes``.

    Returns
    -------
    dict
        ``{"traceEvents": [...], "displayTimeUnit": "ms"}``, with numeric ``pid``/``tid`` named by
        ``process_name``/``thread_name`` metadata events and no NaN (``json.dumps(...,
        allow_nan=False)`` works).
    """
    ids = _Ids()
    body = _complete_events(events, ids) if events is not None and not events.empty else []
    body += _counters(utilization, "utilization", "utilization", ids, step="bin_s")
    body += _counters(memory, "used_bytes", "memory", ids)
    for pid in ids.pids.values():
        ids.meta.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "ts": 0,
                         "args": {"sort_index": pid}})
    return {"traceEvents": ids.meta + body, "displayTimeUnit": "ms"}
