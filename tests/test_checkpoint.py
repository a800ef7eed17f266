"""Checkpoints (hwsim.jobs.checkpoint): what each rank saves, sync and async writes, contention
on the shared tier, folded runs, restore, the trace, bad input, and BLOOM-176B's published
checkpoint."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import simpy

from hwsim.engine import Recorder
from hwsim.exceptions import ScenarioError
from hwsim.jobs.system import System
from hwsim.scenario.build import prepare, run_scenario
from hwsim.scenario.loader import load_scenario

ROOT = Path(__file__).resolve().parents[1]

MLP = {"preset": "mlp", "features": 1024, "width": 4096, "depth": 8, "outputs": 1024}


def _dp(gpus: int = 1, checkpoint: dict | None = None, steps: int = 3, **node) -> dict:
    """A data-parallel MLP job on one server with a local NVMe drive."""
    return {"name": "ck-dp", "seed": 0,
            "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": gpus,
                                             "cpu": "EPYC-7742", "intra_node": "nvlink3",
                                             "local_storage": "nvme-gen4", **node}},
            "workload": {"kind": "training", "model": MLP, "precision": "bf16",
                         "global_batch": 64 * gpus, "optimizer": "adam", "steps": steps,
                         "checkpoint": checkpoint}}


def _3d(fold: bool, checkpoint: dict, tier: str = "lustre", steps: int = 4) -> dict:
    """A 1.3B GPT on two 8-GPU servers, TP 2 x PP 2 x DP 4, ZeRO-1, a shared tier."""
    return {"name": "ck-3d", "seed": 0,
            "cluster": {"nodes": 2, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8,
                                             "cpu": "EPYC-7742", "intra_node": "nvlink3",
                                             "nic": "ib-hdr-200", "nics_per_node": 8},
                        "fabric": {"topology": "fat-tree"},
                        "storage": [{"name": "shared", "tier": tier}]},
            "workload": {"kind": "training",
                         "model": {"layers": 24, "hidden": 2048, "heads": 16, "vocab": 51200},
                         "seq_len": 2048, "precision": "bf16", "global_batch": 64,
                         "parallelism": {"tp": 2, "pp": 2, "dp": 4, "micro_batch": 4,
                                         "recompute": "full", "zero": 1},
                         "optimizer": "adam", "steps": steps, "fold": fold,
                         "checkpoint": checkpoint}}


def _run(d: dict):
    return run_scenario(load_scenario(d))


def _alone_time(g, src: str, dst: str, nbytes: float, request: float | None = None,
                cap: float | None = None) -> float:
    """Closed form of one flow alone: bytes over the narrowest channel (and *cap*) + latency."""
    sysm = System(simpy.Environment(), g, Recorder())
    chans, coefs, latency, _ = sysm.route(src, dst, 0, request)
    rate = min(sysm.net.channels[c].capacity / coefs.get(c, 1.0) for c in chans)
    return nbytes / min(rate, cap or float("inf")) + latency


# -- size ---------------------------------------------------------------------------------------
def test_size_is_14_bytes_per_parameter_under_mixed_precision_adam():
    """Every rank's shard adds up to bf16 weights + fp32 master weights and Adam moments
    (2 + 12 bytes per parameter), whatever the sharding; replica 0 alone saves what the
    replicas share, so the largest shard holds a weight copy. Tensor-parallel ranks each save
    the small tensors they replicate (norms, biases), as Megatron's per-rank files do."""
    d = _3d(True, {"storage": "shared", "every_steps": 10})
    s = _run(d).summary
    _, plan = prepare(load_scenario(d))
    held = plan.tp * sum(m.params for stage in plan.stages for m in stage)
    assert s["checkpoint_bytes"] == pytest.approx(14 * held, rel=1e-9)
    assert s["checkpoint_bytes"] == pytest.approx(14 * s["params"], rel=0.005)
    stage0 = sum(m.params for m in plan.stages[0]) * 2 * (1 + 6 / 4)  # weights + states / dp
    assert s["checkpoint_bytes_per_rank_max"] == pytest.approx(stage0, rel=0.05)
    dp = _run(_dp(2, {"storage": "local", "every_steps": 10})).summary
    assert dp["checkpoint_bytes"] == pytest.approx(14 * dp["params"], rel=1e-9)
    assert dp["checkpoint_bytes_per_rank_max"] == dp["checkpoint_bytes"]  # DDP: rank 0 saves
    w = _run(_dp(2, {"storage": "local", "every_steps": 10, "include_optimizer": False})).summary
    assert w["checkpoint_bytes"] == pytest.approx(2 * w["params"], rel=1e-9)


