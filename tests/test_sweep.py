"""Sweeps (issue 7 points 1 and 4): expansion, ids, Latin hypercube strata, safe constraints,
infeasible rows with reasons, resume after an interrupted sweep, the local pool and a real Dask
cluster on loopback."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import hwsim
import hwsim.scenario.build
from hwsim import cli
from hwsim.planning.execute import read_results
from hwsim.planning.sweep import evaluate, load_sweep, parse_constraint, points

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

BASE = {
    "name": "mlp-dp",
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8,
                                     "intra_node": "nvlink3"}},
    "workload": {"kind": "training", "model": {"preset": "mlp", "width": 256, "depth": 2},
                 "global_batch": 64, "steps": 2},
}


def _spec(**kw) -> dict:
    spec = {"name": "t", "base": BASE, "axes": [
        {"path": "cluster.node.gpus_per_node", "values": [1, 2, 4]},
        {"path": "workload.global_batch", "values": [32, 64]}]}
    spec.update(kw)
    return spec


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two sweep tables agree in everything but the measured wall time."""
    pd.testing.assert_frame_equal(a.drop(columns="wall_s").reset_index(drop=True),
                                  b.drop(columns="wall_s").reset_index(drop=True))


# --- expansion ------------------------------------------------------------------------------

def test_grid_expands_every_combination_last_axis_fastest_with_stable_ids():
    pts = points(_spec())
    assert [(p.inputs["cluster.node.gpus_per_node"], p.inputs["workload.global_batch"])
            for p in pts] == [(1, 32), (1, 64), (2, 32), (2, 64), (4, 32), (4, 64)]
    assert pts[3].scenario["cluster"]["node"] == {"gpu": "A100-SXM4-80GB", "gpus_per_node": 2,
                                                  "intra_node": "nvlink3"}
    assert pts[3].scenario["workload"]["global_batch"] == 64
    assert len({p.id for p in pts}) == 6
    assert [p.id for p in points(_spec())] == [p.id for p in pts]  # stable across expansions
    swapped = _spec(axes=list(reversed(_spec()["axes"])))
    assert {p.id for p in points(swapped)} == {p.id for p in pts}  # a hash of the scenario
    other = _spec(base={**BASE, "seed": 1})
    assert not {p.id for p in points(other)} & {p.id for p in pts}  # a new base: new points


def test_ranges_step_log_and_num():
    spec = _spec(axes=[{"path": "cluster.nodes", "range": {"start": 1, "stop": 16, "step": 2,
                                                           "log": True}},
                       {"path": "cluster.fabric.oversubscription",
                        "range": {"start": 1.0, "stop": 2.0, "num": 3}}])
    pts = points(spec)
    assert sorted({p.inputs["cluster.nodes"] for p in pts}) == [1, 2, 4, 8, 16]
    assert all(type(p.inputs["cluster.nodes"]) is int for p in pts)
    assert sorted({p.inputs["cluster.fabric.oversubscription"] for p in pts}) == [1.0, 1.5, 2.0]
    linear = _spec(axes=[{"path": "workload.global_batch",
                          "range": {"start": 8, "stop": 40, "step": 8}}])
    assert [p.inputs["workload.global_batch"] for p in points(linear)] == [8, 16, 24, 32, 40]


def test_mapping_values_merge_and_become_one_column_per_leaf():
    spec = _spec(axes=[{"path": "cluster.node", "values": [
        {"gpu": "A100-SXM4-80GB", "intra_node": "nvlink3"},
        {"gpu": "H100-SXM5-80GB", "intra_node": "nvlink4"}]}])
    p = points(spec)[1]
    assert p.inputs == {"cluster.node.gpu": "H100-SXM5-80GB", "cluster.node.intra_node": "nvlink4"}
    assert p.scenario["cluster"]["node"]["gpus_per_node"] == 8  # the base's other keys kept


