"""outputs.record (full | ops | summary) for every job kind: the same summary and utilization at
every level; ``summary`` keeps no per-activity events and says so; with --out the events are
streamed (a spill file of sorted runs, merged into events.parquet in row groups) and the file
equals the frame built in memory; writes stay atomic when something fails midway."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

import hwsim
from hwsim.analysis import export
from hwsim.analysis.export import Staging, to_json
from hwsim.cli import app
from hwsim.engine import columns, recorder
from hwsim.scenario import load_scenario
from hwsim.scenario.build import run_scenario

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ("full", "ops", "summary")


def _scenario(name: str) -> dict:
    data = yaml.safe_load((ROOT / "scenarios" / f"{name}.yaml").read_text())
    if name == "shared-train-and-serve":  # smaller: the same three jobs, shorter
        data["jobs"][0]["workload"]["steps"] = 3
        data["jobs"][1]["workload"]["arrivals"]["requests"] = 30
    return data


def _at(data: dict, level: str) -> dict:
    data = copy.deepcopy(data)
    data.setdefault("outputs", {})["record"] = level
    return data


# a pipeline-parallel training job, a TP-4 serving job with two replicas (rank 0 is one of them),
# a shared cluster (training, serving and a transfer at once), transfers alone, a data loader
CASES = ["gpt-1.3b-3d-8xa100", "llama2-70b-tp4x2-h100-serving", "shared-train-and-serve",
         "transfer-tiers", "dlio-unet3d-micron9550"]


@pytest.fixture(scope="module", params=CASES)
def runs(request) -> dict[str, hwsim.Result]:
    data = _scenario(request.param)
    return {level: hwsim.run(_at(data, level)) for level in LEVELS}


def test_the_summary_and_utilization_are_the_same_at_every_level(runs) -> None:
    ops = runs["ops"]
    for level in ("full", "summary"):
        r = runs[level]
        assert to_json(r.summary) == to_json(ops.summary), level  # every key, every value
        for name in ("bottleneck", "utilization", "loads", "memory", "requests", "steps"):
            pd.testing.assert_frame_equal(getattr(r, name), getattr(ops, name),
                                          check_exact=True, obj=f"{level} {name}")
        assert r.record == level


def test_summary_keeps_no_events_and_says_so(runs, tmp_path: Path) -> None:
    r = runs["summary"]
    with pytest.raises(hwsim.HwsimError, match=r"outputs\.record: summary .* outputs\.record: "
                                               r"ops \(the default\) or full"):
        r.events
    with pytest.raises(hwsim.HwsimError, match="kept no per-activity events"):
        hwsim.resource_summary(r)
    out = r.save(tmp_path / "run")
    files = {p.name for p in out.iterdir()}
    assert "events.parquet" not in files and "trace.json" not in files
    assert {"summary.json", "utilization.parquet", "memory.parquet", "bottleneck.csv"} <= files
    assert len(runs["ops"].events) > 0


@pytest.fixture
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny buffers and runs, so a small scenario spills many sorted runs and the merge has
    work to do."""
    monkeypatch.setattr(recorder, "CHUNK_ROWS", 97)
    monkeypatch.setattr(recorder, "RUN_ROWS", 1000)
    monkeypatch.setattr(recorder, "BATCH_ROWS", 777)
    monkeypatch.setattr(recorder, "MERGE_ROWS", 50)


@pytest.mark.parametrize("name", ["gpt-1.3b-3d-8xa100", "llama2-70b-tp4x2-h100-serving",
                                  "shared-train-and-serve"])
def test_streamed_events_equal_the_frame_built_in_memory(name: str, tmp_path: Path,
                                                         small_runs: None) -> None:
    scenario = load_scenario(_scenario(name))
    memory = run_scenario(scenario)
    frame = memory.events
    stage = Staging(tmp_path / "streamed")
    streamed = run_scenario(scenario, spill=stage.spill)
    assert stage.spill.is_file() and stage.spill.stat().st_size > 0  # left memory as it ran
    stage.commit(streamed)
    back = pd.read_parquet(tmp_path / "streamed" / "events.parquet")
    pd.testing.assert_frame_equal(back, frame, check_exact=True)  # same rows, order, dtypes
    assert (back.dtypes == frame.dtypes).all()
    assert list(back["resource"].cat.categories) == list(frame["resource"].cat.categories)
    meta = pq.ParquetFile(tmp_path / "streamed" / "events.parquet").metadata
    assert meta.num_row_groups > 1  # written in row groups
    pd.testing.assert_frame_equal(streamed.events, frame, check_exact=True)  # read from the file
    assert not (tmp_path / "streamed" / export.SPILL).exists()
    memory.save(tmp_path / "in-memory")
    for file in ("trace.json", "utilization.parquet", "summary.json", "memory.parquet"):
        assert (tmp_path / "streamed" / file).read_bytes() == \
            (tmp_path / "in-memory" / file).read_bytes(), file
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "in-memory" / "events.parquet"),
                                  frame, check_exact=True)


