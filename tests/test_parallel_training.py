"""Megatron-style 3D-parallel training (hwsim.jobs.parallel): agreement with the data-parallel
job, the 1F1B bubble on a real graph, tensor parallelism inside a node, fabric monotonicity,
ZeRO-1 collectives, memory as a result, and the configurations it refuses."""

from __future__ import annotations

import copy

import pytest
import simpy

from hwsim.engine import Recorder
from hwsim.jobs.parallel import ParallelTrainingJob, parallel_plan
from hwsim.jobs.system import System
from hwsim.jobs.training import TrainingJob, TrainingPlan
from hwsim.topology import cluster, nodes_of_kind
from hwsim.workloads import TransformerSpec, model_from_blocks, transformer_ops

SMALL = TransformerSpec(layers=4, hidden=1024, heads=16, vocab=32000, seq_len=1024)


def _node(gpu="A100-SXM4-80GB", n=8, link="nvlink3", nodes=1, nic=None):
    node = dict(gpu=gpu, gpus_per_node=n, intra_node=link)
    if nic:
        node.update(nic=nic, nics_per_node=n)
    return cluster(nodes=nodes, node=node)


def _sim(graph, make):
    env = simpy.Environment()
    rec = Recorder()
    system = System(env, graph, rec)
    job = make(system)
    job.start()
    env.run()
    return job, rec.events_frame()


def _par(graph, model, devices, **kw):
    kw.setdefault("steps", 2)
    return _sim(graph, lambda s: ParallelTrainingJob(s, parallel_plan("p", model, devices, **kw)))


def test_rank_layout_is_megatron_order():
    g = _node(n=8)
    devs = nodes_of_kind(g, "gpu")
    plan = parallel_plan("p", transformer_ops(SMALL, micro_batch=1, tp=2), devs, tp=2, pp=2,
                         micro_batches=2)
    assert plan.dp == 2
    assert [plan.device(0, 0, t) for t in range(2)] == devs[0:2]   # TP group: adjacent GPUs
    assert [plan.device(0, d, 0) for d in range(2)] == [devs[0], devs[2]]
    assert [plan.device(s, 0, 0) for s in range(2)] == [devs[0], devs[4]]


def test_pp1_tp1_equals_the_data_parallel_job():
    g = _node()
    devs = nodes_of_kind(g, "gpu")
    ops = transformer_ops(SMALL, micro_batch=2, tp=1)
    par, _ = _par(g, ops, devs, tp=1, pp=1, micro_batches=4)
    ddp, _ = _sim(g, lambda s: TrainingJob(s, TrainingPlan(
        job="t", model=ops, ranks=tuple(devs), hosts=("",) * 8, cpus=("",) * 8,
        precision="bf16", optimizer="adam", steps=2, micro_batches=4)))
    t_ddp = ddp.step_ends[0][1] - ddp.step_ends[0][0]
    assert par.fits and ddp.fits
    assert par.step_times[1] == pytest.approx(t_ddp, rel=0.05)


def _layers_only(spec, **kw):
    ops = transformer_ops(spec, **kw)
    return model_from_blocks(ops.name, [b for b in ops.blocks if b.kind == "layer"],
                             samples=ops.samples, tokens_per_sample=ops.tokens_per_sample,
                             extra=ops.extra)


