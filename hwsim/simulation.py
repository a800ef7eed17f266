"""One run: a topology graph, jobs and the engine wired together, and the Result built from the
records. The only module that assembles the layers."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import simpy

from hwsim.analysis.bottleneck import bottleneck, bottleneck_label, critical_path_breakdown
from hwsim.analysis.parallelism import rank_events, step_breakdown, step_summary
from hwsim.analysis.result import Result
from hwsim.engine import Recorder
from hwsim.analysis.serving import (in_system_mean, request_table, serving_bottleneck,
                                    serving_summary)
from hwsim.jobs.parallel import ParallelPlan, ParallelTrainingJob
from hwsim.jobs.batching import BatchingJob, BatchingPlan
from hwsim.jobs.dataloader import DataLoaderJob, DataLoaderPlan
from hwsim.jobs.serving import ServingJob, ServingPlan
from hwsim.jobs.system import System
from hwsim.jobs.training import TrainingJob, TrainingPlan, slowest_step_ends
from hwsim.jobs.transfer import TransferJob, TransferPlan

__all__ = ["simulate"]


def simulate(graph, job: TrainingPlan | ParallelPlan | DataLoaderPlan | Sequence[TransferPlan], *,
             name: str,
             seed: int = 0,
             config: dict[str, Any] | None = None, utilization_bin_s: float | None = None,
             until_s: float | None = None) -> Result:
    """Run *job* on the hardware *graph* and return its :class:`Result`.

    The run owns one ``numpy.random.Generator`` seeded with *seed*; nothing is global, so two
    runs in one process do not interfere and the same inputs give identical frames.
    """
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    recorder = Recorder()
    system = System(env, graph, recorder, rng)
    if isinstance(job, TrainingPlan):
        runner: Any = TrainingJob(system, job)
    elif isinstance(job, ParallelPlan):
        runner = ParallelTrainingJob(system, job)
    elif isinstance(job, ServingPlan):
        runner = ServingJob(system, job)
    elif isinstance(job, BatchingPlan):
        runner = BatchingJob(system, job)
    elif isinstance(job, DataLoaderPlan):
        runner = DataLoaderJob(system, job)
    else:
        runner = TransferJob(system, list(job))
    runner.start()
    env.run(until=until_s)
    end = env.now
    if isinstance(runner, (ServingJob, BatchingJob)):
        return _serving_result(runner, recorder, end, name, config, utilization_bin_s)
    if isinstance(runner, (TrainingJob, ParallelTrainingJob)):  # rank 0's events suffice
        summary, breakdown = _training_summary(runner, recorder.events_frame(rank=0))
    elif isinstance(runner, DataLoaderJob):
        summary, breakdown = _dataloader_summary(runner, recorder.events_frame(rank=0))
    else:
        summary, breakdown = _transfer_summary(runner, recorder.events_frame())
    summary["simulated_time_s"] = end
    summary["flows"] = system.net.flows_finished
    # the full frames are built when first read
    return Result(name=name, summary=summary, events=recorder.events_frame,
                  utilization=lambda: recorder.utilization_frame(end, utilization_bin_s),
                  memory=recorder.memory_frame, bottleneck=breakdown,
                  config=dict(config or {}))


def _attach_bottleneck(summary: dict, breakdown: pd.DataFrame) -> None:
    if breakdown.empty:
        summary.update(bottleneck="none", bottleneck_share=0.0, bottleneck_label="nothing ran")
        return
    cat, share = bottleneck(breakdown)
    summary.update(bottleneck=cat, bottleneck_share=share, bottleneck_label=bottleneck_label(cat))


def _training_summary(job: TrainingJob | ParallelTrainingJob, events: pd.DataFrame
                      ) -> tuple[dict, pd.DataFrame]:
    plan = job.plan
    parallel = isinstance(job, ParallelTrainingJob)
    devices = plan.devices if parallel else plan.ranks
    spec = job.system.device(devices[0]).spec
    n = len(devices)
    if parallel:  # every stage's ops are one TP (and CP) rank's: the model is tp x cp x stages
        models = [m for stage in plan.stages for m in stage]
        per_mb_flops = plan.tp * plan.cp * sum(m.model_flops for m in models)
        per_mb_hw = plan.tp * plan.cp * sum(m.hardware_flops for m in models)
        samples_mb = models[0].samples
        tokens = models[0].tokens_per_sample
        replicas = plan.dp
        params = models[0].extra.get("total_params") or plan.tp * sum(m.params for m in models)
    else:
        models = [plan.model]
        per_mb_flops, per_mb_hw = plan.model.model_flops, plan.model.hardware_flops
        samples_mb, tokens = plan.model.samples, plan.model.tokens_per_sample
        replicas, params = n, plan.model.params
    s: dict[str, Any] = {
        "devices": n,
        "device_type": spec.id,
        "fits": job.fits,
        "memory_per_device_gb": sum(job.breakdown.values()) / 1e9,
        "memory_capacity_per_device_gb": spec.memory_bytes / 1e9,
        "params": params,
        "global_batch": samples_mb * plan.micro_batches * replicas,
        "micro_batches": plan.micro_batches,
        "steps_simulated": plan.steps if job.fits else 0,
        "total_steps": getattr(plan, "total_steps", None) or plan.steps,
        "folded": bool(getattr(plan, "fold", False)),
        "simulated_ranks": len(getattr(job, "simulated", devices)),
    }
    s.update({f"memory_{k}_gb": v / 1e9 for k, v in job.breakdown.items()})
    if not job.fits:
        s.update(step_time_s=None, samples_per_s=None, model_tflops_per_gpu=None, mfu=None,
                 time_to_train_s=None, bottleneck="memory_capacity", bottleneck_share=1.0,
                 bottleneck_label=f"does not fit: {job.oom}")
        s.update(step_summary(None, None))
        return s, pd.DataFrame({"category": ["memory_capacity"], "seconds": [0.0], "share": [1.0]})
    ends = np.asarray(slowest_step_ends(job.step_ends))
    steps = np.diff(np.concatenate([[0.0], ends]))
    # Steady state: drop the first step (pipeline fill, no prefetched batch yet) when there are
    # more, and average the rest: an input-bound rank takes its batches in bursts (loader
    # workers finish together), so the mean, not the median, gives the throughput.
    steady = steps[1:] if len(steps) > 1 else steps
    step_time = float(np.mean(steady))
    model_flops_step = per_mb_flops * plan.micro_batches * replicas
    hardware_flops_step = per_mb_hw * plan.micro_batches * replicas
    s["step_time_s"] = step_time
    s["first_step_s"] = float(steps[0])
    s["samples_per_s"] = s["global_batch"] / step_time
    if tokens > 1:
        s["tokens_per_s"] = s["samples_per_s"] * tokens
    s["model_flops_per_step"] = model_flops_step
    s["model_tflops_per_gpu"] = model_flops_step / step_time / n / 1e12
    s["hardware_tflops_per_gpu"] = hardware_flops_step / step_time / n / 1e12
    s["mfu"] = model_flops_step / step_time / (n * spec.peak(plan.precision))
    total = s["total_steps"]
    s["time_to_train_s"] = float(ends[-1] + (total - len(ends)) * step_time)
    # Rank 0's critical path over the steady-state steps (the first step too when it is the only).
    start, end = (float(ends[0]) if len(ends) > 1 else 0.0), float(ends[-1])
    mine = rank_events(events, job=plan.job, rank=0, device=devices[0], devices=devices)
    breakdown = critical_path_breakdown(mine, start_s=start, end_s=end)
    parts = step_breakdown(mine, start_s=start, end_s=end,
                           optimizer_names={op.name for m in models for op in m.optimizer})
    _attach_bottleneck(s, breakdown)
    s.update(step_summary(parts, step_time))
    loader = (getattr(job, "loaders", None) or {}).get(0)
    if loader is not None and end > start:  # rank 0's steps waiting for their batch
        s["input_wait_share"] = sum(max(0.0, min(b, end) - max(a, start))
                                    for a, b in loader.waits) / (end - start)
    return s, breakdown


def _dataloader_summary(job: DataLoaderJob, events: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Accelerator utilization over the steady state (the second half of the steps: the first
    fill every worker's prefetch queue), throughput and what rank 0 waited for."""
    p = job.plan
    ends = np.asarray(slowest_step_ends(job.step_ends))
    half = len(ends) // 2
    start = float(ends[half - 1]) if half >= 1 else 0.0
    steps = len(ends) - half
    wall = float(ends[-1]) - start
    step_time = wall / steps
    s: dict[str, Any] = {
        "accelerators": p.accelerators,
        "step_time_s": step_time,
        "first_step_s": float(ends[0]),
        "samples_per_s": p.accelerators * p.batch / step_time,
        "read_bytes_per_s": p.accelerators * p.batch * p.data.sample_bytes / step_time,
        "accelerator_utilization": min(1.0, p.computation_time_s / step_time),
        "steps_simulated": p.steps,
    }
    breakdown = critical_path_breakdown(events, job=p.job, start_s=start, end_s=float(ends[-1]))
    _attach_bottleneck(s, breakdown)
    return s, breakdown