# -- timing -------------------------------------------------------------------------------------
def test_sync_save_and_restore_match_the_closed_form_of_one_rank():
    """One GPU, sync: the stall is the device-to-host copy then the write to the drive, each a
    flow alone (bytes over the narrowest channel, here the writer cap, plus latency); the
    restore reads and copies back. The step time does not include the stall."""
    writer = 2e9
    d = _dp(1, {"storage": "local", "every_steps": 1, "writer_bw": writer})
    s = _run(d).summary
    g, plan = prepare(load_scenario(d))
    sh = plan.checkpoint.shards[0]
    d2h = _alone_time(g, sh.device, sh.host, sh.save_bytes)
    write = _alone_time(g, sh.host, sh.storage, sh.save_bytes, 16 * 2**20, writer)
    read = _alone_time(g, sh.storage, sh.host, sh.load_bytes, 16 * 2**20, writer)
    h2d = _alone_time(g, sh.host, sh.device, sh.load_bytes)
    assert s["checkpoints_taken"] == 3
    assert s["checkpoint_stall_s"] == pytest.approx(d2h + write, rel=1e-9)
    assert s["checkpoint_write_s"] == pytest.approx(d2h + write, rel=1e-9)
    assert s["checkpoint_restore_s"] == pytest.approx(read + h2d, rel=1e-9)
    plain = _run(_dp(1, None)).summary
    assert s["step_time_s"] == pytest.approx(plain["step_time_s"], rel=1e-9)
    assert s["time_to_train_s"] == pytest.approx(plain["time_to_train_s"] + 3 * (d2h + write),
                                                 rel=1e-9)
    assert s["checkpoint_stall_total_s"] == pytest.approx(3 * (d2h + write), rel=1e-9)


def test_async_checkpoints_stall_less_than_sync_ones():
    """Async stalls only for the copy to host memory; the drain makes the checkpoint durable
    later, so its write time is at least its stall and no shorter than sync's write."""
    sync = _run(_3d(True, {"storage": "shared", "every_steps": 2, "mode": "sync"})).summary
    asyn = _run(_3d(True, {"storage": "shared", "every_steps": 2, "mode": "async"})).summary
    assert asyn["checkpoint_stall_s"] < 0.2 * sync["checkpoint_stall_s"]
    assert asyn["checkpoint_write_s"] > asyn["checkpoint_stall_s"]
    assert asyn["checkpoint_write_s"] >= sync["checkpoint_write_s"] * (1 - 1e-9)
    assert asyn["checkpoint_overhead_share"] < sync["checkpoint_overhead_share"]
    assert asyn["time_to_train_s"] < sync["time_to_train_s"]
    assert asyn["checkpoint_restore_s"] == pytest.approx(sync["checkpoint_restore_s"], rel=1e-9)


def test_an_async_drain_is_not_charged_as_a_stall():
    """Background writes are of category ``checkpoint`` (below every wait in the bottleneck
    sweep); the copies to host memory, the stall and the restore are ``storage``."""
    ev = _run(_dp(1, {"storage": "local", "every_steps": 1, "mode": "async"})).events
    ck = ev[ev["kind"] == "checkpoint"]
    writes = ck["name"].str.endswith(".write")
    assert set(ck[writes]["category"]) == {"checkpoint"}
    assert set(ck[~writes]["category"]) == {"storage"}


def test_async_checkpoint_waits_for_the_previous_drain():
    """With a drain longer than a step, the next checkpoint's stall includes waiting for it:
    stalls beyond the first exceed the copy alone."""
    r = _run(_dp(1, {"storage": "local", "every_steps": 1, "mode": "async",
                     "writer_bw": "0.2 GB/s"}, steps=3))
    saves = r.summary
    first, *rest = [(b - a) for a, b in _stalls(r)]
    assert saves["checkpoints_taken"] == 3 and rest
    assert all(x > 5 * first for x in rest)


def _stalls(r) -> list[tuple[float, float]]:
    ev = r.events
    st = ev[(ev["kind"] == "checkpoint") & ev["name"].str.startswith("checkpoint.stall")]
    return sorted(zip(st["start_s"], st["end_s"]))


