"""One run: a topology graph, jobs and the engine wired together, and the Result built from the
records. The only module that assembles the layers."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
import simpy

from hwsim.analysis.bottleneck import bottleneck, bottleneck_label, critical_path_breakdown
from hwsim.analysis.parallelism import rank_events, step_breakdown, step_summary
from hwsim.analysis.result import Result
from hwsim.catalog import get_device, get_storage
from hwsim.engine import Recorder
from hwsim.analysis.serving import (in_system_mean, prefix_summary, request_table,
                                    serving_bottleneck, serving_summary)
from hwsim.jobs.parallel import ParallelPlan, ParallelTrainingJob
from hwsim.jobs.resilience import FAILURE_COLUMNS, FailureSpec, run_plan, simulate_run
from hwsim.jobs.batching import BatchingJob, BatchingPlan
from hwsim.jobs.dataloader import DataLoaderJob, DataLoaderPlan
from hwsim.jobs.epochs import epoch_phases, epoch_steps_time
from hwsim.jobs.serving import ServingJob, ServingPlan
from hwsim.jobs.system import System
from hwsim.jobs.training import TrainingJob, TrainingPlan, slowest_step_ends
from hwsim.jobs.transfer import TransferJob, TransferPlan
from hwsim.progress import progress, shown
from hwsim.topology import component_counts

__all__ = ["simulate", "simulate_jobs", "collective_time"]


def simulate(graph, job: TrainingPlan | ParallelPlan | DataLoaderPlan | Sequence[TransferPlan], *,
             name: str,
             seed: int = 0,
             config: dict[str, Any] | None = None, utilization_bin_s: float | None = None,
             until_s: float | None = None, failures: FailureSpec | None = None) -> Result:
    """Run *job* on the hardware *graph* and return its :class:`Result`.

    A training job with *failures* is then played as a whole run with failures and checkpoints
    (:func:`_whole_run`).

    The run owns one ``numpy.random.Generator`` seeded with *seed*; nothing is global, so two
    runs in one process do not interfere and the same inputs give identical frames.
    """
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    recorder = Recorder()
    system = System(env, graph, recorder, rng)
    if isinstance(job, ParallelPlan) and job.steady_state and until_s is not None:
        job = replace(job, steady_state=False)  # a time limit cuts the run the advance skips
    runner = _runner(system, job)
    runner.start()
    _run(env, [runner], until_s, name)
    end = env.now
    if isinstance(runner, ParallelTrainingJob) and runner.compressed and runner.fits:
        if not runner.periodic:  # the steady phase did not repeat: simulate every micro-batch
            return simulate(graph, replace(job, steady_state=False), name=name, seed=seed,
                            config=config, utilization_bin_s=utilization_bin_s,
                            failures=failures)
        end += runner.advance()
    extra: dict[str, pd.DataFrame] = {}
    if isinstance(runner, (ServingJob, BatchingJob)):
        return _serving_result(runner, recorder, end, name, config, utilization_bin_s)
    if isinstance(runner, (TrainingJob, ParallelTrainingJob)):  # rank 0's events suffice
        summary, breakdown = _training_summary(runner, recorder.events_frame(rank=0))
        if summary["fits"] and isinstance(job, (TrainingPlan, ParallelPlan)):
            _cached_epochs(graph, job, summary, seed)
            summary.update(epoch_phases(job, summary, slowest_step_ends(runner.step_ends)))
        if summary["fits"] and failures is not None:
            extra["failures"] = _whole_run(summary, failures, graph, runner,
                                           system.rng)
    elif isinstance(runner, DataLoaderJob):
        summary, breakdown = _dataloader_summary(runner, recorder.events_frame(rank=0))
    else:
        summary, breakdown = _transfer_summary(runner, recorder.events_frame())
    summary["simulated_time_s"] = end
    summary["flows"] = system.net.flows_finished
    if isinstance(runner, (TrainingJob, ParallelTrainingJob)):
        extra["steps"] = _steps_frame(runner)
    # the full frames are built when first read
    return Result(name=name, summary=summary, events=recorder.events_frame,
                  utilization=_utilization(recorder, end, utilization_bin_s, summary),
                  memory=recorder.memory_frame, loads=recorder.loads_frame,
                  slots=recorder.slots, device_specs=_device_specs(graph), bottleneck=breakdown,
                  config=dict(config or {}), **extra)


def _cached_epochs(g, job: TrainingPlan | ParallelPlan, summary: dict,
                   seed: int) -> None:
    """Extrapolate ``time_to_train_s`` over the epochs the simulated steps did not reach, with
    the page cache: epoch *e* finds ``h = min(M / D, 1 - (1 - 1/S)^e)`` of the dataset (D bytes)
    in the host memory (M bytes) of each of the S servers that read it
    (:class:`~hwsim.jobs.system.PageCache`), and a step of it takes ``max(t_cached, t * (1 -
    h))``: t the simulated (first-epoch) step, t_cached that of a re-run with the data in host
    memory. Sets ``cached_step_time_s``; nothing changes when the simulated steps already span
    an epoch, the job has no storage to read, or nothing is left to extrapolate."""
    d = job.data
    total, sim, t = job.total_steps or job.steps, job.steps, summary.get("step_time_s")
    if d is None or d.storage is None or not d.page_cache or not d.epoch_batches or t is None:
        return
    per_epoch = d.epoch_batches / job.micro_batches
    if total <= sim or sim > per_epoch or total <= per_epoch:
        return
    hosts = set(job.hosts) if isinstance(job, TrainingPlan) else {n[0] for n in job.host_nodes}
    node = g.nodes[next(iter(hosts))]
    memory = (get_storage(node["spec"]).capacity_bytes * node.get("count", 1)
              if node.get("kind") == "memory" else 0.0)
    fits = min(1.0, memory / d.dataset_bytes) if d.dataset_bytes > 0 else 0.0
    cached = simulate(g, replace(job, data=replace(d, storage=None)), name="page-cache",
                      seed=seed).summary.get("step_time_s") or t
    time = summary["time_to_train_s"] - (total - sim) * t
    summary["time_to_train_s"] = time + epoch_steps_time(sim, total, per_epoch, t, cached, fits,
                                                          len(hosts))
    summary["cached_step_time_s"] = cached


def _does_not_fit(job: Any) -> str:
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


def _whole_run(s: dict, spec: FailureSpec, graph, job: TrainingJob | ParallelTrainingJob,
               rng: np.random.Generator) -> pd.DataFrame:
    """The run-scale hybrid (docs/model.md, "Failures and whole runs"): the whole run of
    ``total_steps`` steady-state steps with failures and checkpoints, on a Generator spawned
    from the run's (so the steps' own draws do not shift the failures). Updates the summary
    *s* (``time_to_train_s`` then includes failures and checkpoints); returns the per-failure
    table."""
    plan = job.plan
    parallel = isinstance(job, ParallelTrainingJob)
    devices = list(plan.devices if parallel else plan.ranks)
    run = run_plan(spec, step_time_s=s["step_time_s"], total_steps=s["total_steps"],
                   ideal_s=s["time_to_train_s"] - (s.get("checkpoint_stall_total_s") or 0.0),
                   counts=component_counts(graph, devices),
                   replicas=plan.dp if parallel else len(devices), summary=s)
    out, rows = simulate_run(run, rng.spawn(1)[0])
    s.update(out)
    return pd.DataFrame(rows, columns=list(FAILURE_COLUMNS))


def simulate_jobs(graph, jobs: Sequence[tuple[str, Any, float]], *, name: str, seed: int = 0,
                  config: dict[str, Any] | None = None, utilization_bin_s: float | None = None,
                  until_s: float | None = None) -> Result:
    """Run several jobs on one hardware *graph* at once and return one :class:`Result`.

    *jobs* lists ``(name, plan, start_s)``: each plan (as :func:`simulate` takes, its events
    tagged with its job name) is started at ``start_s``; times inside a plan (transfer starts,
    request arrivals) count from there. All run in one SimPy environment over one
    :class:`System`, so they share links, storage channels and host streams as the flow model
    shares bandwidth. The summary holds whole-run keys (``jobs``, ``devices``, ``fits``,
    ``simulated_time_s``, ``flows``) and, flat, each job's summary keys as
    ``job.<name>.<key>`` plus ``job.<name>.start_s`` / ``end_s``; ``bottleneck``, ``requests``
    and ``iterations`` have a ``job`` column.
    """
    env = simpy.Environment()
    recorder = Recorder()
    system = System(env, graph, recorder, np.random.default_rng(seed))
    if len(jobs) > 1:
        # A closed-form collective time holds only for a group alone on its links; a job that
        # arrives later may cross them. Claimed by the run, no channel is any group's alone:
        # every collective runs as flows and sees the other jobs' traffic.
        system.claim("shared cluster", list(system.net.channels))
    runners = []
    for job_name, plan, start in jobs:
        runner = _runner(system, _arriving(plan, start), job_name)
        runners.append(runner)
        if start > 0:
            env.process(_start_at(env, runner, start))
        else:
            runner.start()
    _run(env, runners, until_s, name)
    end = env.now
    events = recorder.events_frame()
    first = recorder.events_frame(rank=0)
    summary: dict[str, Any] = {"jobs": len(jobs)}
    parts, requests, iterations = [], [], []
    for (job_name, _, start), runner in zip(jobs, runners):
        mine = events["end_s"][events["job"] == job_name]
        job_end = float(mine.max()) if len(mine) else start  # nothing ran: does not fit
        if isinstance(runner, (ServingJob, BatchingJob)):
            s, breakdown, req, its = _serving_summary(runner, first, job_end)
            requests.append(req.assign(job=job_name))
            iterations.append(its.assign(job=job_name))
        elif isinstance(runner, (TrainingJob, ParallelTrainingJob)):
            s, breakdown = _training_summary(runner, first, start_s=start)
        else:
            s, breakdown = _transfer_summary(runner, events)
        s.update(start_s=start, end_s=job_end)
        summary.update({f"job.{job_name}.{k}": v for k, v in s.items()})
        parts.append(breakdown.assign(job=job_name))
    summary["devices"] = sum(summary.get(f"job.{n}.devices") or 0 for n, _, _ in jobs)
    summary["fits"] = all(summary.get(f"job.{n}.fits", True) for n, _, _ in jobs)
    summary["simulated_time_s"] = end
    summary["flows"] = system.net.flows_finished
    steps = [_steps_frame(r, start) for (_, _, start), r in zip(jobs, runners)
             if isinstance(r, (TrainingJob, ParallelTrainingJob))]

    def first_job(frames: list[pd.DataFrame]) -> pd.DataFrame:  # the job column first
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True)
        return df[["job", *[c for c in df.columns if c != "job"]]]
    return Result(name=name, summary=summary, events=events,
                  utilization=_utilization(recorder, end, utilization_bin_s, summary),
                  memory=recorder.memory_frame, loads=recorder.loads_frame,
                  slots=recorder.slots, device_specs=_device_specs(graph),
                  steps=pd.concat(steps, ignore_index=True) if steps else pd.DataFrame(),
                  bottleneck=first_job(parts),
                  config=dict(config or {}), requests=first_job(requests),
                  iterations=first_job(iterations))


MAX_UTILIZATION_BINS = 10_000
"""Time bins ``Result.utilization`` may have; a finer ``outputs.utilization_bin_s`` is coarsened
(``hwsim.utilization(result, ..., bin_s=...)`` still gives any resolution for some resources)."""


def _utilization(recorder: Recorder, end: float, bin_s: float | None, summary: dict):
    """The builder of ``Result.utilization`` over ``[0, end]`` in bins of *bin_s* (None: 100
    bins), at most :data:`MAX_UTILIZATION_BINS` of them: a finer bin is coarsened to ``end /
    MAX_UTILIZATION_BINS`` and *summary* says so (``utilization_bin_s``, ``utilization_note``)
    rather than allocating a table of billions of rows."""
    if bin_s is not None and end > 0 and end / bin_s > MAX_UTILIZATION_BINS:
        coarse = end / MAX_UTILIZATION_BINS
        summary["utilization_bin_s"] = coarse
        summary["utilization_note"] = (
            f"outputs.utilization_bin_s {bin_s:.3g} s would make {end / bin_s:.3g} bins over the "
            f"{end:.3g} s simulated; coarsened to {coarse:.3g} s ({MAX_UTILIZATION_BINS:,} bins, "
            f"the most a run records)")
        bin_s = coarse
    return lambda: recorder.utilization_frame(end, bin_s)


def _device_specs(graph) -> dict[str, str]:
    """Compute device node -> catalog id (``Result.device_specs``)."""
    return {str(n): str(d["spec"]) for n, d in graph.nodes(data=True)
            if d.get("kind") in ("gpu", "tpu", "cpu") and d.get("spec")}


def _steps_frame(job: TrainingJob | ParallelTrainingJob, start_s: float = 0.0) -> pd.DataFrame:
    """``Result.steps``: ``job, step, start_s, end_s`` of every simulated step (the slowest
    rank's ends), empty when the job does not fit."""
    ends = list(slowest_step_ends(job.step_ends)) if job.fits else []
    return pd.DataFrame({"job": job.plan.job, "step": np.arange(len(ends), dtype=np.int64),
                         "start_s": np.asarray([start_s, *ends[:-1]], float)[:len(ends)],
                         "end_s": np.asarray(ends, float)}, columns=["job", "step", "start_s",
                                                                       "end_s"])


def _run(env: simpy.Environment, runners: Sequence[Any], until_s: float | None,
         label: str) -> None:
    """``env.run(until_s)``; on a terminal (:func:`hwsim.progress.shown`), stepped with a bar of
    the jobs' steps done (training) or requests finished (serving), so an unobserved run pays
    nothing."""
    counts = [_done_of(r) for r in runners]
    if not shown() or any(c is None for c in counts):
        env.run(until=until_s)
        return
    limit = math.inf if until_s is None else until_s
    with progress(sum(total for _, total in counts), label) as bar:
        while env.peek() < limit:
            for _ in range(4096):
                if env.peek() >= limit:
                    break
                env.step()
            bar.update(sum(done() for done, _ in counts))
    env.run(until=until_s)


def _done_of(runner: Any) -> tuple[Any, int] | None:
    """(a function: units done so far, the units in all) of a job, None if it has no count."""
    if isinstance(runner, (ServingJob, BatchingJob)):
        return (lambda: runner.finished), len(runner.plan.requests)
    if isinstance(runner, (TrainingJob, ParallelTrainingJob, DataLoaderJob)):
        return (lambda: max(map(len, runner.step_ends), default=0)), runner.plan.steps
    return None


def _runner(system: System, plan: Any, name: str | None = None) -> Any:
    """The SimPy job that runs *plan* (a transfer list's events tagged *name*)."""
    if isinstance(plan, TrainingPlan):
        return TrainingJob(system, plan)
    if isinstance(plan, ParallelPlan):
        return ParallelTrainingJob(system, plan)
    if isinstance(plan, ServingPlan):
        return ServingJob(system, plan)
    if isinstance(plan, BatchingPlan):
        return BatchingJob(system, plan)
    if isinstance(plan, DataLoaderPlan):
        return DataLoaderJob(system, plan)
    return TransferJob(system, list(plan), *([name] if name else []))


def _arriving(plan: Any, start: float) -> Any:
    """*plan* for a job that starts at *start*: a serving plan's request arrivals (times from
    the job's start) moved to run time."""
    if start > 0 and isinstance(plan, (ServingPlan, BatchingPlan)):
        return replace(plan, requests=tuple(replace(r, arrival_s=r.arrival_s + start)
                                            for r in plan.requests))
    return plan


def _start_at(env: simpy.Environment, runner: Any, start: float):
    yield env.timeout(start)
    runner.start()


def _attach_bottleneck(summary: dict, breakdown: pd.DataFrame) -> None:
    if breakdown.empty:
        summary.update(bottleneck="none", bottleneck_share=0.0, bottleneck_label="nothing ran")
        return
    cat, share = bottleneck(breakdown)
    summary.update(bottleneck=cat, bottleneck_share=share, bottleneck_label=bottleneck_label(cat))


def _training_summary(job: TrainingJob | ParallelTrainingJob, events: pd.DataFrame,
                      start_s: float = 0.0) -> tuple[dict, pd.DataFrame]:
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
                 bottleneck_label=_does_not_fit(job))  # never ran: no critical path
        s.update(step_summary(None, None))
        s.update(_checkpoint_summary(job, None))
        return s, pd.DataFrame({"category": ["memory_capacity"], "seconds": [0.0], "share": [1.0]})
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
    breakdown = critical_path_breakdown(mine, start_s=start, end_s=end)
    parts = step_breakdown(mine, start_s=start, end_s=end,
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


def _transfer_summary(job: TransferJob, events: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
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
    breakdown = critical_path_breakdown(events, job=job.job)
    _attach_bottleneck(s, breakdown)
    return s, breakdown


def _serving_result(job: ServingJob | BatchingJob, recorder: Recorder, end: float, name: str,
                    config: dict[str, Any] | None, bin_s: float | None) -> Result:
    s, breakdown, req, iterations = _serving_summary(job, recorder.events_frame(rank=0), end)
    return Result(name=name, summary=s, events=recorder.events_frame,
                  utilization=_utilization(recorder, end, bin_s, s),
                  memory=recorder.memory_frame, loads=recorder.loads_frame,
                  slots=recorder.slots, device_specs=_device_specs(job.system.graph),
                  bottleneck=breakdown,
                  config=dict(config or {}), requests=req, iterations=iterations)


def _serving_summary(job: ServingJob | BatchingJob, events: pd.DataFrame, end: float
                     ) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Summary keys, critical-path breakdown, request table and iteration table of a serving
    job whose last activity ended at *end*, from rank 0's events (its own picked by job)."""
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
                 bottleneck_label=_does_not_fit(job))  # never ran: no critical path
        return s, pd.DataFrame({"category": ["memory_capacity"], "seconds": [0.0],
                                "share": [1.0]}), req, pd.DataFrame()
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
    iterations = _iterations(job.replicas)
    if len(iterations):
        dur = (iterations["end_s"] - iterations["start_s"]).to_numpy()
        s["batch_size_mean"] = float(np.average(iterations["batch_size"], weights=dur))
        s["kv_blocks_used_max"] = int(iterations["kv_blocks_used"].max())
        s["kv_blocks_total"] = int(job.replicas[0].blocks_total)
        s["iterations"] = len(iterations)
    breakdown = critical_path_breakdown(events, job=plan.job, rank=0, start_s=first, end_s=end)
    _attach_bottleneck(s, breakdown)
    s["simulated_time_s"] = end
    s.update(serving_bottleneck(req, iterations, breakdown, slo_ttft_s=plan.slo_ttft_s))
    return s, breakdown, req, iterations


_ITERATION_COLUMNS = ["replica", "start_s", "end_s", "batch_size", "tokens", "kv_blocks_used",
                      "prefill_tokens", "kv_blocked", "kv_blocks_total", "kv_blocks_cached",
                      "kv_blocks_cached_idle"]


def _iterations(replicas: Sequence[Any]) -> pd.DataFrame:
    """One row per iteration of every replica, from its ``batch_tokens`` records ``(start,
    end, batch size, tokens, KV blocks used, prefill tokens, KV-blocked[, blocks cached, idle
    cached])`` (a classic batching replica has no prefix cache: 0), built column by column."""
    parts: list[list] = [[] for _ in _ITERATION_COLUMNS]
    for r in replicas:
        rows = r.batch_tokens
        if not rows:
            continue
        cols = list(zip(*rows))
        if len(cols) == 7:
            cols += [(0,) * len(rows), (0,) * len(rows)]
        n = len(rows)
        for i, v in enumerate([(r.index,) * n, *cols[:7], (r.blocks_total,) * n, *cols[7:9]]):
            parts[i].append(np.asarray(v))
    if not parts[0]:
        return pd.DataFrame(columns=_ITERATION_COLUMNS)
    return pd.DataFrame({c: np.concatenate(p) for c, p in zip(_ITERATION_COLUMNS, parts)},
                        columns=_ITERATION_COLUMNS)


def collective_time(graph, op: str, devices: Sequence[str], nbytes: float, *,
                    algorithm: str = "auto") -> tuple[float, str]:
    """One collective alone on *graph*, as nccl-tests runs it (``hwsim calibrate``): *op*
    (``allreduce``, ``allgather``, ``reduce_scatter``, ``alltoall``, ``broadcast``,
    ``sendrecv``) of *nbytes* over *devices* with *algorithm* (``auto``: NCCL's choice,
    :func:`hwsim.jobs.collectives.choose`). Returns the time (s) and ``"algorithm/protocol"``."""
    from hwsim.jobs.collectives import choose, collective

    env = simpy.Environment()
    system = System(env, graph, Recorder())
    alg, proto = choose(system, list(devices), op, nbytes, algorithm=algorithm)
    env.process(collective(system, op, list(devices), nbytes, algorithm=alg, protocol=proto))
    env.run()
    return float(env.now), f"{alg}/{proto}"