def test_merge_of_sorted_runs() -> None:
    """Runs sorted by (start, end, resource rank, seq), with many ties, come back in the order of
    one sort of the whole."""
    rng = np.random.default_rng(3)
    n = 5000
    cols = {c: np.zeros(n, columns.DTYPES[c]) for c in columns.STORED}
    cols["start_s"] = rng.integers(0, 40, n).astype(float)
    cols["end_s"] = cols["start_s"] + rng.integers(0, 3, n)
    cols["resource"] = rng.integers(0, 5, n).astype(np.int32)
    cols["seq"] = np.arange(n, dtype=np.int64)
    rank = np.array([3, 0, 4, 1, 2, -1])
    cuts = np.sort(rng.choice(np.arange(1, n), 9, replace=False))
    runs = []
    for part in np.split(np.arange(n), cuts):
        sub = columns.take(cols, part)
        runs.append(columns.take(sub, columns.sort_order(sub, rank)))

    def key(c):
        return c["start_s"], c["end_s"], rank[c["resource"]], c["seq"]
    out = columns.concat(list(columns.merge_runs(
        [len(r["seq"]) for r in runs], lambda i, lo, hi: columns.take(runs[i], slice(lo, hi)),
        key, batch_rows=37)))
    assert np.array_equal(out["seq"], cols["seq"][columns.sort_order(cols, rank)])


def test_a_failure_while_streaming_leaves_no_result(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted while the events stream to the spill file (during the run) or while
    events.parquet is written (after it): no folder under the final name, no temporary left."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_scenario("gpt-1.3b-3d-8xa100")))
    monkeypatch.setattr(recorder, "RUN_ROWS", 500)
    runner = CliRunner()
    real, real_file = columns.SpillFile.add_run, export._EventsFile
    calls = {"n": 0}

    def fail_during_run(self, cols):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(self, cols)
    monkeypatch.setattr(columns.SpillFile, "add_run", fail_during_run)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 130 and calls["n"] == 3  # typer: KeyboardInterrupt -> 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    monkeypatch.setattr(columns.SpillFile, "add_run", real)

    class Broken(export._EventsFile):
        def write(self, frame):
            if self.writer is not None:  # the second row group
                raise OSError("disk full")
            super().write(frame)
    monkeypatch.setattr(export, "_EventsFile", Broken)
    monkeypatch.setattr(recorder, "BATCH_ROWS", 1000)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "-q"])
    assert isinstance(result.exception, OSError) and "disk full" in str(result.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    # an earlier result under the name is kept whole
    monkeypatch.setattr(export, "_EventsFile", real_file)
    assert runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "-q"]
                         ).exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    monkeypatch.setattr(export, "_EventsFile", Broken)
    runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "-q"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.yaml"]


def test_unknown_record_level_is_refused(tmp_path: Path) -> None:
    data = _at(_scenario("gpt-1.3b-3d-8xa100"), "everything")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(hwsim.ScenarioError) as err:
        hwsim.run(path)
    assert str(err.value) == (f"{path}: outputs.record: 'everything' is not allowed; valid "
                              "values: full, ops, summary")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "outputs.record: 'everything' is not allowed; valid values: full, ops, summary" in \
        result.output


def test_sweep_style_callers_read_the_same_summary_at_summary_level() -> None:
    """``run_scenario(record="summary")``: what callers that read only the summary use."""
    scenario = load_scenario(_scenario("gpt-1.3b-3d-8xa100"))
    a = run_scenario(scenario)
    b = run_scenario(scenario, record="summary")
    assert json.loads(to_json(a.summary)) == json.loads(to_json(b.summary))
    assert b.record == "summary"