@pytest.mark.parametrize("schedule", ["1f1b", "gpipe"])
def test_1f1b_bubble_with_negligible_communication(schedule):
    """Equal stages, 1-byte boundary messages: (m + p - 1)(tf + tb) plus the first stage's
    optimizer; stage s waits s*tf to warm up and s*tb to cool down."""
    p, m = 4, 8
    spec = TransformerSpec(layers=8, hidden=2048, heads=16, vocab=32000, seq_len=2048)
    model = _layers_only(spec, micro_batch=1)
    g = _node(n=4)
    devs = nodes_of_kind(g, "gpu")
    job, ev = _par(g, model, devs, tp=1, pp=p, micro_batches=m, p2p_bytes=1.0, steps=1,
                   schedule=schedule)
    spec_dev = job.devices[0].spec
    stage = job.plan.stages[0][0]
    tf = sum(spec_dev.op_time_s(o.flops, o.bytes, "bf16", shape=o.shape) for o in stage.forward)
    tb = sum(spec_dev.op_time_s(o.flops, o.bytes, "bf16", shape=o.shape) for o in stage.backward)
    opt = sum(spec_dev.op_time_s(o.flops, o.bytes, "bf16", shape=o.shape) for o in stage.optimizer)
    assert job.step_times[0] == pytest.approx((m + p - 1) * (tf + tb) + opt, rel=0.02)
    assert (job.step_times[0] - opt) / (tf + tb) - m == pytest.approx(p - 1, rel=0.02)
    bub = ev[ev.category == "bubble"]
    for s in range(p):
        mine = bub[bub.resource == f"{devs[s]}/compute"]
        warm = (mine.end_s - mine.start_s)[mine.name.str.contains("warmup")].sum()
        cool = (mine.end_s - mine.start_s)[mine.name.str.contains("cooldown")].sum()
        assert warm == pytest.approx(s * tf, rel=0.02, abs=1e-5)
        assert cool == pytest.approx(s * tb, rel=0.02, abs=1e-5)


def test_interleaving_shrinks_the_bubble():
    spec = TransformerSpec(layers=8, hidden=2048, heads=16, vocab=32000, seq_len=2048)
    model = _layers_only(spec, micro_batch=1)
    g = _node(n=4)
    devs = nodes_of_kind(g, "gpu")
    plain, _ = _par(g, model, devs, tp=1, pp=4, micro_batches=8, p2p_bytes=1.0, steps=1)
    inter, _ = _par(g, model, devs, tp=1, pp=4, micro_batches=8, p2p_bytes=1.0, steps=1,
                    schedule="interleaved", virtual_stages=2)
    assert inter.step_times[0] < 0.95 * plain.step_times[0]


@pytest.mark.parametrize("sp", [False, True])
def test_tp8_inside_a_node_beats_one_gpu_and_records_tp_collectives(sp):
    spec = TransformerSpec(layers=2, hidden=8192, heads=64, vocab=32000, seq_len=2048)
    g = _node(gpu="H100-SXM5-80GB", link="nvlink4")
    devs = nodes_of_kind(g, "gpu")
    one, _ = _par(g, transformer_ops(spec, micro_batch=1, tp=1), devs[:1], tp=1, pp=1,
                  micro_batches=2)
    eight, ev = _par(g, transformer_ops(spec, micro_batch=1, tp=8, sp=sp), devs, tp=8, pp=1,
                     micro_batches=2)
    assert one.fits and eight.fits
    assert eight.step_times[1] < 0.5 * one.step_times[1]
    kind = "tp_reducescatter" if sp else "tp_allreduce"
    tp = ev[(ev.kind == "collective") & ev.name.str.contains(kind)]
    assert len(tp) > 0
    assert set(tp.resource) == {f"{d}/comm" for d in devs}
    assert (tp.end_s > tp.start_s).all()


@pytest.mark.parametrize("tp,pp,dp,zero", [(8, 2, 1, 0), (4, 2, 2, 1), (2, 4, 2, 0),
                                           (4, 2, 2, 3)])
def test_a_slower_fabric_never_speeds_a_step(tp, pp, dp, zero):
    spec = TransformerSpec(layers=8, hidden=4096, heads=32, vocab=32000, seq_len=2048)
    model = transformer_ops(spec, micro_batch=2, tp=tp)
    times = {}
    for nic in ("ib-edr-100", "ib-hdr-200", "ib-ndr-400"):
        g = _node(gpu="H100-SXM5-80GB", link="nvlink4", nodes=2, nic=nic)
        job, _ = _par(g, model, nodes_of_kind(g, "gpu"), tp=tp, pp=pp, dp=dp, zero=zero,
                      micro_batches=4, steps=1)
        times[nic] = job.step_times[0]
    assert times["ib-edr-100"] > times["ib-hdr-200"] >= times["ib-ndr-400"]


