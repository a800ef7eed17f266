"""The summary keys of each job kind, from the finished SimPy job and rank 0's events: step time,
throughput, FLOP/s, MFU, memory, checkpoints, the critical-path bottleneck (training, data
loaders), transfer times, request latencies (serving). Called by :mod:`hwsim.simulation` once a
run is over; reads no recorder, only the frames it is given."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from hwsim.analysis.bottleneck import bottleneck, bottleneck_label, breakdown_table
from hwsim.analysis.parallelism import rank_events, step_summary, step_table
from hwsim.catalog import get_device
from hwsim.columnar import Table
from hwsim.jobs.batching import BatchingJob
from hwsim.jobs.dataloader import DataLoaderJob
from hwsim.jobs.parallel import ParallelTrainingJob
from hwsim.jobs.serving import ServingJob
from hwsim.jobs.training import TrainingJob, slowest_step_ends
from hwsim.jobs.transfer import TransferJob

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["training_summary", "dataloader_summary", "transfer_summary", "serving_job_summary",
           "does_not_fit", "IMBALANCE_NOTED"]


def does_not_fit(job: Any) -> str:
    """``bottleneck_label`` of a job that does not fit, from the same breakdown as
    ``memory_per_device_gb`` (so the two agree): ``does not fit: 1.47 TB needed per device, 80 GB
    on n0.gpu0 (weights 138 GB, gradients 138 GB, optimizer states 828 GB, activations 362
    GB)``. A job whose breakdown fits its device (a serving replica's KV cache, a training job's
    other stage) gives its own reason after the device."""
    from hwsim.units import format_quantity

    err = job.oom
    device = getattr(err, "resource", None)
    capacity = getattr(err, "capacity_bytes", None)
    needed = sum(job.breakdown.values())
    if device is None or capacity is None or needed <= capacity:
        reason = " ".join(str(err).split())
        return reason if reason.startswith("does not fit") else f"does not fit: {reason}"
    parts = ", ".join(f"{k.replace('_', ' ')} {format_quantity(v, 'B')}"
                      for k, v in job.breakdown.items() if v > 0)
    return (f"does not fit: {format_quantity(needed, 'B')} needed per device, "
            f"{format_quantity(capacity, 'B')} on {str(device).removesuffix('/memory')} "
            f"({parts})")


def _does_not_fit_breakdown() -> Table:
    return Table({"category": ["memory_capacity"], "seconds": np.array([0.0]),
                  "share": np.array([1.0])})


def _attach_bottleneck(summary: dict, breakdown: pd.DataFrame | Table) -> None:
    if not len(breakdown):
        summary.update(bottleneck="none", bottleneck_share=0.0, bottleneck_label="nothing ran")
        return
    cat, share = bottleneck(breakdown)
    summary.update(bottleneck=cat, bottleneck_share=share, bottleneck_label=bottleneck_label(cat))


def training_summary(job: TrainingJob | ParallelTrainingJob, events: pd.DataFrame | Table,
                      start_s: float = 0.0) -> tuple[dict, Table]:
    """Summary keys and critical-path breakdown of a training job that started at *start_s*,
    from rank 0's events (of every job: its own are picked by ``plan.job``)."""
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
        "device_types": ",".join(sorted({str(job.system.graph.nodes[d].get("spec", spec.id))
                                         for d in devices})),
        "fits": job.fits,
        "memory_per_device_gb": sum(job.breakdown.values()) / 1e9,
        "memory_capacity_per_device_gb": spec.memory_bytes / 1e9,
        "params": params,
        "global_batch": samples_mb * plan.micro_batches * replicas,
        "micro_batches": plan.micro_batches,
        # fewer when each step's steady phase was advanced, not simulated (hwsim.jobs.steady)
        "micro_batches_simulated": getattr(job, "m_sim", plan.micro_batches),
        "steps_simulated": plan.steps if job.fits else 0,
        "total_steps": getattr(plan, "total_steps", None) or plan.steps,
        "folded": bool(getattr(plan, "fold", False)),
        "simulated_ranks": len(getattr(job, "simulated", devices)),
    }
    s.update({f"memory_{k}_gb": v / 1e9 for k, v in job.breakdown.items()})
    if not job.fits:
        s.update(step_time_s=None, samples_per_s=None, model_tflops_per_gpu=None, mfu=None,
                 time_to_train_s=None, bottleneck="memory_capacity", bottleneck_share=None,
                 bottleneck_label=does_not_fit(job))  # never ran: no critical path
        s.update(step_summary(None, None))
        s.update(_checkpoint_summary(job, None))
        return s, _does_not_fit_breakdown()
    ends = np.asarray(slowest_step_ends(job.step_ends))
    # a checkpoint's stall falls between two step ends: it is not part of either step
    steps = _minus(np.diff(np.concatenate([[start_s], ends])), ends,
                   job.checkpoint.stalls if job.checkpoint is not None else [])
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
    # mixed clusters: the peak is each device's own (catalog id per graph node)
    ids = Counter(job.system.graph.nodes[d].get("spec", spec.id) for d in devices)
    peak = sum(k * get_device(i).peak(plan.precision) for i, k in ids.items())
    s["mfu"] = model_flops_step / step_time / peak
    total = s["total_steps"]
    s["time_to_train_s"] = float(ends[-1] - start_s + (total - len(ends)) * step_time)
    s.update(_checkpoint_summary(job, ends))
    if job.checkpoint is not None:  # the stalls of the checkpoints after the simulated steps
        every = job.checkpoint.plan.every_steps
        taken = sum(1 for _, a, _, _ in job.checkpoint.saves if a < ends[-1])
        stall = s["checkpoint_stall_s"]
        s["time_to_train_s"] += max(0, total // every - taken) * stall
        s["checkpoint_stall_total_s"] = max(0, total // every - taken) * stall + sum(
            b - a for _, a, b, _ in job.checkpoint.saves if a < ends[-1])
        s["checkpoint_overhead_share"] = stall / (every * step_time + stall)
    # Rank 0's critical path over the steady-state steps (the first step too when it is the only).
    start, end = (float(ends[0]) if len(ends) > 1 else start_s), float(ends[-1])
    mine = rank_events(events, job=plan.job, rank=0, device=devices[0], devices=devices)
    breakdown = breakdown_table(mine, start_s=start, end_s=end)
    parts = step_table(mine, start_s=start, end_s=end,
                           optimizer_names={op.name for m in models for op in m.optimizer})
    _attach_bottleneck(s, breakdown)
    s.update(_imbalance(job))
    if s.get("compute_imbalance", 1.0) > IMBALANCE_NOTED:
        s["bottleneck_label"] += (f"; slowest device {s['compute_busy_max_device']} (compute "
                                  f"busy {s['compute_imbalance']:.2f}x the median device)")
    s.update(step_summary(parts, step_time))
    loader = (getattr(job, "loaders", None) or {}).get(0)
    if loader is not None and end > start:  # rank 0's steps waiting for their batch
        s["input_wait_share"] = sum(max(0.0, min(b, end) - max(a, start))
                                    for a, b in loader.waits) / (end - start)
    return s, breakdown


def dataloader_summary(job: DataLoaderJob, events: pd.DataFrame | Table) -> tuple[dict, Table]:
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
    breakdown = breakdown_table(events, job=p.job, start_s=start, end_s=float(ends[-1]))
    _attach_bottleneck(s, breakdown)
    return s, breakdown


IMBALANCE_NOTED = 1.10
"""A device whose compute stream is busier than the median device by more than this factor is
named in ``bottleneck_label`` (a straggler, or an unbalanced pipeline stage)."""


def _imbalance(job: TrainingJob | ParallelTrainingJob) -> dict[str, Any]:
    """The busiest simulated device's compute time over the median device's:
    ``compute_busy_max_device`` and ``compute_imbalance`` (1 when all are alike)."""
    devs = job.devices.values() if isinstance(job.devices, dict) else job.devices
    busy = {d.node: d.compute.busy_s for d in devs}
    if len(busy) < 2:
        return {}
    top = max(busy, key=busy.__getitem__)
    median = float(np.median(list(busy.values())))
    return {"compute_busy_max_device": top,
            "compute_imbalance": busy[top] / median if median > 0 else 1.0}


def _minus(steps: np.ndarray, ends: np.ndarray, stalls: list[tuple[float, float]]
           ) -> np.ndarray:
    """*steps* (durations ending at *ends*) less the time of *stalls* inside each."""
    out = steps.astype(float).copy()
    starts = ends - steps
    for a, b in stalls:
        out -= np.clip(np.minimum(ends, b) - np.maximum(starts, a), 0.0, None)
    return out


def _checkpoint_summary(job: TrainingJob | ParallelTrainingJob, ends: np.ndarray | None
                        ) -> dict[str, Any]:
    """The ``checkpoint_*`` keys (docs/model.md, Checkpoints); absent without checkpoints, None
    when no step ran."""
    ck = job.checkpoint
    if ck is None:
        return {}
    plan = ck.plan
    s: dict[str, Any] = {"checkpoint_bytes": plan.total_bytes,
                         "checkpoint_bytes_per_rank_max": plan.max_rank_bytes,
                         "checkpoint_every_steps": plan.every_steps,
                         "checkpoint_mode": plan.mode, "checkpoints_taken": len(ck.saves)}
    done = [x for x in ck.saves if not math.isnan(x[3])]
    if ends is None or not done:
        s.update(checkpoint_write_s=None, checkpoint_stall_s=None, checkpoint_restore_s=None,
                 checkpoint_overhead_share=None, checkpoint_stall_total_s=None)
        return s
    s["checkpoint_write_s"] = float(np.mean([d - a for _, a, _, d in done]))
    s["checkpoint_stall_s"] = float(np.mean([b - a for _, a, b, _ in ck.saves]))
    s["checkpoint_restore_s"] = ck.restore_s
    return s


def transfer_summary(job: TransferJob, events: pd.DataFrame | Table) -> tuple[dict, Table]:
    # a transfer whose destination cannot hold its bytes never starts: the job does not fit
    s: dict[str, Any] = {"transfers": len(job.plans), "transfers_failed": len(job.failed),
                         "fits": not job.failed}
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
    breakdown = breakdown_table(events, job=job.job)
    _attach_bottleneck(s, breakdown)
    return s, breakdown


def serving_job_summary(job: ServingJob | BatchingJob, events: pd.DataFrame, end: float
                        ) -> tuple[dict, pd.DataFrame, pd.DataFrame,
                                   Callable[[], pd.DataFrame] | pd.DataFrame]:
    """Summary keys, critical-path breakdown, request table and iteration table (a function
    that builds it: :class:`Result` builds it when read) of a serving job whose last activity
    ended at *end*, from rank 0's events (its own picked by job). The summary's iteration keys
    come from the replicas' running totals, not the table."""
    import pandas as pd

    from hwsim.analysis.serving import (in_system_mean, prefix_summary, request_table,
                                        serving_bottleneck, serving_summary)

    plan = job.plan
    req = request_table([(q.req.id, q.replica, q.req.arrival_s, q.start_s, q.first_token_s,
                          q.end_s, q.req.prompt_tokens, q.req.output_tokens, q.preemptions,
                          q.req.prefix_tokens, getattr(q, "hit_tokens", 0))
                         for q in job.seqs])
    devices = job.devices
    spec = job.system.device(devices[0]).spec
    s: dict[str, Any] = {"devices": len(devices), "device_type": spec.id,
                         "replicas": len(plan.replicas), "fits": job.fits,
                         "memory_per_device_gb": sum(job.breakdown.values()) / 1e9,
                         "memory_capacity_per_device_gb": spec.memory_bytes / 1e9}
    s.update({f"memory_{k}_gb": v / 1e9 for k, v in job.breakdown.items()})
    if not job.fits:
        s.update(bottleneck="memory_capacity", bottleneck_share=None,
                 bottleneck_label=does_not_fit(job))  # never ran: no critical path
        return s, _does_not_fit_breakdown().to_pandas(), req, pd.DataFrame()
    s.update(serving_summary(req, end_s=end, slo_ttft_s=plan.slo_ttft_s,
                             slo_tpot_s=plan.slo_tpot_s))
    if getattr(job, "speculation", None) is not None:  # speculative decoding's counts
        s.update(job.speculation.summary())
    if getattr(plan, "prefix_caching", False):
        s.update(prefix_summary(req, saved_tokens=sum(q.saved_tokens for q in job.seqs),
                                evicted_blocks=sum(r.cache.evictions for r in job.replicas)))
    if getattr(job, "experts", None) is not None:  # expert parallelism's load and all-to-all
        s.update(job.experts.summary())
    first = float(req["arrival_s"].min()) if len(req) else 0.0
    s["requests_in_system_mean"] = in_system_mean(job.in_system, first, end)
    count, busy, batch_busy, blocked_busy, used_max = _iteration_totals(job.replicas)
    if count:
        s["batch_size_mean"] = batch_busy / busy  # weighted by the iterations' seconds
        s["kv_blocks_used_max"] = int(used_max)
        s["kv_blocks_total"] = int(job.replicas[0].blocks_total)
        s["iterations"] = count
    breakdown = breakdown_table(events, job=plan.job, rank=0, start_s=first,
                                end_s=end).to_pandas()
    _attach_bottleneck(s, breakdown)
    s["simulated_time_s"] = end
    s.update(serving_bottleneck(req, blocked_busy / busy if busy > 0 else 0.0, breakdown,
                                slo_ttft_s=plan.slo_ttft_s))
    replicas = job.replicas
    return s, breakdown, req, lambda: _iterations(replicas)


_ITERATION_COLUMNS = ["replica", "start_s", "end_s", "batch_size", "tokens", "kv_blocks_used",
                      "prefill_tokens", "kv_blocked", "kv_blocks_total", "kv_blocks_cached",
                      "kv_blocks_cached_idle"]


def _iteration_totals(replicas: Sequence[Any]) -> tuple[int, float, float, float, int]:
    """Iterations, their seconds, batch size times seconds, seconds with the queue's head
    blocked on KV blocks, and the most blocks in use, over every replica: a serving replica's
    :class:`~hwsim.jobs.serving_log.IterationLog` keeps them as it goes; a classic batching
    replica's ``batch_tokens`` tuples are summed here."""
    count, busy, batch_busy, blocked_busy, used_max = 0, 0.0, 0.0, 0.0, 0
    for r in replicas:
        log = r.batch_tokens
        if not len(log):
            continue
        count += len(log)
        if hasattr(log, "busy"):
            busy += log.busy
            batch_busy += log.batch_busy
            blocked_busy += log.blocked_busy
            used_max = max(used_max, log.used_max)
            continue
        t0, t1, batch, _, used, _, blocked = (np.asarray(c) for c in zip(*log))
        dur = t1 - t0
        busy += float(dur.sum())
        batch_busy += float((batch * dur).sum())
        blocked_busy += float(dur[blocked.astype(bool)].sum())
        used_max = max(used_max, int(used.max()))
    return count, busy, batch_busy, blocked_busy, used_max


def _iterations(replicas: Sequence[Any]) -> pd.DataFrame:
    """One row per iteration of every replica: a serving replica's
    :class:`~hwsim.jobs.serving_log.IterationLog` columns, or a classic batching replica's
    ``batch_tokens`` records ``(start, end, batch size, tokens, KV blocks used, prefill tokens,
    KV-blocked)`` (no prefix cache: 0), built column by column."""
    import pandas as pd

    parts: list[list] = [[] for _ in _ITERATION_COLUMNS]
    for r in replicas:
        log = r.batch_tokens
        if not len(log):
            continue
        n = len(log)
        if hasattr(log, "columns"):
            cols = list(log.columns().values())
        else:
            cols = [np.asarray(c) for c in zip(*log)] + [np.zeros(n, np.int64)] * 2
        for i, v in enumerate([np.full(n, r.index), *cols[:7], np.full(n, r.blocks_total),
                               *cols[7:9]]):
            parts[i].append(v)
    if not parts[0]:
        return pd.DataFrame(columns=_ITERATION_COLUMNS)
    return pd.DataFrame({c: np.concatenate(p) for c, p in zip(_ITERATION_COLUMNS, parts)},
                        columns=_ITERATION_COLUMNS)