def _transfer_summary(job: TransferJob, events: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    s: dict[str, Any] = {"transfers": len(job.plans), "transfers_failed": len(job.failed)}
    total = 0.0
    for p in job.plans:
        key = p.name.replace(" ", "_")
        if p.name in job.failed:
            s[f"transfer_{key}_s"] = None
            s[f"transfer_{key}_error"] = job.failed[p.name]
            continue
        t0, t1 = job.results[p.name]
        s[f"transfer_{key}_s"] = t1 - t0
        s[f"transfer_{key}_gb_per_s"] = p.size_bytes / (t1 - t0) / 1e9 if t1 > t0 else math.inf
        s[f"transfer_{key}_limit"] = job.limits[p.name]
        total += p.size_bytes
    done = [job.results[p.name] for p in job.plans if p.name in job.results]
    s["bytes_moved"] = total
    s["makespan_s"] = max((t1 for _, t1 in done), default=0.0) - min((t0 for t0, _ in done), default=0.0)
    breakdown = critical_path_breakdown(events, job=job.job)
    _attach_bottleneck(s, breakdown)
    return s, breakdown


def _serving_result(job: ServingJob | BatchingJob, recorder: Recorder, end: float, name: str,
                    config: dict[str, Any] | None, bin_s: float | None) -> Result:
    plan = job.plan
    req = request_table([(q.req.id, q.replica, q.req.arrival_s, q.start_s, q.first_token_s,
                          q.end_s, q.req.prompt_tokens, q.req.output_tokens, q.preemptions)
                         for q in job.seqs])
    devices = job.devices
    spec = job.system.device(devices[0]).spec
    s: dict[str, Any] = {"devices": len(devices), "device_type": spec.id,
                         "replicas": len(plan.replicas), "fits": job.fits,
                         "memory_per_device_gb": sum(job.breakdown.values()) / 1e9,
                         "memory_capacity_per_device_gb": spec.memory_bytes / 1e9}
    s.update({f"memory_{k}_gb": v / 1e9 for k, v in job.breakdown.items()})
    if not job.fits:
        s.update(bottleneck="memory_capacity", bottleneck_share=1.0,
                 bottleneck_label=f"does not fit: {job.oom}")
        return Result(name=name, summary=s, events=recorder.events_frame,
                      utilization=lambda: recorder.utilization_frame(end, bin_s),
                      memory=recorder.memory_frame, bottleneck=pd.DataFrame(
                          {"category": ["memory_capacity"], "seconds": [0.0], "share": [1.0]}),
                      config=dict(config or {}), requests=req)
    s.update(serving_summary(req, end_s=end, slo_ttft_s=plan.slo_ttft_s,
                             slo_tpot_s=plan.slo_tpot_s))
    first = float(req["arrival_s"].min()) if len(req) else 0.0
    s["requests_in_system_mean"] = in_system_mean(job.in_system, first, end)
    batches = [b for r in job.replicas for b in r.batch_tokens]
    if batches:
        dur = np.array([b[1] - b[0] for b in batches])
        s["batch_size_mean"] = float(np.average([b[2] for b in batches], weights=dur))
        s["kv_blocks_used_max"] = int(max(b[4] for b in batches))
        s["kv_blocks_total"] = int(job.replicas[0].blocks_total)
        s["iterations"] = len(batches)
    breakdown = critical_path_breakdown(recorder.events_frame(rank=0), rank=0,
                                        start_s=first, end_s=end)
    _attach_bottleneck(s, breakdown)
    s["simulated_time_s"] = end
    iterations = pd.DataFrame(
        [(r.index, *b, r.blocks_total) for r in job.replicas for b in r.batch_tokens],
        columns=["replica", "start_s", "end_s", "batch_size", "tokens", "kv_blocks_used",
                 "prefill_tokens", "kv_blocked", "kv_blocks_total"])
    s.update(serving_bottleneck(req, iterations, breakdown))
    return Result(name=name, summary=s, events=recorder.events_frame,
                  utilization=lambda: recorder.utilization_frame(end, bin_s),
                  memory=recorder.memory_frame, bottleneck=breakdown,
                  config=dict(config or {}), requests=req, iterations=iterations)
