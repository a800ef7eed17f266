"""Channel utilization binned in one pass (hwsim.engine.loads): the same bytes per bin as
integrating each pulse over each bin, whatever the pulses' spans, chunks and order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.engine import loads
from hwsim.engine.recorder import Recorder


def _by_hand(code, start, end, load, edges, n):
    out = np.zeros((n, len(edges) - 1))
    for c, a, b, w in zip(code, start, end, load):
        for k in range(len(edges) - 1):
            lo, hi = max(a, edges[k]), min(b, edges[k + 1])
            if hi > lo:
                out[c, k] += w * (hi - lo)
    return out


pulse = st.tuples(st.integers(0, 3), st.floats(0.0, 12.0), st.floats(0.0, 15.0),
                  st.floats(1.0, 1e11))


@settings(max_examples=60, deadline=None)
@given(st.lists(pulse, max_size=40), st.floats(0.07, 3.0), st.integers(1, 40))
def test_binned_equals_integral_per_bin(pulses, bin_s, chunk):
    edges = np.arange(int(np.ceil(10.0 / bin_s)) + 1) * bin_s
    code = np.array([p[0] for p in pulses], np.int64)
    start = np.array([p[1] for p in pulses], float)
    end = np.array([p[2] for p in pulses], float)
    load = np.array([p[3] for p in pulses], float)
    acc = loads._Binned(edges, 4)
    for i in range(0, len(code), chunk):
        acc.add(code[i:i + chunk], start[i:i + chunk], end[i:i + chunk], load[i:i + chunk])
    want = _by_hand(code, start, end, load, edges, 4)
    assert acc.carried() == pytest.approx(want, rel=1e-9, abs=1e-6 * load.max(initial=1.0))


@pytest.mark.parametrize("bin_s", [0.1, 1 / 3, 0.3234567, 7.0])
def test_bin_of_is_searchsorted(bin_s):
    edges = np.arange(101) * bin_s
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(0, edges[-1], 10_000), edges, np.nextafter(edges, 0),
                        np.nextafter(edges, np.inf)])
    x = np.clip(x, 0.0, edges[-1])
    assert (loads._bin_of(x, edges) == np.searchsorted(edges, x, "right") - 1).all()


def test_blocks_expand_in_any_chunks_and_bin_like_levels():
    """A block's pulses at its occurrences load a channel as the same levels would."""
    rec = Recorder()
    rec.declare("a", 10.0, "nvlink")
    rec.declare("b", 10.0, "nvlink")
    tid = rec.template([], pulses=[(0.0, 1.0, "a", 4.0), (0.5, 2.5, "b", 2.0)],
                       shifted=[(1.0, [(0.0, 0.5, "a", 6.0)])])
    for t0 in (0.0, 3.0, 3.5):
        rec.block(t0, tid)
    blocks = rec._pulse_blocks()
    whole = list(loads.expand(blocks, rows=1 << 20))
    small = list(loads.expand(blocks, rows=1))
    assert len(whole) == 1 and len(small) > 1
    joined = loads.Pulses(*(np.concatenate(x) for x in zip(*small)))
    assert sorted(zip(*whole[0])) == sorted(zip(*joined)) and len(joined.code) == 9
    u = rec.utilization_table(end_s=6.0, bin_s=1.0, streams=False).to_pandas()
    by = {r: g["bytes"].to_numpy() for r, g in u.groupby("resource")}
    # a: 4 B/s over [0,1), [3,4), [3.5,4.5); 6 B/s over [1,1.5), [4,4.5), [4.5,5)
    assert by["a"] == pytest.approx([4.0, 3.0, 0.0, 4 + 2, 2 + 3 + 3, 0.0])
    # b: 2 B/s over [0.5,2.5), [3.5,5.5), [4,6)
    assert by["b"] == pytest.approx([1.0, 2.0, 1.0, 1.0, 4.0, 3.0])
    assert u["utilization"].between(0.0, 1.0).all()