def test_zero1_reduce_scatters_gradients_and_all_gathers_parameters():
    g = _node()
    devs = nodes_of_kind(g, "gpu")
    ops = transformer_ops(SMALL, micro_batch=2, tp=2)
    z0, ev0 = _par(g, ops, devs, tp=2, pp=2, micro_batches=4, zero=0)
    z1, ev1 = _par(g, ops, devs, tp=2, pp=2, micro_batches=4, zero=1)
    coll0, coll1 = ev0[ev0.kind == "collective"], ev1[ev1.kind == "collective"]
    assert coll0.name.str.startswith("dp.allreduce").any()
    assert not coll0.name.str.contains("reduce_scatter|allgather_params").any()
    assert coll1.name.str.startswith("dp.reduce_scatter").any()
    assert coll1.name.str.startswith("dp.allgather_params").any()
    assert z1.breakdown["optimizer_states"] < z0.breakdown["optimizer_states"]
    # every rank ends every step, steps in order
    assert all(len(e) == 2 and e[0] < e[1] for e in z1.step_ends)


def test_zero3_gathers_parameters_per_block_and_reduce_scatters_gradients():
    g = _node()
    devs = nodes_of_kind(g, "gpu")
    ops = transformer_ops(SMALL, micro_batch=2, tp=2)
    z1, _ = _par(g, ops, devs, tp=2, pp=2, micro_batches=4, zero=1)
    z3, ev = _par(g, ops, devs, tp=2, pp=2, micro_batches=4, zero=3)
    coll = ev[ev.kind == "collective"]
    gathers = coll[coll.name.str.startswith("dp.fsdp_allgather")]
    scatters = coll[coll.name.str.startswith("dp.fsdp_reduce_scatter")]
    # per step, stage, replica, TP rank: every block gathered in every forward and backward
    blocks = sum(len(c.blocks) for st in z3.plan.stages for c in st)
    assert len(gathers) == 2 * 2 * 4 * blocks * 2 * 2  # steps, F+B, micro-batches, dp, tp
    assert len(scatters) > 0
    assert not coll.name.str.startswith("dp.allgather_params").any()
    assert z3.breakdown["weights"] < z1.breakdown["weights"]
    assert "zero3_buffers" in z3.breakdown
    # more communication than ZeRO-1 on the same grid
    assert z3.step_times[1] > z1.step_times[1]


def test_a_model_that_does_not_fit_is_a_result():
    spec = TransformerSpec(layers=32, hidden=8192, heads=64, vocab=32000, seq_len=2048)
    g = _node(gpu="A100-SXM4-40GB", n=2)
    devs = nodes_of_kind(g, "gpu")
    job, ev = _par(g, transformer_ops(spec, micro_batch=1, tp=1), devs, tp=1, pp=2,
                   micro_batches=2)
    assert job.fits is False
    assert sum(job.breakdown.values()) > job.devices[0].spec.memory_bytes
    assert {"weights", "gradients", "optimizer_states", "activations"} <= set(job.breakdown)
    assert len(job.stage_breakdowns) == 2
    assert all(e == [] for e in job.step_ends)
    assert ev[ev.kind == "compute"].empty


def test_deterministic():
    g = _node()
    devs = nodes_of_kind(g, "gpu")
    ops = transformer_ops(SMALL, micro_batch=1, tp=2, sp=True)
    a, ea = _par(g, ops, devs, tp=2, pp=2, micro_batches=4)
    b, eb = _par(g, ops, devs, tp=2, pp=2, micro_batches=4)
    assert a.step_ends == b.step_ends
    assert ea.equals(eb)