def test_every_rank_writing_at_once_contends_on_the_tier_link():
    """The shared tier hangs off one HDR link: all ranks' writes share it, so the sync write
    takes at least the whole checkpoint over that link, and a faster tier link shortens it."""
    s = _run(_3d(True, {"storage": "shared", "every_steps": 2})).summary
    link = 200e9 / 8 * 0.9545  # ib-hdr-200 per direction x its efficiency (catalog)
    assert s["checkpoint_write_s"] >= s["checkpoint_bytes"] / link
    assert s["checkpoint_write_s"] < 1.2 * s["checkpoint_bytes"] / link
    d = _3d(True, {"storage": "shared", "every_steps": 2})
    d["cluster"]["storage"][0]["links"] = 4
    wide = _run(d).summary
    assert wide["checkpoint_write_s"] < 0.5 * s["checkpoint_write_s"]


def test_a_per_client_limit_bounds_each_server():
    """gpfs limits each client server (catalog client_bw): a server's ranks share it."""
    s = _run(_3d(True, {"storage": "shared", "every_steps": 2}, tier="gpfs")).summary
    g, plan = prepare(load_scenario(_3d(True, {"storage": "shared", "every_steps": 2},
                                        tier="gpfs")))
    per_server: dict[str, float] = {}
    for sh in plan.checkpoint.shards:
        per_server[sh.host] = per_server.get(sh.host, 0.0) + sh.save_bytes
    client = 2048e6
    assert s["checkpoint_write_s"] >= max(per_server.values()) / client
    assert s["checkpoint_write_s"] < max(per_server.values()) / client + 1.0


def test_an_async_drain_contends_with_data_reads_from_the_same_tier():
    """ResNet-50 reading its batches from GPFS without prefetch: a sync checkpoint only adds its
    stall; an async one's drain shares the server's GPFS client with the next steps' reads, so
    those steps are slower and the drain is slower than a sync write."""
    d = {"name": "ck-reads", "seed": 0,
         "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8,
                                          "cpu": "EPYC-7742", "intra_node": "nvlink3",
                                          "nic": "ib-hdr-200", "nics_per_node": 8},
                     "storage": [{"name": "scratch", "tier": "gpfs"}]},
         "workload": {"kind": "training", "model": {"preset": "resnet50"}, "precision": "bf16",
                      "global_batch": 2048, "optimizer": "sgd", "steps": 6,
                      "data": {"storage": "scratch", "samples": 1281167,
                               "sample_bytes": "110 kB", "access": "sequential",
                               "prefetch": 0}}}
    net = {}
    for mode in (None, "sync", "async"):
        x = copy.deepcopy(d)
        x["workload"]["checkpoint"] = mode and {"storage": "scratch", "every_steps": 3,
                                                "mode": mode}
        s = _run(x).summary
        net[mode] = (s["time_to_train_s"] - (s.get("checkpoint_stall_total_s") or 0.0), s)
    assert net["sync"][0] == pytest.approx(net[None][0], rel=1e-9)
    assert net["async"][0] > net[None][0] * 1.005
    assert net["async"][1]["checkpoint_write_s"] > 1.2 * net["sync"][1]["checkpoint_write_s"]


def test_folded_and_unfolded_checkpoints_agree():
    """Folded, one rank per stage is simulated but every rank still writes: the tier sees the
    same bytes and the checkpoint takes the same time as rank by rank."""
    for mode in ("sync", "async"):
        ck = {"storage": "shared", "every_steps": 2, "mode": mode}
        a, b = _run(_3d(False, ck)), _run(_3d(True, ck))
        for key in ("checkpoint_bytes", "checkpoint_write_s", "checkpoint_stall_s",
                    "checkpoint_restore_s"):
            assert b.summary[key] == pytest.approx(a.summary[key], rel=1e-3), (mode, key)
        assert b.summary["simulated_ranks"] < a.summary["simulated_ranks"]
        for r in (a, b):
            ev = r.events
            writes = ev[(ev["kind"] == "checkpoint") & ev["name"].str.endswith(".write")]
            assert writes["bytes"].sum() == pytest.approx(
                r.summary["checkpoints_taken"] * r.summary["checkpoint_bytes"], rel=1e-9)
            assert writes["rank"].nunique() == 16  # ZeRO-1: every rank saves its states