def _rows_of(chunks: list[dict]) -> list[tuple]:
    return sorted(zip(*(np.concatenate([c[k] for c in chunks]).tolist()
                        for k in ("seq", "start_s", "end_s", "resource", "kind", "rank"))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocks_expanded_at_once_equal_the_chunks(seed):
    """Recorder._blocks_expanded (events tables, the compute streams' busy seconds) gives the
    rows, order and seq numbers of the chunked expansion (Recorder._block_rows), whatever the
    templates (empty ones included), their order of first use, and the rows selected."""
    from hwsim.engine import recorder as recorder_mod

    rng = np.random.default_rng(seed)
    rec = Recorder()
    tids = []
    for i in range(6):
        k = int(rng.integers(0, 4))  # rows of the template (0: pulses only)
        events = [(float(j), float(j) + 0.5, f"gpu{j % 2}/compute", "compute", f"op{i}.{j}",
                   "train", int(rng.integers(0, 3)), 1.0, 2.0, "compute") for j in range(k)]
        tids.append(rec.template(events, pulses=[(0.0, 1.0, "a", 1.0)]))
    for t0 in np.cumsum(rng.uniform(0.1, 2.0, 40)):
        rec.block(float(t0), tids[int(rng.integers(0, len(tids)))])
    rec._flush_blocks()
    old = recorder_mod.RUN_ROWS
    recorder_mod.RUN_ROWS = 3  # several chunks per template
    try:
        for select in (None, rec._kept_rows, lambda r: r["rank"] == 1):
            want = list(rec._block_rows(select))
            got = rec._blocks_expanded(select)
            if not want:
                assert got == []
                continue
            [got] = got
            assert [int(x) for x in got["seq"]] == sorted(int(x) for x in got["seq"])
            assert _rows_of([got]) == _rows_of(want)
            order = np.concatenate([c["seq"] for c in want])
            assert got["seq"].tolist() == order.tolist()  # the same numbering, in order
    finally:
        recorder_mod.RUN_ROWS = old


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_summary_blocks_keep_the_streams_busy_and_covered_time(seed):
    """At outputs.record: summary a block keeps the other ranks' stream work as the union of
    its intervals (Recorder._stream_spans): the busy seconds, the utilization and the jobs'
    ends are those of the level that keeps every row; rank 0's rows are kept whole."""
    rng = np.random.default_rng(seed)
    recs = {level: Recorder(level) for level in ("ops", "summary")}
    rows = []
    for rank in range(4):
        t = float(rng.uniform(0, 0.2))
        for j in range(int(rng.integers(3, 9))):
            dur = float(rng.uniform(0.05, 0.5))
            kind = str(rng.choice(["compute", "compute", "collective", "other"]))
            stream = f"gpu{rank}/{'compute' if kind != 'collective' else 'comm'}"
            rows.append((t, t + dur, stream, kind, f"op{j}", "train", rank, 8.0, 16.0, kind))
            t += dur * float(rng.choice([0.5, 1.0, 1.0, 1.3]))  # overlaps, touches, gaps
    starts = np.cumsum(rng.uniform(0.5, 4.0, 12)).tolist()
    for rec in recs.values():
        tid = rec.template(rows)
        for t0 in starts:
            rec.block(t0, tid)
    ops, summ = recs["ops"], recs["summary"]
    end = starts[-1] + 10.0
    want, got = ops.stream_busy_s(end), summ.stream_busy_s(end)
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-12)
                                             for k in want)
    assert summ.job_ends() == pytest.approx(ops.job_ends(), rel=1e-12)
    u = {lv: r.utilization_table(end, 1.0).to_pandas() for lv, r in recs.items()}
    pd_u = u["summary"].merge(u["ops"], on=["resource", "time_s"], suffixes=("", "_ops"))
    assert len(pd_u) == len(u["ops"])
    assert np.allclose(pd_u["utilization"], pd_u["utilization_ops"], rtol=0, atol=1e-12)
    zero = summ.events_table(rank=0).to_pandas()
    assert sorted(zero["name"]) == sorted([r[4] for r in rows if r[6] == 0] * len(starts))
    assert len(summ._templates[0][0]["seq"]) < len(rows)  # the other ranks' rows merged
