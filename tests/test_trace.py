"""trace.json: a strict check of the Chrome trace-event format (as Perfetto and chrome://tracing
read it) on hand-made events and on scenarios, the layout (processes, threads, flows, counters)
and the slice budget."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwsim.analysis.result import EVENT_COLUMNS
from hwsim.analysis.trace import DEFAULT_MAX_SLICES, chrome_trace, process_of, write_trace

ROOT = Path(__file__).resolve().parents[1]
PHASES = {"M", "X", "C", "s", "f", "i"}
META = {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}


def _ns(us: float) -> int:
    return round(us * 1000)  # as the viewers convert: microseconds to integer nanoseconds


def validate(trace: dict | list) -> dict:
    """Raise AssertionError unless *trace* is valid trace-event JSON with hwsim's rules; return
    facts for further checks (thread names by (pid, tid), slices per thread)."""
    text = json.dumps(trace, allow_nan=False)  # no NaN or infinities
    trace = json.loads(text)
    if isinstance(trace, dict):
        assert isinstance(trace.get("traceEvents"), list)
        assert trace.get("displayTimeUnit", "ms") in ("ms", "ns")
        assert set(trace) <= {"traceEvents", "displayTimeUnit", "otherData"}
        events = trace["traceEvents"]
    else:
        events = trace
    names: dict[tuple[int, int], str] = {}
    procs: dict[int, str] = {}
    tid_owner: dict[int, int] = {}
    slices: dict[tuple[int, int], list[tuple[int, int, dict]]] = defaultdict(list)
    flows: dict[tuple[str, str, int], dict[str, dict]] = defaultdict(dict)
    for ev in events:
        ph = ev.get("ph")
        assert ph in PHASES, ev
        # hwsim writes ph, ts, pid and tid on every event (the format lets M, C and i omit some)
        assert isinstance(ev.get("pid"), int) and not isinstance(ev["pid"], bool), ev
        assert isinstance(ev.get("tid"), int) and not isinstance(ev["tid"], bool), ev
        assert tid_owner.setdefault(ev["tid"], ev["pid"]) == ev["pid"], \
            f"tid {ev['tid']} in two processes (Perfetto names threads by tid)"
        assert isinstance(ev.get("ts"), (int, float)) and ev["ts"] >= 0, ev
        assert math.isfinite(ev["ts"])
        if ph == "M":
            assert ev["name"] in META, ev
            arg = "name" if ev["name"].endswith("_name") else "sort_index"
            assert arg in ev["args"], ev
            if ev["name"] == "thread_name":
                assert isinstance(ev["args"]["name"], str) and ev["args"]["name"]
                names[(ev["pid"], ev["tid"])] = ev["args"]["name"]
            elif ev["name"] == "process_name":
                procs[ev["pid"]] = ev["args"]["name"]
            else:
                assert isinstance(ev["args"]["sort_index"], int)
        elif ph == "X":
            assert {"name", "ph", "ts", "dur", "pid", "tid"} <= set(ev), ev
            assert isinstance(ev["name"], str) and ev["name"]
            assert isinstance(ev["dur"], (int, float)) and ev["dur"] >= 0, ev
            assert isinstance(ev.get("args", {}), dict)
            slices[(ev["pid"], ev["tid"])].append((_ns(ev["ts"]), _ns(ev["ts"]) + _ns(ev["dur"]),
                                                   ev))
        elif ph == "C":
            assert {"name", "ts", "pid", "args"} <= set(ev), ev
            assert ev["args"] and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and math.isfinite(v) for v in ev["args"].values()), ev
        elif ph in ("s", "f"):
            assert {"id", "ts", "pid", "tid", "name", "cat"} <= set(ev), ev
            if ph == "f":
                assert ev.get("bp") == "e", ev  # binds to the enclosing slice
            key = (ev["cat"], ev["name"], ev["id"])
            assert ph not in flows[key], f"flow {key} has two {ph!r} events"
            flows[key][ph] = ev
        elif ph == "i":
            assert ev.get("s") in ("g", "p", "t")
    for pid, tid in slices:
        assert (pid, tid) in names, f"thread {pid}/{tid} has no thread_name"
        assert pid in procs, f"process {pid} has no process_name"
    for track, rows in slices.items():  # in order, and nested or disjoint: no partial overlap
        assert [r[0] for r in rows] == sorted(r[0] for r in rows), f"{track}: ts not monotone"
        stack: list[int] = []
        for a, b, ev in sorted(rows, key=lambda r: (r[0], -r[1])):
            while stack and stack[-1] <= a:
                stack.pop()
            assert not stack or b <= stack[-1], f"{track}: {ev} partly overlaps a slice"
            stack.append(b)
    for key, pair in flows.items():  # an arrow starts and ends inside a slice of its thread
        assert set(pair) == {"s", "f"}, f"flow {key} lacks its other end"
        for ev in pair.values():
            t = _ns(ev["ts"])
            assert any(a <= t <= b for a, b, _ in slices[(ev["pid"], ev["tid"])]), ev
    return {"names": names, "procs": procs, "slices": slices, "flows": flows}


def _events() -> pd.DataFrame:
    rows = [
        (0.0, 1e-3, "n0.gpu0/compute", "compute", "fwd.layer0", "train", 0, 0.0, 2e12, "compute"),
        (1e-3, 3e-3, "n0.gpu0/compute", "compute", "bwd.layer0", "train", 0, 0.0, 4e12, "compute"),
        (5e-4, 2e-3, "n0.gpu0/compute", "compute", "overlap", "train", 0, 0.0, 1e9, "compute"),
        (2e-3, 2e-3, "n0.gpu1/comm", "collective", "barrier", "train", 1, 0.0, 0.0, "comm:nvlink"),
        (1e-3, 2e-3, "n0.gpu0->n0.gpu1", "flow", "send", "train", 0, 1e6, 0.0, "comm:nvlink"),
        (1e-3, 4e-3, "storage.lustre->n1.mem", "storage", "read", "train", 0, 5e8, 0.0,
         "storage"),
        (0.0, 4e-3, "dc1/n2.gpu0/checkpoint", "checkpoint", "save", None, -1, float("nan"), 0.0,
         "storage"),
    ]
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def _thread(facts: dict, proc: str, thread: str) -> list:
    pid = next(p for p, n in facts["procs"].items() if n == proc)
    tid = next(t for (p, t), n in facts["names"].items() if p == pid and n == thread)
    return [ev for _, _, ev in facts["slices"][(pid, tid)]]


def test_process_of() -> None:
    assert process_of("n12.gpu3") == "n12"
    assert process_of("dc1/n0.nvme") == "dc1/n0"
    assert process_of("storage.lustre") == "storage.lustre"
    assert process_of("dc2/storage.archive") == "dc2/storage.archive"
    assert process_of("leaf3") == "leaf3"


def test_layout_of_hand_made_events() -> None:
    util = pd.DataFrame([(0.0, 1e-3, "n0.gpu0->n0.nvswitch", "nvlink", 0.25, 1.0),
                         (1e-3, 1e-3, "n0.gpu0->n0.nvswitch", "nvlink", 0.25, 1.0),
                         (0.0, 1e-3, "storage.lustre->read", "storage", 0.5, 1.0),
                         (0.0, 1e-3, "leaf0->n1.nic0", "infiniband", 1.0, 1.0)],
                        columns=["time_s", "bin_s", "resource", "resource_class", "utilization",
                                 "bytes"])
    memory = pd.DataFrame([(0.0, "n0.gpu0/memory", 1e9, 8e10), (0.0, "n0.gpu0/memory", 2e9, 8e10),
                           (1e-3, "n0.gpu0/memory", 3e9, 8e10)],
                          columns=["time_s", "resource", "used_bytes", "capacity_bytes"])
    trace = chrome_trace(_events(), util, memory)
    facts = validate(trace)
    assert [facts["procs"][p] for p in sorted(facts["procs"])] == [
        "dc1/n2", "n0", "n1", "storage.lustre", "leaf0"]  # servers, tiers, switches
    compute = _thread(facts, "n0", "gpu0 compute")
    assert [e["name"] for e in compute] == ["fwd.layer0", "bwd.layer0"]
    assert [e["name"] for e in _thread(facts, "n0", "gpu0 compute #2")] == ["overlap"]
    fwd = compute[0]
    assert fwd["ts"] == 0 and fwd["dur"] == 1000.0 and fwd["cat"] == "compute"
    assert fwd["args"] == {"bytes": 0.0, "flops": 2e12, "job": "train", "rank": 0,
                           "category": "compute"}
    save = _thread(facts, "dc1/n2", "gpu0 checkpoint")[0]
    assert "bytes" not in save["args"] and "job" not in save["args"]  # NaN and None dropped
    # a flow: a slice where it leaves, one where it arrives, an arrow between
    out = _thread(facts, "n0", "gpu0 out")
    into = _thread(facts, "n0", "gpu1 in")
    assert [e["name"] for e in out] == [e["name"] for e in into] == ["send"]
    read_out = _thread(facts, "storage.lustre", "storage.lustre out")
    read_in = _thread(facts, "n1", "mem in")
    assert read_out[0]["args"]["bytes"] == read_in[0]["args"]["bytes"] == 5e8
    assert len(facts["flows"]) == 2
    counters = defaultdict(list)
    pids = {v: k for k, v in facts["procs"].items()}
    for e in trace["traceEvents"]:
        if e["ph"] == "C":
            counters[(e["pid"], e["name"])].append((e["ts"], e["args"]))
    # equal steps are written once; the series drops to 0 after its last bin
    assert counters[(pids["n0"], "link gpu0->nvswitch")] == [
        (0.0, {"utilization": 0.25}), (2000.0, {"utilization": 0.0})]
    assert counters[(pids["storage.lustre"], "storage.lustre read")][0] == (
        0.0, {"utilization": 0.5})
    assert (pids["leaf0"], "link leaf0->n1.nic0") in counters
    # two changes at one instant: the later holds
    assert counters[(pids["n0"], "gpu0 memory")] == [(0.0, {"used_bytes": 2e9}),
                                                     (1000.0, {"used_bytes": 3e9})]


def test_validator_rejects_partial_overlap_and_unnamed_threads() -> None:
    good = chrome_trace(_events())
    bad = json.loads(json.dumps(good))
    xs = {e["name"]: e for e in bad["traceEvents"] if e["ph"] == "X"}
    xs["bwd.layer0"]["ts"] = 500.0  # bwd now starts inside fwd and ends after it
    with pytest.raises(AssertionError, match="monotone|partly overlaps"):
        validate(bad)
    bad = json.loads(json.dumps(good))
    bad["traceEvents"] = [e for e in bad["traceEvents"] if e.get("name") != "thread_name"]
    with pytest.raises(AssertionError, match="no thread_name"):
        validate(bad)


def _many(n: int) -> pd.DataFrame:
    """n back-to-back ops on one stream, in bursts of 10 with a gap, and a flow every 10."""
    rows, t = [], 0.0
    for i in range(n):
        rows.append((t, t + 1e-6, "n0.gpu0/compute", "compute", f"op{i}", "train", 0, 10.0,
                     100.0, "compute"))
        t += 1e-6
        if i % 10 == 9:
            rows.append((t, t + 3e-6, "n0.gpu0->n1.gpu0", "flow", f"send{i}", "train", 0, 7.0,
                         0.0, "comm:ib"))
            t += 5e-6
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


@pytest.mark.parametrize("budget", [50, 200, 1000])
def test_budget_merges_later_slices_and_keeps_totals(budget: int) -> None:
    events = _many(1000)
    trace = chrome_trace(events, max_slices=budget)
    facts = validate(trace)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(xs) <= budget
    assert trace["otherData"]["slices"] == len(xs)
    assert trace["otherData"]["events"] == len(events)
    # nothing lost: the bytes and FLOPs of every stream and of each side of the flows add up
    out = sum(e["args"]["bytes"] for e in xs if facts["names"][(e["pid"], e["tid"])] == "gpu0 out")
    assert out == pytest.approx(events.loc[events["kind"] == "flow", "bytes"].sum())
    assert sum(e["args"]["flops"] for e in xs) == pytest.approx(events["flops"].sum())
    merged = [e for e in xs if e["cat"] == "merged"]
    assert sum(e["args"]["events"] for e in merged) + len(xs) - len(merged) == len(events) + 100
    assert all(e["args"]["busy_us"] <= e["dur"] + 1e-9 for e in merged)
    cut = trace["otherData"]["merged_after_s"]
    assert cut is not None and [e["ts"] for e in trace["traceEvents"] if e["ph"] == "i"] == [
        pytest.approx(cut * 1e6)]
    assert all(e["ts"] >= cut * 1e6 - 1e-6 for e in merged)


def test_under_budget_nothing_merged() -> None:
    events = _many(100)
    trace = chrome_trace(events, max_slices=10_000)
    validate(trace)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == len(events) + 10 and not any(e["cat"] == "merged" for e in xs)
    assert trace["otherData"]["merged_after_s"] is None


def test_partial_frame() -> None:
    """A hand-made frame with only times and resources still gives a valid trace."""
    frame = pd.DataFrame({"start_s": [0.0, 1.0], "end_s": [1.0, 2.0],
                          "resource": ["n0.gpu0/compute", "n0.gpu0->n1.gpu0"]})
    trace = chrome_trace(frame)
    validate(trace)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == 3 and all(e["args"] == {} and e["name"] == "activity" for e in xs)


def test_empty() -> None:
    assert chrome_trace(pd.DataFrame(columns=list(EVENT_COLUMNS))) == {
        "traceEvents": [], "displayTimeUnit": "ms"}


# small scenarios of every kind, and folded ones (one rank per class simulated)
SCENARIOS = ["quickstart", "mlp-dp-nvlink", "transfer-tiers", "llama2-7b-1xa100-serving",
             "dp-two-sites-wan100g", "gpt-1.3b-3d-8xa100:folded"]


def _run(name: str, tmp_path: Path):
    import yaml

    import hwsim

    name, _, folded = name.partition(":")
    path = ROOT / "scenarios" / f"{name}.yaml"
    if folded:  # one rank per class simulated, the others' traffic accounted
        data = yaml.safe_load(path.read_text())
        data["workload"]["fold"] = True
        path = tmp_path / f"{name}-folded.yaml"
        path.write_text(yaml.safe_dump(data))
    result = hwsim.run(path)
    if folded:
        assert result.summary["simulated_ranks"] < result.summary["devices"]
    return result


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_trace_is_valid(name: str, tmp_path: Path) -> None:
    result = _run(name, tmp_path)
    out = result.save(tmp_path / "run")
    trace = json.loads((out / "trace.json").read_text())
    facts = validate(trace)
    events = result.events
    flows = events["resource"].astype(str).str.contains("->")
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    slices = len(events) + int(flows.sum())  # every activity, a flow on both ends
    if slices <= DEFAULT_MAX_SLICES:
        assert len(xs) == slices and trace["otherData"]["merged_after_s"] is None
    else:  # the later part merged to the budget
        assert len(xs) <= DEFAULT_MAX_SLICES and trace["otherData"]["merged_after_s"] > 0
        assert sum(e["args"].get("events", 1) for e in xs) == slices
    assert len(facts["flows"]) <= int(flows.sum())
    tracks = defaultdict(set)  # a counter track per memory pool and per utilization resource
    for e in trace["traceEvents"]:
        if e["ph"] == "C":
            tracks[next(iter(e["args"]))].add((e["pid"], e["name"]))
    assert len(tracks["used_bytes"]) == result.memory["resource"].nunique()
    assert len(tracks["utilization"]) == result.utilization["resource"].nunique()


def test_scenario_trace_over_budget(tmp_path: Path) -> None:
    result = _run("mlp-dp-nvlink", tmp_path)
    trace = chrome_trace(result.events, result.utilization, result.memory, max_slices=2000)
    validate(trace)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    flows = int(result.events["resource"].astype(str).str.contains("->").sum())
    assert len(xs) <= 2000
    assert sum(e["args"].get("events", 1) for e in xs) == len(result.events) + flows
    assert sum(e["args"]["flops"] for e in xs) == pytest.approx(result.events["flops"].sum())


def _check_budget(trace: dict, events: pd.DataFrame, budget: int) -> dict:
    """The budget's invariants: a valid trace (slices of a thread nested or disjoint, on both
    sides of the cut), at most *budget* slices, every activity counted once per side, the bytes,
    FLOPs and busy time of the merged slices adding up to the activities', merged slices of one
    thread disjoint from each other and after the cut."""
    facts = validate(trace)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    flows = events["resource"].astype(str).str.contains("->")
    both = pd.concat([events, events[flows]])  # a flow is drawn where it leaves and arrives
    assert len(xs) <= budget
    assert trace["otherData"]["slices"] == len(xs)
    assert sum(e["args"].get("events", 1) for e in xs) == len(both)
    for key in ("bytes", "flops"):
        assert sum(e["args"].get(key, 0.0) for e in xs) == pytest.approx(both[key].sum())
    busy = sum(e["args"]["busy_us"] if e["cat"] == "merged" else e["dur"] for e in xs)
    assert busy == pytest.approx(((both["end_s"] - both["start_s"]) * 1e6).sum())
    cut = trace["otherData"]["merged_after_s"]
    merged = defaultdict(list)
    for e in xs:
        if e["cat"] == "merged":
            assert e["ts"] >= cut * 1e6 - 1e-6
            covered = e["args"].get("covered_us", e["args"]["busy_us"])
            assert covered <= e["dur"] + 1e-9 and covered <= e["args"]["busy_us"] + 1e-9
            merged[(e["pid"], e["tid"])].append((_ns(e["ts"]), _ns(e["ts"]) + _ns(e["dur"])))
    for rows in merged.values():
        rows.sort()
        assert all(b[0] >= a[1] for a, b in zip(rows, rows[1:])), "merged slices overlap"
    return facts


def _crossing() -> pd.DataFrame:
    """A stream with a long activity across the whole run, overlapping short ones (lanes on
    both sides of the cut), a pool of threads with overlapping work, and flows."""
    rows = [(0.0, 1e-3, "n0.gpu0/compute", "compute", "long", "train", 0, 1.0, 1e9,
             "compute")]
    for i in range(400):
        t = i * 2e-6
        rows.append((t, t + 1.5e-6, "n0.gpu0/compute", "compute", f"op{i}", "train", 0, 10.0,
                     100.0 + i, "compute"))
        rows.append((t, t + 5e-6, "n0.cpu0/cores", "host", f"load{i}", "train", -1, 0.0, 0.0,
                     "host"))
        if i % 4 == 0:
            rows.append((t, t + 3e-6, "n0.gpu0->n1.gpu0", "flow", f"send{i}", "train", i % 3,
                         7.0 + i, 0.0, "comm:ib"))
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


@pytest.mark.parametrize("budget", [20, 100, 300, 700])
def test_budget_with_slices_across_the_cut(budget: int) -> None:
    events = _crossing()
    trace = chrome_trace(events, max_slices=budget)
    facts = _check_budget(trace, events, budget)
    assert trace["otherData"]["merged_after_s"] is not None
    # the long activity starts before the cut: drawn whole on a lane of its stream (the first
    # short one took the first lane); the merged slices it overlaps go to another lane
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    long = next(e for e in xs if e["name"] == "long")
    assert long["dur"] == 1000.0 and facts["names"][(long["pid"], long["tid"])] == \
        "gpu0 compute #2"
    compute = [e for e in xs if e["cat"] == "merged" and e["name"].endswith("compute")]
    assert compute and all(facts["names"][(e["pid"], e["tid"])] == "gpu0 compute"
                           for e in compute)
    # overlapping work merged into one slice: its covered time is less than its busy time
    cores = [e for e in xs if e["cat"] == "merged" and
             facts["names"][(e["pid"], e["tid"])].startswith("cpu0 cores")]
    assert cores and all(e["args"]["covered_us"] < e["args"]["busy_us"] for e in cores)
    # the job, category and rank where all merged activities agree, none where they do not
    assert all(e["args"]["job"] == "train" and e["args"]["rank"] == -1 for e in cores)
    sends = [e for e in xs if e["cat"] == "merged" and
             facts["names"][(e["pid"], e["tid"])].startswith("gpu0 out")]
    assert all(e["args"]["category"] == "comm:ib" and "rank" not in e["args"] for e in sends)
    assert sends or budget > 100  # (with room, the spaced flows stay apart)


def test_budget_random_overlaps() -> None:
    """Random activities (overlapping, zero-length, out of order) on a few streams and flows:
    the invariants hold at every budget, and the order of the rows does not matter."""
    rng = np.random.default_rng(7)
    n = 3000
    start = rng.integers(0, 200_000, n) / 1e9
    length = rng.choice([0, 1, 5, 50, 400, 3000], n) / 1e9
    resources = ["n0.gpu0/compute", "n0.gpu0/comm", "n1.cpu0/cores", "n0.gpu0->n1.gpu0",
                 "n1.gpu0->n0.gpu0", "storage.lustre->n1.mem"]
    events = pd.DataFrame({
        "start_s": start, "end_s": start + length,
        "resource": rng.choice(resources, n), "kind": "compute",
        "name": [f"a{i % 50}" for i in range(n)], "job": "train",
        "rank": rng.integers(0, 2, n), "bytes": rng.integers(0, 100, n).astype(float),
        "flops": rng.integers(0, 1000, n).astype(float), "category": "compute"},
        columns=list(EVENT_COLUMNS))
    ordered = events.sort_values(["start_s", "end_s"], kind="stable", ignore_index=True)
    for budget in (30, 500, 2000, 10_000):
        trace = chrome_trace(events, max_slices=budget)
        _check_budget(trace, events, budget)
        same = chrome_trace(ordered, max_slices=budget)
        key = lambda e: (e["pid"], e["tid"], e["ts"], e["dur"], json.dumps(e["args"]))  # noqa: E731
        assert sorted((e for e in trace["traceEvents"] if e["ph"] == "X"), key=key) == \
            sorted((e for e in same["traceEvents"] if e["ph"] == "X"), key=key)


def test_starts_tied_in_nanoseconds() -> None:
    """Starts that differ below a nanosecond are one start in the trace; the slices of a
    stream are still drawn in order of their ends there (lanes stay proper)."""
    rows = [(1e-6, 5e-6, "n0.gpu0/compute", "compute", "a", "j", 0, 0.0, 0.0, "c"),
            (1e-6 + 1e-13, 2e-6, "n0.gpu0/compute", "compute", "b", "j", 0, 0.0, 0.0, "c"),
            (1e-6 + 2e-13, 3e-6, "n0.gpu0/compute", "compute", "c", "j", 0, 0.0, 0.0, "c")]
    events = pd.DataFrame(rows * 40, columns=list(EVENT_COLUMNS))
    events["start_s"] += np.repeat(np.arange(40) * 1e-5, 3)
    events["end_s"] += np.repeat(np.arange(40) * 1e-5, 3)
    for budget in (30, 1000):
        _check_budget(chrome_trace(events, max_slices=budget), events, budget)


def test_write_trace_writes_the_json_of_chrome_trace(tmp_path: Path) -> None:
    """write_trace's bytes are json.dumps of chrome_trace's object, compact, whatever the chunk:
    merged or not, with counters, escaped names, missing values."""
    util = pd.DataFrame([(0.0, 1e-3, "n0.gpu0->n0.nvswitch", "nvlink", 0.25, 1.0),
                         (1e-3, 1e-3, "n0.gpu0->n0.nvswitch", "nvlink", 1 / 3, 1.0)],
                        columns=["time_s", "bin_s", "resource", "resource_class", "utilization",
                                 "bytes"])
    memory = pd.DataFrame([(0.0, "n0.gpu0/memory", 1e9, 8e10), (2e-3, "n0.gpu0/memory", 0.1, 8e10)],
                          columns=["time_s", "resource", "used_bytes", "capacity_bytes"])
    odd = _events()
    odd.loc[0, "name"] = 'fwd "ü" \\ \u2603'
    odd.loc[1, "job"] = "jöb\n"
    odd.loc[2, "bytes"] = -0.0
    cases = [(odd, None, None, DEFAULT_MAX_SLICES), (odd, util, memory, 3),
             (_crossing(), util, memory, 50), (_crossing(), None, None, 10_000),
             (pd.DataFrame(columns=list(EVENT_COLUMNS)), None, None, 10),
             (pd.DataFrame(columns=list(EVENT_COLUMNS)), util, None, 10)]
    for events, u, m, budget in cases:
        want = json.dumps(chrome_trace(events, u, m, max_slices=budget), separators=(",", ":"))
        for chunk in (1, 7, 4096):
            path = tmp_path / "trace.json"
            write_trace(path, events, u, m, max_slices=budget, chunk=chunk)
            assert path.read_text(encoding="utf-8") == want
            assert path.read_bytes().isascii()
    trace = chrome_trace(odd)
    names = {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"}
    assert 'fwd "ü" \\ \u2603' in names
    assert any(e["args"].get("job") == "jöb\n" for e in trace["traceEvents"] if e["ph"] == "X")