def test_the_trace_attributes_a_sync_stall_to_storage():
    """Checkpoint flows and the stall are ``checkpoint`` events of category ``storage``; a
    window with a sync checkpoint in it charges storage on rank 0's critical path."""
    r = _run(_dp(1, {"storage": "local", "every_steps": 1, "writer_bw": "1 GB/s"}, steps=3))
    ev = r.events
    ck = ev[ev["kind"] == "checkpoint"]
    assert set(ck["category"]) == {"storage"}
    assert {"checkpoint.save.step0.d2h", "checkpoint.save.step0.write",
            "checkpoint.stall.step0", "checkpoint.restore.read",
            "checkpoint.restore.h2d"} <= set(ck["name"])
    share = r.bottleneck.set_index("category")["seconds"]
    assert share.get("storage", 0.0) > 0.0
    assert r.summary["bottleneck"] == "storage"


# -- bad input ----------------------------------------------------------------------------------
def test_bad_checkpoint_input_names_the_field():
    d = _dp(1, {"storage": "sharedd", "every_steps": 1})
    with pytest.raises(Exception, match=r"workload\.checkpoint\.storage: unknown storage "
                                        r"'sharedd'; valid: local"):
        load_scenario(d)
    d = _dp(1, {"storage": "local", "every_steps": 1})
    del d["cluster"]["node"]["local_storage"]
    with pytest.raises(Exception, match=r"checkpoint\.storage is 'local' but cluster\.node has "
                                        r"no local_storage"):
        load_scenario(d)
    d = _dp(1, {"storage": "local", "every_steps": 0})
    with pytest.raises(Exception, match=r"every_steps"):
        load_scenario(d)
    d = _dp(1, {"storage": "local", "every_steps": 1, "mode": "lazy"})
    with pytest.raises(Exception, match=r"mode"):
        load_scenario(d)


def test_async_needs_host_memory_for_every_rank_share():
    d = _dp(8, {"storage": "local", "every_steps": 1, "mode": "async"},
            host_memory="ddr4-host")
    d["workload"]["model"] = {"preset": "llama2-7b"}
    d["workload"]["seq_len"] = 128
    d["workload"]["global_batch"] = 8
    # DDP: rank 0 stages 7B x 14 bytes = 94 GB; fits 2 x 512 GB of host memory
    prepare(load_scenario(d))
    d["cluster"]["node"]["cpu_sockets"] = 1
    d["workload"]["model"] = {"preset": "llama2-70b"}  # 70B x 14 = 966 GB > 512 GB
    with pytest.raises(ScenarioError, match=r"async checkpoints stage 96\d\.\d GB in host "
                                            r"memory 'n0\.mem', which holds 512\.0 GB; valid: "
                                            r"mode: sync") as err:
        prepare(load_scenario(d))
    assert err.value.field == "workload.checkpoint.mode"


# -- published ----------------------------------------------------------------------------------
def test_bloom_176b_checkpoint_matches_the_published_size_and_save_time():
    """BigScience tr11-176B-ml README: a checkpoint is 2.3 TB and saving takes ~40 s on 48
    Jean Zay servers writing to GPFS; hwsim predicts both within the report's tolerances
    (benchmarks/validate_checkpoint.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import validate_checkpoint as vc

    rows = vc.rows()
    assert [r.metric for r in rows] == ["checkpoint_bytes", "checkpoint_stall_s"]
    for r in rows:
        assert r.error is not None and abs(r.error) <= vc.TOLERANCE[r.metric], (r.metric, r.error)


def test_failures_with_workload_checkpoints_count_each_stall_once():
    """With workload.checkpoint and failures (no rates here), the run-scale model takes the
    measured stall and interval; the ideal time is the checkpoint-free one, so the wall time is
    it plus one stall per checkpoint committed, and goodput is below 1 by exactly that."""
    ck = {"storage": "local", "every_steps": 2}
    d = _dp(gpus=1, checkpoint=ck, steps=4)
    d["workload"]["train_samples"] = 64 * 1000
    d["workload"].pop("steps")
    d["workload"]["failures"] = {}
    s = _run(d).summary
    ref = _dp(gpus=1, steps=4)
    ref["workload"]["train_samples"] = 64 * 1000
    ref["workload"].pop("steps")
    ideal = _run(ref).summary["time_to_train_s"]
    assert s["failures_total"] == 0
    assert s["time_to_train_ideal_s"] == pytest.approx(ideal, rel=1e-9)
    assert s["checkpoint_time_s"] == pytest.approx(s["checkpoints"] * s["checkpoint_stall_s"],
                                                   rel=1e-9)
    assert s["time_to_train_s"] == pytest.approx(ideal + s["checkpoint_time_s"], rel=1e-9)
    assert s["goodput"] == pytest.approx(ideal / s["time_to_train_s"], rel=1e-9) and s["goodput"] < 1