def test_refuses_what_it_does_not_implement():
    g = _node()
    devs = nodes_of_kind(g, "gpu")
    ops = transformer_ops(SMALL, micro_batch=1, tp=2)
    with pytest.raises(ValueError, match="zero=4"):
        parallel_plan("p", ops, devs, tp=2, pp=2, zero=4, micro_batches=2)
    with pytest.raises(ValueError, match="were built for ep=1, the plan has tp=2, cp=1, ep=3"):
        parallel_plan("p", ops, devs, tp=2, pp=2, ep=3, micro_batches=2)
    cp = transformer_ops(SMALL, micro_batch=1, tp=2, cp=2)
    with pytest.raises(ValueError, match="were built for cp=2, the plan has tp=2, cp=1"):
        parallel_plan("p", cp, devs, tp=2, pp=2, micro_batches=2)
    with pytest.raises(ValueError, match=r"8 devices for tp=2 x cp=1 x pp=2 x dp=3"):
        parallel_plan("p", ops, devs, tp=2, pp=2, dp=3, micro_batches=2)
    with pytest.raises(ValueError, match="needs schedule 'interleaved'"):
        parallel_plan("p", ops, devs, tp=2, pp=2, virtual_stages=2, micro_batches=2)


MOE = TransformerSpec(layers=2, hidden=1024, heads=16, kv_heads=8, vocab=32000, seq_len=1024,
                      ffn_hidden=2048, experts=8, top_k=2, activation="swiglu")


def _moe(ep, dp_nodes=2, fold=False):
    g = _node(gpu="H100-SXM5-80GB", link="nvlink4", nodes=dp_nodes, nic="ib-ndr-400")
    devs = nodes_of_kind(g, "gpu")
    ops = transformer_ops(MOE, micro_batch=1, tp=1, ep=ep)
    return _par(g, ops, devs, tp=1, pp=1, ep=ep, micro_batches=2, fold=fold)


def test_expert_parallel_all_to_all_and_expert_gradients():
    """ep=8 on 16 GPUs: every MoE layer dispatches and combines by all-to-all over 8 ranks of
    one server; dense gradients are reduced over all 16 ranks, expert gradients over the 2
    holding the same experts; with ep = dp no expert gradient is reduced at all."""
    job, ev = _moe(ep=8)
    a2a = ev[ev.name.str.contains("moe.") & (ev.kind == "collective")]
    assert set(a2a.name) >= {"layer0.moe.dispatch.ep_alltoall", "layer0.moe.combine.ep_alltoall",
                             "layer1.moe.dispatch.grad.ep_alltoall",
                             "layer1.moe.combine.grad.ep_alltoall"}
    dense = ev[(ev.kind == "collective") & ev.name.str.startswith("dp.")
               & ~ev.name.str.endswith(".experts")]
    expert = ev[(ev.kind == "collective") & ev.name.str.endswith(".experts")]
    assert len(dense) and len(expert)
    assert job.plan.ep == 8 and job.plan.dp == 16
    # expert gradients go to the dp/ep = 2 ranks that hold the same experts
    assert expert.groupby("name").size().max() == 16  # every rank is in one 2-rank group
    devs = nodes_of_kind(_node(nodes=1), "gpu")  # ep = dp = 8: nothing to reduce for experts
    ops = transformer_ops(MOE, micro_batch=1, ep=8)
    _, ev8 = _par(_node(gpu="H100-SXM5-80GB", link="nvlink4"), ops, devs, tp=1, pp=1, ep=8,
                  micro_batches=2)
    assert not ev8.name.str.endswith(".experts").any()
    assert ev8.name.str.startswith("dp.").any()


def test_expert_parallel_folds():
    full, _ = _moe(ep=8)
    folded, _ = _moe(ep=8, fold=True)
    assert folded.step_times[-1] == pytest.approx(full.step_times[-1], rel=0.01)


