"""Result export: atomic directory writes, parquet round trips, a valid Chrome trace."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from hwsim.analysis import export
from hwsim.analysis.export import (
    RESULT_FILES,
    atomic_write_bytes,
    atomic_write_text,
    write_result,
)
from hwsim.analysis.result import (
    BOTTLENECK_COLUMNS,
    EVENT_COLUMNS,
    MEMORY_COLUMNS,
    UTILIZATION_COLUMNS,
    Result,
)
from hwsim.exceptions import HwsimError


def _events() -> pd.DataFrame:
    rows = [
        (0.0, 1e-3, "n0.gpu0/compute", "compute", "fwd.layer0", "train", 0, 0.0, 2e12, "compute"),
        (1e-3, 3e-3, "n0.gpu0/compute", "compute", "bwd.layer0", "train", 0, 0.0, 4e12, "compute"),
        (5e-4, 2e-3, "flow", "flow", "allreduce.0", "train", 0, 1e9, 0.0, "comm:nvlink"),
        (6e-4, 2.5e-3, "flow", "flow", "allreduce.1", "train", 1, 1e9, 0.0, "comm:nvlink"),
        (2e-3, 2e-3, "n0.gpu1/comm", "flow", "barrier", "train", 1, 0.0, 0.0, "comm:nvlink"),
        (1e-3, 2e-3, "n0.gpu0->n0.gpu1", "flow", "send", "train", 0, 1e6, 0.0, "comm:nvlink"),
        (0.0, 4e-3, "lustre", "storage", "read", None, None, float("nan"), 0.0, "storage"),
    ]
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def _result(step_time: float = 3e-3) -> Result:
    util = pd.DataFrame([(0.0, 1e-3, "n0.gpu0/compute", "compute", 1.0, 0.0),
                         (1e-3, 1e-3, "n0.gpu0/compute", "compute", 0.5, 0.0),
                         (0.0, 1e-3, "n0.gpu0->n0.nvswitch", "nvlink", 0.25, 2.5e8)],
                        columns=list(UTILIZATION_COLUMNS))
    memory = pd.DataFrame([(0.0, "n0.gpu0/hbm", 1e9, 8e10), (1e-3, "n0.gpu0/hbm", 3e9, 8e10)],
                          columns=list(MEMORY_COLUMNS))
    bottleneck = pd.DataFrame([("compute", 2e-3, 2 / 3), ("comm:nvlink", 1e-3, 1 / 3)],
                              columns=list(BOTTLENECK_COLUMNS))
    summary = {"step_time_s": step_time, "mfu": float("nan"), "fits": True, "bottleneck": "compute"}
    return Result(name="tiny", summary=summary, events=_events(), utilization=util,
                  memory=memory, bottleneck=bottleneck, config={"name": "tiny", "seed": 0})


def test_write_result_files_and_round_trip(tmp_path: Path) -> None:
    result = _result()
    out = result.save(tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {"bottleneck": "compute", "fits": True, "mfu": None, "step_time_s": 3e-3}
    assert list(summary) == sorted(summary)
    for name in ("events", "utilization", "memory"):
        back = pd.read_parquet(out / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, getattr(result, name), check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "bottleneck.csv"), result.bottleneck)
    assert json.loads((out / "scenario.json").read_text()) == result.config
    assert json.loads((out / "trace.json").read_text())["traceEvents"]
    assert not [p for p in tmp_path.iterdir() if p.name != "run"]  # no temporary left behind


def test_outputs_switches(tmp_path: Path) -> None:
    result = _result()
    result.config["outputs"] = {"events": False, "utilization": True, "trace": False}
    out = write_result(result, tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        set(RESULT_FILES) - {"events.parquet", "trace.json"})


def test_write_twice_replaces(tmp_path: Path) -> None:
    write_result(_result(1.0), tmp_path / "run")
    write_result(_result(2.0), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["step_time_s"] == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_interrupted_write_keeps_old_result(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    write_result(_result(1.0), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # interrupted midway: summary and events written, no trace

    monkeypatch.setattr(export, "write_trace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_result(_result(2.0), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    with pytest.raises(KeyboardInterrupt):
        write_result(_result(2.0), tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_failed_parquet_writer_keeps_old_result(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The parquet files are written by a second thread: what it raises reaches the caller
    and the folder is left as it was."""
    out = tmp_path / "run"
    write_result(_result(1.0), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_write_parquet", full)
    with pytest.raises(OSError, match="No space left"):
        write_result(_result(2.0), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_refuses_to_replace_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(HwsimError, match="refusing to replace"):
        write_result(_result(), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(HwsimError, match="not an hwsim result"):
        write_result(_result(), tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_result(_result(), empty) / "summary.json").is_file()


def test_atomic_writers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_bytes(path, b"two")
    assert path.read_text() == "two"

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        atomic_write_text(path, "three")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]

# trace.json's format and layout: tests/test_trace.py
