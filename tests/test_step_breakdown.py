"""The step breakdown by parallelism (hwsim/analysis/parallelism.py, docs/model.md "Step breakdown
by parallelism"): the classification of event names, the sweep on hand-made frames, and invariants
of whole runs (parts sum to the step, tp=1 has no TP communication, a slower fabric never hides
more, more micro-batches shrink the bubble, a slower disk grows data loading)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.analysis.bottleneck import critical_path_breakdown
from hwsim.analysis.parallelism import (COMM_PARTS, PARTS, classify, classify_events,
                                        rank_events, step_breakdown, step_summary, summary_key)

ROOT = Path(__file__).resolve().parent.parent
KEYS = [summary_key(p) for p in PARTS]


def _scenario(stem: str, **workload) -> dict:
    data = yaml.safe_load((ROOT / "scenarios" / f"{stem}.yaml").read_text())
    data["workload"].update(workload)
    return data


def _run(data: dict) -> dict:
    return hwsim.run(data).summary


@lru_cache(maxsize=None)
def _file_run(stem: str):
    return hwsim.run(ROOT / "scenarios" / f"{stem}.yaml")


def _parts_sum(s: dict) -> float:
    return sum(s[k] for k in KEYS)


# -- classification -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kind,category,part", [
    ("layer3.qkv", "compute", "compute", "compute"),
    ("layer3.gelu.recompute", "compute", "memory", "compute"),
    ("head.fc", "compute", "overhead", "compute"),
    ("layer3.adam", "compute", "memory", "optimizer"),
    ("adam.update0", "compute", "memory", "optimizer"),
    ("framework.step", "host", "overhead", "other"),
    ("layer3.out_proj.tp_allreduce", "collective", "comm:nvlink", "exposed_comm_tp"),
    ("layer3.out_proj.tp_allreduce.recompute.step2", "flow", "comm:nvlink", "exposed_comm_tp"),
    ("layer3.qkv.dgrad.tp_reducescatter", "collective", "comm:nvlink", "exposed_comm_tp"),
    ("layer3.qkv.grad.tp_allgather.step0", "flow", "comm:ici", "exposed_comm_tp"),
    ("p2p.B.step1.mb3.c0.step0", "flow", "comm:nvlink", "exposed_comm_pp"),
    ("dp.allreduce.step0.c0.b2", "collective", "comm:infiniband", "exposed_comm_dp"),
    ("dp.fsdp_allgather.layer7.step3", "flow", "comm:nvlink", "exposed_comm_dp"),
    ("dp.fsdp_reduce_scatter.head", "collective", "comm:nvlink", "exposed_comm_dp"),
    ("dp.allgather_params.step1", "collective", "comm:nvlink", "exposed_comm_dp"),
    ("dp.allreduce.step4.b11", "collective", "comm:ethernet", "exposed_comm_dp"),
    ("dp.allreduce.step4.b11.phase0", "flow", "comm:ethernet", "exposed_comm_dp"),
    ("cp.kv_allgather.layer2", "collective", "comm:nvlink", "exposed_comm_cp"),
    ("layer2.attention.kv.cp_allgather", "collective", "comm:nvlink", "exposed_comm_cp"),
    ("ep.dispatch.layer5", "collective", "comm:infiniband", "exposed_comm_ep"),
    ("layer5.moe.dispatch.ep_alltoall.step1", "flow", "comm:infiniband", "exposed_comm_ep"),
    ("checkpoint.shard0", "flow", "comm:ethernet", "exposed_comm_other"),
    ("allreduce", "collective", "comm:nvlink", "exposed_comm_other"),
    ("", "flow", "comm", "exposed_comm_other"),
    ("read.step7", "storage", "storage", "data_loading"),
    ("read.step7", "storage", "comm:infiniband", "data_loading"),
    ("decode.step7", "host", "host", "data_loading"),
    ("h2d.step7", "copy", "comm:pcie", "data_loading"),
    ("pipeline.wait.step0", "bubble", "bubble", "bubble"),
    ("pipeline.warmup.step0", "bubble", "bubble", "bubble"),
    ("checkpoint.write", "storage", "storage", "other"),
    ("something", "custom", "mystery", "other"),
])
def test_classify(name, kind, category, part):
    assert classify(name, kind, category, {"layer3.adam", "adam.update0"}) == part


def test_classify_events_matches_classify_row_by_row():
    rows = [("layer0.qkv", "compute", "compute"), ("layer0.adam", "compute", "memory"),
            ("x.tp_allreduce", "collective", "comm:nvlink"), ("layer0.qkv", "compute", "compute"),
            ("odd", "flow", "comm:wan")]
    ev = pd.DataFrame(rows, columns=["name", "kind", "category"])
    assert list(classify_events(ev, ["layer0.adam"])) == [
        classify(*r, ["layer0.adam"]) for r in rows]
    assert len(classify_events(ev.iloc[:0])) == 0


# -- the sweep ------------------------------------------------------------------------------------
def _ev(rows):
    """rows: (start, end, name, kind, category)."""
    return pd.DataFrame(rows, columns=["start_s", "end_s", "name", "kind", "category"])


def _secs(bd: pd.DataFrame) -> dict[str, float]:
    return {p: s for p, s in zip(bd["part"], bd["seconds"]) if s > 0}


def test_compute_hides_comm_and_blocking_parallelism_wins():
    ev = _ev([(0, 4, "layer0.qkv", "compute", "compute"),
              (1, 6, "dp.allreduce.b0", "collective", "comm:infiniband"),
              (5, 7, "layer1.tp_allreduce", "collective", "comm:nvlink"),
              (7, 8, "mystery", "flow", "comm:wan")])
    bd = step_breakdown(ev, start_s=0.0, end_s=10.0)
    assert list(bd["part"]) == list(PARTS)
    # dp exposed on [4, 5); tp on [5, 7) although dp is active on [5, 6); other on [7, 8); idle 2
    assert _secs(bd) == pytest.approx({"compute": 4.0, "exposed_comm_dp": 1.0,
                                       "exposed_comm_tp": 2.0, "exposed_comm_other": 1.0,
                                       "other": 2.0})
    assert bd["share"].sum() == pytest.approx(1.0)


def test_data_loading_bubble_optimizer_and_window():
    ev = _ev([(0, 2, "read.step1", "storage", "storage"),
              (1, 3, "pipeline.wait.step0", "bubble", "bubble"),
              (3, 4, "head.sgd", "compute", "overhead"),
              (4, 5, "h2d.step1", "copy", "comm:pcie")])
    bd = step_breakdown(ev, start_s=0.5, end_s=4.5, optimizer_names={"head.sgd"})
    assert _secs(bd) == pytest.approx({"data_loading": 2.0, "bubble": 1.0, "optimizer": 1.0})
    empty = step_breakdown(ev, start_s=2.0, end_s=2.0)
    assert empty["seconds"].sum() == 0 and empty["share"].sum() == 0


def test_step_breakdown_rejects_bad_input():
    with pytest.raises(ValueError, match="column"):
        step_breakdown(pd.DataFrame({"start_s": [0.0], "end_s": [1.0]}), start_s=0, end_s=1)
    with pytest.raises(ValueError, match="ends before it starts"):
        step_breakdown(_ev([(2, 1, "x", "compute", "compute")]), start_s=0, end_s=3)
    with pytest.raises(ValueError, match="start_s <= end_s"):
        step_breakdown(_ev([]), start_s=2, end_s=1)


_NAMES = {  # name -> (kind, categories it may carry)
    "layer0.qkv": ("compute", ["compute", "memory", "overhead"]),
    "layer0.adam": ("compute", ["memory", "overhead"]),
    "layer0.tp_allreduce": ("collective", ["comm:nvlink", "comm:ici"]),
    "p2p.F.step0": ("flow", ["comm:nvlink", "comm:infiniband"]),
    "dp.allreduce.b0": ("collective", ["comm:infiniband", "comm:nvlink"]),
    "cp.ring": ("collective", ["comm:nvlink"]),
    "ep.alltoall": ("collective", ["comm:infiniband"]),
    "unknown.send": ("flow", ["comm:wan"]),
    "read.step0": ("storage", ["storage"]),
    "decode.step0": ("host", ["host"]),
    "pipeline.wait.step0": ("bubble", ["bubble"]),
}


@st.composite
def _frames(draw):
    rows = []
    for _ in range(draw(st.integers(0, 25))):
        name = draw(st.sampled_from(sorted(_NAMES)))
        kind, cats = _NAMES[name]
        a = draw(st.floats(0, 10, allow_nan=False))
        b = a + draw(st.floats(0, 3, allow_nan=False))
        rows.append((a, b, name, kind, draw(st.sampled_from(cats))))
    return _ev(rows)


@settings(max_examples=150, deadline=None)
@given(_frames(), st.floats(0, 5), st.floats(0, 10))
def test_parts_refine_the_bottleneck_categories(ev, lo, length):
    """Every second lands in one part, and per category tier the parts agree with the bottleneck
    sweep over the same events: comm parts = comm:* time, compute + optimizer = compute + memory +
    overhead, data loading = storage + host, bubble = bubble, other = idle."""
    hi = lo + length
    bd = dict(zip(*step_breakdown(ev, start_s=lo, end_s=hi,
                                  optimizer_names={"layer0.adam"})[["part", "seconds"]].T.values))
    assert sum(bd.values()) == pytest.approx(length, abs=1e-9)
    cat = critical_path_breakdown(ev, start_s=lo, end_s=hi)
    c = dict(zip(cat["category"], cat["seconds"])) if length > 0 else {}

    def tot(keys):
        return sum(v for k, v in c.items() if k in keys or (k.startswith("comm:") and
                                                            "comm" in keys))
    assert sum(bd[p] for p in COMM_PARTS) == pytest.approx(tot({"comm"}), abs=1e-9)
    assert bd["compute"] + bd["optimizer"] == pytest.approx(
        tot({"compute", "memory", "overhead"}), abs=1e-9)
    assert bd["data_loading"] == pytest.approx(tot({"storage", "host"}), abs=1e-9)
    assert bd["bubble"] == pytest.approx(tot({"bubble"}), abs=1e-9)
    assert bd["other"] == pytest.approx(tot({"idle"}), abs=1e-9)


def test_rank_events_keeps_own_device_and_off_device_rows():
    ev = pd.DataFrame({
        "resource": ["g0/compute", "g0/comm", "g2/comm", "g2->g3", "g0->g1", "nvme->mem",
                     "cpu0/host", "g0/compute", "site/g0->site/g1"],
        "job": ["t"] * 7 + ["other", "t"], "rank": [0] * 9})
    got = rank_events(ev, job="t", rank=0, device="g0", devices=["g0", "g1", "g2", "g3"])
    assert list(got["resource"]) == ["g0/compute", "g0/comm", "g0->g1", "nvme->mem", "cpu0/host",
                                     "site/g0->site/g1"]


def test_step_summary_keys():
    bd = pd.DataFrame({"part": list(PARTS), "seconds": [1.0] * len(PARTS),
                       "share": [1 / len(PARTS)] * len(PARTS)})
    s = step_summary(bd, 2.2)
    assert list(s) == KEYS + ["exposed_comm_share"]
    assert sum(s[k] for k in KEYS) == pytest.approx(2.2)
    assert s["exposed_comm_share"] == pytest.approx(len(COMM_PARTS) / len(PARTS))
    assert all(v is None for v in step_summary(None, None).values())


# -- whole runs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", ["bert-large-8xa100", "mlp-dp-nvlink", "gpt-1.3b-3d-8xa100"])
def test_parts_sum_to_the_step_and_refine_the_bottleneck(stem):
    r = _file_run(stem)
    s = r.summary
    assert set(KEYS) <= set(s) and all(s[k] >= 0 for k in KEYS)
    assert _parts_sum(s) == pytest.approx(s["step_time_s"], rel=1e-9)
    share = dict(zip(r.bottleneck["category"], r.bottleneck["share"]))
    comm = sum(v for k, v in share.items() if k.startswith("comm:"))
    assert s["exposed_comm_share"] == pytest.approx(comm, abs=1e-9)
    assert sum(s[summary_key(p)] for p in COMM_PARTS) == pytest.approx(comm * s["step_time_s"])
    assert s["time_bubble_s"] == pytest.approx(share.get("bubble", 0.0) * s["step_time_s"])
    device = sum(share.get(k, 0.0) for k in ("compute", "memory", "overhead"))
    assert s["time_compute_s"] + s["time_optimizer_s"] == pytest.approx(
        device * s["step_time_s"])
    assert s["time_optimizer_s"] > 0 and s["time_compute_s"] > 0


def test_3d_job_has_every_parallelism_it_uses():
    s = _file_run("gpt-1.3b-3d-8xa100").summary
    for k in ("time_exposed_comm_tp_s", "time_exposed_comm_pp_s", "time_exposed_comm_dp_s",
              "time_bubble_s"):
        assert s[k] > 0, k
    for k in ("time_exposed_comm_cp_s", "time_exposed_comm_ep_s", "time_exposed_comm_other_s",
              "time_data_loading_s"):
        assert s[k] == 0, k


def test_tp1_has_no_tp_communication():
    small = {"layers": 4, "hidden": 1024, "heads": 16, "vocab": 51200}
    for par in ({"tp": 1, "pp": 2, "micro_batch": 4}, {"tp": 1, "pp": 1, "micro_batch": 4}):
        s = _run(_scenario("gpt-1.3b-3d-8xa100", model=small, global_batch=32,
                           parallelism={**par, "recompute": "full"}))
        assert s["time_exposed_comm_tp_s"] == 0
        assert _parts_sum(s) == pytest.approx(s["step_time_s"], rel=1e-9)
    s = _run(_scenario("gpt-1.3b-3d-8xa100", model=small, global_batch=32,
                       parallelism={"tp": 2, "pp": 1, "micro_batch": 4}))
    assert s["time_exposed_comm_tp_s"] > 0


def test_slower_fabric_never_decreases_exposed_dp_comm():
    # NICs from fastest to slowest (catalog: 400, 200, 100, 25 Gb/s per direction)
    nics = ["ib-ndr-400", "ib-hdr-200", "eth-100g", "eth-25g"]
    exposed = []
    for nic in nics:
        data = _scenario("mlp-dp-ethernet", steps=3)
        data["cluster"]["node"]["nic"] = nic
        s = _run(data)
        assert _parts_sum(s) == pytest.approx(s["step_time_s"], rel=1e-9)
        exposed.append(s["time_exposed_comm_dp_s"])
    print("exposed dp comm by nic", dict(zip(nics, exposed)))
    assert all(a <= b * (1 + 1e-9) for a, b in zip(exposed, exposed[1:])), exposed
    assert exposed[-1] > exposed[0]


def test_more_micro_batches_shrink_the_bubble_share():
    shares = []
    for batch in (16, 32, 64):  # dp 2 x micro-batch 4: 2, 4, 8 micro-batches through pp 2
        s = _run(_scenario("gpt-1.3b-3d-8xa100", global_batch=batch,
                           model={"layers": 8, "hidden": 1024, "heads": 16, "vocab": 51200}))
        assert s["micro_batches"] == batch // 8
        shares.append(s["time_bubble_s"] / s["step_time_s"])
    print("bubble share at 2, 4, 8 micro-batches", shares)
    assert shares[0] > shares[1] > shares[2] > 0, shares


def test_hdd_grows_data_loading():
    got = {}
    for medium in ("nvme", "hdd"):
        s = _run(_scenario(f"resnet50-8xa100-{medium}", epochs=None, steps=3))
        assert _parts_sum(s) == pytest.approx(s["step_time_s"], rel=1e-9)
        got[medium] = s["time_data_loading_s"]
    print("data loading per step", got)
    assert got["hdd"] > 10 * got["nvme"] > 0, got


def test_job_that_does_not_fit_has_the_keys_as_none():
    data = _scenario("gpt-1.3b-3d-8xa100")
    data["cluster"]["node"]["gpu"] = "V100-SXM2-32GB"
    data["cluster"]["node"]["intra_node"] = "nvlink2"
    data["workload"]["model"] = {"layers": 96, "hidden": 12288, "heads": 96, "vocab": 51200}
    s = _run(data)
    assert s["fits"] is False
    assert all(s[k] is None for k in KEYS + ["exposed_comm_share"])


def test_cli_prints_the_breakdown_line(tmp_path):
    from typer.testing import CliRunner

    from hwsim import cli
    from hwsim.analysis.headline import breakdown_line

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_scenario("mlp-dp-nvlink", steps=3)))
    out = CliRunner().invoke(cli.app, ["run", str(path)])
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("per step (rank 0): "))
    items = line.removeprefix("per step (rank 0): ").split(", ")
    assert [i.split(" ")[0] for i in items] == ["compute", "comm", "optimizer"]
    assert items[1].startswith("comm dp ")
    shares = [float(i.rsplit("(", 1)[1].rstrip("%)")) for i in items]
    assert sum(shares) == pytest.approx(100, abs=0.2)
    assert breakdown_line({"step_time_s": None}) is None