def test_lhs_hits_each_stratum_once_per_axis():
    n = 24
    spec = _spec(mode="lhs", n=n, seed=3, axes=[
        {"path": "cluster.fabric.oversubscription", "range": {"start": 1.0, "stop": 3.0}},
        {"path": "workload.model.width", "range": {"start": 64.0, "stop": 4096.0, "log": True}},
        {"path": "cluster.node.gpu", "values": ["A100-SXM4-80GB", "H100-SXM5-80GB",
                                                "H200-SXM-141GB", "B200"]}])
    pts = points(spec)
    assert len(pts) == n
    over = sorted(int((p.inputs["cluster.fabric.oversubscription"] - 1.0) / 2.0 * n) for p in pts)
    assert over == list(range(n))
    width = sorted(int(math.log(p.inputs["workload.model.width"] / 64) / math.log(64) * n)
                   for p in pts)
    assert width == list(range(n))
    gpus = pd.Series([p.inputs["cluster.node.gpu"] for p in pts]).value_counts()
    assert sorted(gpus.tolist()) == [6, 6, 6, 6]  # k categories: n/k strata each
    assert [p.id for p in points(spec)] == [p.id for p in pts]  # seeded
    assert [p.id for p in points({**spec, "seed": 4})] != [p.id for p in pts]


def test_random_mode_is_seeded_and_keeps_repeats_once():
    spec = _spec(mode="random", n=50, seed=0)
    pts = points(spec)
    assert len(pts) == 6  # 50 draws from 3 x 2 combinations: each distinct point once
    assert [p.id for p in points(spec)] == [p.id for p in pts]


# --- constraints ----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "open('/etc/passwd').read()", "(lambda: 1)()",
    "[x for x in range(3)]", "cluster.nodes if True else 0", "(y := 3)", "f'{cluster.nodes}'",
    "cluster['nodes']", "{1: 2}", "cluster.nodes.__class__()",
])
def test_constraint_rejects_anything_but_arithmetic(text):
    with pytest.raises(ValueError, match="not allowed|is not a field path"):
        parse_constraint(text)


def test_constraint_evaluates_arithmetic_comparisons_and_logic():
    names = ["workload.parallelism.tp", "workload.parallelism.pp", "cluster.nodes"]
    tree, used = parse_constraint("tp * pp <= nodes * 8 and not (tp == 3 or pp ** 2 > 64)",
                                  names)
    assert used == names
    assert evaluate(tree, {names[0]: 8, names[1]: 4, names[2]: 4}) is True
    assert evaluate(tree, {names[0]: 8, names[1]: 16, names[2]: 4}) is False  # 16**2 > 64
    assert evaluate(tree, {names[0]: 8, names[1]: 8, names[2]: 4}) is False  # 64 > 32
    tree, _ = parse_constraint("cluster.node.gpu != 'B200' and 10 // 4 % 2 == 0")
    assert evaluate(tree, {"cluster.node.gpu": "H100-SXM5-80GB"}) is True


@pytest.mark.parametrize("text, match", [
    ("((10**64)**64)**64 > 1", "beyond 2\\*\\*1024"), ("2 ** 10 ** 10 > 1", "beyond"),
    ("(2**1000) * (2**1000) > 1", "product beyond"), ("'a' * 10**10 == 'a'", "repeating"),
    ("10**10 * 'a' == 'a'", "repeating"), ("'%.999999999f' % 1.0 == ''", "formatting"),
    ("1" + "0" * 400 + " > 1", "a number beyond"),
])
def test_constraint_sizes_are_bounded_before_computing(text, match):
    """Issue 12 item 15: the exponent guard looked at the right-hand side only; each of these
    took minutes or gigabytes. Each is refused in microseconds."""
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        evaluate(parse_constraint(text)[0], {})
    assert time.perf_counter() - t0 < 0.5
    assert evaluate(parse_constraint("2 ** 1000 > 10 ** 300 and 'ab' * 3 == 'ababab'")[0], {})


@pytest.mark.parametrize("text, match", [
    ("+".join(["1"] * 600) + " > 1", "characters long"), ("-" * 900 + "1 < 0", "deep"),
    ("(1+" * 60 + "1" + ")" * 60 + " > 0", "deep"),
])
def test_long_or_deep_constraints_are_refused_not_a_recursion_error(text, match):
    with pytest.raises(ValueError, match=match):
        parse_constraint(text)


