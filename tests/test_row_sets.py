"""Row sets (``Recorder.row_set`` / ``event_set``): rows recorded many times over, kept as one
entry per occurrence until the buffer becomes columns, give exactly the events that recording
each row with ``event_rows`` gives: same frame, same order (``seq``), at every record level, in
memory and spilled, across chunk boundaries."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.engine import recorder
from hwsim.engine.recorder import Recorder

SETS = [
    [(0.0, 1.5, "n0.gpu0/comm", "collective", "", "train", 0, 8.0, 0.0, "comm:nvlink"),
     (0.25, 1.0, "n0.gpu0->n0.nvswitch", "flow", ".flow0", "train", 0, 4.0, 0.0, "comm:nvlink"),
     (0.25, 1.25, "n0.gpu1->n0.nvswitch", "flow", ".flow1", "train", 1, 4.0, 0.0, "comm:nvlink")],
    # two rows alike but for their names: their order is the order recorded (seq)
    [(0.0, 0.5, "n1.gpu0/comm", "collective", ".ag", "serve", 2, 1.0, 0.0, "comm:pcie"),
     (0.0, 0.5, "n1.gpu0/comm", "collective", ".rs", "serve", 2, 1.0, 0.0, "comm:pcie")],
]

# each step: ("plain", start) or ("set", set index, start)
steps = st.lists(st.one_of(
    st.tuples(st.just("plain"), st.floats(0, 100, allow_nan=False)),
    st.tuples(st.just("set"), st.integers(0, len(SETS) - 1), st.floats(0, 100, allow_nan=False))),
    max_size=60)


def _record(rec: Recorder, program: list[tuple], as_sets: bool) -> None:
    ids = [rec.row_set(rows) for rows in SETS] if as_sets else None
    for i, step in enumerate(program):
        if step[0] == "plain":
            t = step[1]
            rec.event(t, t + 1.0, "n0.gpu0/compute", "compute", f"op{i}", "train", 0, 2.0, 3.0,
                      "compute")
        elif as_sets:
            rec.event_set(step[2], ids[step[1]], f"c{i}")
        else:
            rec.event_rows([(a, b, r, k, f"c{i}" + n, *rest)
                            for a, b, r, k, n, *rest in SETS[step[1]]], step[2])


@settings(max_examples=40, deadline=None)
@given(program=steps, chunk=st.sampled_from([1, 2, 5, 32768]),
       level=st.sampled_from(["ops", "summary"]))
def test_row_sets_record_what_event_rows_records(program, chunk, level, tmp_path_factory):
    frames = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recorder, "CHUNK_ROWS", chunk)
        for as_sets in (False, True):
            spill = tmp_path_factory.mktemp("spill") / "events.bin"
            for path in (None, spill):
                rec = Recorder(level, spill=path)
                _record(rec, program, as_sets)
                frames.append(rec.events_frame(rank=0) if level == "summary"
                              else rec.events_frame())
                rec.close()
    for f in frames[1:]:
        pd.testing.assert_frame_equal(f, frames[0])


def test_a_row_set_occurrence_counts_its_rows_toward_a_chunk(monkeypatch):
    """The buffer becomes columns once its rows (a set's rows each) reach CHUNK_ROWS."""
    monkeypatch.setattr(recorder, "CHUNK_ROWS", 7)
    rec = Recorder()
    sid = rec.row_set(SETS[0])  # three rows
    rec.event_set(0.0, sid, "a")
    rec.event_set(1.0, sid, "b")
    assert len(rec._ebuf) == 2
    rec.event_set(2.0, sid, "c")  # 9 rows >= 7
    assert rec._ebuf == []
    frame = rec.events_frame()
    assert frame["name"].astype(str).tolist()[:3] == ["a", "a.flow0", "a.flow1"]
    assert len(frame) == 9


@pytest.mark.parametrize("level", ["ops", "summary"])
def test_row_sets_sum_their_bytes(level):
    rec = Recorder(level)
    sid = rec.row_set(SETS[0])
    for k in range(10):
        rec.event_set(2.0 * k, sid, f"m{k}")
    frame = rec.events_frame(rank=0)
    assert frame["bytes"].sum() == pytest.approx(10 * (8.0 + 4.0))