def test_context_parallel_gathers_kv_and_keeps_flop_totals():
    """cp=2 splits each sequence over two ranks: K/V all-gathers in forward, reduce-scatters in
    backward, half the activation memory, and the same model FLOPs per step."""
    g = _node(nodes=1)
    devs = nodes_of_kind(g, "gpu")
    spec = TransformerSpec(layers=4, hidden=1024, heads=16, vocab=32000, seq_len=8192)
    runs = {}
    for cp in (1, 2):
        ops = transformer_ops(spec, micro_batch=1, tp=2, cp=cp)
        job, ev = _par(g, ops, devs, tp=2, cp=cp, pp=2, micro_batches=4)
        runs[cp] = (job, ev)
    job2, ev2 = runs[2]
    names = set(ev2.loc[ev2.kind == "collective", "name"])
    assert {"layer0.attention.kv.cp_allgather",
            "layer0.attention.kv.grad.cp_reducescatter"} <= names
    assert not runs[1][1].name.str.contains("attention.kv").any()
    act = [runs[cp][0].breakdown["activations"] for cp in (1, 2)]
    assert act[1] < 0.6 * act[0]
    # model FLOPs of a micro-batch: one rank's times tp x cp, whatever cp is
    flops = {cp: sum(m.model_flops for st in j.plan.stages for m in st) * j.plan.tp * cp
             for cp, (j, _) in runs.items()}
    assert flops[2] == pytest.approx(flops[1], rel=1e-12)


def _offload_scenario(offload, nodes=1, fold="auto", storage=True):
    node = {"gpu": "A100-SXM4-40GB", "gpus_per_node": 8, "cpu": "EPYC-7742",
            "intra_node": "nvlink3", "nic": "ib-hdr-200", "nics_per_node": 8}
    if storage:
        node["local_storage"] = "nvme-gen4"
    return {"name": "offload", "seed": 0,
            "cluster": {"nodes": nodes, "node": node, "fabric": {"topology": "fat-tree"}},
            "workload": {"kind": "training", "model": {"layers": 8, "hidden": 2048, "heads": 16,
                                                       "vocab": 32000},
                         "seq_len": 1024, "precision": "bf16", "global_batch": 8 * nodes,
                         "parallelism": {"micro_batch": 1, "zero": 1, "offload": offload},
                         "optimizer": "adam", "steps": 2, "fold": fold}}


def test_optimizer_offload_moves_states_off_the_device_and_the_step_onto_the_cpu():
    import hwsim
    runs = {o: hwsim.run(_offload_scenario(o)) for o in ("none", "cpu", "nvme")}
    s = {o: r.summary for o, r in runs.items()}
    assert s["none"]["memory_optimizer_states_gb"] > 0
    for o in ("cpu", "nvme"):
        assert s[o]["memory_optimizer_states_gb"] == 0.0
        assert s[o]["memory_per_device_gb"] == pytest.approx(
            s["none"]["memory_per_device_gb"] - s["none"]["memory_optimizer_states_gb"])
    # the host is slower at Adam than the GPU, and the drive slower than host memory
    assert s["none"]["step_time_s"] < s["cpu"]["step_time_s"] < s["nvme"]["step_time_s"]
    ev = runs["cpu"].events
    cpu_ops = ev[(ev.kind == "host") & ev.resource.str.endswith("/host")]
    assert len(cpu_ops)
    assert not set(ev.loc[ev.kind == "compute", "name"]) & set(cpu_ops.name)  # not on the GPU
    # ZeRO-Infinity: each rank reads and writes its 12 bytes/param shard of states
    nv = runs["nvme"].events
    reads = nv[nv.name.str.startswith("offload.states_read") & (nv.kind == "flow")]
    writes = nv[nv.name.str.startswith("offload.states_write") & (nv.kind == "flow")]
    assert reads.bytes.sum() == pytest.approx(writes.bytes.sum()) and reads.bytes.sum() > 0
    per_step_rank = reads.bytes.sum() / 2 / 8
    params = runs["nvme"].summary["params"]
    assert per_step_rank == pytest.approx(params / 8 * 12, rel=0.01)
    assert s["nvme"]["time_optimizer_s"] > s["cpu"]["time_optimizer_s"]


def test_optimizer_offload_folds_within_1_percent():
    import hwsim
    a = hwsim.run(_offload_scenario("cpu", nodes=4, fold=False)).summary["step_time_s"]
    b = hwsim.run(_offload_scenario("cpu", nodes=4, fold=True)).summary["step_time_s"]
    assert b == pytest.approx(a, rel=0.01)