def test_ranges_are_counted_before_they_are_made():
    """Issue 12 item 14: the values were made before the point cap was checked."""
    from hwsim.planning.sweep import MAX_POINTS, Range

    assert Range(start=1, stop=10, step=1).count() == 10
    assert Range(start=1, stop=1000, step=10, log=True).count() == 4
    assert Range(start=0.0, stop=1.0, num=5).count() == 5
    t0 = time.perf_counter()
    for bad in ({"stop": 1e12, "step": 1}, {"stop": 10 ** 40, "step": 1},
                {"stop": 1e300, "step": 1e-300}, {"stop": 2, "num": MAX_POINTS + 1},
                {"stop": float("inf"), "step": 1}, {"stop": 10 ** 400, "num": 2}):
        with pytest.raises(ValueError):
            Range(start=1, **bad)
    assert time.perf_counter() - t0 < 0.5


# --- bad sweep files ------------------------------------------------------------------------

BAD = {
    "unknown-path": ({"axes": [{"path": "workload.paralelism.tp", "values": [1]}]},
                     [r"axes\[0\]\.path", "unknown field 'paralelism' under workload",
                      "valid keys: .*parallelism", "did you mean 'parallelism'"]),
    "unknown-leaf": ({"axes": [{"path": "cluster.node", "values": [{"gpux": "B200"}]}]},
                     [r"axes\[0\]\.path", "'cluster.node.gpux'", "unknown field 'gpux'",
                      "did you mean 'gpu'"]),
    "empty-axes": ({"axes": []}, ["axes: give at least one axis", "values: \\[16, 32, 64\\]"]),
    "bad-expression": ({"constraints": ["cluster.nodes > __import__('os').getpid()"]},
                       [r"constraints\[0\]", "Call", "is not allowed in a constraint",
                        "allowed: numbers"]),
    "syntax": ({"constraints": ["cluster.nodes >"]}, [r"constraints\[0\]", "not an expression"]),
    "unknown-name": ({"constraints": ["tp <= 8"]}, [r"constraints\[0\]", "'tp' has no value",
                                                    "names available: cluster.node"]),
    "misspelled-key": ({"axis": []}, ["axis", "unknown key 'axis'", "did you mean 'axes'"]),
    "grid-continuous": ({"axes": [{"path": "cluster.nodes", "range": {"start": 1, "stop": 4}}]},
                        [r"axes\[0\]\.range: a grid needs step or num"]),
    "two-axes-one-field": ({"axes": [{"path": "cluster.node.gpu", "values": ["B200"]},
                                     {"path": "cluster.node", "values": [{"gpu": "L40S"}]}]},
                           [r"axes\[1\]\.path", "'cluster.node.gpu' is set by axes\\[0\\] too"]),
    "misspelled-goal": ({"objectives": [{"maximise": "mfu"}]},
                        [r"objectives\[0\]: 'maximise' is not a goal", "did you mean 'maximize'"]),
    "bad-range": ({"axes": [{"path": "cluster.nodes", "range": {"start": 8, "stop": 2,
                                                                "step": 1}}]},
                  [r"axes\[0\]\.range: stop \(2\) is below start \(8\)"]),
    "bad-base": ({"base": {**BASE, "workload": {**BASE["workload"], "precison": "bf16"}}},
                 ["the base scenario with the axes' first values is invalid",
                  "workload.precison: unknown key"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_file_is_one_paragraph(tmp_path, case):
    patch, patterns = BAD[case]
    spec = {**_spec(), **patch}
    if "axis" in patch:
        del spec["axes"]
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(cli.app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in result.output
    assert err.startswith("error: ")
    if case != "bad-base":
        assert err.startswith(f"error: {path}: ")
    for pat in patterns:
        assert __import__("re").search(pat, err), (pat, err)
    assert not (tmp_path / "out").exists()


# --- running --------------------------------------------------------------------------------

def test_infeasible_points_are_kept_with_their_reasons(tmp_path):
    spec = _spec(axes=[
        {"path": "cluster.node.gpu", "values": ["A100-SXM4-80GB", "A100-SXM9"]},
        {"path": "workload.global_batch", "values": [64, 1_000_000_000, 100]}],
        constraints=["global_batch % gpus_per_node == 0"])
    table = hwsim.sweep(spec, out=tmp_path / "out", workers=1)
    assert len(table) == 6
    by = table.set_index(["cluster.node.gpu", "workload.global_batch"])
    ok = by.loc[("A100-SXM4-80GB", 64)]
    assert bool(ok["feasible"]) and ok["fits"] and ok["step_time_s"] > 0 and pd.isna(ok["reason"])
    big = by.loc[("A100-SXM4-80GB", 1_000_000_000)]
    assert not big["feasible"] and big["fits"] is False
    # one "does not fit", and the memory it names is memory_per_device_gb's
    assert big["reason"].startswith("does not fit: ") and big["reason"].count("does not fit") == 1
    assert f"{big['memory_per_device_gb'] / 1e3:.3g} TB needed per device, 80 GB on n0.gpu0" \
        in big["reason"]
    assert big["memory_per_device_gb"] > 80  # what it would need, kept
    odd = by.loc[("A100-SXM4-80GB", 100)]
    assert odd["reason"] == "constraint: global_batch % gpus_per_node == 0"
    assert odd["wall_s"] == 0.0  # never run
    bad = by.loc[("A100-SXM9", 64)]
    assert bad["reason"].startswith("scenario: cluster.node.gpu: unknown device id 'A100-SXM9'")
    assert not bad["feasible"] and pd.isna(bad["step_time_s"])
    assert table["feasible"].sum() == 1
    on_disk = pd.read_parquet(tmp_path / "out" / "results.parquet")
    pd.testing.assert_frame_equal(on_disk, table)
    assert len(list((tmp_path / "out" / "parts").glob("part-*.parquet"))) == 1  # compacted


def test_an_exception_in_one_point_is_a_row_not_a_crash(monkeypatch):
    real = hwsim.scenario.build.run_scenario

    def flaky(scenario, **kw):
        if scenario.workload.global_batch == 32 and scenario.cluster.node.gpus_per_node == 2:
            raise RuntimeError("boom\nsecond line")
        return real(scenario, **kw)

    monkeypatch.setattr(hwsim.scenario.build, "run_scenario", flaky)
    table = hwsim.sweep(_spec(), workers=1)
    assert table["reason"].tolist().count("error: RuntimeError: boom second line") == 1
    assert table["feasible"].sum() == 5


def test_objectives_rank_feasible_points_and_mark_the_pareto_front():
    spec = _spec(objectives=[{"maximize": "samples_per_s"},
                             {"key": "memory_per_device_gb", "goal": "minimize"}],
                 axes=[{"path": "cluster.node.gpus_per_node", "values": [1, 2, 8]},
                       {"path": "workload.global_batch", "values": [8, 64, 100_000_000]}])
    t = hwsim.sweep(spec, workers=1)
    ok = t[t["feasible"]]
    assert len(ok) == 6 and t.loc[~t["feasible"], "rank_samples_per_s"].isna().all()
    assert ok.loc[ok["rank_samples_per_s"] == 1, "samples_per_s"].iloc[0] == ok["samples_per_s"].max()
    assert (ok.loc[ok["rank_memory_per_device_gb"] == 1, "memory_per_device_gb"]
            == ok["memory_per_device_gb"].min()).all()
    for _, r in ok.iterrows():  # brute force: dominated <=> not on the front
        dominated = ((ok["samples_per_s"] >= r["samples_per_s"])
                     & (ok["memory_per_device_gb"] <= r["memory_per_device_gb"])
                     & ((ok["samples_per_s"] > r["samples_per_s"])
                        | (ok["memory_per_device_gb"] < r["memory_per_device_gb"]))).any()
        assert r["pareto"] == (not dominated)
    assert t["pareto"].any() and not t.loc[~t["feasible"], "pareto"].any()


def test_local_process_pool_gives_the_serial_table():
    serial = hwsim.sweep(_spec(), workers=1)
    seen: list[str] = []
    pooled = hwsim.sweep(_spec(), workers=2, on_point=lambda row: seen.append(row["id"]))
    _same(pooled, serial)
    assert sorted(seen) == sorted(serial["id"])


_INTERRUPTED = textwrap.dedent("""
    import json, os, signal, sys
    import hwsim
    spec, out, k, how = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    done = []
    def on_point(row):
        done.append(row["id"])
        if len(done) == k:
            os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGINT)
    hwsim.sweep(spec, out=out, workers=1, on_point=on_point,
                **({"flush_s": 0.0} if how == "kill" else {"flush_s": 1e9}))
""")


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_an_interrupted_sweep_resumes_without_recomputing(tmp_path, monkeypatch, how):
    """Killed (SIGKILL; each point flushed) or interrupted (Ctrl-C; nothing flushed yet: the
    interruption writes what finished) after 3 of 6 points: the rerun runs only the other 3 and
    the table equals an uninterrupted run's."""
    spec, out = _spec(), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", _INTERRUPTED, json.dumps(spec), str(out), "3", how],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == (-9 if how == "kill" else -2), p.stderr  # it did not finish
    assert not (out / "results.parquet").exists()
    first = read_results(out)
    assert len(first) == 3 and first["feasible"].all()

    real, runs = hwsim.scenario.build.run_scenario, []

    def counting(scenario, **kw):
        runs.append(scenario)
        return real(scenario, **kw)

    monkeypatch.setattr(hwsim.scenario.build, "run_scenario", counting)
    resumed = hwsim.sweep(spec, out=out, workers=1)
    assert len(runs) == 3  # only the unfinished points
    kept = resumed.set_index("id").loc[first["id"], "wall_s"]
    assert kept.tolist() == first["wall_s"].tolist()  # the first run's rows, as they were
    runs.clear()
    _same(resumed, hwsim.sweep(spec, out=tmp_path / "whole", workers=1))
    assert len(runs) == 6
    runs.clear()
    hwsim.sweep(spec, out=out, workers=1)  # all done: nothing runs
    assert runs == []


def test_a_new_output_key_reruns_finished_points(tmp_path, monkeypatch):
    hwsim.sweep(_spec(outputs=["step_time_s"]), out=tmp_path, workers=1)
    real, runs = hwsim.scenario.build.run_scenario, []
    monkeypatch.setattr(hwsim.scenario.build, "run_scenario",
                        lambda s, **kw: runs.append(s) or real(s, **kw))
    t = hwsim.sweep(_spec(outputs=["step_time_s", "mfu"]), out=tmp_path, workers=1)
    assert len(runs) == 6 and t["mfu"].notna().all()
    with pytest.warns(UserWarning, match="outputs: step_tme_s in no point's summary"):
        hwsim.sweep(_spec(outputs=["step_tme_s"]), workers=1)


# --- Dask -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real ``dask scheduler`` and two ``dask worker`` processes (one process, one thread
    each) on 127.0.0.1; yields the scheduler's address; always torn down."""
    pytest.importorskip("distributed")
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    info = folder / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    common = ["--scheduler-file", str(info), "--no-dashboard"]
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", *common], env=env, cwd=folder,
            stdout=subprocess.DEVNULL, stderr=open(folder / "scheduler.log", "w")))
        deadline = time.monotonic() + 60
        while not (info.exists() and info.stat().st_size):
            assert procs[0].poll() is None, (folder / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the dask scheduler did not start in 60 s"
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", "--nworkers", "1",
                 "--nthreads", "1", "--host", "127.0.0.1", "--name", f"w{i}", *common],
                env=env, cwd=folder, stdout=subprocess.DEVNULL,
                stderr=open(folder / f"worker{i}.log", "w")))
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
            assert len(client.scheduler_info()["workers"]) == 2
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_a_sweep_on_a_loopback_dask_cluster_equals_the_local_one(tmp_path, dask_cluster,
                                                                 monkeypatch):
    from distributed import Client

    spec = _spec(axes=[{"path": "cluster.node.gpus_per_node", "values": [1, 2, 4, 8]},
                       {"path": "workload.global_batch", "values": [64, 1_000_000_000]}],
                 constraints=["cluster.node.gpus_per_node != 4"])
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    local = hwsim.sweep(spec, workers=1)
    result = runner.invoke(cli.app, ["sweep", str(path), "--out", str(tmp_path / "dask"),
                                     "--scheduler", dask_cluster])
    assert result.exit_code == 0, result.output
    assert "8 points (0 already done): 3 feasible, 5 infeasible (does not fit 3, constraint 2)" \
        in result.stdout
    _same(pd.read_parquet(tmp_path / "dask" / "results.parquet"), local)
    with Client(dask_cluster) as client:  # the 6 points run (not the 2 constraint-rejected)
        done = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(done.values()) == 6 and len(done) == 2
    monkeypatch.setenv("HWSIM_SCHEDULER", dask_cluster)  # the environment variable
    _same(hwsim.sweep(spec, out=tmp_path / "env", workers=1), local)