def test_nvme_offload_without_a_drive_is_refused():
    import hwsim
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.parallelism\.offload: offload: nvme "
                                                  r"needs host storage"):
        hwsim.run(_offload_scenario("nvme", storage=False))


def _data3d(storage, fold="auto"):
    return {"name": "data3d", "seed": 0,
            "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 8,
                                             "cpu": "EPYC-7742", "intra_node": "nvlink3",
                                             "local_storage": storage}},
            "workload": {"kind": "training",
                         "model": {"layers": 4, "hidden": 1024, "heads": 16, "vocab": 51200},
                         "seq_len": 2048, "precision": "bf16", "global_batch": 64,
                         "parallelism": {"tp": 2, "pp": 2, "micro_batch": 4},
                         "data": {"storage": "local", "samples": 100000,
                                  "sample_bytes": "8KiB", "access": "random"},
                         "optimizer": "adam", "steps": 3, "fold": fold}}


def test_input_pipeline_feeds_the_first_stage_of_a_3d_job():
    """The first stage's TP rank 0 of every replica reads each micro-batch (random 8 KiB reads:
    IOPS-bound on a disk), so a disk makes the step storage-bound where NVMe keeps up."""
    import hwsim
    nv, hdd = (hwsim.run(_data3d(s)) for s in ("nvme-gen4", "hdd-7200"))
    reads = nv.events[nv.events.kind == "storage"]
    assert set(reads["rank"]) == {0, 2}  # stage 0, TP rank 0 of replicas 0 and 1
    batch = reads["name"].str.extract(r"read\.step(\d+)")[0].astype(int)
    used = reads[batch < 3 * 8]           # 3 steps x 8 micro-batches of 4 per replica
    assert used.bytes.sum() == pytest.approx(3 * 64 * 8 * 1024)  # every sample, every step
    # and the loaders' run-ahead past the last step: 1 worker x prefetch 2 batches each
    assert reads[batch >= 3 * 8].bytes.sum() == pytest.approx(2 * 2 * 4 * 8 * 1024)
    assert nv.summary["time_data_loading_s"] < 0.01 * nv.summary["step_time_s"]
    assert hdd.summary["step_time_s"] > nv.summary["step_time_s"]
    assert hdd.summary["bottleneck"] == "storage" and hdd.summary["time_data_loading_s"] > 0


def test_fold_true_with_an_input_pipeline_is_refused():
    import hwsim
    with pytest.raises(hwsim.ScenarioError, match=r"workload\.fold: fold: true with an input "
                                                  r"pipeline"):
        hwsim.run(_data3d("nvme-gen4", fold=True))


def test_parameter_offload_fetches_every_shard_before_its_gather():
    """ZeRO-Infinity: with zero 3 and offload_params, weights leave device memory and each
    block's shard crosses PCIe before every all-gather (forward and backward, every
    micro-batch); the step is slower than keeping the shards on the device."""
    import hwsim
    base = _offload_scenario("cpu")
    base["workload"]["parallelism"].update(zero=3)
    on = copy.deepcopy(base)
    on["workload"]["parallelism"]["offload_params"] = True
    a, b = hwsim.run(base), hwsim.run(on)
    assert a.summary["memory_weights_gb"] > 0 and b.summary["memory_weights_gb"] == 0.0
    fetch = b.events[(b.events.kind == "flow") & b.events.name.str.startswith(
        "offload.params_fetch")]
    blocks = 8 + 2  # layers, embedding, head
    assert len(fetch) == 2 * blocks * 1 * 2 * 8  # F and B, 1 micro-batch, 2 steps, 8 ranks
    assert b.summary["step_time_s"] > a.summary["step_time_s"]
    bad = copy.deepcopy(on)
    bad["workload"]["parallelism"]["zero"] = 1
    with pytest.raises(hwsim.ScenarioError, match="offload_params needs zero=3"):
        hwsim.run(bad)