def test_an_unreachable_scheduler_is_one_paragraph(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr("hwsim.planning.execute.CONNECT_TIMEOUT_S", 2)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_spec()))
    result = runner.invoke(cli.app, ["sweep", str(path), "--out", str(tmp_path / "o"),
                                     "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the Dask scheduler at "
                                    "'tcp://127.0.0.1:9'")
    assert "\n" not in result.stderr.strip()


SWEEP_FILES = sorted([*(ROOT / "scenarios" / "sweeps").glob("*.yaml"),
                      *(ROOT / "benchmarks").glob("sweep_*.yaml")])


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_shipped_sweep_files_load_and_expand(path):
    """The example and benchmark sweeps are valid (expanded, not run: they take minutes)."""
    spec = load_sweep(path)
    pts = points(spec)
    assert pts and len({p.id for p in pts}) == len(pts)
    assert any(p.reason is None for p in pts)
    if path.stem == "sweep_gpt3_clusters":
        assert len(pts) == 1000


def test_points_sharing_a_cluster_graph_give_the_rows_of_fresh_runs(monkeypatch):
    """A worker builds each cluster's graph once and plans on it with one cache
    (hwsim.scenario.build.prepare's reuse): every row is the one a fresh run gives, layouts
    with pipelines, tensor parallelism and ZeRO over two clusters in turn included."""
    import hwsim.planning.execute as execute

    base = {"name": "gpt", "cluster": {"nodes": 2, "node": {
        "gpu": "A100-SXM4-80GB", "gpus_per_node": 4, "intra_node": "nvlink3",
        "nic": "ib-hdr-200", "nics_per_node": 4}, "fabric": {"topology": "fat-tree"}},
        "workload": {"kind": "training", "model": {"layers": 8, "hidden": 1024, "heads": 16,
                                                         "vocab": 32000},
                     "seq_len": 1024, "global_batch": 16, "steps": 1,
                     "parallelism": {"tp": 2, "pp": 2}}}
    spec = {"name": "reuse", "base": base, "axes": [
        {"path": "cluster.nodes", "values": [1, 2]},
        {"path": "workload.parallelism.pp", "values": [1, 2, 4]},
        {"path": "workload.parallelism.zero", "values": [0, 1]}]}
    built = []
    real_graph = hwsim.scenario.build.scenario_graph
    monkeypatch.setattr(hwsim.scenario.build, "scenario_graph",
                        lambda s: built.append(s.cluster.nodes) or real_graph(s))
    shared = hwsim.sweep(spec, workers=1)
    assert sorted(built) == [1, 2] and not execute._REUSE  # once per cluster; not kept after
    keys = ("step_time_s", "memory_per_device_gb", "mfu", "bottleneck")
    fresh = []
    for p in points(spec):
        execute._REUSE.clear()                                  # nothing carried over
        fresh.append({**execute.run_point(execute.PointTask(
            p.id, p.scenario, None, "x", keys)), "id": p.id})
    assert len(shared) == 12 and shared["feasible"].sum() == 10  # pp 4 x tp 2 > 4 GPUs: 2
    for row in fresh:
        got = shared.set_index("id").loc[row["id"]]
        assert got["feasible"] == row["feasible"]
        for key in keys + ("reason",):
            assert got[key] == row[key] or (pd.isna(got[key]) and pd.isna(row[key])), key
